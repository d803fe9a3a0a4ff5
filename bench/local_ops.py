"""Local operations of an in-memory KvStore: get/put/incr, merges, bytes per entry, memory per key.

Public API only. Baselines: a dict behind methods called through the same
loop ("method"), the inline dict (``d[k]``, "raw"), and a pycrdt ``Map``.
"""

from __future__ import annotations

import gc
import random
import sys
import tracemalloc
from collections.abc import Callable, Sequence
from typing import Any

import cbor2
import pycrdt
from report import (
    Options,
    Row,
    Variant,
    case,
    failures,
    fmt_bytes,
    fmt_ratio,
    fmt_time,
    met,
    progress,
    race,
    rate_row,
    timed_once,
)

from crdtkv import KvStore

CHANGED = 1_000


def key_of(i: int) -> str:
    return f"user:{i:07d}"


def call1(fn: Callable[[str], object], keys: Sequence[str]) -> None:
    """``fn(key)`` for each key: every get goes through this loop."""
    for k in keys:
        fn(k)


def call2(fn: Callable[[str, Any], object], keys: Sequence[str], values: Sequence[Any]) -> None:
    """``fn(key, value)`` for each pair: every put and incr goes through this loop."""
    for k, v in zip(keys, values, strict=True):
        fn(k, v)


def raw_get(d: dict[str, Any], keys: Sequence[str]) -> None:
    for k in keys:
        d[k]


class Method:
    """The like-for-like baseline: a dict behind methods, called the way KvStore is."""

    def __init__(self, d: dict[str, Any] | None = None) -> None:
        self.d: dict[str, Any] = {} if d is None else d

    def get(self, key: str) -> Any:
        return self.d.get(key)

    def put(self, key: str, value: Any) -> None:
        self.d[key] = value


def filled(store: KvStore, keys: Sequence[str], values: Sequence[Any]) -> KvStore:
    call2(store.put, keys, values)
    return store


def counted(store: KvStore, keys: Sequence[str]) -> KvStore:
    call2(store.incr, keys, [1] * len(keys))
    return store


def pycrdt_map(keys: Sequence[str], values: Sequence[str]) -> tuple[pycrdt.Doc[Any], pycrdt.Map[str]]:
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    pmap = doc.get("m", type=pycrdt.Map)
    with doc.transaction():
        call2(pmap.__setitem__, keys, values)
    return doc, pmap


@case("local-ops", "get / put / incr on an in-memory store of 1M keys, against a dict and pycrdt")
def local_ops(o: Options) -> list[Row]:
    n = o.size(1_000_000, 20_000)
    ops, reps = min(200_000, n), o.reps(10)
    keys = [key_of(i) for i in range(n)]
    values = [f"v{i}" for i in range(n)]
    progress(f"building {n:,} keys: store, counters, dict, pycrdt map")
    build, store = timed_once(lambda: filled(KvStore.open("bench"), keys, values))
    counters = counted(KvStore.open("bench-counters"), keys)
    big = dict(zip(keys, values, strict=True))
    method = Method(big)
    pycrdt_build, (_, pmap) = timed_once(lambda: pycrdt_map(keys, values))
    sample = random.Random(1).sample(keys, ops)
    new_keys, new_values, over, ones = keys[:ops], values[:ops], [f"x{i}" for i in range(ops)], [1] * ops

    def pycrdt_new(ctx: tuple[pycrdt.Doc[Any], pycrdt.Map[str]]) -> None:
        with ctx[0].transaction():
            call2(ctx[1].__setitem__, new_keys, new_values)

    gc.freeze()  # the fixtures stay out of every collection below
    try:
        progress(f"{ops:,} operations per run, median of {reps}")
        old = race(
            [
                Variant("raw get", lambda _: raw_get(big, sample)),
                Variant("method get", lambda _: call1(method.get, sample)),
                Variant("get", lambda _: call1(store.get, sample)),
                Variant("pycrdt get", lambda _: call1(pmap.get, sample)),
                Variant("method overwrite", lambda _: call2(method.put, sample, over)),
                Variant("overwrite", lambda _: call2(store.put, sample, over)),
                Variant("incr", lambda _: call2(counters.incr, sample, ones)),
            ],
            reps,
            warm=True,
        )
        new = race(
            [
                Variant("method insert", lambda m: call2(m.put, new_keys, new_values), Method),
                Variant("put", lambda s: call2(s.put, new_keys, new_values), KvStore.open),
                Variant("incr new", lambda s: call2(s.incr, new_keys, ones), KvStore.open),
                Variant("pycrdt put", pycrdt_new, lambda: pycrdt_map([], [])),
            ],
            reps,
        )
    finally:
        gc.unfreeze()
    assert store.get(sample[0]) == over[0] and counters.get(sample[0]) > 1

    got, where = {**old, **new}, f"{ops:,} random existing keys of {n:,}"
    table = [  # number, what, variant, baseline, baseline's name, goal
        ("1a", "`get`, random existing key", "get", "method get", "method dict get", 1 / 3),
        ("1b", "`get`, random existing key", "get", "raw get", "raw `d[k]`", 1 / 3),
        ("2a", "`put`, new key", "put", "method insert", "method dict insert", 1 / 4),
        ("2b", f"`put`, overwrite ({where})", "overwrite", "method overwrite", "method overwrite", 1 / 4),
        ("3a", "`incr`, existing counter", "incr", "method overwrite", "method dict overwrite", 1 / 4),
        ("3b", "`incr`, new key", "incr new", "method insert", "method dict insert", 1 / 4),
        ("4a", "`put`, new key (ratio > 1: crdtkv faster)", "put", "pycrdt put", "pycrdt `Map[k] = v`", None),
        ("4b", "`get` (ratio > 1: crdtkv faster)", "get", "pycrdt get", "pycrdt `Map.get(k)`", None),
    ]  # fmt: skip
    rows = [
        rate_row(num, what, got[v], got[b], name, ops=ops, unit="ops/s", goal=goal,
                 goal_text=None if goal is None else f">= 1/{round(1 / goal)}")
        for num, what, v, b, name, goal in table
    ]  # fmt: skip
    ratio = fmt_ratio(pycrdt_build / build)
    return [
        *rows,
        Row("4c", f"build {n:,} keys, one run", fmt_time(build), "pycrdt", fmt_time(pycrdt_build), ratio),
    ]


def same_loops(plain: dict[str, Any], store: KvStore, counters: KvStore, sample: list[str]) -> list[Variant]:
    """local-ops' get, overwrite and incr loops, and their baselines, over ``sample``."""
    method, over, ones = Method(plain), ["w"] * len(sample), [1] * len(sample)
    return [
        Variant("raw get", lambda _: raw_get(plain, sample)),
        Variant("get", lambda _: call1(store.get, sample)),
        Variant("method overwrite", lambda _: call2(method.put, sample, over)),
        Variant("overwrite", lambda _: call2(store.put, sample, over)),
        Variant("incr", lambda _: call2(counters.incr, sample, ones)),
    ]


@case("local-scale", "get / put / incr per operation at 1,000 and 1M keys: what a big store costs in memory")
def local_scale(o: Options) -> list[Row]:
    """The same loops as local-ops on a small store (it stays in the CPU caches) and a big one.

    What a big store adds to both sides is memory traffic, which no change to
    the Python (or compiled) code removes: it shows what bounds the local-ops
    ratios.
    """
    sizes, ops, reps = o.size((1_000, 1_000_000), (1_000, 20_000)), o.size(200_000, 20_000), o.reps(5)
    per_op: dict[int, dict[str, float]] = {}
    for n in sizes:
        keys = [key_of(i) for i in range(n)]
        store, counters = filled(KvStore.open("bench"), keys, ["v"] * n), counted(KvStore.open("c"), keys)
        plain = dict.fromkeys(keys, "v")
        sample = random.Random(1).choices(keys, k=ops)
        progress(f"{n:,} keys: {ops:,} operations per run, median of {reps}")
        got = race(same_loops(plain, store, counters, sample), reps, warm=True)
        if failures(got.values()):
            return [Row("9", "per-operation cost by store size", "ERROR", notes=failures(got.values()))]
        per_op[n] = {name: v.seconds / ops for name, v in got.items()}
    small, big = sizes

    def at(name: str) -> str:
        return f"{per_op[small][name] * 1e9:,.0f} ns / {per_op[big][name] * 1e9:,.0f} ns"

    def ratios(name: str, base: str) -> str:
        return " / ".join(fmt_ratio(per_op[n][base] / per_op[n][name]) for n in sizes)

    sized = f"{small:,} / {big:,} keys"
    return [
        Row("9a", f"`get`, {sized}", at("get"), "raw `d[k]`", at("raw get"), ratios("get", "raw get")),
        Row("9b", f"`put`, overwrite, {sized}", at("overwrite"), "method overwrite", at("method overwrite"),
            ratios("overwrite", "method overwrite")),
        Row("9c", f"`incr`, existing counter, {sized}", at("incr"), "method dict overwrite",
            at("method overwrite"), ratios("incr", "method overwrite"),
            notes="per operation and ratio at each size: a small store shows the fixed cost of the call"),
    ]  # fmt: skip


@case("local-merge", "merges: catch-up after 1,000 changes in 1M keys, a 200,000-entry merge, from bytes")
def local_merge(o: Options) -> list[Row]:
    n, m, reps = o.size(1_000_000, 20_000), o.size(200_000, 20_000), o.reps(5)
    keys = [key_of(i) for i in range(n)]
    source = filled(KvStore.open("bench", replica_id="source"), keys, [f"v{i}" for i in range(n)])
    peer = KvStore.open("bench", replica_id="peer")
    peer.merge(source)  # in sync; each catch-up run below first changes CHANGED keys at the source
    rng = random.Random(2)

    def change() -> None:
        for i, key in enumerate(rng.sample(keys, CHANGED)):
            source.put(key, f"changed {i}")

    def closed(store: KvStore, result: int) -> int:
        store.close()
        return result

    progress(f"catch-up merge of {CHANGED:,} changes in {n:,} keys against a merge of all, median of {reps}")
    delta = race(
        [
            Variant("catch-up", lambda _: peer.merge(source), change, lambda _, r: r),
            Variant("full", lambda e: e.merge(source), lambda: KvStore.open("bench"), closed),
        ],
        reps,
    )
    small = filled(KvStore.open("bench-merge"), keys[:m], [f"v{i}" for i in range(m)])
    snapshot = small.snapshot()
    plain = cbor2.dumps([[k, f"v{i}"] for i, k in enumerate(keys[:m])])
    progress(f"merges of {m:,} entries, median of {reps}")
    merge = race(
        [
            Variant("merge", lambda dst: dst.merge(small), lambda: KvStore.open("bench-merge"), closed),
            Variant("bytes", lambda dst: dst.merge(snapshot), lambda: KvStore.open("bench-merge"), closed),
            Variant("loads", lambda _: cbor2.loads(plain)),
        ],
        reps,
    )
    for v in (delta["catch-up"], delta["full"], merge["merge"], merge["bytes"]):
        wanted = CHANGED if v.name == "catch-up" else n if v.name == "full" else m
        if v.ok and set(v.summaries) != {wanted}:
            v.error = f"UNEXPECTED keys changed per run {sorted(set(v.summaries))}, expected {wanted:,}"
    catch, full = delta["catch-up"], delta["full"]
    rows = [Row("5", "catch-up merge", "ERROR", notes=failures((catch, full)))]
    if catch.ok and full.ok:
        took, took_full = catch.seconds, full.seconds
        per, per_full = took / CHANGED, took_full / n
        what = f"catch-up `peer.merge(store)` after {CHANGED:,} changes in {n:,} keys (delta + apply)"
        rows = [Row("5", what, f"{fmt_time(took)} ({CHANGED:,} entries)", "merge into an empty replica",
            fmt_time(took_full), fmt_ratio(took_full / took) + " faster", "proportional to changes",
            met(per <= 3 * per_full), f"{per * 1e6:.2f} us/entry, all: {per_full * 1e6:.2f} us/entry",
        )]  # fmt: skip
    for num, what, v in (
        ("6a", f"`merge` of a {m:,}-entry store (delta + apply)", merge["merge"]),
        ("6b", f"`merge` of its snapshot bytes (strict decode + apply), {len(snapshot):,} B", merge["bytes"]),
    ):
        base = "plain `cbor2.loads` of `[[k, v], ...]`"
        rows.append(
            rate_row(num, what, v, merge["loads"], base, ops=m, unit="entries/s", goal_text=">= 500 k/s")
        )
        rows[-1].met = met(v.rate(m) >= 500_000) if v.ok else "n/a"
    return rows


def traced(build: Callable[[], object]) -> int:
    """Bytes (tracemalloc) still allocated after ``build()``, the result dropped after measuring."""
    gc.collect()
    before = tracemalloc.get_traced_memory()[0]
    result = build()
    gc.collect()
    used = tracemalloc.get_traced_memory()[0] - before
    del result
    return used


@case("local-size", "bytes per register in a delta, memory per key")
def local_size(o: Options) -> list[Row]:
    pairs = [(f"user:{i:04d}", "hello world") for i in range(1000)]
    store = filled(KvStore.open("bench-wire"), [k for k, _ in pairs], [v for _, v in pairs])
    per, plain = len(store.snapshot()) / len(pairs), len(cbor2.dumps([list(p) for p in pairs])) / len(pairs)
    empty = len(KvStore.open("bench-wire").snapshot())
    n = o.size(1_000_000, 20_000)
    progress(f"memory per key (tracemalloc, {n:,} keys)")
    tracemalloc.start()
    try:
        keys = traced(lambda: [key_of(i) for i in range(n)]) - sys.getsizeof([None] * n)
        values = traced(lambda: [f"v{i}" for i in range(n)]) - sys.getsizeof([None] * n)
        plain_dict = traced(lambda: {key_of(i): f"v{i}" for i in range(n)}) - keys - values
        registers = traced(lambda: filled(KvStore.open("m"), [key_of(i) for i in range(n)],
                                          [f"v{i}" for i in range(n)])) - keys - values  # fmt: skip
        counter = traced(lambda: counted(KvStore.open("m"), [key_of(i) for i in range(n)])) - keys
    finally:
        tracemalloc.stop()
    return [
        Row("7", "bytes per register (9-char key, 11-char value): snapshot of 1,000 / 1,000", fmt_bytes(per),
            "plain CBOR `[k, v]`", fmt_bytes(plain), fmt_ratio(per / plain), "<= 60 B", met(per <= 60),
            f"a snapshot is the delta encoding of its entries (an empty one: {empty} B)"),
        Row("8a", "memory per register key beyond key and value", fmt_bytes(registers / n), "plain dict",
            fmt_bytes(plain_dict / n), fmt_ratio(registers / plain_dict), "< 300 B", met(registers / n < 300),
            f"{n:,} keys; key and value strings measured alone and subtracted"),
        Row("8b", "memory per counter key beyond the key", fmt_bytes(counter / n), notes="`incr(k)` once"),
    ]  # fmt: skip

#!/usr/bin/env python3
"""By-hand benchmark of crdtkv's local operations, deltas, merges and memory.

Run it by hand and paste the Markdown table it prints into the README. CI runs
it with ``--quick`` (tests/test_bench.py), which checks that it still runs and
that every measurement succeeds (the exit status is 1 if one failed), not its
figures. The machine is assumed shared and noisy, so every figure is set
against a baseline measured in the same process, in the same run, in the same
loop shape:

* each timing is the best (minimum) of ``repeats`` runs;
* the variants of one comparison (the operation and its baselines) are run
  round-robin, A B C A B C ..., so a slow spell hits them alike;
* the cyclic garbage collector is disabled during every timed region, for the
  measured operation and its baselines alike (``gc.collect()`` runs just before
  each timed region, outside it);
* "goal met" is computed from the measured numbers, never assumed.

Usage::

    .venv/bin/python bench/local_ops.py              # N = 1,000,000 keys
    .venv/bin/python bench/local_ops.py --quick      # a smoke run in seconds (CI): N = 20,000, one repeat
    .venv/bin/python bench/local_ops.py --keys 250000 --repeats 7
"""

from __future__ import annotations

import argparse
import gc
import importlib
import math
import random
import sys
import time
import tracemalloc
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import cbor2
from report import (  # before crdtkv: it makes crdtkv importable from a checkout without `pip install -e .`
    Row,
    Variant,
    add_repeats_option,
    chosen_repeats,
    crdtkv_revision,
    error_row,
    exit_status,
    fmt_rate,
    fmt_ratio,
    fmt_time,
    header,
    met,
    print_results,
    progress,
    race,
    rate_row,
    summarize,
    timed_once,
    version_of,
)

from crdtkv import KvStore
from crdtkv.core import DEFAULT_LIMITS, decode_delta, encode_delta
from crdtkv.core.codec import strict_loads

DEFAULT_KEYS = 1_000_000
QUICK_KEYS = 20_000
DEFAULT_REPEATS = 5
QUICK_REPEATS = 1
#: operations per timed loop for get / put / incr (capped at N)
DEFAULT_OPS = 200_000
#: keys overwritten before a delta extraction
CHANGED_KEYS = 1_000
#: register entries in the merged delta batch
MERGE_ENTRIES = 200_000
QUICK_MERGE_ENTRIES = 20_000
#: entries in the bytes-per-entry delta
WIRE_ENTRIES = 1_000
#: pycrdt sets per transaction while building the N-key map
PYCRDT_BATCH = 100_000

GET_GOAL = 1 / 3
WRITE_GOAL = 1 / 4
MERGE_GOAL = 500_000.0
WIRE_GOAL = 60.0
MEMORY_GOAL = 300.0


def key_of(i: int) -> str:
    return f"user:{i:07d}"


def value_of(i: int) -> str:
    return f"v{i}"


# -- loop shapes (each shared by an operation and its baselines) ------------------------


def loop_call1(fn: Callable[[str], object], keys: Sequence[str]) -> None:
    """``fn(key)`` for each key: store.get, wrapper.get and Map.get all go through here."""
    for k in keys:
        fn(k)


def loop_call2(fn: Callable[[str, Any], object], keys: Sequence[str], values: Sequence[Any]) -> None:
    """``fn(key, value)`` for each pair: store.put, store.incr, wrapper.put, Map.__setitem__."""
    for k, v in zip(keys, values, strict=True):
        fn(k, v)


def loop_raw_get(d: dict[str, Any], keys: Sequence[str]) -> None:
    for k in keys:
        d[k]


def loop_raw_set(d: dict[str, Any], keys: Sequence[str], values: Sequence[Any]) -> None:
    for k, v in zip(keys, values, strict=True):
        d[k] = v


class DictWrapper:
    """The like-for-like baseline: a dict behind methods, called the way KvStore is."""

    def __init__(self, d: dict[str, Any] | None = None) -> None:
        self._d: dict[str, Any] = {} if d is None else d

    def get(self, key: str) -> Any:
        return self._d.get(key)

    def put(self, key: str, value: Any) -> None:
        self._d[key] = value


# -- fixtures ---------------------------------------------------------------------------------


def build_store(name: str, keys: Sequence[str], values: Sequence[Any]) -> KvStore:
    store = KvStore.open(name)
    loop_call2(store.put, keys, values)
    return store


def build_counter_store(name: str, keys: Sequence[str]) -> KvStore:
    store = KvStore.open(name)
    incr = store.incr
    for k in keys:
        incr(k, 1)
    return store


def build_pycrdt_map(pycrdt: Any, keys: Sequence[str], values: Sequence[Any]) -> tuple[Any, Any]:
    doc = pycrdt.Doc()
    pmap = doc.get("m", type=pycrdt.Map)
    for start in range(0, len(keys), PYCRDT_BATCH):
        with doc.transaction():
            loop_call2(
                pmap.__setitem__, keys[start : start + PYCRDT_BATCH], values[start : start + PYCRDT_BATCH]
            )
    return doc, pmap


# -- the benchmark ----------------------------------------------------------------------------


@dataclass
class Config:
    keys: int
    ops: int
    repeats: int
    merge_entries: int


@dataclass
class Fixtures:
    """The N-key containers and the samples every timing section shares."""

    keys: list[str]
    values: list[str]
    #: ``ops`` random existing keys, in random order
    sample: list[str]
    #: ``ops`` keys and values for fresh, empty containers
    new_keys: list[str]
    new_values: list[str]
    #: values for overwrites of ``sample``
    over_values: list[str]
    ones: list[int]
    store: KvStore
    big: dict[str, str]
    wrapped: DictWrapper
    counters: KvStore
    pycrdt: Any
    pdoc: Any
    pmap: Any
    pycrdt_error: str
    build_times: dict[str, float]

    def needs_pycrdt(self, v: Variant) -> Variant:
        """``v``, made to report the pycrdt set-up error, if any, instead of running."""
        if self.pycrdt_error:
            v.error = self.pycrdt_error
        return v


def make_fixtures(cfg: Config, rng: random.Random) -> Fixtures:
    n, ops = cfg.keys, cfg.ops
    pycrdt: Any = None
    pycrdt_error = ""
    try:
        pycrdt = importlib.import_module("pycrdt")
    except Exception as exc:  # reported in the pycrdt rows
        pycrdt_error = f"import pycrdt failed: {type(exc).__name__}: {exc}"

    progress(f"building key/value lists (N = {n:,})")
    keys = [key_of(i) for i in range(n)]
    values = [value_of(i) for i in range(n)]

    progress(f"building the {n:,}-key store, dict, counter store and pycrdt map (one run each)")
    times: dict[str, float] = {}
    times["store"], store = timed_once(lambda: build_store("bench", keys, values))
    times["dict"], big = timed_once(lambda: dict(zip(keys, values, strict=True)))
    times["counters"], counters = timed_once(lambda: build_counter_store("bench-counters", keys))
    times["pycrdt"] = math.nan
    pdoc: Any = None
    pmap: Any = None
    if pycrdt is not None:
        try:
            times["pycrdt"], (pdoc, pmap) = timed_once(lambda: build_pycrdt_map(pycrdt, keys, values))
        except Exception as exc:
            pycrdt_error = f"building the pycrdt map failed: {type(exc).__name__}: {exc}"
    return Fixtures(
        keys=keys,
        values=values,
        sample=rng.sample(keys, ops),
        new_keys=keys[:ops],
        new_values=values[:ops],
        over_values=[f"x{i}" for i in range(ops)],
        ones=[1] * ops,
        store=store,
        big=big,
        wrapped=DictWrapper(big),
        counters=counters,
        pycrdt=pycrdt,
        pdoc=pdoc,
        pmap=pmap,
        pycrdt_error=pycrdt_error,
        build_times=times,
    )


def race_get(fx: Fixtures, repeats: int) -> dict[str, Variant]:
    progress("1. get")
    big, wrapped, store, pmap, sample = fx.big, fx.wrapped, fx.store, fx.pmap, fx.sample
    result = race(
        [
            Variant("raw", lambda _: loop_raw_get(big, sample)),
            Variant("wrapper", lambda _: loop_call1(wrapped.get, sample)),
            Variant("store", lambda _: loop_call1(store.get, sample)),
            fx.needs_pycrdt(Variant("pycrdt", lambda _: loop_call1(pmap.get, sample))),
        ],
        repeats,
        warm=True,
    )
    assert store.get(sample[0]) == big[sample[0]]
    return result


def race_existing(fx: Fixtures, repeats: int) -> dict[str, Variant]:
    progress("2-3. put / incr on existing keys")
    big, wrapped, store, counters = fx.big, fx.wrapped, fx.store, fx.counters
    sample, over_values, ones = fx.sample, fx.over_values, fx.ones
    return race(
        [
            Variant("raw", lambda _: loop_raw_set(big, sample, over_values)),
            Variant("wrapper", lambda _: loop_call2(wrapped.put, sample, over_values)),
            Variant("put", lambda _: loop_call2(store.put, sample, over_values)),
            Variant("incr", lambda _: loop_call2(counters.incr, sample, ones)),
        ],
        repeats,
        warm=True,
    )


def race_cycle(fx: Fixtures, rng: random.Random) -> dict[str, Variant]:
    """One run each of N + 1 overwrites / increments covering every key, in random order.

    Best-of-N loops over a sample keep the fastest repeat, so they can skip
    periodic O(N) maintenance a store does every ~N writes (crdtkv versions
    with dead change-log rows compacted them every N retired rows). One pass
    over all N keys (plus one) carries its share of any such work: this is the
    amortized figure.
    """
    n = len(fx.keys)
    progress(f"2-3. amortized: {n + 1:,} overwrites / increments, warm-up pass + one timed pass each")
    order = [*rng.sample(fx.keys, n), fx.keys[0]]
    values = [*fx.values, fx.values[0]]
    ones = [1] * (n + 1)
    big, wrapped, store, counters = fx.big, fx.wrapped, fx.store, fx.counters
    return race(
        [
            Variant("raw", lambda _: loop_raw_set(big, order, values)),
            Variant("wrapper", lambda _: loop_call2(wrapped.put, order, values)),
            Variant("put", lambda _: loop_call2(store.put, order, values)),
            Variant("incr", lambda _: loop_call2(counters.incr, order, ones)),
        ],
        1,
        warm=True,
    )


def race_fresh(fx: Fixtures, repeats: int) -> dict[str, Variant]:
    progress("2-3. put / incr on new keys (fresh containers each repeat)")
    new_keys, new_values, ones, pycrdt = fx.new_keys, fx.new_values, fx.ones, fx.pycrdt

    def fresh_store() -> KvStore:
        return KvStore.open("fresh")

    def fresh_pycrdt() -> tuple[Any, Any]:
        doc = pycrdt.Doc()
        return doc, doc.get("m", type=pycrdt.Map)

    def pycrdt_set(ctx: tuple[Any, Any]) -> None:
        doc, pmap = ctx
        with doc.transaction():
            loop_call2(pmap.__setitem__, new_keys, new_values)

    return race(
        [
            Variant("raw", lambda d: loop_raw_set(d, new_keys, new_values), dict),
            Variant("wrapper", lambda w: loop_call2(w.put, new_keys, new_values), DictWrapper),
            Variant("put", lambda s: loop_call2(s.put, new_keys, new_values), fresh_store),
            Variant("incr", lambda s: loop_call2(s.incr, new_keys, ones), fresh_store),
            fx.needs_pycrdt(Variant("pycrdt", pycrdt_set, fresh_pycrdt)),
        ],
        repeats,
    )


def race_delta(
    fx: Fixtures, repeats: int, rng: random.Random
) -> tuple[dict[str, Variant], list[str], int | None]:
    """Copy the version vector, overwrite CHANGED_KEYS keys, time the catch-up extractions."""
    progress("4. delta extraction")
    state = fx.store._state
    vv = dict(state.vv)  # a copy: the store's own vv moves on with the writes below
    pdoc, pmap = fx.pdoc, fx.pmap
    state_vector: bytes | None = None
    if not fx.pycrdt_error:
        try:
            state_vector = pdoc.get_state()
        except Exception as exc:
            fx.pycrdt_error = f"get_state failed: {type(exc).__name__}: {exc}"
    changed = rng.sample(fx.keys, CHANGED_KEYS)
    for k in changed:
        fx.store.put(k, "changed")
    if not fx.pycrdt_error:
        try:
            with pdoc.transaction():
                for k in changed:
                    pmap[k] = "changed"
        except Exception as exc:
            fx.pycrdt_error = f"setting {CHANGED_KEYS} keys failed: {type(exc).__name__}: {exc}"
    result = race(
        [
            Variant("full", lambda _: state.full_state(), teardown=summarize(lambda d: len(d.entries))),
            Variant(
                "delta",
                lambda _: state.delta_since(vv),
                teardown=summarize(lambda d: sorted(k for k, _ in d.entries)),
            ),
            Variant("delta+encode", lambda _: encode_delta(state.delta_since(vv)), teardown=summarize(len)),
            fx.needs_pycrdt(
                Variant("pycrdt", lambda _: pdoc.get_update(state_vector), teardown=summarize(len))
            ),
        ],
        repeats,
    )
    return result, changed, result["pycrdt"].summary


def race_merge(m: int, repeats: int) -> tuple[dict[str, Variant], int]:
    progress(f"5. merge of a {m:,}-entry delta")
    src = build_store("bench-merge", [key_of(i) for i in range(m)], [value_of(i) for i in range(m)])
    batch = src._state.full_state()
    assert len(batch.entries) == m
    data = encode_delta(batch)
    limits = DEFAULT_LIMITS
    depth = limits.max_value_depth + 8  # as decode_delta calls it

    def fresh_dst() -> KvStore:
        return KvStore.open("bench-merge")

    def fill_dict(_: None) -> dict[str, Any]:
        d: dict[str, Any] = {}
        for k, e in batch.entries:
            d[k] = e
        return d

    def decode(_: None) -> Any:
        return decode_delta(data, limits, max_bytes=len(data))

    def decode_apply(dst: KvStore) -> int:
        return dst._state.apply(decode_delta(data, limits, max_bytes=len(data)))

    result = race(
        [
            Variant("dict", fill_dict, teardown=summarize(len)),
            Variant("loads", lambda _: cbor2.loads(data), teardown=summarize(lambda t: len(t[4]))),
            Variant("decode", decode, teardown=summarize(lambda d: len(d.entries))),
            Variant(
                "strict",
                lambda _: strict_loads(data, max_depth=depth),
                teardown=summarize(lambda t: len(t[4])),
            ),
            Variant("apply", lambda dst: dst._state.apply(batch), fresh_dst, teardown=summarize(int)),
            Variant("decode+apply", decode_apply, fresh_dst, teardown=summarize(int)),
        ],
        repeats,
    )
    for name in ("apply", "decode+apply"):
        v = result[name]
        if v.ok and v.summary != m:
            v.error = f"changed {v.summary} keys, expected {m}"
    return result, len(data)


def bench_timings(cfg: Config, rows: list[Row], notes: list[str]) -> None:
    n, ops, repeats = cfg.keys, cfg.ops, cfg.repeats
    rng = random.Random(20240601)
    fx = make_fixtures(cfg, rng)
    # the fixtures live to the end of this function: keep them out of every gc.collect() below
    gc.collect()
    gc.freeze()
    try:
        # the per-operation loops take well under a second: give them twice the repeats
        get = race_get(fx, 2 * repeats)
        existing = race_existing(fx, 2 * repeats)
        cycle = race_cycle(fx, rng)
        fresh = race_fresh(fx, 2 * repeats)
        delta, changed, pycrdt_update_size = race_delta(fx, repeats, rng)
        merge, merge_bytes = race_merge(cfg.merge_entries, repeats)
    finally:
        gc.unfreeze()

    # 1. get
    where = f"{ops:,} random existing keys of {n:,}"
    for num, base, base_name in (
        ("1a", "raw", "raw `d[k]`"),
        ("1b", "wrapper", "method `get()` -> `self._d.get(k)`"),
    ):
        rows.append(
            rate_row(
                num,
                "`store.get(key)`, existing str key",
                get["store"],
                get[base],
                base_name,
                ops=ops,
                unit="ops/s",
                goal=GET_GOAL,
                goal_text=">= 1/3",
                notes=where,
            )
        )

    # 2-3. put / incr
    new_where = f"{ops:,} new keys into an empty container"
    old_where = f"{ops:,} random existing keys of {n:,}"
    for num, what, variants, variant, base_kind, where in (
        ("2a", "`store.put(k, v)`, new keys", fresh, "put", "insert", new_where),
        ("2b", "`store.put(k, v)`, overwrite", existing, "put", "overwrite", old_where),
        ("3a", "`store.incr(k)`, existing counter", existing, "incr", "overwrite", old_where),
        ("3b", "`store.incr(k)`, first incr (new key)", fresh, "incr", "insert", new_where),
    ):
        for suffix, base, base_name in (
            ("", "raw", f"raw `d[k] = v` ({base_kind})"),
            ("'", "wrapper", f"method `put()` -> `self._d[k] = v` ({base_kind})"),
        ):
            rows.append(
                rate_row(
                    num + suffix,
                    what,
                    variants[variant],
                    variants[base],
                    base_name,
                    ops=ops,
                    unit="ops/s",
                    goal=WRITE_GOAL,
                    goal_text=">= 1/4",
                    notes=where,
                )
            )
    for num, what, variant in (
        ("2c", "`store.put(k, v)`, overwrite, amortized", "put"),
        ("3c", "`store.incr(k)`, existing counter, amortized", "incr"),
    ):
        for suffix, base, base_name in (
            ("", "raw", "raw `d[k] = v` (overwrite)"),
            ("'", "wrapper", "method `put()` -> `self._d[k] = v` (overwrite)"),
        ):
            rows.append(
                rate_row(
                    num + suffix,
                    what,
                    cycle[variant],
                    cycle[base],
                    base_name,
                    ops=n + 1,
                    unit="ops/s",
                    goal=WRITE_GOAL,
                    goal_text=">= 1/4",
                    notes=f"{n + 1:,} writes covering all {n:,} keys in random order, one timed pass "
                    "after one warm-up pass (not best-of): includes any periodic maintenance",
                )
            )
    notes.append(
        "Rows 2-3: `incr` is called as `incr(k, 1)` through the same `fn(k, v)` loop as `put` and the "
        "wrapper. Best-of-N keeps the fastest repeat, so rows 2b/3a show the common path; rows 2c/3c are "
        "one pass over every key and include any periodic work the store does every so many writes. "
        "Every repeat: "
        f"put overwrite {', '.join(fmt_time(t) for t in existing['put'].times)}; "
        f"incr existing {', '.join(fmt_time(t) for t in existing['incr'].times)}; "
        f"raw dict overwrite {', '.join(fmt_time(t) for t in existing['raw'].times)}."
    )

    # 4. delta extraction
    d_var, f_var = delta["delta"], delta["full"]
    what = f"`delta_since(vv)` after {CHANGED_KEYS:,} overwrites, N = {n:,}"
    failed = error_row("4", what, "`full_state()`", (d_var, f_var))
    if failed is not None:
        rows.append(failed)
    else:
        got = d_var.summary if isinstance(d_var.summary, list) else []
        per_delta = d_var.best / max(1, len(got))
        per_full = f_var.best / n
        rows.append(
            Row(
                "4",
                what,
                f"{fmt_rate(1 / d_var.best, 'calls/s')} ({fmt_time(d_var.best)})",
                "`full_state()` (all N entries)",
                f"{fmt_rate(1 / f_var.best, 'calls/s')} ({fmt_time(f_var.best)})",
                fmt_ratio(f_var.best / d_var.best),
                f"returns exactly the {CHANGED_KEYS:,} changed keys",
                met(got == sorted(changed)),
                f"returned {len(got):,} entries (full_state: {f_var.summary:,}); "
                f"{per_delta * 1e6:.2f} us/entry vs {per_full * 1e6:.2f} us/entry for full_state; "
                f"time ratio {d_var.best / f_var.best:.4f} for changed/N = {CHANGED_KEYS / n:.4f}",
            )
        )

    # 5. merge
    m = cfg.merge_entries
    size_note = f"{m:,} register entries from `full_state()`, {merge_bytes:,} bytes encoded"
    for num, what, name, base, base_name in (
        (
            "5a",
            "merge: `dst._state.apply(delta)`",
            "apply",
            "dict",
            "plain `d[k] = entry` over the same pairs",
        ),
        (
            "5b",
            "merge: `decode_delta` + `apply` from bytes",
            "decode+apply",
            "loads",
            "`cbor2.loads(data)` alone (no strict options)",
        ),
    ):
        row = rate_row(
            num, what, merge[name], merge[base], base_name, ops=m, unit="entries/s", notes=size_note
        )
        if merge[name].ok and merge[base].ok:
            row.goal = ">= 500 k entries/s (absolute)"
            row.met = met(merge[name].rate(m) >= MERGE_GOAL)
        rows.append(row)
    rows.append(
        rate_row(
            "5c",
            "decode only: `decode_delta(data, ...)`",
            merge["decode"],
            merge["loads"],
            "`cbor2.loads(data)` alone",
            ops=m,
            unit="entries/s",
            notes="the strict decode's cost over plain CBOR parsing",
        )
    )
    rows.append(
        rate_row(
            "5d",
            "strict CBOR parse only: `strict_loads(data)`",
            merge["strict"],
            merge["loads"],
            "`cbor2.loads(data)` alone",
            ops=m,
            unit="entries/s",
            notes="the part of 5c spent in `CBORDecoder` with crdtkv's strict options; the rest is the "
            "schema walk (`_Reader`)",
        )
    )

    # 8. pycrdt side by side
    versus = "; ratio = crdtkv / pycrdt (> 1: crdtkv faster)"
    rows.append(
        rate_row(
            "8a",
            "put, new keys",
            fresh["put"],
            fresh["pycrdt"],
            "pycrdt `Map[k] = v` (one transaction)",
            ops=ops,
            unit="ops/s",
            notes=f"{ops:,} new keys into an empty store / map, best of {2 * repeats}" + versus,
        )
    )
    rows.append(
        rate_row(
            "8b",
            "get, existing keys",
            get["store"],
            get["pycrdt"],
            "pycrdt `Map.get(k)` (no transaction)",
            ops=ops,
            unit="ops/s",
            notes=f"{ops:,} random keys of {n:,}, best of {2 * repeats}" + versus,
        )
    )
    rows.append(
        rate_row(
            "8c",
            f"delta since a version / state vector ({CHANGED_KEYS:,} changed of {n:,})",
            delta["delta"],
            delta["pycrdt"],
            "pycrdt `doc.get_update(state_vector)`",
            ops=1,
            unit="calls/s",
            notes="crdtkv returns a Delta object, pycrdt encoded bytes" + versus,
        )
    )
    rows.append(
        rate_row(
            "8d",
            "delta since ..., encoded to bytes",
            delta["delta+encode"],
            delta["pycrdt"],
            "pycrdt `doc.get_update(state_vector)`",
            ops=1,
            unit="calls/s",
            notes=f"`encode_delta(delta_since(vv))`: {delta['delta+encode'].summary} bytes; "
            f"pycrdt update: {pycrdt_update_size} bytes" + versus,
        )
    )
    times = fx.build_times
    context = (
        f"for context: plain dict {fmt_time(times['dict'])}, all-counter store {fmt_time(times['counters'])}"
    )
    if fx.pycrdt_error and math.isnan(times["pycrdt"]):
        rows.append(
            Row(
                "8e",
                f"build {n:,} keys (one run)",
                fmt_rate(n / times["store"], "ops/s"),
                "pycrdt",
                "ERROR",
                "n/a",
                notes=fx.pycrdt_error,
            )
        )
    else:
        rows.append(
            Row(
                "8e",
                f"build {n:,} keys (one run, not best-of)",
                fmt_rate(n / times["store"], "ops/s"),
                f"pycrdt `Map[k] = v`, transactions of {PYCRDT_BATCH:,}",
                fmt_rate(n / times["pycrdt"], "ops/s"),
                fmt_ratio(times["pycrdt"] / times["store"]),
                notes=f"crdtkv {fmt_time(times['store'])}, pycrdt {fmt_time(times['pycrdt'])}; {context}"
                + versus,
            )
        )


def bench_wire(rows: list[Row]) -> None:
    progress("6. bytes per LWW delta entry")
    store = KvStore.open("bench-wire")
    value = "hello world"
    pairs = [(f"user:{i:04d}", value) for i in range(WIRE_ENTRIES)]
    assert all(len(k) == 9 for k, _ in pairs)
    for k, v in pairs:
        store.put(k, v)
    many = encode_delta(store._state.full_state())
    one_store = KvStore.open("bench-wire")
    one_store.put(pairs[0][0], value)
    one = encode_delta(one_store._state.full_state())
    raw_many = cbor2.dumps([[k, v] for k, v in pairs])
    raw_one = cbor2.dumps([list(pairs[0])])
    per = len(many) / WIRE_ENTRIES
    raw_per = len(raw_many) / WIRE_ENTRIES
    marginal = (len(many) - len(one)) / (WIRE_ENTRIES - 1)
    rows.append(
        Row(
            "6a",
            f"bytes per LWW delta entry ({WIRE_ENTRIES:,}-entry delta / {WIRE_ENTRIES:,})",
            f"{per:.1f} B/entry",
            "plain `cbor2.dumps([[k, v], ...])`",
            f"{raw_per:.1f} B/entry",
            fmt_ratio(per / raw_per),
            "<= 60 B/entry",
            met(per <= WIRE_GOAL),
            f"9-char keys, 11-char values; {len(many):,} bytes in all; marginal {marginal:.1f} B/entry",
        )
    )
    rows.append(
        Row(
            "6b",
            "size of a 1-entry delta (with headers)",
            f"{len(one)} B",
            "plain `cbor2.dumps([[k, v]])`",
            f"{len(raw_one)} B",
            fmt_ratio(len(one) / len(raw_one)),
            notes=f"store name {store.name!r}; the writer's origin id ({len(one_store.origin)} chars) "
            f"appears {one.count(one_store.origin.encode())} time(s) in this delta and "
            f"{many.count(store.origin.encode())} time(s) in 6a's {WIRE_ENTRIES:,}-entry one",
        )
    )


def _traced(build: Callable[[], Any]) -> tuple[int, Any]:
    """Bytes (tracemalloc, current) still allocated after ``build()``, and its result."""
    gc.collect()
    before = tracemalloc.get_traced_memory()[0]
    gc.disable()
    try:
        result = build()
    finally:
        gc.enable()
    gc.collect()
    return tracemalloc.get_traced_memory()[0] - before, result


def bench_memory(n: int, rows: list[Row]) -> None:
    progress(f"7. memory per key (tracemalloc, N = {n:,})")
    tracemalloc.start()
    try:
        total, key_list = _traced(lambda: [key_of(i) for i in range(n)])
        key_bytes = total - sys.getsizeof(key_list)
        del key_list
        total, value_list = _traced(lambda: [value_of(i) for i in range(n)])
        value_bytes = total - sys.getsizeof(value_list)
        del value_list

        def build_dict() -> dict[str, str]:
            d: dict[str, str] = {}
            for i in range(n):
                d[key_of(i)] = value_of(i)
            return d

        def build_registers() -> KvStore:
            store = KvStore.open("bench-memory")
            put = store.put
            for i in range(n):
                put(key_of(i), value_of(i))
            return store

        def build_counters() -> KvStore:
            store = KvStore.open("bench-memory")
            incr = store.incr
            for i in range(n):
                incr(key_of(i), 1)
            return store

        total, obj = _traced(build_dict)
        dict_over = (total - key_bytes - value_bytes) / n
        del obj
        total, obj = _traced(build_registers)
        reg_over = (total - key_bytes - value_bytes) / n
        log_rows = getattr(obj._state, "log_rows", None)
        reg_rows = f"{log_rows():,}" if callable(log_rows) else "n/a"
        del obj
        total, obj = _traced(build_counters)
        ctr_over = (total - key_bytes) / n
        del obj
    finally:
        tracemalloc.stop()
    strings = (
        f"N = {n:,}; key strings {key_bytes / n:.1f} B/key and value strings {value_bytes / n:.1f} B/key "
        "measured separately and subtracted"
    )
    rows.append(
        Row(
            "7a",
            "memory per key beyond key and value (str registers)",
            f"{reg_over:.1f} B/key",
            "plain dict, same keys / values",
            f"{dict_over:.1f} B/key",
            fmt_ratio(reg_over / dict_over),
            "< 300 B/key",
            met(reg_over < MEMORY_GOAL),
            f"{strings}; change-log rows: {reg_rows}",
        )
    )
    rows.append(
        Row(
            "7b",
            "memory per key beyond key (all counters, `incr(k, 1)` once)",
            f"{ctr_over:.1f} B/key",
            "plain dict, same keys / values",
            f"{dict_over:.1f} B/key",
            fmt_ratio(ctr_over / dict_over),
            "- (no goal)",
            "n/a",
            "key strings subtracted; no value strings",
        )
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--keys", type=int, default=None, help=f"N, keys in the large store / map (default {DEFAULT_KEYS:,})"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"a smoke run: N = {QUICK_KEYS:,} (unless --keys), a {QUICK_MERGE_ENTRIES:,}-entry merge "
        f"and {QUICK_REPEATS} repeat",
    )
    add_repeats_option(parser, DEFAULT_REPEATS, QUICK_REPEATS)
    parser.add_argument(
        "--ops",
        type=int,
        default=DEFAULT_OPS,
        help=f"operations per timed get/put/incr loop, capped at N (default {DEFAULT_OPS:,})",
    )
    args = parser.parse_args(argv)
    n = args.keys if args.keys is not None else (QUICK_KEYS if args.quick else DEFAULT_KEYS)
    repeats = chosen_repeats(args, DEFAULT_REPEATS, QUICK_REPEATS)
    if n < CHANGED_KEYS or repeats < 1 or args.ops < 1:
        parser.error(f"--keys must be at least {CHANGED_KEYS:,}; --repeats and --ops at least 1")
    merge_entries = QUICK_MERGE_ENTRIES if args.quick else MERGE_ENTRIES
    cfg = Config(keys=n, ops=min(args.ops, n), repeats=repeats, merge_entries=merge_entries)

    revision = crdtkv_revision()  # the code was imported just now: record which
    started = time.perf_counter()
    rows: list[Row] = []
    notes: list[str] = []
    bench_timings(cfg, rows, notes)
    bench_wire(rows)
    bench_memory(n, rows)
    rows.sort(key=lambda r: (r.num[0], r.num))
    elapsed = time.perf_counter() - started

    print(
        f"{header(__file__, revision)}, N = {n:,} keys, "
        f"cbor2 {version_of('cbor2')}, pycrdt {version_of('pycrdt')}"
    )
    print()
    print(
        f"Each timing is the best of {repeats} repeats ({2 * repeats} for the get/put/incr loops of rows "
        "1-3 and 8a-8b; rows 2c/3c/8e are single runs), the variants of each comparison run round-robin; "
        f"get/put/incr loops do {cfg.ops:,} operations each; the merged delta has {cfg.merge_entries:,} "
        "entries. Operations on existing keys (rows 1, 2b, 2c, 3a, 3c, 8b) and their baselines are each "
        "timed right after an untimed warm-up run of the same loop, so each finds its own data in cache; "
        "operations on new keys run into fresh, empty containers built outside the timing. "
        "The cyclic gc is disabled during every timed region, for measured operations and "
        "baselines alike. Ratio = crdtkv rate / baseline rate (for sizes: crdtkv size / baseline size)."
    )
    print()
    notes += [
        "Row 4: ratio = full_state time / delta_since time; the notes set delta_since's time as a share "
        "of full_state's against the share of keys changed (changed/N).",
        "Row 5 goal is an absolute rate, so it depends on this machine; 5a's baseline is the floor "
        "of touching each pair once in Python.",
        "Rows 8a-8c reuse the crdtkv timings of rows 2a, 1a and 4 (same race, same samples); "
        "pycrdt memory is not counted by tracemalloc and is not reported.",
    ]
    print_results(rows, notes, elapsed=elapsed)
    return exit_status(rows)


if __name__ == "__main__":
    sys.exit(main())

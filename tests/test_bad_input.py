"""Fuzzing the public KvStore API: bad input raises a crdtkv error, never anything else."""

from __future__ import annotations

import hashlib
import time
from typing import Any

import cbor2
from hypothesis import given
from hypothesis import strategies as st

from crdtkv import KvStore
from crdtkv.core.wire import CHECKSUM_BYTES, SNAPSHOT_MAGIC
from crdtkv.errors import CrdtKvError

# every code point, lone surrogates included
ANY_TEXT = st.lists(
    st.one_of(st.characters(), st.sampled_from(["\ud800", "\udbff", "\udc00", "\udfff"])), max_size=8
).map("".join)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(1 << 5000), max_value=1 << 5000),
    st.floats(),
    ANY_TEXT,
    st.binary(max_size=8),
    st.sampled_from([object(), {1, 2}, frozenset(), 1j, bytearray(b"x"), range(2)]),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.tuples(inner, inner),
        st.dictionaries(st.one_of(ANY_TEXT, st.integers(), st.none()), inner, max_size=4),
    ),
    max_leaves=12,
)
DICTS = st.dictionaries(ANY_TEXT, VALUES, max_size=4) | st.dictionaries(
    st.one_of(ANY_TEXT, st.integers()), VALUES
)
KEYS = st.one_of(st.just("k"), ANY_TEXT, SCALARS)


def exercise(store: KvStore) -> None:
    """Read everything a store holds every way the API offers."""
    for key in list(store.keys()):
        store.get(key)
        store.get_with_metadata(key)
    store.digest()
    again = KvStore.from_snapshot(store.snapshot())
    assert again.digest() == store.digest()


@given(
    key=st.one_of(st.sampled_from(["k", "\u00e9"]), KEYS),
    value=st.one_of(DICTS, VALUES),
    ttl=st.one_of(st.none(), st.none(), SCALARS),
    metadata=st.one_of(st.none(), DICTS, VALUES),
)
def test_put_raises_only_crdtkv_errors(key: Any, value: Any, ttl: Any, metadata: Any) -> None:
    store = KvStore.open("t")
    try:
        store.put(key, value, ttl=ttl, metadata=metadata)
    except CrdtKvError:
        pass
    exercise(store)


@given(
    key=st.one_of(ANY_TEXT, SCALARS), by=st.one_of(SCALARS, st.integers()), ttl=st.one_of(st.none(), SCALARS)
)
def test_incr_raises_only_crdtkv_errors(key: Any, by: Any, ttl: Any) -> None:
    store = KvStore.open("t")
    for _ in range(2):
        try:
            store.incr(key, by, ttl=ttl)
        except CrdtKvError:
            pass
    try:
        store.get_with_metadata(key)
    except CrdtKvError:
        pass
    exercise(store)


def _sample_snapshot() -> bytes:
    store = KvStore.open("t", replica_id="a")
    store.put("plain", "v")
    store.put("meta", {"a": [1, 2]}, ttl=600, metadata={"owner": "ana"})
    store.incr("count", 3, ttl=600)
    store.incr("count", -1)
    store.put("gone", 1)
    store.delete("gone")
    store.doc("doc").text("t").insert(0, "hi")
    return store.snapshot()


SAMPLE = _sample_snapshot()
LEAVES = st.one_of(
    st.sampled_from([10**400, 1 << 128, -(10**400)]),
    st.integers(min_value=-(1 << 70), max_value=1 << 70),
    st.integers(min_value=10**300, max_value=10**500),
    st.sampled_from([0, -1, 1 << 48, (1 << 64) - 1, 1 << 64, time.time_ns() // 1_000_000 << 16, 10**400]),
    st.floats(),
    st.text(max_size=8),
    st.binary(max_size=8),
    st.none(),
    st.booleans(),
    st.lists(st.integers(), max_size=3),
)


def _leaf_paths(tree: Any, path: tuple[int, ...] = ()) -> list[tuple[int, ...]]:
    if isinstance(tree, list):
        found = [path] if path else []
        for index, item in enumerate(tree):
            found += _leaf_paths(item, (*path, index))
        return found
    return [path]


def _at(tree: Any, path: tuple[int, ...]) -> Any:
    for index in path:
        tree = tree[index]
    return tree


def _replace(tree: Any, path: tuple[int, ...], leaf: Any) -> Any:
    if not path:
        return leaf
    copy = list(tree)
    copy[path[0]] = _replace(copy[path[0]], path[1:], leaf)
    return copy


@given(data=st.data())
def test_snapshots_with_valid_checksums_and_any_field_changed_raise_only_crdtkv_errors(data: Any) -> None:
    body = SAMPLE[len(SNAPSHOT_MAGIC) : -CHECKSUM_BYTES]
    tree = cbor2.loads(body)
    for _ in range(data.draw(st.integers(1, 3))):
        paths = _leaf_paths(tree)
        numbers = [path for path in paths if type(_at(tree, path)) is int]  # stamps, expiries, totals
        path = data.draw(st.sampled_from(numbers) | st.sampled_from(numbers) | st.sampled_from(paths))
        tree = _replace(tree, path, data.draw(LEAVES))
    mutated = cbor2.dumps(tree)
    snapshot = SNAPSHOT_MAGIC + mutated + hashlib.blake2b(mutated, digest_size=CHECKSUM_BYTES).digest()
    try:
        store = KvStore.from_snapshot(snapshot)
    except CrdtKvError:
        return
    exercise(store)
    other = KvStore.open(store.name)
    try:
        other.merge(snapshot)
    except CrdtKvError:
        return
    exercise(other)


NASTY_INTS = [-1, 1 << 48, 1 << 64, 1 << 128, 10**400, -(10**400)]


def test_every_number_of_a_snapshot_out_of_range_raises_only_crdtkv_errors() -> None:
    """Each integer field (stamps, expiries, totals, references, clocks) set to each out-of-range value."""
    body = SAMPLE[len(SNAPSHOT_MAGIC) : -CHECKSUM_BYTES]
    tree = cbor2.loads(body)
    numbers = [path for path in _leaf_paths(tree) if type(_at(tree, path)) is int]
    assert len(numbers) > 20
    accepted = 0
    for path in numbers:
        for nasty in NASTY_INTS:
            mutated = cbor2.dumps(_replace(tree, path, nasty))
            snapshot = (
                SNAPSHOT_MAGIC + mutated + hashlib.blake2b(mutated, digest_size=CHECKSUM_BYTES).digest()
            )
            try:
                store = KvStore.from_snapshot(snapshot)
            except CrdtKvError:
                continue
            accepted += 1
            exercise(store)
    assert accepted < len(numbers) * len(NASTY_INTS)

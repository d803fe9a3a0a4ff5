"""Replica state: version vectors, change logs and deltas whose cost follows the changes."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import crdtkv
from crdtkv import KvStore
from crdtkv.core.changelog import OriginLog
from crdtkv.core.wire import Delta

from ..helpers import FakeClock, open_store


def test_delta_since_returns_exactly_the_changed_keys() -> None:
    store = open_store("a")
    for i in range(5000):
        store.put(f"k{i}", i)
    seen = dict(store._state.vv)
    for i in range(0, 5000, 50):
        store.put(f"k{i}", -i)
    store.incr("counter")
    store.delete("k1")
    delta = store._state.delta_since(seen)
    expected = {f"k{i}" for i in range(0, 5000, 50)} | {"counter", "k1"}
    assert {key for key, _ in delta.entries} == expected
    assert store._state.delta_since(dict(store._state.vv)).entries == []


@pytest.mark.skipif(
    crdtkv.BUILD == "compiled",
    reason="counts calls by replacing OriginLog.after, which compiled callers bypass (they call it "
    "directly); the CRDTKV_PURE=1 run of the suite checks it on the same source",
)
def test_delta_extraction_visits_only_rows_after_the_version_vector(monkeypatch: pytest.MonkeyPatch) -> None:
    store = open_store("a")
    for i in range(20_000):
        store.put(f"k{i}", i)
    seen = dict(store._state.vv)
    for i in range(100):
        store.put(f"k{i}", "new")
    visited = 0
    original = OriginLog.after

    def counting_after(self: OriginLog, stamp: int) -> Iterator[tuple[str, int]]:
        nonlocal visited
        for row in original(self, stamp):  # rows newest first, stopping at the first old one
            visited += 1
            yield row

    monkeypatch.setattr(OriginLog, "after", counting_after)
    delta = store._state.delta_since(seen)
    assert len(delta.entries) == 100
    assert visited == 100  # not the 20,000 rows of the store


def test_change_logs_stay_proportional_to_keys_under_overwrites() -> None:
    store = open_store("a")
    for round_ in range(50):
        for i in range(200):
            store.put(f"k{i}", round_)
        store.incr("n")
    # one row per key and origin, whatever the number of overwrites
    assert store._state.log_rows() == 201
    fresh = open_store("b")
    fresh.merge(store)
    assert fresh.digest() == store.digest()


def test_out_of_order_merges_keep_extraction_correct() -> None:
    clock = FakeClock()
    writer = KvStore.open("t", replica_id="w", clock=clock)
    stamps = []
    for i in range(10):
        writer.put(f"k{i}", i)
        stamps.append(writer._state.vv[writer.origin])
    # deliver the entries to a relay in reverse stamp order, one at a time
    relay = KvStore.open("t", replica_id="relay", clock=clock)
    for i in reversed(range(10)):
        relay._state.apply(Delta("t", {}, [(f"k{i}", writer._state.entries[f"k{i}"].copy())]))
    relay._state.vv[writer.origin] = stamps[-1]
    since = relay._state.delta_since({writer.origin: stamps[4]})
    assert sorted(key for key, _ in since.entries) == [f"k{i}" for i in range(5, 10)]


def test_version_vector_tracks_every_origin_after_merges() -> None:
    a, b, c = (open_store(name) for name in "abc")
    a.put("x", 1)
    b.incr("y")
    c.merge(a)
    c.merge(b)
    assert set(c._state.vv) == {a.origin, b.origin}
    assert c._state.delta_since(dict(c._state.vv)).entries == []
    assert {key for key, _ in c._state.delta_since({a.origin: c._state.vv[a.origin]}).entries} == {"y"}


@pytest.mark.parametrize("count", [1, 3])
def test_in_memory_replicas_get_a_fresh_incarnation_per_open(count: int) -> None:
    origins = {KvStore.open(replica_id="london").origin for _ in range(count + 1)}
    assert len(origins) == count + 1
    assert all(origin.startswith("london~") for origin in origins)


def test_a_restarted_in_memory_replica_does_not_swallow_its_new_increments() -> None:
    peer = KvStore.open(replica_id="peer")
    first = KvStore.open(replica_id="london")
    first.incr("views", 100)
    peer.merge(first)
    restarted = KvStore.open(replica_id="london")  # same id, state gone
    restarted.incr("views", 1)
    peer.merge(restarted)
    assert peer.get("views") == 101

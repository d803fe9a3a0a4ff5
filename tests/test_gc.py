"""Garbage collection of tombstones and expired values, and the grace rule."""

from __future__ import annotations

from pathlib import Path

import pytest

from crdtkv import KvStore, Limits
from crdtkv.core.messages import CLOSE_STALE
from crdtkv.core.sync import Session

from .helpers import FakeClock

GRACE = 100.0
LIMITS = Limits(gc_grace=GRACE, max_clock_skew=10**6)


def replicas(*names: str) -> tuple[FakeClock, list[KvStore]]:
    clock = FakeClock()
    return clock, [KvStore.open("t", replica_id=name, clock=clock, limits=LIMITS) for name in names]


def test_tombstones_are_kept_within_the_grace_period_and_collected_after() -> None:
    clock, (a, b) = replicas("a", "b")
    a.put("k", "v")
    a.put("keep", 1)
    b.merge(a)
    a.delete("k")
    clock.advance(GRACE / 2)
    assert a.collect_garbage() == 0
    b.merge(a)  # the delete still reaches a replica that has not seen it
    assert b.get("k") is None
    clock.advance(GRACE)
    assert a.collect_garbage() == 1
    assert "k" not in a._state.entries and a.get("keep") == 1
    assert a.collect_garbage() == 0


def test_expired_values_and_fully_deleted_counters_are_collected() -> None:
    clock, (a,) = replicas("a")
    a.put("session", "s", ttl=1)
    a.incr("views", 5)
    a.delete("views")
    a.incr("alive", 1)
    clock.advance(2)
    assert a.get("session") is None
    clock.advance(GRACE + 1)
    assert a.collect_garbage() == 2
    assert set(a._state.entries) == {"alive"}
    assert a.get("alive") == 1


def test_collected_data_is_not_resurrected_by_a_replica_that_saw_the_delete() -> None:
    clock, (a, b) = replicas("a", "b")
    a.put("k", "v")
    b.merge(a)
    a.delete("k")
    b.merge(a)
    clock.advance(GRACE + 1)
    a.collect_garbage()  # b has not collected yet and still holds the tombstone
    a.merge(b.snapshot())
    assert a.get("k") is None
    assert "k" not in a._state.entries  # a dead old entry is simply not taken back


def test_a_replica_offline_longer_than_the_grace_period_cannot_resurrect_data() -> None:
    clock, (a, b, offline) = replicas("a", "b", "offline")
    a.put("k", "old value")
    a.incr("n", 3)
    offline.merge(a)  # then goes away for longer than the grace period
    a.delete("k")
    a.delete("n")
    b.merge(a)
    clock.advance(GRACE + 1)
    assert a.collect_garbage() == 2
    assert b.collect_garbage() == 2
    before = a.digest()
    a.merge(offline)  # it comes back holding the live old values
    a.merge(offline.snapshot())
    assert a.get("k") is None and a.get("n") is None  # not resurrected
    assert a.digest() == before
    # replication refuses it: it missed deletions that no longer exist anywhere
    assert a._state.missed_collection(offline._state.vv)
    assert not a._state.missed_collection(b._state.vv)
    dialer = Session(offline._state, dialer=True, now=0.0)
    listener = Session(a._state, dialer=False, now=0.0)
    for _ in range(3):
        for data in dialer.outgoing(0.0):
            listener.receive(data, 0.0)
        for data in listener.outgoing(0.0):
            dialer.receive(data, 0.0)
    assert listener.close_code == CLOSE_STALE and "rebuild" in (listener.close_reason or "")
    assert offline.get("k") == "old value"  # untouched, until an operator rebuilds it
    rebuilt = KvStore.open("t", replica_id="offline", clock=clock, limits=LIMITS)
    rebuilt.merge(a)
    assert rebuilt.digest() == a.digest() and rebuilt.get("k") is None


def test_a_replica_that_was_away_within_the_grace_period_catches_up_normally() -> None:
    clock, (a, away) = replicas("a", "away")
    a.put("k", "v")
    away.merge(a)
    a.delete("k")
    clock.advance(GRACE / 2)
    a.collect_garbage()
    assert not a._state.missed_collection(away._state.vv)
    away.merge(a)
    assert away.get("k") is None


def test_garbage_collection_is_persisted(tmp_path: Path) -> None:
    clock = FakeClock()
    path = tmp_path / "gc.db"
    store = KvStore.open("t", path=path, replica_id="a", clock=clock, limits=LIMITS)
    for i in range(100):
        store.put(f"k{i}", i)
    for i in range(50):
        store.delete(f"k{i}")
    store.close()
    clock.advance(GRACE + 1)
    store = KvStore.open("t", path=path, replica_id="a", clock=clock, limits=LIMITS)  # collects on open
    assert len(store._state.entries) == 50
    marks = dict(store._state.collected)
    assert marks
    store.close()
    store = KvStore.open("t", path=path, replica_id="a", clock=clock, limits=LIMITS)
    assert store._state.collected == marks  # the grace rule still knows what it collected
    store.close()
    import sqlite3

    db = sqlite3.connect(path)
    assert db.execute("SELECT count(*) FROM entries").fetchone()[0] == 50
    db.close()


@pytest.mark.parametrize("grace", [0, -1])
def test_the_grace_period_must_be_positive(grace: float) -> None:
    with pytest.raises(ValueError, match="gc_grace"):
        Limits(gc_grace=grace)


def test_a_new_or_rebuilt_replica_receives_old_live_data_after_collection(tmp_path: Path) -> None:
    clock, (london,) = replicas("london")
    london.put("config:plan", "enterprise")  # old, live data
    london.put("gone", 1)
    london.delete("gone")
    clock.advance(GRACE * 2)
    assert london.collect_garbage() == 1
    # a replica rebuilt from nothing (a new file, collected on open) and one in memory
    durable = KvStore.open("t", path=tmp_path / "sydney.db", replica_id="sydney", clock=clock, limits=LIMITS)
    fresh = KvStore.open("t", replica_id="newyork", clock=clock, limits=LIMITS)
    for replica in (durable, fresh):
        replica.collect_garbage()
        assert not london._state.missed_collection(replica._state.vv)  # not refused
        replica.put("local-first", 1)  # writing before the first sync does not make it stale
        assert not london._state.missed_collection(replica._state.vv)
        replica.merge(london)
        assert replica.get("config:plan") == "enterprise"
        london.merge(replica)
        assert replica.digest() == london.digest()
    durable.close()


def test_collected_data_is_not_taken_back_from_a_stale_copy() -> None:
    clock, (a, b) = replicas("a", "b")
    a.put("k", "v")
    b.merge(a)
    stale = b.snapshot()  # b's copy before the delete
    a.delete("k")
    clock.advance(GRACE + 1)
    a.collect_garbage()
    a.merge(stale)  # every operation in it was seen by a: it stays collected
    assert a.get("k") is None and "k" not in a._state.entries


def test_a_deleted_document_is_collected_and_a_new_one_beats_uncollected_copies() -> None:
    clock, (a, b) = replicas("a", "b")
    a.doc("cart").map("items")["old"] = 1
    b.merge(a)
    a.delete("cart")
    b.merge(a)
    clock.advance(GRACE * 1.5)
    assert a.collect_garbage() == 1 and "cart" not in a._state.entries  # b has not collected yet
    a.doc("cart").map("items")["new"] = 1  # re-created where the old one is gone
    b.merge(a)
    a.merge(b)
    for store in (a, b):
        assert store.get("cart") == {"items": {"new": 1}}
        assert store.doc("cart").to_py() == {"items": {"new": 1}}
    assert a.digest() == b.digest()


def test_a_document_deleted_and_collected_everywhere_starts_empty_again() -> None:
    clock, (a, b) = replicas("a", "b")
    a.doc("cart").map("items")["old"] = 1
    a.delete("cart")
    b.merge(a)
    clock.advance(GRACE * 1.5)
    assert a.collect_garbage() == 1 and b.collect_garbage() == 1
    a.doc("cart").map("items")["a"] = 1
    b.doc("cart").map("items")["b"] = 1  # concurrently: both start the same generation
    a.merge(b)
    b.merge(a)
    assert a.get("cart") == b.get("cart") == {"items": {"a": 1, "b": 1}}
    assert a.digest() == b.digest()


def test_a_counter_used_again_after_one_replica_collected_it_counts_from_zero_everywhere() -> None:
    clock, (a, b) = replicas("a", "b")
    for _ in range(5):
        a.incr("views")
    b.merge(a)
    a.delete("views")
    b.merge(a)
    clock.advance(GRACE * 1.5)
    assert a.collect_garbage() == 1  # b has not collected yet
    a.incr("views")  # a new counter: a's totals start again from zero
    b.merge(a)
    a.merge(b)
    assert a.get("views") == b.get("views") == 1
    assert a.digest() == b.digest()

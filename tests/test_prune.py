"""Pruning retired origins: restarts leave nothing behind, and counters stay exact."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crdtkv import KvStore, Limits
from crdtkv.core.entry import RETIRED
from crdtkv.core.replica import ReplicaState
from crdtkv.core.wire import Delta, decode_delta, encode_delta

from .helpers import FakeClock

GRACE = 10.0
PRUNE = 20.0
LIMITS = Limits(gc_grace=GRACE, prune_after=PRUNE)
NAMES = ("london", "paris", "tokyo")


def sync(stores: list[KvStore]) -> None:
    """Full mesh anti-entropy: every replica merges every other, twice round."""
    for _ in range(2):
        for a in stores:
            for b in stores:
                if a is not b:
                    a.merge(b)


def origins_held(state: ReplicaState) -> set[str]:
    """Every origin named in the vector, the change logs and the counters of ``state``."""
    found = set(state.vv)
    found.update(origin for origin, log in state._logs.items() if len(log))
    for entry in state.entries.values():
        counter = entry.counter
        if counter is not None:
            found.update(counter.totals, counter.removed, counter.context)
    return found


def witness(clock: FakeClock, *stores: KvStore) -> KvStore:
    """A live replica that writes now and reaches ``stores``: they are not cut off, so they may prune."""
    live = KvStore.open("t", replica_id="witness", clock=clock, limits=LIMITS)
    live.put("beat", 1)
    for store in stores:
        store.merge(live)
    return live


def one_counter_message(a: KvStore, b: KvStore) -> int:
    """Bytes of the delta ``a`` sends ``b`` (in step with it) after one incr."""
    a.incr("hits")
    delta = a.replica.delta_since(b.replica.vv)
    assert [key for key, _ in delta.entries] == ["hits"]
    return len(encode_delta(delta))


def quiet(stores: list[KvStore], clock: FakeClock, seconds: float, step: float = GRACE / 8) -> None:
    """Let time pass with every replica collecting garbage (as a Node does) and syncing."""
    waited = 0.0
    while waited < seconds:
        clock.advance(step)
        waited += step
        for store in stores:
            store.collect_garbage()
        sync(stores)


def restarts(count: int) -> tuple[int, int, list[KvStore], int]:
    """3 replicas restart ``count`` times each, doing incrs and puts; then a quiet spell.

    Returns the one-counter message size before the restarts and after, the
    replicas, and the exact sum of every increment.
    """
    clock = FakeClock()
    stores = [KvStore.open("t", replica_id=name, clock=clock, limits=LIMITS) for name in NAMES]
    expected = 0
    for store in stores:
        store.incr("hits", 2)
        expected += 2
    sync(stores)
    before = one_counter_message(stores[0], stores[1])
    expected += 1
    sync(stores)
    for round_ in range(count):
        for i, name in enumerate(NAMES):
            old = stores[i]
            fresh = KvStore.open("t", replica_id=name, clock=clock, limits=LIMITS)  # a new incarnation
            fresh.merge(old)  # catches up from its peers (old stands in for them: same state)
            old.close()
            stores[i] = fresh
            fresh.incr("hits", 3)
            fresh.incr(f"n{i}", 1)
            fresh.put(f"{name}:{round_}", round_)
            expected += 3
            sync(stores)
        clock.advance(0.5)
    quiet(stores, clock, PRUNE + 2 * GRACE)
    after = one_counter_message(stores[0], stores[1])
    expected += 1
    sync(stores)
    return before, after, stores, expected


@pytest.mark.parametrize("count", [5, 50])
def test_restarted_incarnations_are_pruned_everywhere_and_counters_stay_exact(count: int) -> None:
    before, after, stores, expected = restarts(count)
    live = {store.origin for store in stores}
    for store in stores:
        state = store.replica
        assert origins_held(state) <= live | {RETIRED}, origins_held(state) - live
        assert len(state.vv) <= len(live) + 1
        assert store.get("hits") == expected
        assert store.get(f"n{NAMES.index(store.replica_id)}") == count
        assert store.get(f"{store.replica_id}:{count - 1}") == count - 1
        assert len(state.pruned) >= 3 * count - 3
    assert len({store.digest() for store in stores}) == 1
    # the message of one counter: the three live rows as before, plus the base (about 31 B)
    # and one vector entry standing for every retired origin (about 20 B)
    assert after - before <= 56, (before, after)


def test_the_one_counter_message_does_not_grow_with_the_number_of_restarts() -> None:
    small = restarts(5)[1]
    large = restarts(50)[1]
    assert 0 <= large - small <= 1  # only the folded sum is a larger integer (450 against 45)


def replicas(clock: FakeClock, *names: str) -> list[KvStore]:
    return [KvStore.open("t", replica_id=name, clock=clock, limits=LIMITS) for name in names]


def test_a_replica_that_pruned_and_one_that_has_not_merge_exactly_both_ways() -> None:
    for pruned_first in (True, False):
        clock = FakeClock()
        old, a, b = replicas(clock, "old", "a", "b")
        old.incr("hits", 5)
        old.incr("gone", 7)
        old.put("reg", "by old")
        a.incr("hits", 1)
        sync([old, a, b])
        b.delete("gone")  # removes old's 7 everywhere
        sync([a, b])
        a.incr("hits", 1)
        sync([a, b])
        clock.advance(PRUNE + 1)
        witness(clock, a, b)
        first, second = (a, b) if pruned_first else (b, a)
        first.collect_garbage()  # collects the deleted counter and prunes
        # every origin was silent for prune_after: old's, the other's and its own (it moves on)
        assert len(first.replica.pruned) == 3
        assert "hits" in first.replica.entries and first.get("hits") == 7
        second.incr("hits", 10)  # concurrently, on the replica that has not pruned
        for _ in range(2):
            first.merge(second)
            second.merge(first)
        for store in (a, b):
            assert store.get("hits") == 17 and store.get("gone") is None and store.get("reg") == "by old"
        second.collect_garbage()
        a.merge(b)
        b.merge(a)
        assert a.digest() == b.digest()
        for store in (a, b):
            assert "old" not in {o.split("~")[0] for o in origins_held(store.replica)}
            assert store.get("hits") == 17


def test_a_delete_after_the_fold_removes_the_folded_increments_on_both_sides() -> None:
    clock = FakeClock()
    old, a, b = replicas(clock, "old", "a", "b")
    old.incr("hits", 5)
    a.incr("hits", 1)
    sync([old, a, b])
    clock.advance(PRUNE + 1)
    witness(clock, a, b)
    a.replica.prune()
    b.delete("hits")  # b has not pruned: its delete removes old's row itself
    a.incr("hits", 2)  # concurrent with the delete: survives it
    a.merge(b)
    b.merge(a)
    assert a.get("hits") == b.get("hits") == 2
    b.replica.prune()
    a.merge(b)
    b.merge(a)
    assert a.digest() == b.digest()


def counted_by_old(*, config: bool = False) -> tuple[FakeClock, KvStore, KvStore]:
    """Replica ``old`` counted 4 hits (and set ``config``) and replica ``a`` merged them; none retired yet."""
    clock = FakeClock()
    old, a = replicas(clock, "old", "a")
    if config:
        old.put("config", "v1")
    old.incr("hits", 4)
    a.merge(old)
    return clock, old, a


def test_a_new_replica_still_receives_keys_written_by_retired_origins() -> None:
    clock, _old, a = counted_by_old(config=True)
    clock.advance(PRUNE + 1)
    live = witness(clock, a)
    a.collect_garbage()
    assert a.replica.pruned and set(a.replica.vv) <= {a.origin, live.origin, RETIRED}
    new = KvStore.open("t", replica_id="new", clock=clock, limits=LIMITS)
    new.merge(a)
    assert new.get("config") == "v1" and new.get("hits") == 4
    assert new.digest() == a.digest()


def test_stale_copies_of_a_pruned_origin_are_dropped_and_it_never_comes_back() -> None:
    clock, old, a = counted_by_old()
    stale = old.snapshot()
    clock.advance(PRUNE + 1)
    witness(clock, a)
    a.collect_garbage()
    a.merge(stale)
    a.merge(old)
    assert a.get("hits") == 4
    assert old.origin not in origins_held(a.replica)
    # a peer naming the pruned origin at another stamp broke the grace rule: refused
    last = a.replica.pruned[old.origin]
    assert not a.replica.missed_collection({old.origin: last})
    assert a.replica.missed_collection({old.origin: last - 1})
    assert a.replica.missed_collection({old.origin: last + 1})


def test_a_replica_that_heard_from_no_live_origin_does_not_prune() -> None:
    clock, old, a = counted_by_old()
    clock.advance(PRUNE + 1)
    assert a.replica.prune() == 0  # cut off, as far as it can tell: it keeps everything
    assert old.origin in a.replica.vv
    witness(clock, a)
    assert a.replica.prune() == 1 and old.origin not in a.replica.vv


def test_a_live_replica_writes_heartbeats_and_is_never_pruned() -> None:
    clock = FakeClock()
    a = KvStore.open("t", replica_id="a", clock=clock, limits=LIMITS)
    b = KvStore.open("t", replica_id="b", clock=clock, limits=LIMITS)
    a.put("k", 1)
    origin = a.origin
    quiet([a, b], clock, 3 * PRUNE)
    assert a.origin == origin  # its heartbeats kept it alive
    assert origin in b.replica.vv and not b.replica.pruned


def test_a_replica_silent_too_long_writes_as_a_new_incarnation() -> None:
    clock = FakeClock()
    a = KvStore.open("t", replica_id="a", clock=clock, limits=LIMITS)
    a.incr("hits", 1)
    origin = a.origin
    clock.advance((PRUNE - GRACE) / 2)  # no garbage collection ran, so no heartbeat
    a.incr("hits", 1)
    assert a.origin != origin and a.origin.startswith("a~")
    assert a.get("hits") == 2


def test_pruning_is_persisted(tmp_path: Path) -> None:
    clock = FakeClock()
    path = tmp_path / "a.db"
    old = KvStore.open("t", replica_id="old", clock=clock, limits=LIMITS)
    old.incr("hits", 4)
    old.put("reg", 1)
    a = KvStore.open("t", path=path, replica_id="a", clock=clock, limits=LIMITS)
    a.incr("hits", 1)
    a.merge(old)
    clock.advance(PRUNE + 1)
    witness(clock, a)
    a.collect_garbage()
    pruned = dict(a.replica.pruned)
    digest = a.digest()
    a.close()
    a = KvStore.open("t", path=path, replica_id="a", clock=clock, limits=LIMITS)
    assert a.replica.pruned == pruned and a.digest() == digest and a.get("hits") == 5
    assert old.origin not in origins_held(a.replica)
    a.merge(old)  # a stale copy after the reopen changes nothing
    assert a.get("hits") == 5 and a.digest() == digest
    a.close()


def test_a_counter_base_survives_the_wire_and_is_checked() -> None:
    clock, _old, a = counted_by_old()
    clock.advance(PRUNE + 1)
    witness(clock, a)
    a.replica.prune()
    delta = a.replica.full_state()
    back = decode_delta(encode_delta(delta), LIMITS)
    assert sorted(back.entries, key=lambda item: item[0]) == sorted(delta.entries, key=lambda item: item[0])
    assert dict(back.entries)["hits"].counter.base is not None  # type: ignore[union-attr]
    assert KvStore.from_snapshot(a.snapshot(), limits=LIMITS).get("hits") == 4


def test_limits_refuse_a_prune_period_shorter_than_twice_the_grace() -> None:
    with pytest.raises(ValueError, match="prune_after"):
        Limits(gc_grace=10, prune_after=19)
    assert Limits().prune_after == 7 * 86_400
    assert Limits(gc_grace=5 * 86_400).prune_after == 10 * 86_400


# -- property: replicas prune at different moments, merges in any order ---------

OPS = st.lists(
    st.tuples(st.integers(0, 2), st.sampled_from(["incr", "decr", "delete", "restart"]), st.integers(1, 9)),
    min_size=1,
    max_size=25,
)


@settings(max_examples=60, deadline=None)
@given(
    first=OPS,
    later=OPS,
    prune_order=st.permutations([0, 1, 2]),
    prunes=st.integers(0, 3),
    merges=st.lists(st.tuples(st.integers(0, 2), st.integers(0, 2)), max_size=12),
)
def test_no_increment_is_lost_or_counted_twice_whichever_replicas_pruned(
    first: list[tuple[int, str, int]],
    later: list[tuple[int, str, int]],
    prune_order: list[int],
    prunes: int,
    merges: list[tuple[int, int]],
) -> None:
    clock = FakeClock()
    stores = [KvStore.open("t", replica_id=name, clock=clock, limits=LIMITS) for name in NAMES]
    model = 0  # the value every replica must read once all have merged

    def run(ops: list[tuple[int, str, int]]) -> None:
        nonlocal model
        for i, op, amount in ops:
            store = stores[i]
            if op == "incr":
                store.incr("c", amount)
                model += amount
            elif op == "decr":
                store.incr("c", -amount)
                model -= amount
            elif op == "delete":
                model -= store.get("c", 0)  # removes what this replica counted (it is in sync)
                store.delete("c")
            else:
                fresh = KvStore.open("t", replica_id=NAMES[i], clock=clock, limits=LIMITS)
                fresh.merge(store)
                stores[i] = fresh
            sync(stores)
            clock.advance(0.01)

    run(first)
    clock.advance(PRUNE + 1)
    for store in stores:  # live origins write a heartbeat-like operation, as a Node's would be
        store.put("beat", 1)
    sync(stores)
    clock.advance(0.01)
    for i in prune_order[:prunes]:  # some replicas prune, the others not yet
        stores[i].replica.prune()
    # concurrent increments at each replica, merged in a random partial order
    for i, store in enumerate(stores):
        store.incr("c", i + 1)
        model += i + 1
    for a, b in merges:
        stores[a].merge(stores[b])
    sync(stores)
    for i, op, amount in later:
        if op in ("incr", "decr"):
            stores[i].incr("c", amount if op == "incr" else -amount)
            model += amount if op == "incr" else -amount
    sync(stores)
    assert {store.get("c", 0) for store in stores} == {model}
    for store in stores:
        store.replica.prune()
    sync(stores)
    assert {store.get("c", 0) for store in stores} == {model}
    assert len({store.digest() for store in stores}) == 1


def test_an_old_snapshot_without_bases_still_loads() -> None:
    clock = FakeClock()
    a = KvStore.open("t", replica_id="a", clock=clock, limits=LIMITS)
    a.incr("hits", 3)
    a.put("k", "v")
    snapshot = a.snapshot()  # no base anywhere: the counter is written as before
    delta = decode_delta(snapshot[8:-16], LIMITS)
    assert isinstance(delta, Delta) and dict(delta.entries)["hits"].counter is not None
    assert KvStore.from_snapshot(snapshot, limits=LIMITS).get("hits") == 3

"""A counter's kept value (``CounterState.net``) always equals its rows' sum.

``incr`` moves the kept value by its amount instead of summing every row
again; joins, deletes, resets, pruning folds and decoded copies count it
again. Programs of random operations on replicas that also restart, merge (as
stores and as bytes), collect garbage and prune check it after every step.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, note, settings
from hypothesis import strategies as st

from crdtkv import KvStore, Limits
from crdtkv.core.entry import TOMBSTONE, CounterState, Entry, join_into
from crdtkv.core.replica import ReplicaState
from crdtkv.errors import WrongType

from ..helpers import FakeClock

GRACE = 10.0
LIMITS = Limits(gc_grace=GRACE, prune_after=2 * GRACE)
NAMES = ("a", "b", "c")
KEYS = ("x", "y")

index = st.integers(0, 2)
key = st.sampled_from(KEYS)
amount = st.integers(-(2**70), 2**70)
operations = st.lists(
    st.one_of(
        st.tuples(st.just("incr"), index, key, amount),
        st.tuples(st.just("incr_ttl"), index, key, amount, st.floats(0.5, 30)),
        st.tuples(st.just("delete"), index, key),
        st.tuples(st.just("put"), index, key, st.integers(0, 9)),
        st.tuples(st.just("expire"), index, key, st.floats(0.5, 30)),
        st.tuples(st.just("persist"), index, key),
        st.tuples(st.just("merge"), index, index),
        st.tuples(st.just("merge_bytes"), index, index),
        st.tuples(st.just("restart"), index),
        st.tuples(st.just("quiet"), st.floats(0.1, 3 * GRACE)),
    ),
    max_size=40,
)


def check_counters(state: ReplicaState) -> int:
    """Assert every counter's kept value is its rows' sum; return how many have a base."""
    folded = 0
    for name, entry in state.entries.items():
        counter = entry.counter
        if counter is not None:
            assert counter.net == counter.tally(), (name, counter)
            folded += counter.base is not None
    return folded


def sync(stores: list[KvStore]) -> None:
    for a in stores:
        for b in stores:
            if a is not b:
                a.merge(b)


def step(stores: list[KvStore], clock: FakeClock, op: tuple[Any, ...]) -> None:
    kind = op[0]
    if kind == "quiet":  # time passes; every replica collects garbage, prunes, and syncs
        clock.advance(op[1])
        for store in stores:
            store.collect_garbage()
        sync(stores)
        return
    store = stores[op[1]]
    if kind == "incr":
        store.incr(op[2], op[3])
    elif kind == "incr_ttl":
        store.incr(op[2], op[3], ttl=op[4])
    elif kind == "delete":
        store.delete(op[2])
    elif kind == "put":
        store.put(op[2], op[3])
    elif kind == "expire":
        store.expire(op[2], op[3])
    elif kind == "persist":
        store.persist(op[2])
    elif kind == "merge":
        store.merge(stores[op[2]])
    elif kind == "merge_bytes":
        store.merge(stores[op[2]].snapshot())
    elif kind == "restart":  # a new incarnation that learns the old state from its peers
        fresh = KvStore.open("t", replica_id=NAMES[op[1]], clock=clock, limits=LIMITS)
        fresh.merge(store.snapshot())
        store.close()
        stores[op[1]] = fresh


@settings(max_examples=150, deadline=None)
@given(operations)
def test_the_kept_value_is_the_sum_of_the_rows_after_every_operation(program: list[tuple[Any, ...]]) -> None:
    clock = FakeClock()
    stores = [KvStore.open("t", replica_id=name, clock=clock, limits=LIMITS) for name in NAMES]
    for op in program:
        note(repr(op))
        try:
            step(stores, clock, op)
        except WrongType:
            pass  # incr on a register: nothing changed
        for store in stores:
            check_counters(store.replica)
    sync(stores)
    for store in stores:
        check_counters(store.replica)
    assert len({store.digest() for store in stores}) == 1


def test_the_kept_value_survives_pruning_folds() -> None:
    """Restarted incarnations retire and are folded into the base: the value stays exact and kept."""
    clock = FakeClock()
    stores = [KvStore.open("t", replica_id=name, clock=clock, limits=LIMITS) for name in NAMES]
    expected = 0
    for round_ in range(4):
        for i in range(len(stores)):
            step(stores, clock, ("restart", i))
            stores[i].incr("hits", 7)
            stores[i].incr("hits", -2)
            expected += 5
            if round_ == 1 and i == 0:
                stores[i].delete("hits")  # removes everything seen so far
                expected = 0
            sync(stores)
        step(stores, clock, ("quiet", 0.5))
    for _ in range(40):  # past prune_after, in steps short enough for heartbeats to keep all live
        step(stores, clock, ("quiet", GRACE / 8))
    for store in stores:
        assert check_counters(store.replica) == 1  # the retired incarnations were folded
        assert store.replica.pruned
        assert store.get("hits") == expected
    # a delete long after the fold removes the whole base too (entry.settle_base)
    stores[0].delete("hits")
    check_counters(stores[0].replica)
    counter = stores[0].replica.entries["hits"].counter
    assert counter is not None and counter.base is not None and counter.base.inc == 0
    stores[1].incr("hits", 4)
    sync(stores)
    for store in stores:
        check_counters(store.replica)
        assert store.get("hits") == 4


def test_a_join_counts_the_value_again() -> None:
    local = Entry(0, "", TOMBSTONE, counter=CounterState({"a": (5, 1, 10)}))  # type: ignore[dict-item]
    remote = Entry(0, "", TOMBSTONE, counter=CounterState({"a": (9, 1, 20), "b": (3, 0, 15)}))  # type: ignore[dict-item]
    assert local.counter is not None and local.counter.value() == 4
    assert join_into(local, remote)
    assert local.counter.value() == local.counter.tally() == 11
    local.counter.remove_observed()
    assert local.counter.value() == 0

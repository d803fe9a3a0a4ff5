"""Property tests of whole stores: the CRDT laws and the promised semantics.

Programs of random operations run on a few replicas with skewed clocks, with
merges in between; then states are merged in random orders. Hypothesis shrinks
any failure to a minimal program and prints it.
"""

from __future__ import annotations

import itertools
import random
from typing import Any

from hypothesis import given, note
from hypothesis import strategies as st

from crdtkv import KvStore
from crdtkv.errors import WrongType

from .helpers import TRUSTING, FakeClock, assert_logs_cover_dots, copy_of, observer_clock
from .model import CounterModel

#: a program of operations: (kind, replica index, arguments...), as drawn below
Program = list[tuple[Any, ...]]

KEYS = ["a", "b", "c"]
VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.text(max_size=8),
    st.binary(max_size=8),
    st.lists(st.integers(min_value=-5, max_value=5), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)

replica_index = st.integers(min_value=0, max_value=2)
put_op = st.tuples(st.just("put"), replica_index, st.sampled_from(KEYS), VALUES)
delete_op = st.tuples(st.just("delete"), replica_index, st.sampled_from(KEYS))
incr_op = st.tuples(st.just("incr"), replica_index, st.sampled_from(KEYS), st.integers(-(2**65), 2**65))
ttl_op = st.tuples(
    st.just("ttl"),
    replica_index,
    st.sampled_from(KEYS),
    st.integers(-5, 5),
    st.floats(min_value=0.5, max_value=20),
)
put_ttl_op = st.tuples(st.just("put_ttl"), replica_index, st.sampled_from(KEYS), VALUES, st.floats(0.5, 20))
merge_op = st.tuples(st.just("merge"), replica_index, replica_index)
tick_op = st.tuples(st.just("tick"), replica_index, st.floats(min_value=0, max_value=5))

mixed_programs = st.lists(
    st.one_of(put_op, delete_op, incr_op, merge_op, tick_op, ttl_op, put_ttl_op), max_size=40
)
counter_programs = st.lists(st.one_of(delete_op, incr_op, merge_op, tick_op), max_size=40)
clock_offsets = st.lists(st.floats(min_value=-30, max_value=30), min_size=3, max_size=3)


def run(program: Program, offsets: list[float], model: CounterModel | None = None) -> list[KvStore]:
    clocks = [FakeClock(offset) for offset in offsets]
    # the clock-skew guard is tested on its own; here clocks drift freely
    stores = [
        KvStore.open("t", replica_id=f"r{i}", clock=clock, limits=TRUSTING) for i, clock in enumerate(clocks)
    ]
    for op in program:
        kind, who = op[0], op[1]
        store = stores[who]
        if kind == "put":
            store.put(op[2], op[3])
            if model:
                model.remove(who, op[2])
        elif kind == "delete":
            store.delete(op[2])
            if model:
                model.remove(who, op[2])
        elif kind == "incr":
            try:
                store.incr(op[2], op[3])
            except WrongType:
                assert op[2] in store  # only a live register refuses incr
                continue
            if model:
                model.incr(who, op[2], op[3])
        elif kind == "merge":
            store.merge(stores[op[2]])
            if model:
                model.merge(who, op[2])
        elif kind == "tick":
            clocks[who].advance(op[2])
        elif kind == "ttl":
            try:
                store.incr(op[2], op[3], ttl=op[4])
            except WrongType:
                assert op[2] in store
        elif kind == "put_ttl":
            store.put(op[2], op[3], ttl=op[4])
    for store in stores:
        assert_logs_cover_dots(store)
    return stores


def reads(store: KvStore) -> dict[str, object]:
    return {key: store.get(key) for key in KEYS}


def align(stores: list[KvStore]) -> None:
    """Set every replica's clock to the same instant: expiry is judged by the local clock."""
    clocks = [store.replica.clock.now_ns for store in stores]
    now = max(clock() for clock in clocks if isinstance(clock, FakeClock))
    for clock in clocks:
        if isinstance(clock, FakeClock):
            clock.ns = now


def converge(stores: list[KvStore], order: list[int]) -> KvStore:
    """A fresh replica that merged every store's snapshot in ``order``."""
    target = KvStore.open("t", replica_id="sink", limits=TRUSTING, clock=observer_clock())
    for index in order:
        target.merge(stores[index].snapshot())
    assert_logs_cover_dots(target)
    return target


@given(mixed_programs, clock_offsets, st.randoms(use_true_random=False))
def test_any_merge_order_gives_the_same_state(
    program: Program, offsets: list[float], rnd: random.Random
) -> None:
    stores = run(program, offsets)
    orders = [list(p) for p in itertools.permutations(range(3))]
    sinks = [converge(stores, order) for order in orders]
    # duplicated and repeated deliveries change nothing
    noisy = [rnd.choice(range(3)) for _ in range(6)] + [0, 1, 2]
    rnd.shuffle(noisy)
    sinks.append(converge(stores, [*noisy, 0, 1, 2]))
    digests = {sink.digest() for sink in sinks}
    assert len(digests) == 1
    expected = reads(sinks[0])
    for sink in sinks[1:]:
        assert reads(sink) == expected


@given(mixed_programs, clock_offsets)
def test_replicas_that_merged_everything_agree(program: Program, offsets: list[float]) -> None:
    stores = run(program, offsets)
    for dst, src in itertools.product(range(3), repeat=2):
        stores[dst].merge(stores[src])
    for dst, src in itertools.product(range(3), repeat=2):
        stores[dst].merge(stores[src])
    assert len({s.digest() for s in stores}) == 1
    align(stores)
    assert reads(stores[0]) == reads(stores[1]) == reads(stores[2])


@given(mixed_programs, mixed_programs, mixed_programs, clock_offsets)
def test_merge_is_commutative_associative_idempotent(
    p1: Program, p2: Program, p3: Program, offsets: list[float]
) -> None:
    a, b, c = (run(p, offsets)[0] for p in (p1, p2, p3))
    # idempotent
    a1 = copy_of(a)
    a1.merge(a)
    assert a1.digest() == a.digest()
    # commutative
    ab = copy_of(a)
    ab.merge(b)
    ba = copy_of(b)
    ba.merge(a)
    assert ab.digest() == ba.digest()
    assert reads(ab) == reads(ba)
    # associative
    ab_c = copy_of(ab)
    ab_c.merge(c)
    bc = copy_of(b)
    bc.merge(c)
    a_bc = copy_of(a)
    a_bc.merge(bc)
    assert ab_c.digest() == a_bc.digest()


@given(counter_programs, clock_offsets)
def test_counter_value_is_the_sum_of_all_unremoved_increments(program: Program, offsets: list[float]) -> None:
    model = CounterModel(3)
    stores = run(program, offsets, model)
    note(f"model events={model.events} removed={model.removed}")
    sink = converge(stores, [2, 0, 1])
    for key in KEYS:
        assert sink.get(key) == model.value(key)


@given(
    st.lists(st.tuples(replica_index, st.sampled_from(KEYS), st.integers(-1000, 1000)), max_size=60),
    st.lists(st.tuples(replica_index, replica_index), max_size=20),
    st.randoms(use_true_random=False),
)
def test_increments_are_never_lost_under_any_delivery(
    incrs: list[tuple[int, str, int]], merges: list[tuple[int, int]], rnd: random.Random
) -> None:
    stores = [KvStore.open("t", replica_id=f"r{i}") for i in range(3)]
    expected: dict[str, int] = {}
    merges = list(merges)
    for who, key, by in incrs:
        stores[who].incr(key, by)
        expected[key] = expected.get(key, 0) + by
        if merges and rnd.random() < 0.3:
            dst, src = merges.pop()
            stores[dst].merge(stores[src])
    sink = converge(stores, [1, 2, 0])
    for key, total in expected.items():
        assert sink.get(key) == total


def test_causally_later_write_wins_even_with_a_slow_clock() -> None:
    fast, slow = FakeClock(+25), FakeClock(-25)
    a = KvStore.open("t", replica_id="fast", clock=fast)
    b = KvStore.open("t", replica_id="slow", clock=slow)
    a.put("k", "first")
    b.merge(a)
    b.put("k", "second")  # observed "first": must win although its clock is 50 s behind
    for order in ([a, b], [b, a]):
        sink = KvStore.open("t", replica_id="sink")
        for store in order:
            sink.merge(store.snapshot())
        assert sink.get("k") == "second"
    a.merge(b)
    assert a.get("k") == "second"


def test_concurrent_writes_pick_the_same_winner_everywhere() -> None:
    clock = FakeClock()
    stores = [KvStore.open("t", replica_id=f"r{i}", clock=clock) for i in range(4)]
    for i, store in enumerate(stores):
        store.put("k", f"v{i}")  # same wall clock: the tie-break decides
    random.Random(7).shuffle(stores)
    for store in stores:
        for other in stores:
            store.merge(other)
    assert len({store.get("k") for store in stores}) == 1
    assert len({store.digest() for store in stores}) == 1


def test_concurrent_counter_deletes_do_not_double_subtract() -> None:
    a, b, c = (KvStore.open("t", replica_id=r) for r in "abc")
    a.incr("n", 10)
    b.merge(a)
    c.merge(a)
    b.delete("n")
    c.delete("n")  # both deletes saw the same 10
    a.incr("n", 3)  # concurrent with both deletes
    for dst in (a, b, c):
        for src in (a, b, c):
            dst.merge(src)
    assert a.get("n") == b.get("n") == c.get("n") == 3


def test_increments_concurrent_with_a_delete_survive() -> None:
    a, b = KvStore.open("t", replica_id="a"), KvStore.open("t", replica_id="b")
    a.incr("n", 5)
    b.merge(a)
    b.incr("n", 2)  # a has not seen this one
    a.delete("n")
    assert a.get("n") is None
    a.merge(b)
    b.merge(a)
    assert a.get("n") == b.get("n") == 2


def test_a_delete_of_everything_seen_leaves_the_counter_missing() -> None:
    a, b = KvStore.open("t", replica_id="a"), KvStore.open("t", replica_id="b")
    a.incr("n", 5)
    b.merge(a)
    b.delete("n")
    a.merge(b)
    assert a.get("n") is None and b.get("n") is None
    assert a.incr("n") == 1  # a fresh counter
    b.merge(a)
    assert b.get("n") == 1


@given(mixed_programs, clock_offsets, st.randoms(use_true_random=False))
def test_any_permutation_of_deltas_gives_the_same_state(
    program: Program, offsets: list[float], rnd: random.Random
) -> None:
    stores = run(program, offsets)
    deltas = []
    for store in stores:
        # deltas against a range of version vectors: empty, partial, another replica's
        deltas.append(store._state.delta_since({}))
        partial = {origin: stamp - 1 for origin, stamp in store._state.vv.items()}
        deltas.append(store._state.delta_since(partial))
        deltas.append(store._state.delta_since(dict(rnd.choice(stores)._state.vv)))
    results = set()
    for _ in range(3):
        sink = KvStore.open("t", replica_id="sink", limits=TRUSTING, clock=observer_clock())
        order = deltas + [rnd.choice(deltas) for _ in range(4)]
        rnd.shuffle(order)
        for delta in order:
            sink._state.apply(delta)
        assert_logs_cover_dots(sink)
        results.add(sink.digest())
    assert len(results) == 1
    assert results == {converge(stores, [0, 1, 2]).digest()}

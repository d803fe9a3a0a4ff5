"""Edge features: metadata, paged listing with cursors."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from crdtkv import KvStore, Limits
from crdtkv.errors import InvalidArgument, InvalidArgumentType, ValueTooLarge

from .helpers import FakeClock


def test_metadata_travels_with_the_write() -> None:
    clock = FakeClock()
    a = KvStore.open("t", replica_id="london", clock=clock)
    b = KvStore.open("t", replica_id="sydney", clock=clock)
    a.put("session:1", {"user": "ana"}, ttl=30, metadata={"owner": "ana", "tags": ["x"]})
    b.merge(a)
    record = b.get_with_metadata("session:1")
    assert record is not None
    assert record.value == {"user": "ana"}
    assert record.metadata == {"owner": "ana", "tags": ["x"]}
    assert record.expires_at == pytest.approx(clock() / 1e9 + 30, abs=0.002)
    assert record.replica == "london" and record.origin == a.origin
    assert record.kind == "register"
    assert record.written_at == pytest.approx(clock() / 1e9, abs=0.002)
    b.put("session:1", "replaced")  # a new write carries its own (no) metadata
    replaced = b.get_with_metadata("session:1")
    assert replaced is not None and replaced.metadata is None and replaced.replica == "sydney"
    assert replaced.stamp > record.stamp


def test_metadata_of_counters_and_missing_keys() -> None:
    a = KvStore.open("t", replica_id="london")
    assert a.get_with_metadata("nope") is None
    a.incr("views", 3, ttl=60)
    record = a.get_with_metadata("views")
    assert record is not None and record.kind == "counter" and record.value == 3
    assert record.metadata is None and record.expires_at is not None and record.replica == "london"


def test_metadata_is_checked() -> None:
    a = KvStore.open("t", limits=Limits(max_metadata_bytes=32))
    with pytest.raises(InvalidArgumentType, match="dict"):
        a.put("k", 1, metadata=["not", "a", "dict"])
    with pytest.raises(ValueTooLarge, match="max_metadata_bytes"):
        a.put("k", 1, metadata={"big": "x" * 40})
    assert a.get("k") is None


def list_all(store: KvStore, prefix: str = "", limit: int = 3) -> list[str]:
    keys, cursor = [], None
    while True:
        page = store.list(prefix, limit=limit, cursor=cursor)
        keys += page.keys
        cursor = page.cursor
        if cursor is None:
            return keys


def test_paged_listing_walks_live_keys_in_order() -> None:
    a = KvStore.open("t")
    for i in range(10):
        a.put(f"user:{i}", i)
    a.put("other", 1)
    a.delete("user:3")
    a.incr("user:99")
    assert list_all(a, "user:") == [f"user:{i}" for i in (0, 1, 2, 4, 5, 6, 7, 8, 9)] + ["user:99"]
    page = a.list("user:", limit=20)
    assert page.cursor is None and len(page.keys) == 10
    assert a.list("zzz").keys == [] and a.list("zzz").cursor is None
    exact = a.list("user:", limit=10)
    assert exact.cursor is None  # no empty last page
    assert list(a.keys("user:")) == list_all(a, "user:")


def test_bad_cursors_and_limits_are_refused() -> None:
    a = KvStore.open("t")
    with pytest.raises(InvalidArgument, match="cursor"):
        a.list(cursor="garbage")
    with pytest.raises(InvalidArgument, match="cursor"):
        a.list(cursor="c1.!!!")
    for limit in (0, -1, 10**6, 1.5):
        with pytest.raises(InvalidArgument, match="limit"):
            a.list(limit=limit)  # type: ignore[arg-type]


@given(
    st.sets(st.integers(0, 200), max_size=60),
    st.lists(st.tuples(st.booleans(), st.integers(0, 200)), max_size=80),
    st.integers(1, 7),
    st.randoms(use_true_random=False),
)
def test_cursors_survive_concurrent_inserts_and_deletes(
    initial: set[int], churn: list[tuple[bool, int]], limit: int, rnd: random.Random
) -> None:
    a = KvStore.open("t")
    name: Callable[[int], str] = lambda i: f"k:{i:04d}"  # noqa: E731
    for i in initial:
        a.put(name(i), i)
    touched = set()
    seen: list[str] = []
    cursor = None
    churn = list(churn)
    while True:
        page = a.list("k:", limit=limit, cursor=cursor)
        seen += page.keys
        for _ in range(rnd.randint(0, 4)):
            if not churn:
                break
            insert, i = churn.pop()
            touched.add(name(i))
            if insert:
                a.put(name(i), i)
            else:
                a.delete(name(i))
        cursor = page.cursor
        if cursor is None:
            break
    assert seen == sorted(seen) and len(seen) == len(set(seen))  # in order, never repeated
    stable = {name(i) for i in initial} - touched  # present for the whole listing
    assert stable <= set(seen)


def test_reserved_keys_are_not_listed() -> None:
    a = KvStore.open("t")
    a.put("\x00internal", 1)
    a.put("visible", 1)
    assert list(a.keys()) == ["visible"] and a.list().keys == ["visible"]
    assert a.get("\x00internal") == 1


def test_the_listing_index_follows_merges_and_garbage_collection() -> None:
    clock = FakeClock()
    limits = Limits(gc_grace=10)
    a = KvStore.open("t", replica_id="a", clock=clock, limits=limits)
    b = KvStore.open("t", replica_id="b", clock=clock, limits=limits)
    a.put("x", 1)
    assert a.list().keys == ["x"]  # builds the index
    b.put("y", 2)
    a.merge(b)
    a.delete("x")
    assert a.list().keys == ["y"]
    clock.advance(11)
    a.collect_garbage()
    assert a.list().keys == ["y"]
    rnd = random.Random(1)
    for i in rnd.sample(range(10_000), 500):
        a.put(f"n{i:05d}", i)
    expected = sorted(key for key in a._state.entries if key.startswith("n"))
    assert len(expected) == 500
    assert a.list("n", limit=10_000).keys == expected

"""The per-operation work of the hot paths: what each operation reads, builds and keeps."""

from __future__ import annotations

import pytest

from crdtkv import KvStore
from crdtkv.core.entry import TOMBSTONE, CounterState, Entry, max_stamp
from crdtkv.core.hlc import HybridClock
from crdtkv.core.limits import DEFAULT_LIMITS
from crdtkv.core.replica import ReplicaState
from crdtkv.core.wire import Delta, decode_delta, encode_delta
from crdtkv.errors import ClockSkewError

from ..helpers import FakeClock


class CountingClock(FakeClock):
    """A fake clock that counts its readings."""

    def __init__(self) -> None:
        super().__init__()
        self.reads = 0

    def __call__(self) -> int:
        self.reads += 1
        return self.ns


def readings(clock: CountingClock, action: object) -> int:
    assert callable(action)
    before = clock.reads
    action()
    return clock.reads - before


def test_put_incr_and_rate_limit_read_the_clock_once() -> None:
    clock = CountingClock()
    store = KvStore.open("t", clock=clock)
    assert readings(clock, lambda: store.put("k", "v")) == 1  # a new key
    assert readings(clock, lambda: store.put("k", "w")) == 1  # an overwrite
    assert readings(clock, lambda: store.incr("n")) == 1  # a new counter
    assert readings(clock, lambda: store.incr("n", 2)) == 1
    store.rate_limit("api", 10, 60.0)  # the first decision of a window also drops expired windows
    assert readings(clock, lambda: store.rate_limit("api", 10, 60.0)) == 1
    assert store.get("k") == "w" and store.get("n") == 3


def test_a_hot_rate_limit_key_keeps_one_row_in_the_collectors_schedule() -> None:
    clock = FakeClock()
    store = KvStore.open("t", clock=clock)
    clock.ns -= clock.ns % 60_000_000_000  # start at a window boundary
    for _ in range(500):
        assert store.rate_limit("api", 1000, 60.0).allowed
    assert store.replica.gc_rows() == 1
    clock.advance(180)  # two windows later, the window counter is dropped
    assert store.rate_limit("api", 1000, 60.0).count == 1
    assert store.replica.gc_rows() == 1


def test_a_refused_request_writes_nothing() -> None:
    store = KvStore.open("t", clock=FakeClock())
    assert store.rate_limit("api", 2, 60.0, cost=2).allowed
    stamp = store.replica.clock.last
    digest = store.digest()
    refused = store.rate_limit("api", 2, 60.0)
    assert not refused.allowed and refused.count == 2 and refused.remaining == 0
    assert store.replica.clock.last == stamp and store.digest() == digest


def replica(name: str = "r") -> ReplicaState:
    return ReplicaState("t", name, HybridClock(FakeClock(), DEFAULT_LIMITS.max_clock_skew))


def test_apply_keeps_a_decoded_deltas_registers_and_copies_anything_shared() -> None:
    source = replica("source")
    for i in range(3):
        source.write(f"k{i}", f"v{i}")
    data = encode_delta(source.full_state())
    delta = decode_delta(data, DEFAULT_LIMITS)
    assert delta.owned
    first, second = replica("first"), replica("second")
    assert first.apply(delta) == 3
    assert not delta.owned  # handed over once
    assert all(first.entries[key] is entry for key, entry in delta.entries)  # kept, not copied
    assert second.apply(delta) == 3
    assert all(second.entries[key] is not entry for key, entry in delta.entries)
    first.write("k0", "changed")
    assert second.entries["k0"].value == "v0"  # nothing shared between replicas
    built = Delta("t", dict(source.vv), [("k9", Entry(source.clock.tick(), "source", "x"))])
    third = replica("third")
    third.apply(built)
    assert third.entries["k9"] is not built.entries[0][1]  # not the decoder's: copied


def test_the_decoder_finds_the_largest_stamp_wherever_it_is() -> None:
    source = replica("source")
    source.write("plain", "v")
    clock = source.clock
    ahead = (clock.now_ms() + 3_600_000) << 16  # an hour ahead: beyond max_clock_skew
    counter = CounterState({"source": (1, 0, ahead)})  # type: ignore[dict-item]
    entries = [*source.full_state().entries, ("hits", Entry(0, "", TOMBSTONE, counter=counter))]
    delta = decode_delta(encode_delta(Delta("t", {"source": clock.last}, entries)), DEFAULT_LIMITS)
    assert delta.top == max(max_stamp(entry) for _, entry in delta.entries) == ahead
    target = replica("target")
    with pytest.raises(ClockSkewError):
        target.apply(delta)
    assert target.entries == {}


def test_merging_a_store_keeps_its_delta_copies_and_shares_nothing() -> None:
    clock = FakeClock()
    a, b = KvStore.open("t", clock=clock), KvStore.open("t", clock=clock)
    b.put("k", "old")
    assert a.merge(b) == 1
    assert a.replica.entries["k"] is not b.replica.entries["k"]
    b.put("k", "new")
    a.put("mine", 1)
    assert a.get("k") == "old" and b.get("mine") is None

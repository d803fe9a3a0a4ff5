"""The sans-I/O replication protocol, driven by a deterministic simulator."""

from __future__ import annotations

import random

import cbor2
import pytest

from crdtkv import KvStore
from crdtkv.core.messages import (
    CLOSE_AUTH,
    CLOSE_CLOCK,
    CLOSE_DUPLICATE,
    CLOSE_LOST,
    CLOSE_PROTOCOL,
    CLOSE_SELF,
    CLOSE_STORE,
    CLOSE_TIMEOUT,
    Challenge,
    Close,
    Hello,
    Message,
    decode_message,
)
from crdtkv.core.sync import Applied, Closed, EntryTooLarge, Event, Opened, Session

from ..helpers import FakeClock
from ..sim import SETTINGS, Faults, Simulation


def pair(
    secret_a: bytes | None = b"s3cret",
    secret_b: bytes | None = b"s3cret",
    store_b: str = "sim",
    clock_b: FakeClock | None = None,
) -> tuple[KvStore, KvStore, Session, Session]:
    a = KvStore.open("sim", replica_id="a", clock=FakeClock())
    b = KvStore.open(store_b, replica_id="b", clock=clock_b or FakeClock())
    dialer = Session(a._state, dialer=True, now=0.0, secret=secret_a, settings=SETTINGS)
    listener = Session(b._state, dialer=False, now=0.0, secret=secret_b, settings=SETTINGS)
    return a, b, dialer, listener


def shuttle(
    dialer: Session, listener: Session, now: float = 0.0, rounds: int = 20
) -> tuple[list[Event], list[Message]]:
    """Carry messages both ways until both sides are quiet; return all events."""
    events: list[Event] = []
    sent_by_listener: list[Message] = []
    for _ in range(rounds):
        moved = False
        for data in dialer.outgoing(now):
            events += listener.receive(data, now)
            moved = True
        for data in listener.outgoing(now):
            sent_by_listener.append(decode_message(data, listener.limits))
            events += dialer.receive(data, now)
            moved = True
        if not moved:
            break
    return events, sent_by_listener


def test_handshake_and_catch_up_both_ways() -> None:
    a, b, dialer, listener = pair()
    a.put("x", 1)
    b.incr("n", 2)
    events, _ = shuttle(dialer, listener, now=0.1)
    assert any(isinstance(e, Opened) for e in events)
    assert dialer.replicating and listener.replicating
    assert a.digest() == b.digest()
    assert b.get("x") == 1 and a.get("n") == 2


@pytest.mark.parametrize(("secret_a", "secret_b"), [(b"wrong", b"s3cret"), (None, b"s3cret")])
def test_a_dialer_without_the_secret_learns_nothing(secret_a: bytes | None, secret_b: bytes) -> None:
    a, b, dialer, listener = pair(secret_a, secret_b)
    b.put("secret-data", "x")
    _events, from_listener = shuttle(dialer, listener, now=0.1)
    assert listener.closed and listener.close_code == CLOSE_AUTH
    # the listener sent its challenge and a bare close, nothing about itself
    assert [type(m) for m in from_listener] == [Challenge, Close]
    assert from_listener[1].reason == "authentication failed"  # type: ignore[union-attr]
    assert a.get("secret-data") is None


def test_a_listener_without_the_secret_is_refused_by_the_dialer() -> None:
    a, b, dialer, listener = pair(b"s3cret", None)
    a.put("mine", 1)
    shuttle(dialer, listener, now=0.1)
    assert dialer.closed and dialer.close_code == CLOSE_AUTH
    assert b.get("mine") is None


def test_a_replayed_hello_fails_on_a_new_connection() -> None:
    _a, b, dialer, listener = pair()
    recorded = []
    for data in listener.outgoing(0.0):
        dialer.receive(data, 0.0)
    recorded = dialer.outgoing(0.0)  # the dialer's signed hello
    assert isinstance(decode_message(recorded[0], dialer.limits), Hello)
    fresh = Session(b._state, dialer=False, now=0.0, secret=b"s3cret", settings=SETTINGS)
    fresh.outgoing(0.0)
    events = fresh.receive(recorded[0], 0.0)
    assert isinstance(events[0], Closed) and events[0].code == CLOSE_AUTH


def test_store_name_mismatch_closes_after_authentication() -> None:
    _, _, dialer, listener = pair(store_b="other")
    shuttle(dialer, listener, now=0.1)
    assert listener.close_code == CLOSE_STORE


def test_a_peer_with_a_clock_far_ahead_is_refused() -> None:
    a, b, dialer, listener = pair(clock_b=FakeClock(+3600))
    b.put("future", 1)
    shuttle(dialer, listener, now=0.1)
    assert CLOSE_CLOCK in (dialer.close_code, listener.close_code)
    assert a.get("future") is None


@pytest.mark.parametrize(
    "garbage",
    [
        b"\x00\x01\x02",
        cbor2.dumps([99, 1]),
        cbor2.dumps([3, 1, 0, True, [], b"not a delta"]),
        cbor2.dumps([3, 1, 0, "yes", [], b""]),
        cbor2.dumps([4, [["o", -5]]]),
        b"\x81" * 5000,
        cbor2.dumps([2, 1, "sim", "x", "peer", b"", b"", []]),  # a second hello, out of turn
    ],
)
def test_garbage_from_an_open_peer_closes_the_link_and_changes_nothing(garbage: bytes) -> None:
    a, b, dialer, listener = pair()
    a.put("k", "v")
    shuttle(dialer, listener, now=0.1)
    before = b.digest()
    events = listener.receive(garbage, 0.2)
    assert isinstance(events[-1], Closed) and events[-1].code == CLOSE_PROTOCOL
    assert b.digest() == before
    assert decode_message(listener.outgoing(2.0)[-1], listener.limits) == Close(
        CLOSE_PROTOCOL, events[-1].reason
    )


def test_random_bytes_never_raise_out_of_a_session() -> None:
    rnd = random.Random(5)
    for _ in range(500):
        _a, b, dialer, listener = pair()
        shuttle(dialer, listener, now=0.1)
        before = b.digest()
        data = rnd.randbytes(rnd.randrange(0, 200))
        listener.receive(data, 0.2)  # must not raise
        assert b.digest() == before


def test_large_catch_up_is_split_into_parts_within_the_message_limit() -> None:
    a, b, dialer, listener = pair()
    for i in range(3000):
        a.put(f"key:{i:05d}", "x" * 40)
    events, _ = shuttle(dialer, listener, now=0.1, rounds=500)
    parts = [e for e in events if isinstance(e, Applied)]
    assert len(parts) > 1
    assert b.digest() == a.digest()


# -- the simulator -------------------------------------------------------------------


def unique_writes_and_counters(
    sim: Simulation, rnd: random.Random, ops: int, written: dict[str, int], totals: dict[str, int]
) -> None:
    for _ in range(ops):
        who = rnd.randrange(len(sim.stores))
        store = sim.stores[who]
        if rnd.random() < 0.5:
            key = f"w:{who}:{len(written)}"
            store.put(key, len(written))
            written[key] = len(written)
        else:
            key = f"c:{rnd.randrange(5)}"
            by = rnd.randint(-3, 10)
            store.incr(key, by)
            totals[key] = totals.get(key, 0) + by
        sim.step()


def check_outcome(sim: Simulation, written: dict[str, int], totals: dict[str, int]) -> None:
    for store in sim.stores:
        for key, value in written.items():
            assert store.get(key) == value
        for key, total in totals.items():
            assert store.get(key) == total


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_convergence_through_drops_duplicates_reordering_partition_and_skew(seed: int) -> None:
    rnd = random.Random(seed)
    sim = Simulation(
        4,
        seed,
        faults=Faults(drop=0.05, duplicate=0.05, reorder=0.1, delay=(0.001, 0.02)),
        skews=[rnd.uniform(-20, 20) for _ in range(4)],
    )
    written: dict[str, int] = {}
    totals: dict[str, int] = {}
    unique_writes_and_counters(sim, rnd, 300, written, totals)
    sim.cut = {0, 1}  # partition: {0, 1} | {2, 3}, writes on both sides
    unique_writes_and_counters(sim, rnd, 300, written, totals)
    sim.run(0.5)
    assert not sim.converged()
    sim.cut = set()
    sim.settle()
    check_outcome(sim, written, totals)


@pytest.mark.parametrize("topology", ["chain", "star"])
def test_deltas_are_forwarded_across_any_connected_topology(topology: str) -> None:
    sim = Simulation(5, 9, topology=topology, faults=Faults(drop=0.02))
    rnd = random.Random(9)
    written: dict[str, int] = {}
    totals: dict[str, int] = {}
    unique_writes_and_counters(sim, rnd, 400, written, totals)
    sim.settle()
    check_outcome(sim, written, totals)


def test_catch_up_after_a_partition_sends_only_what_changed() -> None:
    sim = Simulation(2, 4, secret=b"k")
    big = sim.stores[0]
    for i in range(5000):
        big.put(f"k{i}", i)
    sim.settle()
    sent_before = sum(
        link.dialer.stats["entries_sent"] + link.listener.stats["entries_sent"]  # type: ignore[union-attr, misc]
        for link in sim.links
        if link.dialer
    )
    sim.cut = {1}
    sim.run(3.0)  # long enough for keepalive to close the link
    for i in range(0, 5000, 50):
        big.put(f"k{i}", "changed")
    sim.cut = set()
    sim.settle()
    link = sim.links[0]
    assert link.opened >= 2
    sent_after = link.dialer.stats["entries_sent"] + link.listener.stats["entries_sent"]  # type: ignore[union-attr]
    assert sent_before >= 5000
    assert sent_after == 100  # the new session carried exactly the 100 changed keys


# -- every close is an event; every message fits ------------------------------------------


def test_a_handshake_timeout_is_a_closed_event() -> None:
    _a, _b, _dialer, listener = pair()
    listener.outgoing(0.0)  # the challenge, never delivered
    assert listener.events() == []
    listener.outgoing(SETTINGS.handshake_timeout + 0.01)
    events = listener.events()
    assert len(events) == 1 and isinstance(events[0], Closed)
    assert events[0].code == CLOSE_TIMEOUT and "handshake timed out" in events[0].reason
    assert not events[0].by_peer
    listener.outgoing(SETTINGS.handshake_timeout + 1.0)
    assert listener.events() == []  # reported once


def test_a_keepalive_timeout_is_a_closed_event() -> None:
    _a, _b, dialer, listener = pair()
    shuttle(dialer, listener, now=0.0)
    assert dialer.replicating
    dialer.events()
    dialer.outgoing(SETTINGS.keepalive_timeout + 0.01)
    events = dialer.events()
    assert [(type(e), e.code) for e in events] == [(Closed, CLOSE_TIMEOUT)]  # type: ignore[union-attr]
    assert "keepalive timed out" in events[0].reason  # type: ignore[union-attr]


def test_close_and_connection_lost_are_each_one_closed_event() -> None:
    _a, _b, dialer, listener = pair()
    shuttle(dialer, listener, now=0.0)
    listener.close(CLOSE_DUPLICATE, "duplicate link")
    assert listener.events() == [Closed(CLOSE_DUPLICATE, "duplicate link", by_peer=False)]
    assert listener.connection_lost("gone") == []  # already closed: nothing more
    lost = dialer.connection_lost("connection reset")
    assert lost == [Closed(CLOSE_LOST, "connection reset", by_peer=True)]
    assert dialer.closed and dialer.connection_lost("again") == [] and dialer.events() == []


def test_dialing_itself_closes_with_its_own_code() -> None:
    store = KvStore.open("sim", replica_id="me", clock=FakeClock())
    dialer = Session(store._state, dialer=True, now=0.0, secret=b"s", settings=SETTINGS)
    listener = Session(store._state, dialer=False, now=0.0, secret=b"s", settings=SETTINGS)
    _events, from_listener = shuttle(dialer, listener)
    assert listener.close_code == CLOSE_SELF and dialer.close_code == CLOSE_SELF
    assert Close(CLOSE_SELF, "connected to itself") in from_listener


def test_unsent_bytes_counts_what_waits_in_the_outbox() -> None:
    _a, _b, dialer, listener = pair()
    assert listener.unsent_bytes == len(listener.outgoing(0.0)[0]) and listener.unsent_bytes == 0
    shuttle(dialer, listener, now=0.0)
    listener.outgoing(0.0)
    listener.respond(1, True, "x" * 1000)
    listener.respond(2, True, "y" * 1000)
    queued = listener.unsent_bytes
    assert 2000 < queued < 2100
    assert sum(len(data) for data in listener.outgoing(0.0)) == queued
    assert listener.unsent_bytes == 0


def small_pair(max_message_bytes: int) -> tuple[KvStore, KvStore, Session, Session]:
    a = KvStore.open("sim", replica_id="a", clock=FakeClock())
    b = KvStore.open("sim", replica_id="b", clock=FakeClock())
    dialer = Session(a._state, dialer=True, now=0.0, settings=SETTINGS, max_message_bytes=max_message_bytes)
    listener = Session(b._state, dialer=False, now=0.0, settings=SETTINGS)
    return a, b, dialer, listener


def test_an_entry_too_large_for_one_message_is_left_out_and_reported_not_sent() -> None:
    limit = 64 * 1024
    a, b, dialer, listener = small_pair(limit)
    a.put("small-1", 1)
    a.put("huge", b"x" * (limit + 1))
    a.put("small-2", 2)
    sizes = []
    for _ in range(20):
        out = dialer.outgoing(0.1)
        sizes += [len(data) for data in out]
        for data in out:
            listener.receive(data, 0.1)
        for data in listener.outgoing(0.1):
            dialer.receive(data, 0.1)
    assert sizes and max(sizes) <= limit  # never a message the link would refuse
    events = dialer.events()
    assert [(type(e), e.key) for e in events if isinstance(e, EntryTooLarge)] == [(EntryTooLarge, "huge")]
    assert events[0].size > events[0].limit  # type: ignore[union-attr]
    assert dialer.stats["entries_too_large"] == 1
    assert not dialer.closed and not listener.closed  # the link stays usable
    assert b.get("small-1") == 1 and b.get("small-2") == 2 and b.get("huge") is None
    a.put("later", 3)  # later changes still get through
    dialer.local_changed(0.2)
    shuttle(dialer, listener, now=0.3)
    assert b.get("later") == 3


def test_a_reply_too_large_for_one_message_becomes_a_too_large_error() -> None:
    _a, _b, dialer, listener = pair()
    shuttle(dialer, listener, now=0.0)
    listener.outgoing(0.0)
    listener.respond(7, True, b"x" * (listener.max_message_bytes + 1))
    [data] = listener.outgoing(0.0)
    assert len(data) <= listener.max_message_bytes
    reply = decode_message(data, listener.limits)
    assert reply.id == 7 and reply.ok is False and reply.value[0] == "TooLarge"  # type: ignore[union-attr]

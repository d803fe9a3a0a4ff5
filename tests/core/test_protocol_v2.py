"""Protocol versions 2 and 3: per-link state, acks by batch number, resends by need, forwarding holds."""

from __future__ import annotations

import random

import pytest

from crdtkv import KvStore
from crdtkv.core.entry import dots
from crdtkv.core.messages import (
    CLOSE_PROTOCOL,
    CLOSE_VERSION,
    PROTOCOL_VERSION,
    REGISTRY,
    ROLE_PEER,
    Ack,
    Deltas,
    Hello,
    decode_message,
    encode_message,
)
from crdtkv.core.sync import TRANSITIONS, Closed, Phase, Session, SyncSettings
from crdtkv.core.wire import encode_delta

from ..helpers import FakeClock
from ..sim import SETTINGS, Faults, Link, Simulation
from .test_sync import check_outcome, pair, shuttle, unique_writes_and_counters


def carry(dialer: Session, listener: Session, now: float) -> list[bytes]:
    """Carry messages both ways at ``now``, then once acks are due, until quiet; return them all."""
    carried: list[bytes] = []
    for at in (now, now + 0.01):  # acks gather for a quarter of forward_delay (5 ms here)
        for _ in range(50):
            out = [(data, listener) for data in dialer.outgoing(at)]
            out += [(data, dialer) for data in listener.outgoing(at)]
            if not out:
                break
            for data, to in out:
                carried.append(data)
                to.receive(data, at)
    return carried


def stores_with_origins(count: int) -> tuple[KvStore, KvStore]:
    """Two replicas in step that have both seen ``count`` other origins write."""
    a = KvStore.open("sim", replica_id="a", clock=FakeClock())
    b = KvStore.open("sim", replica_id="b", clock=FakeClock())
    for i in range(count):
        other = KvStore.open("sim", replica_id=f"pop{i:04d}", clock=FakeClock())
        other.put(f"x{i}", i)
        other.incr("hits", 1)
        for store in (a, b):
            store._state.apply(other._state.delta_since({}))
    return a, b


def one_put_bytes(origins: int) -> tuple[int, list[int]]:
    """Bytes both ways, and the message types, for one 10-byte put between replicas in step."""
    a, b = stores_with_origins(origins)
    dialer = Session(a._state, dialer=True, now=0.0, settings=SETTINGS)
    listener = Session(b._state, dialer=False, now=0.0, settings=SETTINGS)
    carry(dialer, listener, 0.0)
    carry(dialer, listener, 0.1)
    assert a.digest() == b.digest()
    a.put("k", "0123456789")
    dialer.local_changed(0.2)
    listener.local_changed(0.2, forwarded=True)
    carried = carry(dialer, listener, 0.3)
    assert b.get("k") == "0123456789"
    return sum(map(len, carried)), [data[1] for data in carried]


def test_one_put_costs_the_same_at_3_and_300_origins_and_at_most_150_bytes() -> None:
    small, types_small = one_put_bytes(3)
    large, types_large = one_put_bytes(300)
    deltas = next(row.code for row in REGISTRY if row.cls is Deltas)
    ack = next(row.code for row in REGISTRY if row.cls is Ack)
    assert sorted(types_small) == sorted(types_large) == [deltas, ack]
    assert large == small  # nothing in it grows with the number of origins
    assert large <= 150


@pytest.mark.parametrize("version", [1, 2])
def test_a_peer_of_another_protocol_version_is_refused_with_a_reason_that_says_so(version: int) -> None:
    _a, _b, dialer, listener = pair(secret_a=None, secret_b=None)
    challenge = listener.outgoing(0.0)
    dialer.receive(challenge[0], 0.0)
    [hello_bytes] = dialer.outgoing(0.0)
    hello = decode_message(hello_bytes, listener.limits)
    assert isinstance(hello, Hello) and hello.version == PROTOCOL_VERSION == 3
    old = Hello(version, hello.store, hello.origin, ROLE_PEER, hello.nonce, b"", hello.vv)
    [event] = listener.receive(encode_message(old), 0.0)
    assert isinstance(event, Closed) and event.code == CLOSE_VERSION
    assert f"protocol version {version}" in event.reason and "3" in event.reason


def test_the_registry_and_the_transition_table_are_one_row_per_message_and_phase() -> None:
    codes = [row.code for row in REGISTRY]
    assert len(set(codes)) == len(codes)
    assert {row.cls for row in REGISTRY} >= {cls for _, cls in TRANSITIONS}
    # nothing is handled once closed, and replication messages only once open
    assert not [key for key in TRANSITIONS if key[0] is Phase.CLOSED]
    assert {phase for phase, cls in TRANSITIONS if cls in (Deltas, Ack)} == {Phase.OPEN}


def test_a_batch_before_the_handshake_closes_the_link() -> None:
    _a, _b, _dialer, listener = pair()
    listener.outgoing(0.0)
    [event] = listener.receive(encode_message(Deltas(1, 0, 0, True, b"")), 0.0)
    assert isinstance(event, Closed) and event.code == CLOSE_PROTOCOL


def test_an_ack_received_does_not_wake_the_sender() -> None:
    a, _b, dialer, listener = pair()
    shuttle(dialer, listener)
    a.put("k", 1)
    dialer.local_changed(0.1)
    [part] = dialer.outgoing(0.2)
    listener.receive(part, 0.2)
    assert listener.wants_send  # an ack is owed: the sender learns of its deadline
    assert listener.outgoing(0.2) == []  # acks gather for a quarter of forward_delay
    [ack] = listener.outgoing(0.21)
    assert isinstance(decode_message(ack, listener.limits), Ack)
    dialer.receive(ack, 0.21)
    assert not dialer.wants_send and dialer.outgoing(0.21) == []


def test_writes_made_while_a_batch_is_scheduled_go_out_in_it() -> None:
    """A node tells a session of the first write only; later ones before the cut must be in the batch."""
    a, b, dialer, listener = pair()
    shuttle(dialer, listener)
    dialer.routed.add("elsewhere")  # the peer asked for an origin at once ...
    dialer.local_changed(0.1, forwarded=True, origins={"elsewhere"})  # ... so a batch is due
    assert dialer.dirty
    a.put("k", 1)  # a write now: its node does not tell a session already scheduled
    carry(dialer, listener, 0.2)
    assert b.get("k") == 1 and b._state.vv == a._state.vv


def test_a_lost_batch_is_resent_once_the_receiver_reports_the_gap() -> None:
    a, b, dialer, listener = pair()
    shuttle(dialer, listener)
    a.put("lost", 1)
    dialer.local_changed(0.1)
    dialer.outgoing(0.2)  # batch dropped on the way
    a.put("next", 2)
    dialer.local_changed(0.2)
    [part] = dialer.outgoing(0.3)
    listener.receive(part, 0.3)
    [ack_bytes] = listener.outgoing(0.3)
    ack = decode_message(ack_bytes, listener.limits)
    assert isinstance(ack, Ack) and ack.missing
    dialer.receive(ack_bytes, 0.3)
    assert dialer.stats["resyncs"] == 1
    carry(dialer, listener, 0.4)
    assert b.get("lost") == 1 and b.get("next") == 2 and a.digest() == b.digest()


def test_a_resend_by_timer_builds_on_the_last_batch_the_peer_acknowledged() -> None:
    a, b, dialer, listener = pair()
    shuttle(dialer, listener)

    def write(key: str, now: float, deliver: bool) -> None:
        a.put(key, 1)
        dialer.local_changed(now)
        for data in dialer.outgoing(now + 0.003):
            if deliver:
                listener.receive(data, now + 0.003)

    write("k1", 0.1, True)
    carry(dialer, listener, 0.11)  # batch 1 acknowledged
    write("k2", 0.2, False)  # batch 2 lost
    write("k3", 0.21, True)  # batch 3 shows the gap ...
    for data in listener.outgoing(0.22):
        dialer.receive(data, 0.22)  # ... and the report makes the sender resend at once ...
    assert dialer.stats["resyncs"] == 1
    assert dialer.outgoing(0.23)  # ... but the resend is lost
    write("k4", 0.3, True)  # building on the lost resend: a gap again, reported once only
    assert all(not isinstance(decode_message(d, a._state.limits), Deltas) for d in listener.outgoing(0.4))
    for now in (1.0, 2.0, 3.0):  # the timer resends, building on batch 1
        carry(dialer, listener, now)
    assert b._state.vv == a._state.vv and a.digest() == b.digest()


def test_resends_without_acks_back_off_instead_of_storming() -> None:
    a, _b, dialer, listener = pair()
    shuttle(dialer, listener)
    a.put("k", 1)
    dialer.local_changed(0.0)
    now = 0.0
    while now < 30.0:  # every batch to the listener is lost; everything else arrives
        for data in dialer.outgoing(now):
            if not isinstance(decode_message(data, dialer.limits), Deltas):
                listener.receive(data, now)
        for data in listener.outgoing(now):
            dialer.receive(data, now)
        now += 0.01
    assert not dialer.closed and not listener.closed
    resyncs = dialer.stats["resyncs"]
    # resync_after is 0.3 s: a fixed timer would resend 100 times in 30 s; doubling waits
    # 0.3, 0.6, 1.2, ... up to 16 times 0.3 s
    assert 3 <= resyncs <= 12


def test_batch_window_zero_converges_without_resends() -> None:
    settings = SyncSettings(batch_window=0.0, resync_after=5.0, keys_per_part=64)
    a = KvStore.open("sim", replica_id="a", clock=FakeClock())
    b = KvStore.open("sim", replica_id="b", clock=FakeClock())
    dialer = Session(a._state, dialer=True, now=0.0, settings=settings)
    listener = Session(b._state, dialer=False, now=0.0, settings=settings)
    carry(dialer, listener, 0.0)
    now = 0.0
    for i in range(2000):
        a.put(f"k{i}", i)
        a.incr("n", 1)
        dialer.local_changed(now)
        # the peer answers only every 200th round: batches queue up to the window, then grow
        out = dialer.outgoing(now)
        for data in out:
            listener.receive(data, now)
        if i % 200 == 0:
            for data in listener.outgoing(now):
                dialer.receive(data, now)
        now += 0.0001
    carry(dialer, listener, now + 0.01)
    assert a.digest() == b.digest() and b.get("n") == 2000
    assert dialer.stats["resyncs"] == 0
    assert dialer.stats["parts_sent"] < 2000  # batches grew while the window was full


def test_a_document_edit_crosses_a_link_trimmed_like_delta_since() -> None:
    a, b, dialer, listener = pair()
    shuttle(dialer, listener)
    a.doc("d").text("t").insert(0, "x" * 10_000)
    a_vv_before = dict(b._state.vv)
    dialer.local_changed(0.1)
    carry(dialer, listener, 0.2)
    before = dict(b._state.vv)
    a.doc("d").text("t").insert(5, "y")
    dialer.local_changed(0.3)
    carried = carry(dialer, listener, 0.4)
    deltas = [data for data in carried if isinstance(decode_message(data, a._state.limits), Deltas)]
    trimmed = len(encode_message(Deltas(9, 8, 0, True, b""))) + len(
        encode_delta(a._state.delta_since(before))
    )
    assert a_vv_before != before
    assert sum(map(len, deltas)) < 600 and sum(map(len, deltas)) <= trimmed + 64
    assert a.digest() == b.digest()


# -- the simulator: forwarding holds and the vector invariant ---------------------------------


def rank_links(sim: Simulation) -> None:
    """Each replica ranks its links in link order, as a Node ranks them in opening order."""
    ranks = [0] * len(sim.stores)
    for link in sim.links:
        for index, session in ((link.a, link.dialer), (link.b, link.listener)):
            assert session is not None and session.replicating
            session.prefer(ranks[index])
            ranks[index] += 1


def claims_nothing_it_lacks(sim: Simulation) -> None:
    """No replica's version vector covers an operation whose effect it does not hold."""
    for store in sim.stores:
        state = store._state
        for other in sim.stores:
            own = other.origin
            for key, entry in other._state.entries.items():
                stamp = dots(entry).get(own)
                if stamp is not None and state.vv.get(own, 0) >= stamp and key not in state.entries:
                    raise AssertionError(f"{store.origin} claims {own}@{stamp} but lacks {key!r}")
    for link in sim.links:  # and no session believes its peer holds more than it does
        for session, peer in ((link.dialer, sim.stores[link.b]), (link.listener, sim.stores[link.a])):
            if session is not None and session.replicating:
                held = peer._state.vv
                beyond = {o: v for o, v in session.known.items() if v > held.get(o, 0)}
                assert not beyond, f"{session.state.origin} believes {peer.origin} holds {beyond}"


def redundancy(sim: Simulation, writes: int) -> float:
    received = sum(
        session.stats["entries_received"]
        for link in sim.links
        for session in (link.dialer, link.listener)
        if session is not None
    )
    return received / (writes * (len(sim.stores) - 1))


def steady_writes(sim: Simulation, rnd: random.Random, count: int, pace: float) -> None:
    for i in range(count):
        sim.stores[rnd.randrange(len(sim.stores))].put(f"w{i}", i)
        sim.run(pace)


def two_hub_tree(sim: Simulation, hubs: int) -> None:
    """Hubs meshed; every other replica linked to two hubs."""
    pairs = [(a, b) for a in range(hubs) for b in range(a + 1, hubs)]
    for leaf in range(hubs, len(sim.stores)):
        first = leaf % hubs
        pairs += [(leaf, first), (leaf, (first + 1) % hubs)]
    sim.links = [Link(a, b) for a, b in pairs]


def opened(sim: Simulation) -> None:
    while not all(link.dialer is not None and link.dialer.replicating for link in sim.links):
        sim.step()
    sim.run(0.1)


@pytest.mark.parametrize(("topology", "replicas", "goal"), [("mesh", 8, 1.05), ("two hubs per PoP", 14, 1.1)])
def test_each_change_crosses_each_link_about_once(topology: str, replicas: int, goal: float) -> None:
    sim = Simulation(replicas, replicas)
    if topology != "mesh":
        two_hub_tree(sim, 4)
    opened(sim)
    rank_links(sim)
    others = replicas - 1
    baseline = redundancy(sim, 1) * others  # entries of the handshakes
    steady_writes(sim, random.Random(replicas), 200, 0.01)
    sim.settle()
    assert (redundancy(sim, 200) * 200 * others - baseline) / (200 * others) <= goal


def test_a_route_through_a_relay_is_given_up_once_the_origin_is_linked_directly() -> None:
    sim = Simulation(3, 7)
    sim.links = [Link(0, 1), Link(1, 2)]  # 2 hears 0's changes through 1 ...
    opened(sim)
    sim.stores[0].put("k", 1)
    sim.run(0.3)
    relay = sim.links[1].dialer  # 1's side of the link to 2
    assert relay is not None and sim.stores[0].origin in relay.routed
    sim.links.append(Link(0, 2))  # ... until 2 links to 0 itself
    opened(sim)
    sim.run(0.1)
    assert sim.stores[0].origin not in relay.routed
    sim.stores[0].put("k", 2)
    sim.run(0.3)
    assert sim.stores[2].get("k") == 2


@pytest.mark.parametrize(("replicas", "topology"), [(5, "mesh"), (5, "star"), (30, "tree")])
def test_chaos_with_holds_never_claims_what_it_lacks_and_converges(replicas: int, topology: str) -> None:
    rnd = random.Random(replicas)
    sim = Simulation(
        replicas,
        replicas,
        faults=Faults(drop=0.05, duplicate=0.05, reorder=0.1, delay=(0.001, 0.02)),
        skews=[rnd.uniform(-20, 20) for _ in range(replicas)],
        topology="mesh" if topology == "tree" else topology,
    )
    if topology == "tree":
        two_hub_tree(sim, 3)
    written: dict[str, int] = {}
    totals: dict[str, int] = {}
    for round_ in range(6):
        unique_writes_and_counters(sim, rnd, 60, written, totals)
        claims_nothing_it_lacks(sim)
        sim.cut = set(range(0, replicas, 2)) if round_ % 2 == 0 else set()
    sim.cut = set()
    sim.settle(limit=60.0)
    claims_nothing_it_lacks(sim)
    check_outcome(sim, written, totals)

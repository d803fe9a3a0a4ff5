"""Route modes: routes spread from each writer as links open, haves beat the long hold, routes given up."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Iterable

from crdtkv import KvStore
from crdtkv.core.forwarding import MAX_ROUTES, Holds
from crdtkv.core.messages import ROUTE_AT_ONCE, ROUTE_ELSEWHERE, ROUTE_HOLD
from crdtkv.core.sync import Session

from ..helpers import FakeClock
from ..sim import SETTINGS, Faults, Link, Simulation
from .test_protocol_v2 import opened, redundancy, steady_writes, two_hub_tree
from .test_sync import shuttle


class Told:
    """A link that records the route modes it was told to send."""

    def __init__(self) -> None:
        self.modes: dict[str, int] = {}

    def tell_route(self, mode: int, origins: Iterable[str]) -> None:
        for origin in origins:
            self.modes[origin] = mode


def test_a_new_link_hears_every_origin_reached_another_way_and_the_others_hear_of_its_peer() -> None:
    holds = Holds(0.05)
    first, second, third = Told(), Told(), Told()
    holds.opened(first, "a")
    holds.route(first, ["far"])  # "far" is reached through a's link
    holds.opened(second, "b")
    assert second.modes == {"a": ROUTE_ELSEWHERE, "far": ROUTE_ELSEWHERE}
    assert first.modes == {"far": ROUTE_AT_ONCE, "b": ROUTE_ELSEWHERE}
    holds.opened(third, "far")  # linked to "far" itself: its route through a is given up
    assert first.modes["far"] == ROUTE_ELSEWHERE
    assert "far" not in holds.routes


def test_an_announced_origin_is_routed_through_the_first_link_that_announces_it() -> None:
    holds = Holds(0.05)
    up, other, down = Told(), Told(), Told()
    for link, origin in ((up, "u"), (other, "o"), (down, "d")):
        holds.opened(link, origin)
    holds.route(up, ["writer"])
    holds.route(other, ["writer"])  # a second announcement changes nothing
    assert holds.routes["writer"] is up
    assert up.modes["writer"] == ROUTE_AT_ONCE
    assert other.modes["writer"] == down.modes["writer"] == ROUTE_ELSEWHERE


def test_a_route_withdrawn_upstream_goes_back_to_the_hold_on_every_link() -> None:
    holds = Holds(0.05)
    up, other = Told(), Told()
    holds.opened(up, "u")
    holds.opened(other, "o")
    holds.route(up, ["writer"])
    holds.withdrawn(other, ["writer"])  # from a link that is not the route: nothing happens
    assert holds.routes["writer"] is up
    holds.withdrawn(up, ["writer"])
    assert "writer" not in holds.routes
    assert up.modes["writer"] == other.modes["writer"] == ROUTE_HOLD


def test_routes_spread_from_each_writer_before_its_first_change_so_it_crosses_each_link_once() -> None:
    sim = Simulation(14, 14)
    two_hub_tree(sim, 4)
    opened(sim)
    sim.run(0.5)
    origins = [store.origin for store in sim.stores]
    for index, holds in enumerate(sim.holds):
        reached = set(holds.routes) | set(holds.neighbours)
        assert reached == set(origins) - {origins[index]}
    baseline = redundancy(sim, 1)
    for i, store in enumerate(sim.stores):  # every replica's first write
        store.put(f"first/{i}", i)
        sim.run(0.01)
    sim.settle()
    sim.run(2 * SETTINGS.forward_delay * 40)  # past the long hold: a late copy would count
    writes = len(sim.stores)
    assert redundancy(sim, writes) - baseline / writes == 1.0


def test_each_change_crosses_each_link_once_when_every_hop_is_slower_than_the_rank_holds() -> None:
    # a hop of 100-120 ms outlasts the holds of ranks 0 and 1 (20 and 80 ms here): only the
    # route modes keep a PoP's second hub from sending it what its first hub brought (and
    # no resend by timer while acks gather and cross: resync_after above that)
    slow = dataclasses.replace(SETTINGS, resync_after=2.0)
    sim = Simulation(14, 3, faults=Faults(delay=(0.1, 0.12)), settings=slow)
    two_hub_tree(sim, 4)
    opened(sim)
    sim.run(1.0)
    baseline = redundancy(sim, 1)
    steady_writes(sim, random.Random(3), 100, 0.02)
    sim.settle()
    sim.run(2.0)
    assert redundancy(sim, 100) - baseline / 100 <= 1.01


def _route_of(sim: Simulation, at: int, origin: str) -> Link:
    """The link whose session at replica ``at`` is that replica's route for ``origin``."""
    via = sim.holds[at].routes[origin]
    [link] = [link for link in sim.links if via in (link.dialer, link.listener)]
    return link


def _diamond(seed: int) -> tuple[Simulation, int, Link]:
    """0 writes; 1 and 3 are linked to it; 2 hears of 0 through one of them, the relay.

    Returns the simulation, the relay and the relay's link to 0.
    """
    sim = Simulation(4, seed)
    sim.links = [Link(0, 1), Link(0, 3), Link(1, 2), Link(3, 2)]
    opened(sim)
    sim.run(0.3)
    relay = _route_of(sim, 2, sim.stores[0].origin).a
    [upstream] = [link for link in sim.links if {link.a, link.b} == {0, relay}]
    return sim, relay, upstream


def test_a_route_that_stops_delivering_without_closing_is_covered_by_the_long_hold() -> None:
    sim, _relay, upstream = _diamond(5)
    upstream.blocked = True  # the relay hears nothing more from 0, and its link stays open
    sim.stores[0].put("k", "late")
    began = sim.now
    while sim.stores[2].get("k") != "late":
        sim.step()
        assert sim.now - began < SETTINGS.keepalive_timeout, "only a close brought it"
    assert not sim.closes  # the long hold brought it, not a keepalive timeout
    assert sim.now - began >= SETTINGS.forward_delay * 40 * 0.9


def test_a_lost_upstream_moves_the_route_downstream_to_a_link_that_still_brings_changes() -> None:
    sim, relay, upstream = _diamond(6)
    writer = sim.stores[0].origin
    other = 4 - relay  # the other relay: 1 <-> 3
    session = upstream.dialer
    assert isinstance(session, Session)
    session.close()
    sim.step()  # both ends learn the link closed
    sim.links.remove(upstream)
    sim.run(0.1)
    assert writer not in sim.holds[2].routes  # the relay said it lost its route: 2 gave it up too
    for value in range(3):
        sim.stores[0].put("k", value)
        sim.run(0.5)
        assert sim.stores[2].get("k") == sim.stores[relay].get("k") == value
    assert _route_of(sim, 2, writer).a == other
    assert _route_of(sim, relay, writer).b == 2  # the relay now hears of 0 through 2


def test_routes_are_capped_whatever_a_peer_announces() -> None:
    holds = Holds(0.05)
    peer, other = Told(), Told()
    holds.opened(peer, "p")
    holds.opened(other, "o")
    holds.route(peer, [f"made-up-{i}" for i in range(MAX_ROUTES + 10)])
    assert len(holds.routes) == MAX_ROUTES
    assert len(other.modes) == MAX_ROUTES + 1  # its own announcement of "p", and the routes


def _linked_pair(
    max_unacked_batches: int = SETTINGS.max_unacked_batches,
) -> tuple[KvStore, KvStore, Session, Session]:
    """Two sessions with forwarding holds, the handshake done."""
    a = KvStore.open("sim", replica_id="a", clock=FakeClock())
    b = KvStore.open("sim", replica_id="b", clock=FakeClock())
    chosen = dataclasses.replace(SETTINGS, max_unacked_batches=max_unacked_batches)
    dialer = Session(a._state, dialer=True, now=0.0, settings=chosen, holds=Holds(chosen.forward_delay))
    listener = Session(b._state, dialer=False, now=0.0, settings=chosen, holds=Holds(chosen.forward_delay))
    shuttle(dialer, listener)
    return a, b, dialer, listener


def test_a_merge_wakes_a_link_only_when_something_is_due_sooner() -> None:
    _a, _b, dialer, listener = _linked_pair()
    listener.tell_route(ROUTE_ELSEWHERE, ["x"])  # the peer gets x's changes another way
    shuttle(dialer, listener, 0.5)
    assert "x" in dialer.elsewhere
    assert dialer.local_changed(1.0, forwarded=True, origins={"x"})  # a have and the long hold start
    assert not dialer.local_changed(1.01, forwarded=True, origins={"x"})  # nothing sooner
    assert dialer.local_changed(1.02, forwarded=True, origins={"y"})  # no route: the rank's hold


def test_an_ack_that_opens_a_full_window_wakes_the_sender_for_held_changes() -> None:
    a, _b, dialer, listener = _linked_pair(max_unacked_batches=1)
    a.put("k", 1)
    dialer.local_changed(0.1)
    [part] = dialer.outgoing(0.2)  # the one batch the window allows
    dialer.local_changed(0.2, forwarded=True, origins={"x"})  # held: released later
    listener.receive(part, 0.2)
    for data in listener.outgoing(0.3):  # the ack (and nothing the sender must answer)
        dialer.receive(data, 0.3)
    assert dialer.waiting_since is None  # the batch is acknowledged
    assert dialer.wants_send  # the held changes may go now that the window is open

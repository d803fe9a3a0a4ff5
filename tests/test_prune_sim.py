"""Pruning in the deterministic simulator: restarts, faults and partitions while origins retire."""

from __future__ import annotations

import pytest

from crdtkv import KvStore, Limits
from crdtkv.core.entry import RETIRED
from crdtkv.core.feed import Stage
from crdtkv.core.forwarding import Holds

from .sim import Faults, Simulation

GRACE = 20.0
PRUNE = 40.0
LIMITS = Limits(gc_grace=GRACE, prune_after=PRUNE)


def open_replica(sim: Simulation, index: int) -> KvStore:
    """A new in-memory incarnation of replica ``index`` (empty: it catches up from its peers)."""
    store = KvStore.open("sim", replica_id=f"pop{index}", clock=sim.clocks[index], limits=LIMITS)
    store._state.feed.subscribe(sim._changed_callback(index), Stage.REPLICATION)
    return store


def restart(sim: Simulation, index: int) -> None:
    sim.stores[index].close()
    sim.stores[index] = open_replica(sim, index)
    sim.holds[index] = Holds(sim.settings.forward_delay)  # a new process: new routes
    for link in sim.links:
        if index in (link.a, link.b):
            for session in (link.dialer, link.listener):
                if session is not None:  # both ends learn the link is gone, as from a transport
                    session.connection_lost("restarted")
            link.dialer = link.listener = None
            link.flight = []
            link.reconnect_at = sim.now


#: replica -> its clock (ms) at its latest garbage collection
COLLECTED_AT: dict[int, int] = {}


def run(sim: Simulation, seconds: float) -> None:
    """Run, collecting garbage (which prunes) every 0.5 s as a Node does every gc_interval."""
    for _ in range(round(seconds / 0.5)):
        sim.run(0.5)
        for index, store in enumerate(sim.stores):
            store.collect_garbage()
            COLLECTED_AT[index] = store._state.clock.now_ms()


def settle(sim: Simulation, limit: float = 30.0) -> None:
    """Run until every replica has the same digest (without collections, whose heartbeats are writes)."""
    start = sim.now
    while not sim.converged():
        assert sim.now - start < limit, "replicas did not converge"
        sim.run(0.05)


@pytest.mark.parametrize(
    ("replicas", "topology", "seed"),
    [
        (5, "mesh", 1),
        (5, "mesh", 2),
        (30, "star", 3),
    ],
)
def test_pruning_during_partitions_converges_exactly(replicas: int, topology: str, seed: int) -> None:
    faults = Faults(drop=0.05, duplicate=0.05, reorder=0.1)
    skews = [0.01 * (i % 3) for i in range(replicas)]
    sim = Simulation(replicas, seed, faults=faults, skews=skews, topology=topology)
    for index in range(replicas):
        sim.stores[index].close()
        sim.stores[index] = open_replica(sim, index)
    expected = 0
    restarts = 0
    for round_ in range(3):
        for index, store in enumerate(sim.stores):
            store.incr("c", index + 1)
            store.put(f"k{index}", round_)
            expected += index + 1
        run(sim, 1.0)
        settle(sim)
        for index in range(round_, replicas, 3):  # restart a third of the replicas, once settled
            restart(sim, index)
            restarts += 1
        run(sim, 1.0)
    # partitions while the old incarnations retire: each shorter than the grace period
    side = set(range(0, replicas, 2))
    for _ in range(6):
        sim.cut = side
        for store in sim.stores:
            store.incr("c", 1)
            expected += 1
        run(sim, 8.0)
        sim.cut = set()
        run(sim, 4.0)
        side = set(range(1, replicas, 2)) if 0 in side else set(range(0, replicas, 2))
    run(sim, PRUNE)
    settle(sim)
    for index, store in enumerate(sim.stores):
        state = store._state
        # what the rule called retired at its latest collection: silent for prune_after
        cut = (COLLECTED_AT[index] - int(PRUNE * 1000)) << 16
        old = {origin for origin, seen in state.vv.items() if seen < cut and origin != state.origin}
        assert store.get("c") == expected
        assert old <= {RETIRED}, old
        assert len(state.pruned) >= restarts
        for entry in state.entries.values():
            if entry.counter is not None:
                assert not set(entry.counter.totals) & set(state.pruned)
    assert sim.converged()

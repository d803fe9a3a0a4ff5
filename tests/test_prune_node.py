"""Pruning with real Nodes: retired origins leave the replicas and every link's bookkeeping."""

from __future__ import annotations

import anyio
import pytest

from crdtkv import KvStore, Limits, Node, NodeSettings

pytestmark = pytest.mark.anyio

#: short enough for a test; heartbeats every 0.25 s keep the live origins from retiring
LIMITS = Limits(gc_grace=0.5, prune_after=1.5)
SETTINGS = NodeSettings(gc_interval=0.05)


def link_vectors(node: Node) -> list[dict[str, int]]:
    sessions = [link.session for link in node.links]
    return [vector for session in sessions for vector in (session.sent, session.known, session.told)]


async def test_a_retired_origin_is_pruned_by_nodes_and_forgotten_by_their_links() -> None:
    old = KvStore.open("t", replica_id="old", limits=LIMITS)
    old.incr("hits", 4)
    a = KvStore.open("t", replica_id="a", limits=LIMITS)
    b = KvStore.open("t", replica_id="b", limits=LIMITS)
    a.merge(old)
    async with (
        Node(a, listen="memory://prune-a", settings=SETTINGS) as hub,
        Node(b, peers=[hub.url or ""], settings=SETTINGS) as spoke,
    ):
        await hub.wait_for_peers(1)
        with anyio.fail_after(30):
            while b.get("hits") != 4:
                await anyio.sleep(0.01)
            assert any(old.origin in vector for vector in link_vectors(hub) + link_vectors(spoke))
            a.incr("hits", 1)
            b.put("here", "b")  # each hears a live origin besides its own: it is not cut off
            while not (old.origin in a.replica.pruned and old.origin in b.replica.pruned):
                await anyio.sleep(0.05)
            await anyio.sleep(3 * SETTINGS.gc_interval)
        for store in (a, b):
            assert old.origin not in store.replica.vv
            assert store.get("hits") == 5
        for vector in link_vectors(hub) + link_vectors(spoke):
            assert old.origin not in vector

"""Forwarding with real Nodes: every write reaches every replica while routes and holds are in play."""

from __future__ import annotations

import contextlib

import anyio
import pytest

from crdtkv import KvStore, Node, NodeSettings
from crdtkv.core.sync import SyncSettings

pytestmark = pytest.mark.anyio


async def test_a_hub_writing_while_it_forwards_loses_nothing() -> None:
    """The hub's own writes and the leaves' forwarded ones share each link's next batch.

    A write at the hub lands while a link already has a batch scheduled for a
    forwarded change (a leaf's origin routed through the hub): the write must
    still be in a batch.
    """
    stores = [KvStore.open("t", replica_id=f"n{i}") for i in range(6)]
    writes = 300
    async with Node(stores[0], listen="memory://forward-hub") as hub, anyio.create_task_group() as group:
        for store in stores[1:]:
            await group.start(_leaf, store, hub.url or "")
        await hub.wait_for_peers(5)

        async def write(store: KvStore, index: int) -> None:
            for k in range(writes):
                store.put(f"w/{index}/{k}", k)
                await anyio.sleep(0.001)

        async with anyio.create_task_group() as writers:
            for index, store in enumerate(stores):
                writers.start_soon(write, store, index)
        expected = {f"w/{i}/{k}" for i in range(len(stores)) for k in range(writes)}
        with anyio.move_on_after(30):
            while not all(expected <= set(store.keys("w/")) for store in stores):
                await anyio.sleep(0.05)
        missing = {store.origin: len(expected - set(store.keys("w/"))) for store in stores}
        group.cancel_scope.cancel()
    assert not any(missing.values()), missing


async def _leaf(store: KvStore, hub: str, *, task_status: anyio.abc.TaskStatus[None]) -> None:
    async with Node(store, peers=[hub]):
        task_status.started()
        await anyio.sleep_forever()


async def test_routes_spread_along_a_chain_of_nodes_before_any_write() -> None:
    """An origin's route is announced hop by hop as links open: each relay sends it on at once.

    A route learnt from a message on one link is told to the node's other
    links; a quiet node (no writes, keepalives a minute apart) must still
    send it, or the far end of the chain waits for a hold on the first write.
    """
    quiet = NodeSettings(sync=SyncSettings(keepalive_interval=60.0, keepalive_timeout=180.0))
    stores = [KvStore.open("t", replica_id=f"c{i}") for i in range(4)]
    origins = {store.origin for store in stores}
    async with contextlib.AsyncExitStack() as stack:
        nodes: list[Node] = []
        # c0 - c1 - c2 - c3, started from c3, each dialing the one after it: c0's link opens
        # last, so c0 is announced across links that are already open
        for index in reversed(range(len(stores))):
            peers = [nodes[0].url or ""] if nodes else []
            node = Node(stores[index], listen=f"memory://chain-{index}", peers=peers, settings=quiet)
            if index == 0:  # the others are linked and idle first
                await nodes[0].wait_for_peers(1)  # c1: c2
                await nodes[1].wait_for_peers(2)  # c2: c1 and c3
                await anyio.sleep(0.2)
            nodes.insert(0, await stack.enter_async_context(node))

        def reached(node: Node) -> set[str]:
            return set(node._holds.routes) | set(node._holds.neighbours)

        with anyio.move_on_after(10):  # a hang guard: routes need a few message hops
            while not all(reached(node) == origins - {node.store.origin} for node in nodes):
                await anyio.sleep(0.01)
        missing = {node.store.origin: origins - {node.store.origin} - reached(node) for node in nodes}
    assert not any(missing.values()), missing

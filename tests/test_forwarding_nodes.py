"""Forwarding with real Nodes: every write reaches every replica while routes and holds are in play."""

from __future__ import annotations

import anyio
import pytest

from crdtkv import KvStore, Node

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

"""``Client`` against real nodes: the errors it raises, paging, watching to the end, snapshots."""

from __future__ import annotations

import socket

import anyio
import pytest
from websockets.asyncio.server import ServerConnection
from websockets.asyncio.server import serve as ws_serve

from crdtkv import KvStore
from crdtkv.client import Client
from crdtkv.core.sync import SyncSettings
from crdtkv.errors import (
    ConnectFailed,
    CrdtKvError,
    InvalidArgument,
    LinkClosed,
    NotConnected,
    RemoteCallError,
    RequestTimeout,
)
from crdtkv.node import Node, NodeSettings
from crdtkv.requests import MAX_KEY_BYTES_PER_RESPONSE, SnapshotTransfers, execute
from transports.memory import MemoryNetwork, MemoryTransport

pytestmark = pytest.mark.anyio

GUARD = 30.0  # hang guard only
FAST = NodeSettings(sync=SyncSettings(keepalive_interval=0.2, keepalive_timeout=5.0, handshake_timeout=5.0))


# -- errors -------------------------------------------------------------------------------


async def test_a_call_outside_async_with_raises_not_connected() -> None:
    client = Client("ws://127.0.0.1:1")
    with pytest.raises(NotConnected, match="not connected"):
        await client.get("k")
    with pytest.raises(NotConnected):
        await client.watch("").__anext__()


async def test_an_unanswered_request_raises_request_timeout_a_timeout_error() -> None:
    network = MemoryNetwork(seed=3)
    server = KvStore.open("t", replica_id="server")
    async with (
        Node(server, listen="memory://srv", transports={"memory": MemoryTransport(network)}) as node,
        Client(
            node.url or "", store="t", transports={"memory": MemoryTransport(network, name="cli")}
        ) as client,
    ):
        assert await client.get("k") is None
        network.partition("cli", "srv")  # every message between them vanishes from now on
        client.timeout = 0.2
        with pytest.raises(RequestTimeout, match="no answer") as info:
            await client.get("k")
        assert isinstance(info.value, TimeoutError) and isinstance(info.value, CrdtKvError)


async def test_a_node_that_never_answers_the_websocket_upgrade_raises_connect_failed() -> None:
    with socket.socket() as silent:  # accepts connections (the backlog) but never speaks
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"ws://127.0.0.1:{silent.getsockname()[1]}"
        with anyio.fail_after(GUARD), pytest.raises(ConnectFailed, match=url) as info:
            async with Client(url, timeout=0.3):
                pass
    assert not isinstance(info.value, TimeoutError)


async def test_a_server_that_never_finishes_the_crdtkv_handshake_raises_connect_failed() -> None:
    async def mute(websocket: ServerConnection) -> None:  # upgrades, then says nothing
        await websocket.wait_closed()

    async with ws_serve(mute, "127.0.0.1", 0) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        with anyio.fail_after(GUARD), pytest.raises(ConnectFailed, match="handshake"):
            async with Client(f"ws://127.0.0.1:{port}", timeout=0.3):
                pass


@pytest.mark.parametrize("url", ["127.0.0.1:7001", "localhost:7001"])
def test_a_url_without_a_scheme_says_which_to_add(url: str) -> None:
    with pytest.raises(InvalidArgument, match=f"use ws://{url}"):
        Client(url)


# -- watch ends when the link closes ---------------------------------------------------------


async def test_a_watch_ends_with_link_closed_when_the_node_stops() -> None:
    store = KvStore.open("t", replica_id="server")
    seen: list[str | None] = []
    failure: list[BaseException] = []
    urls: list[str] = []
    stop = anyio.Event()

    async def run_node() -> None:
        async with Node(store, listen="ws://127.0.0.1:0", settings=FAST) as node:
            urls.append(node.url or "")
            await stop.wait()

    async with anyio.create_task_group() as group:
        group.start_soon(run_node)
        with anyio.fail_after(GUARD):
            while not urls:
                await anyio.sleep(0.01)
        async with Client(urls[0], store="t", reconnect=False) as client:

            async def watch() -> None:
                try:
                    async for change in client.watch("k"):
                        seen.append(change.key)
                except LinkClosed as exc:
                    failure.append(exc)

            group.start_soon(watch)
            with anyio.fail_after(GUARD):
                while not seen:  # until the watch is registered at the node
                    store.put("k", 1)
                    await anyio.sleep(0.02)
            stop.set()  # the node shuts down
            with anyio.fail_after(GUARD):  # the watch ends by itself; before, it hung here
                while not failure:
                    await anyio.sleep(0.01)
            assert "closed the link" in str(failure[0])
            with pytest.raises(LinkClosed):  # and later calls say the same at once (no redial)
                await client.get("k")


# -- paging and metadata ---------------------------------------------------------------------


async def test_list_pages_within_the_reply_budget_and_keys_returns_everything() -> None:
    store = KvStore.open("t", replica_id="server")
    wide = [f"wide:{i:04d}:" + "x" * 1000 for i in range(400)]  # 400 KB of keys: more than one reply holds
    narrow = [f"n:{i:05d}" for i in range(12_000)]  # more keys than one page of 10,000
    for key in wide + narrow:
        store.put(key, 1)
    async with (
        Node(store, listen="ws://127.0.0.1:0", settings=FAST) as node,
        Client(node.url or "", store="t") as client,
    ):
        page = await client.list("wide:", limit=400)
        assert 0 < len(page.keys) < 400 and page.cursor is not None
        assert sum(len(key) + 3 for key in page.keys) <= MAX_KEY_BYTES_PER_RESPONSE
        assert await client.keys("wide:") == wide
        assert await client.keys("n:") == narrow
        first = await client.list("n:", limit=10)
        second = await client.list("n:", limit=10, cursor=first.cursor)
        assert first.keys + second.keys == narrow[:20]
        with pytest.raises(RemoteCallError, match="limit"):
            await client.list("n:", limit=0)


async def test_put_carries_metadata_to_the_node() -> None:
    store = KvStore.open("t", replica_id="server")
    async with (
        Node(store, listen="ws://127.0.0.1:0", settings=FAST) as node,
        Client(node.url or "", store="t") as client,
    ):
        await client.put("flag:dark", {"on": True}, metadata={"owner": "ana"})
        record = store.get_with_metadata("flag:dark")
        assert record is not None and record.value == {"on": True} and record.metadata == {"owner": "ana"}
        await client.put("plain", "v")
        assert store.get_with_metadata("plain").metadata is None  # type: ignore[union-attr]


# -- snapshots ----------------------------------------------------------------------------------


async def test_a_snapshot_larger_than_one_message_arrives_whole_and_is_freed_at_the_node() -> None:
    store = KvStore.open("t", replica_id="server")
    for i in range(300):
        store.put(f"blob:{i:03d}", bytes([i % 256]) * 8000)  # 2.4 MB: several 1 MiB messages
    store.incr("views", 7)
    async with (
        Node(store, listen="ws://127.0.0.1:0", settings=FAST) as node,
        Client(node.url or "", store="t") as client,
    ):
        data = await client.snapshot()
        assert len(data) > 2 * store.limits.max_message_bytes
        copy = KvStore.from_snapshot(data)
        assert copy.digest() == store.digest()
        assert copy.get("views") == 7
        assert node.snapshot_bytes_held == 0  # read to the end: nothing kept


async def test_a_snapshot_transfer_is_freed_when_its_link_closes() -> None:
    store = KvStore.open("t", replica_id="server")
    for i in range(100):
        store.put(f"blob:{i:03d}", bytes([i % 256]) * 8000)
    async with Node(store, listen="ws://127.0.0.1:0", settings=FAST) as node:
        async with Client(node.url or "", store="t") as client:
            token, size = await client.call("snapshot_begin")
            assert size > 0 and node.snapshot_bytes_held == size  # held while the client reads
            await client.call("snapshot_read", token, 0, 1000)
            assert node.snapshot_bytes_held == size
        with anyio.fail_after(10):  # the client left without reading it all: the link's close frees it
            while node.snapshot_bytes_held:
                await anyio.sleep(0.005)


def test_snapshot_transfers_keep_to_their_byte_budget_and_free_idle_and_released_ones() -> None:
    now = [0.0]
    store = KvStore.open("t")
    for i in range(50):
        store.put(f"k{i}", "v" * 100)
    size = len(store.snapshot())
    transfers = SnapshotTransfers(budget=2 * size, idle=60.0, clock=lambda: now[0])
    link_a, link_b = object(), object()
    token_a, size_a = transfers.begin(store, link_a)
    token_b, _ = transfers.begin(store, link_b)
    assert size_a == size and transfers.held == 2 * size
    with pytest.raises(InvalidArgument, match="budget"):
        transfers.begin(store, link_a)
    assert transfers.held == 2 * size  # the refused one holds nothing
    assert transfers.release(link_a) == 1 and transfers.held == size
    with pytest.raises(InvalidArgument, match="no such snapshot transfer"):
        transfers.read(store, token_a, 0, 10)
    chunk = transfers.read(store, token_b, 0, 10)
    assert len(chunk) == 10
    now[0] += 60.0  # no read for a minute: it expires
    token_c, _ = transfers.begin(store, link_a)
    assert transfers.held == size
    with pytest.raises(InvalidArgument, match="no such snapshot transfer"):
        transfers.read(store, token_b, 10, 10)
    assert transfers.end(token_c) and transfers.held == 0


def test_a_snapshot_chunk_always_fits_in_one_message() -> None:
    store = KvStore.open("t")
    for i in range(200):
        store.put(f"blob:{i}", b"z" * 10_000)
    transfers = SnapshotTransfers()
    ok, (token, size) = execute(store, "snapshot_begin", [], "link", transfers)
    assert ok and size > store.limits.max_message_bytes
    ok, chunk = execute(store, "snapshot_read", [token, 0, 10 * size], "link", transfers)
    assert ok and 0 < len(chunk) < store.limits.max_message_bytes
    ok, error = execute(store, "snapshot_read", [token, size, 10], "link", transfers)
    assert not ok and error[0] == "InvalidArgument"
    assert execute(store, "snapshot_end", [token], "link", transfers) == (True, True)


async def test_a_request_that_fails_with_a_bug_is_answered_and_the_link_stays(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An unexpected error behind one request (a bug: nothing real raises one on purpose,
    hence the patched operation) answers that request with InternalError, and the same
    link keeps serving."""
    from crdtkv import requests

    def broken(store: KvStore, key: object) -> object:
        raise RuntimeError("a bug in a request handler")

    store = KvStore.open()
    store.put("k", "v")
    async with Node(store, listen="ws://127.0.0.1:0") as node:
        assert node.url is not None
        async with Client(node.url, reconnect=False) as client:
            monkeypatch.setitem(requests.OPERATIONS, "get", broken)
            with pytest.raises(RemoteCallError) as refused:
                await client.get("k")
            assert refused.value.kind == "InternalError"
            assert "a bug in a request handler" in str(refused.value)
            monkeypatch.undo()
            assert await client.get("k") == "v"  # the same link, still open
    store.close()

"""A node stays bounded in bytes whatever its clients do: replies, watches, unauthenticated sockets.

Every test runs a real node on a loopback WebSocket (or the in-process
transport) and measures what the node queues for a link, a deterministic
figure, never the process's memory or the machine's speed.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import anyio
import pytest
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed

from crdtkv import KvStore
from crdtkv.client import Client
from crdtkv.core.limits import KIB, MIB
from crdtkv.core.messages import ROLE_CLIENT, Request, Response, decode_message, encode_message
from crdtkv.core.sync import Session, SyncSettings
from crdtkv.errors import LinkClosed, ProtocolError
from crdtkv.node import Link, Node, NodeSettings
from crdtkv.transport import Connection, Transport, TransportSettings, find_transport
from transports.memory import MemoryNetwork, MemoryTransport

from .test_node import SECRET, converge

pytestmark = pytest.mark.anyio

#: the ``network`` fixture: a listen URL and the transports override for one transport
Network = tuple[str, dict[str, Transport] | None]

GUARD = 20.0
#: Links stay up for the whole test: nothing here waits for a keepalive.
PATIENT = SyncSettings(keepalive_interval=5.0, keepalive_timeout=120.0, handshake_timeout=5.0)
PEER = NodeSettings(sync=PATIENT, reconnect_initial=0.02, reconnect_max=0.2)


@pytest.fixture(params=["ws", "memory"])
def network(request: pytest.FixtureRequest) -> Network:
    """(listen URL, transports override) for each transport."""
    if request.param == "ws":
        return "ws://127.0.0.1:0", None
    return "memory://budgets", {"memory": MemoryTransport(MemoryNetwork(seed=1))}


@asynccontextmanager
async def raw_client(
    url: str, transports: dict[str, Transport] | None = None, store: str = "t"
) -> AsyncIterator[Connection]:
    """An authenticated client link whose replies nobody reads unless the test does.

    It buffers one message on receipt (``max_queue=1``), so the node's replies
    back up at once instead of filling the test's memory.
    """
    connection: Connection = await find_transport(url, transports).connect(
        url, TransportSettings(max_queue=1, close_timeout=0.5)
    )
    session = Session(
        KvStore.open(store)._state, dialer=True, now=time.monotonic(), secret=SECRET, role=ROLE_CLIENT
    )
    try:
        with anyio.fail_after(GUARD):
            while not session.opened:
                session.receive(await connection.receive(), time.monotonic())
                for data in session.outgoing(time.monotonic()):
                    await connection.send(data)
        yield connection
    finally:
        await connection.aclose()


def client_link(node: Node) -> Link:
    """The node's end of the one raw client link."""
    [link] = [link for link in node.links if link.session.peer_role == ROLE_CLIENT]
    return link


async def until(predicate: Callable[[], object], what: str) -> None:
    with anyio.fail_after(GUARD):
        while not predicate():
            await anyio.sleep(0.005)


async def test_a_client_that_never_reads_its_replies_is_slowed_down_not_the_node(network: Network) -> None:
    listen, transports = network
    budget = 1 * MIB
    settings = NodeSettings(sync=PATIENT, max_unsent_bytes=budget)
    store = KvStore.open("t", replica_id="server")
    store.put("big", os.urandom(400 * KIB))
    async with Node(store, listen=listen, secret=SECRET, settings=settings, transports=transports) as node:
        assert node.url is not None
        async with raw_client(node.url, transports) as hog, anyio.create_task_group() as group:
            link = client_link(node)
            sent = 0

            async def flood() -> None:  # 300 gets of 400 KB: 120 MB of replies if all were executed
                nonlocal sent
                for request_id in range(300):
                    await hog.send(encode_message(Request(request_id, "get", ["big"])))
                    sent += 1

            group.start_soon(flood)
            await until(lambda: link.reading_paused, "the node to stop reading the hog")
            # the node still serves everyone else, at once
            async with Client(node.url, store="t", secret=SECRET, transports=transports) as other:
                await other.put("other", "served")
                assert await other.get("other") == "served"
            assert link.reading_paused  # the hog still reads nothing, so the node still waits
            one_message = settings.transport.max_message_bytes
            assert link.peak_unsent_bytes <= budget + one_message
            assert link.unsent_bytes <= budget + one_message
            if listen.startswith("ws"):  # the transport's own write buffer is bounded as well
                write_buffer = link.connection.websocket.transport.get_write_buffer_size()  # type: ignore[attr-defined]
                assert write_buffer <= settings.transport.write_limit + one_message
            group.cancel_scope.cancel()


async def test_replies_flow_again_once_the_client_reads(network: Network) -> None:
    listen, transports = network
    settings = NodeSettings(sync=PATIENT, max_unsent_bytes=256 * KIB)
    store = KvStore.open("t", replica_id="server")
    store.put("big", os.urandom(100 * KIB))
    async with (
        Node(store, listen=listen, secret=SECRET, settings=settings, transports=transports) as node,
        raw_client(node.url, transports) as client,  # type: ignore[arg-type]
        anyio.create_task_group() as group,
    ):
        count = 60  # 6 MB of replies, far over the budget: all answered, in order, in bounded memory

        async def ask() -> None:
            for request_id in range(count):
                await client.send(encode_message(Request(request_id, "get", ["big"])))

        group.start_soon(ask)
        await until(lambda: client_link(node).reading_paused, "the node to stop reading")
        answered: list[int] = []
        with anyio.fail_after(GUARD):
            while len(answered) < count:
                reply = decode_message(await client.receive(), store._state.limits)
                if isinstance(reply, Response):
                    answered.append(reply.id)
        assert answered == list(range(count))
        assert client_link(node).peak_unsent_bytes <= 256 * KIB + settings.transport.max_message_bytes


async def test_a_watcher_that_stops_reading_costs_at_most_its_byte_budget(network: Network) -> None:
    listen, transports = network
    budget = 256 * KIB
    settings = NodeSettings(sync=PATIENT, max_watch_backlog_bytes=budget)
    store = KvStore.open("t", replica_id="server")
    async with (
        Node(store, listen=listen, secret=SECRET, settings=settings, transports=transports) as node,
        raw_client(node.url, transports) as watcher,  # type: ignore[arg-type]
    ):
        await watcher.send(encode_message(Request(1, "watch", ["w:"])))
        link = client_link(node)
        await until(lambda: len(link.watchers) == 1, "the watch to be registered")
        value = os.urandom(50 * KIB)
        for i in range(200):  # 10 MB of changes (200 messages: under the old 1,000-message bound)
            store.put(f"w:{i}", value)
            if i % 10 == 0:
                await anyio.sleep(0)
        one_change = 60 * KIB
        assert link.peak_unsent_bytes <= budget + one_change
        # once it reads again it is told that it missed changes
        seen: list[object] = []

        async def read() -> None:
            while True:
                reply = decode_message(await watcher.receive(), store._state.limits)
                if isinstance(reply, Response):
                    seen.append(reply.value[0])

        async with anyio.create_task_group() as group:
            group.start_soon(read)
            with anyio.fail_after(GUARD):
                while "overflow" not in seen:
                    store.put("w:after", len(seen))
                    await anyio.sleep(0.01)
            group.cancel_scope.cancel()
        assert seen[0] == "watching"
        assert seen.count("change") < 200


# -- connections that have not authenticated -----------------------------------------------


async def test_idle_unauthenticated_sockets_never_lock_out_peers_and_clients() -> None:
    settings = NodeSettings(
        sync=PATIENT, max_handshaking=4, max_connections=2, inbound_handshake_timeout=120.0
    )
    victim_store = KvStore.open("t", replica_id="victim")
    peer_store = KvStore.open("t", replica_id="peer")
    async with Node(victim_store, listen="ws://127.0.0.1:0", secret=SECRET, settings=settings) as victim:
        assert victim.url is not None
        idle = []
        try:
            for _ in range(12):  # three times the cap, and more than max_connections
                ws = await ws_connect(victim.url, compression=None)
                await ws.recv()  # the challenge: the node serves this socket; it answers nothing
                idle.append(ws)
            assert victim.handshaking == 4
            # a real peer and a real client get in at once (the idle sockets do not time out here)
            async with (
                Node(
                    peer_store, peers=[victim.url], secret=SECRET, settings=NodeSettings(sync=PATIENT)
                ) as peer,
                Client(victim.url, store="t", secret=SECRET) as client,
            ):
                await peer.wait_for_peers(1, timeout=GUARD)
                peer_store.put("from-peer", 1)
                await client.put("from-client", 2)
                await converge(victim_store, peer_store)
                assert peer_store.get("from-client") == 2
                assert await client.get("from-peer") == 1
                assert victim.handshaking <= 4
                # max_connections counts authenticated links only: a third is refused, by its code
                with pytest.raises(ProtocolError, match="4010"):
                    async with Client(victim.url, store="t", secret=SECRET) as third:
                        await third.digest()
            closed_by_node = 0
            for ws in idle:
                try:
                    with anyio.fail_after(0.5 if closed_by_node else GUARD):
                        await ws.recv()
                except (ConnectionClosed, TimeoutError):
                    closed_by_node += ws.close_code is not None
            # the oldest were closed to make room; the newest few still wait
            assert 12 - 4 - 2 <= closed_by_node <= 12
        finally:
            for ws in idle:
                await ws.close()


async def test_an_unauthenticated_socket_gets_the_short_inbound_deadline() -> None:
    settings = NodeSettings(sync=PATIENT, inbound_handshake_timeout=0.2)
    async with Node(KvStore.open("t"), listen="ws://127.0.0.1:0", secret=SECRET, settings=settings) as node:
        assert node.url is not None
        async with ws_connect(node.url, compression=None) as ws:
            await ws.recv()
            with anyio.fail_after(GUARD), pytest.raises(ConnectionClosed):
                await ws.recv()  # closed long before PATIENT's 5 s handshake timeout


async def test_a_link_whose_peer_takes_nothing_for_the_keepalive_timeout_is_closed() -> None:
    """The send loop cannot block forever on a peer that stopped reading (memory transport: no pings)."""
    net = MemoryNetwork(seed=2)
    transports: dict[str, Transport] = {"memory": MemoryTransport(net)}
    sync = SyncSettings(keepalive_interval=0.05, keepalive_timeout=0.5, handshake_timeout=5.0)
    store = KvStore.open("t", replica_id="server")
    store.put("big", os.urandom(100 * KIB))
    async with (
        Node(
            store,
            listen="memory://stall",
            secret=SECRET,
            settings=NodeSettings(sync=sync),
            transports=transports,
        ) as node,
        raw_client("memory://stall", transports) as hog,
    ):
        assert node.url is not None
        with anyio.fail_after(GUARD):
            try:
                while True:
                    await hog.send(encode_message(Request(1, "get", ["big"])))
                    await anyio.sleep(0.01)  # keep the node's receive side alive
            except LinkClosed:
                pass
        await until(lambda: not node.links, "the node to drop the link")

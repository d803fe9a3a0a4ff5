"""Nodes replicating over real transports: WebSockets on loopback and the in-process network."""

from __future__ import annotations

import random
from collections.abc import Callable

import anyio
import pytest

from crdtkv import Change, KvStore
from crdtkv.client import Client
from crdtkv.core.sync import SyncSettings
from crdtkv.errors import AuthenticationFailed, RemoteCallError, WrongType
from crdtkv.node import Node, NodeSettings
from crdtkv.transport import Transport
from transports.memory import MemoryNetwork, MemoryTransport

pytestmark = pytest.mark.anyio

#: the ``network`` fixture: a listen-URL factory and the transports override for one transport
Network = tuple[Callable[[str], str], dict[str, Transport] | None]

SECRET = b"node-test-secret"
FAST = NodeSettings(
    sync=SyncSettings(keepalive_interval=0.2, keepalive_timeout=1.0, resync_after=0.3, handshake_timeout=2.0),
    reconnect_initial=0.02,
    reconnect_max=0.2,
)


def stores(count: int, name: str = "t") -> list[KvStore]:
    return [KvStore.open(name, replica_id=f"pop{i}") for i in range(count)]


async def converge(*group: KvStore, timeout: float = 20.0) -> None:
    with anyio.fail_after(timeout):
        while len({store.digest() for store in group}) > 1:
            await anyio.sleep(0.01)


@pytest.fixture(params=["ws", "memory"])
def network(request: pytest.FixtureRequest) -> Network:
    """(listen URL factory, transports override) for each transport."""
    if request.param == "ws":
        return (lambda name: "ws://127.0.0.1:0"), None
    net = MemoryNetwork(seed=7)
    return (lambda name: f"memory://{name}"), {"memory": MemoryTransport(net)}


async def test_three_nodes_count_every_concurrent_increment(network: Network) -> None:
    url_for, transports = network
    a, b, c = stores(3)
    async with (
        Node(c, listen=url_for("c"), secret=SECRET, transports=transports, settings=FAST) as nc,
        Node(
            b,
            listen=url_for("b"),
            peers=[nc.url],  # type: ignore[list-item]
            secret=SECRET,
            transports=transports,
            settings=FAST,
        ) as nb,
        Node(
            a,
            listen=url_for("a"),
            peers=[nb.url, nc.url],  # type: ignore[list-item]
            secret=SECRET,
            transports=transports,
            settings=FAST,
        ) as na,
    ):
        for node in (na, nb, nc):
            await node.wait_for_peers(2)
        rnd = random.Random(1)
        expected = 0
        for _ in range(300):
            store = rnd.choice([a, b, c])
            by = rnd.randint(1, 5)
            store.incr("views", by)
            expected += by
            if rnd.random() < 0.2:
                await anyio.sleep(0)
        a.put("flag", True)
        await converge(a, b, c)
        assert a.get("views") == b.get("views") == c.get("views") == expected
        assert c.get("flag") is True


async def test_a_chain_forwards_changes_end_to_end(network: Network) -> None:
    url_for, transports = network
    a, b, c = stores(3)
    async with (
        Node(c, listen=url_for("c2"), transports=transports, settings=FAST) as nc,
        Node(b, listen=url_for("b2"), peers=[nc.url], transports=transports, settings=FAST),  # type: ignore[list-item]
        Node(a, peers=[], transports=transports, settings=FAST),
    ):
        pass  # a is not connected: exercise start/stop with no listener and no peers
    async with (
        Node(c, listen=url_for("c3"), transports=transports, settings=FAST) as nc,
        Node(b, listen=url_for("b3"), peers=[nc.url], transports=transports, settings=FAST) as nb,  # type: ignore[list-item]
        Node(a, peers=[nb.url], transports=transports, settings=FAST),  # type: ignore[list-item]
    ):
        a.put("from-a", 1)
        c.put("from-c", 3)
        await converge(a, b, c)
        assert c.get("from-a") == 1 and a.get("from-c") == 3


async def test_convergence_over_a_faulty_in_process_network() -> None:
    net = MemoryNetwork(seed=3)
    net.drop, net.duplicate, net.reorder, net.delay = 0.05, 0.05, 0.1, (0.0, 0.01)
    transports: dict[str, Transport] = {"memory": MemoryTransport(net)}
    a, b, c = stores(3)
    async with (
        Node(c, listen="memory://fc", transports=transports, settings=FAST) as nc,
        Node(b, listen="memory://fb", peers=[nc.url], transports=transports, settings=FAST) as nb,  # type: ignore[list-item]
        Node(a, listen="memory://fa", peers=[nb.url, nc.url], transports=transports, settings=FAST),  # type: ignore[list-item]
    ):
        rnd = random.Random(2)
        expected = 0
        written = {}
        for i in range(400):
            store = rnd.choice([a, b, c])
            if rnd.random() < 0.5:
                store.incr("n", 1)
                expected += 1
            else:
                store.put(f"k{i}", i)
                written[f"k{i}"] = i
            if i % 20 == 0:
                await anyio.sleep(0.01)
        net.partition(["fa"], ["fb", "fc"])
        a.incr("n", 10)
        b.incr("n", 20)
        expected += 30
        await anyio.sleep(0.3)
        net.heal()
        await converge(a, b, c, timeout=30)
        assert a.get("n") == b.get("n") == c.get("n") == expected
        assert all(c.get(key) == value for key, value in written.items())


async def test_client_calls_and_errors(network: Network) -> None:
    url_for, transports = network
    store = KvStore.open("t", replica_id="server")
    async with Node(
        store, listen=url_for("srv"), secret=SECRET, transports=transports, settings=FAST
    ) as node:
        assert node.url is not None
        async with Client(node.url, store="t", secret=SECRET, transports=transports) as client:
            await client.put("greeting", "hello")
            assert await client.get("greeting") == "hello"
            assert await client.get("nope") is None
            assert await client.incr("views", 5) == 5
            assert await client.keys() == ["greeting", "views"]
            assert await client.delete("greeting") is True
            assert await client.digest() == store.digest()
            with pytest.raises(RemoteCallError) as info:
                await client.incr("views", "x")  # type: ignore[arg-type]
            assert info.value.kind == "InvalidArgumentType"
            store.put("name", "ana")
            with pytest.raises(RemoteCallError, match=WrongType.__name__):
                await client.incr("name")
        with pytest.raises(AuthenticationFailed):
            async with Client(node.url, store="t", secret=b"wrong", transports=transports):
                pass


async def test_a_node_with_an_unknown_peer_scheme_fails_to_start() -> None:
    from crdtkv.errors import ConnectFailed

    with pytest.raises(ConnectFailed, match="no transport"):
        async with Node(KvStore.open(), peers=["carrier-pigeon://london"]):
            pass


async def test_a_peer_that_is_down_is_redialed_until_it_comes_up() -> None:
    a, b = stores(2)
    from .test_processes import free_ports

    url = f"ws://127.0.0.1:{free_ports(1)[0]}"
    async with Node(a, peers=[url], settings=FAST):
        a.put("early", 1)
        await anyio.sleep(0.3)  # a few failed dials
        async with Node(b, listen=url, settings=FAST):
            await converge(a, b)
            assert b.get("early") == 1


async def test_a_client_watches_changes_at_a_node(network: Network) -> None:
    url_for, transports = network
    store = KvStore.open("t", replica_id="server")
    peer = KvStore.open("t", replica_id="peer")
    async with (
        Node(store, listen=url_for("watched"), secret=SECRET, transports=transports, settings=FAST) as node,
        Node(peer, peers=[node.url], secret=SECRET, transports=transports, settings=FAST),  # type: ignore[list-item]
        Client(node.url, store="t", secret=SECRET, transports=transports) as client,  # type: ignore[arg-type]
    ):
        seen: list[Change] = []

        async def watch() -> None:
            async for change in client.watch("flag:"):
                seen.append(change)
                if len(seen) == 4:
                    return

        async with anyio.create_task_group() as group:
            group.start_soon(watch)
            await anyio.sleep(0.05)
            store.put("flag:a", True)
            store.put("unrelated", 1)
            peer.put("flag:b", "remote")  # replicated, then reported
            with anyio.fail_after(10):
                while store.get("flag:b") is None:
                    await anyio.sleep(0.005)
            store.delete("flag:a")
            store.put("flag:c", None)  # a stored None, not a delete
        assert [(c.key, c.value, c.deleted) for c in seen] == [
            ("flag:a", True, False),
            ("flag:b", "remote", False),
            ("flag:a", None, True),
            ("flag:c", None, False),
        ]
        assert seen[1].origin == peer.origin
        assert await client.incr("n", 2, ttl=60) == 2
        assert store.get_with_metadata("n").expires_at is not None  # type: ignore[union-attr]


async def test_a_client_watcher_that_falls_behind_is_told() -> None:
    store = KvStore.open("t", replica_id="server")
    async with (
        Node(store, listen="ws://127.0.0.1:0", settings=FAST) as node,
        Client(node.url, store="t") as client,  # type: ignore[arg-type]
    ):
        changes = client.watch("k", buffer=5)

        async def poke() -> None:  # until the watch is registered at the node
            while True:
                store.put("k-first", 1)
                await anyio.sleep(0.05)

        async with anyio.create_task_group() as group:
            group.start_soon(poke)
            with anyio.fail_after(10):
                first = await changes.__anext__()
            group.cancel_scope.cancel()
        assert first.key == "k-first"
        for i in range(200):  # far more than the client buffers, while it is not reading
            store.put(f"k{i}", i)
        await anyio.sleep(0.3)
        seen: list[Change] = []
        with anyio.fail_after(10):
            while not any(c.overflow for c in seen):
                seen.append(await changes.__anext__())
        assert len(seen) <= 5 + 1  # what fit in the buffer, then the notice, not 200 changes
        await changes.aclose()


async def test_a_node_shuts_down_cleanly_after_its_store_was_closed() -> None:
    store = KvStore.open("t")
    async with Node(store, listen="ws://127.0.0.1:0") as node:
        url = node.url
        store.close()
    from crdtkv.errors import ConnectFailed
    from crdtkv.transport import TransportSettings
    from transports.websocket import WebSocketTransport

    with pytest.raises(ConnectFailed):  # the listener is gone too
        await WebSocketTransport().connect(url, TransportSettings())  # type: ignore[arg-type]

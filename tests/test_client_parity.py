"""``Client`` reaches parity with ``KvStore``, and redials after the link ended.

Real nodes over loopback WebSockets. A call in flight when the link drops is
shown through a TCP relay on loopback that holds the node's replies and then
cuts the link: the node applied the call, the client raises LinkClosed and
does not send it again.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.abc
import pytest

from crdtkv import Decision, KeyInfo, KvStore, Record
from crdtkv.client import Client
from crdtkv.core.sync import SyncSettings
from crdtkv.errors import (
    AuthenticationFailed,
    ConnectFailed,
    InvalidArgument,
    InvalidArgumentType,
    LinkClosed,
    RemoteCallError,
)
from crdtkv.node import Node, NodeSettings
from crdtkv.requests import MAX_KEYS_PER_GET_MANY, SnapshotTransfers, execute
from crdtkv.transport import Connection, TransportSettings
from transports.websocket import WebSocketTransport

pytestmark = pytest.mark.anyio

GUARD = 30.0  # hang guard only
FAST = NodeSettings(sync=SyncSettings(keepalive_interval=0.2, keepalive_timeout=5.0, handshake_timeout=5.0))


@asynccontextmanager
async def serving(store: KvStore, listen: str = "ws://127.0.0.1:0", **options: Any) -> AsyncIterator[Node]:
    async with Node(store, listen=listen, settings=FAST, **options) as node:
        yield node


async def until(condition: Any, what: str) -> None:
    with anyio.fail_after(GUARD):
        while not condition():
            await anyio.sleep(0.01)


# -- parity -----------------------------------------------------------------------------


async def test_every_store_method_answers_as_the_store_does() -> None:
    store = KvStore.open("t", replica_id="server")
    async with serving(store) as node, Client(node.url or "", store="t") as client:
        assert await client.get("missing") is None
        assert await client.get("missing", 0) == 0
        await client.put("none", None)
        assert await client.get("none", "default") is None  # a stored None is not missing
        await client.put("session:1", {"cart": [1, 2]}, ttl=60, metadata={"owner": "ana"})
        at = time.time() + 120
        await client.put("session:2", "b", expiration=at)
        assert await client.incr("views", 5) == 5
        assert await client.incr("views", 2, expiration=at) == 7
        assert await client.incr("views", 1, 600) == 8

        record = await client.get_with_metadata("session:1")
        assert isinstance(record, Record)
        assert record == store.get_with_metadata("session:1")
        assert record.metadata == {"owner": "ana"} and record.kind == "register"
        assert await client.get_with_metadata("missing") is None

        keys = ["views", "missing", "session:1", "none"]
        assert await client.get_many(keys) == store.get_many(keys) == [8, None, {"cart": [1, 2]}, None]
        assert await client.get_many(keys, default=-1) == [8, -1, {"cart": [1, 2]}, None]
        assert await client.get_many([]) == []

        assert await client.ttl("session:2") == pytest.approx(store.ttl("session:2"), abs=1)
        assert await client.ttl("views") == pytest.approx(600, abs=1)  # the longest of the incr ttls
        assert await client.expire("views", 30) is True
        assert store.ttl("views") == pytest.approx(30, abs=1)
        assert await client.expire("missing", 30) is False
        assert await client.persist("views") is True and store.ttl("views") is None
        assert await client.persist("views") is False
        assert await client.expire("session:2", expiration=time.time() - 1) is True
        assert await client.get("session:2") is None
        assert [await client.kind(k) for k in ("views", "session:1", "missing")] == [
            "counter",
            "register",
            None,
        ]

        page = await client.list("session:", detailed=True)
        assert page.keys == ["session:1"] and page.cursor is None
        expected = store.list("session:", detailed=True).details
        assert expected is not None and page.details == expected
        assert expected == [KeyInfo("session:1", expected[0].expiration, {"owner": "ana"})]
        assert expected[0].expiration == pytest.approx(time.time() + 60, abs=5)
        assert (await client.list("session:")).details is None

        decision = await client.rate_limit("api:ana", 2, 60.0)
        assert isinstance(decision, Decision) and decision.allowed and decision.count == 1
        await client.rate_limit("api:ana", 2, 60.0, 1)
        refused = await client.rate_limit("api:ana", 2, 60.0)
        assert not refused.allowed and refused.remaining == 0 and refused.limit == 2

        assert await client.delete("views") is True
        assert await client.get("views") is None
        assert await client.digest() == store.digest()


async def test_refusals_name_the_store_error() -> None:
    store = KvStore.open("t", replica_id="server")
    store.put("r", "v")
    store.doc("d").text("t").insert(0, "x")
    async with serving(store) as node, Client(node.url or "", store="t") as client:
        cases = [
            (client.incr("r"), "WrongType"),
            (client.expire("d", 5), "WrongType"),
            (client.expire("r"), "InvalidArgument"),
            (client.expire("r", 5, expiration=time.time() + 5), "InvalidArgument"),
            (client.put("r", "v", 5, expiration=time.time() + 5), "InvalidArgument"),
            (client.rate_limit("k", -1, 1.0), "InvalidArgument"),
            (client.ttl(""), "InvalidKey"),
            (client.list("", detailed=True, limit=0), "InvalidArgument"),
        ]
        for call, kind in cases:
            with pytest.raises(RemoteCallError) as info:
                await call
            assert info.value.kind == kind
        with pytest.raises(RemoteCallError, match="InvalidArgumentType"):
            await client.call("list", "", 10, None, "yes")
        with pytest.raises(InvalidArgumentType):
            await client.get_many("abc")  # type: ignore[arg-type]
        assert store.get("r") == "v"


async def test_get_many_spans_as_many_replies_as_its_values_need() -> None:
    store = KvStore.open("t", replica_id="server")
    big = "x" * 300_000
    keys = [f"big:{i}" for i in range(5)] + [f"n:{i}" for i in range(MAX_KEYS_PER_GET_MANY + 500)]
    for key in keys[:5]:
        store.put(key, big)
    for i, key in enumerate(keys[5:]):
        store.put(key, i)
    # one reply never holds more than one value's size beyond max_value_bytes, nor too many keys
    ok, answers = execute(store, "get_many", [keys], "link", SnapshotTransfers())
    assert ok and len(answers) == 1
    ok, answers = execute(store, "get_many", [keys[5:]], "link", SnapshotTransfers())
    assert ok and len(answers) == MAX_KEYS_PER_GET_MANY
    async with serving(store) as node, Client(node.url or "", store="t") as client:
        values = await client.get_many([*keys, "missing"])
        assert values == [big] * 5 + list(range(MAX_KEYS_PER_GET_MANY + 500)) + [None]


async def test_a_detailed_list_pages_within_the_reply_budget() -> None:
    store = KvStore.open("t", replica_id="server")
    meta = {"note": "m" * 900}
    for i in range(600):
        store.put(f"k:{i:04d}:" + "x" * 500, i, metadata=meta, ttl=3600)
    async with serving(store) as node, Client(node.url or "", store="t") as client:
        keys: list[str] = []
        cursor = None
        pages = 0
        while True:
            page = await client.list("k:", limit=600, cursor=cursor, detailed=True)
            assert page.details is not None and [d.name for d in page.details] == page.keys
            assert all(d.metadata == meta and d.expiration is not None for d in page.details)
            keys += page.keys
            pages += 1
            cursor = page.cursor
            if cursor is None:
                break
        assert pages > 1 and keys == store.list("k:", limit=600).keys


async def test_concurrent_calls_on_one_client_all_get_their_own_answers() -> None:
    store = KvStore.open("t", replica_id="server")
    async with serving(store) as node, Client(node.url or "", store="t") as client:
        results: dict[int, Any] = {}

        async def worker(i: int) -> None:
            await client.put(f"k{i}", i)
            results[i] = await client.get(f"k{i}")
            await client.incr("total", i)

        with anyio.fail_after(GUARD):
            async with anyio.create_task_group() as group:
                for i in range(50):
                    group.start_soon(worker, i)
        assert results == {i: i for i in range(50)}
        assert store.get("total") == sum(range(50))


# -- reconnecting -------------------------------------------------------------------------


class CountingTransport(WebSocketTransport):
    """The WebSocket transport, counting dials."""

    def __init__(self) -> None:
        super().__init__()
        self.dials = 0

    async def connect(self, url: str, settings: TransportSettings) -> Connection:
        self.dials += 1
        return await super().connect(url, settings)


async def run_node(
    store: KvStore, listen: str, stop: anyio.Event, *, task_status: anyio.abc.TaskStatus[str]
) -> None:
    async with serving(store, listen) as node:
        task_status.started(node.url or "")
        await stop.wait()


async def test_a_client_redials_across_a_node_restart_and_backs_off_while_it_is_down() -> None:
    store = KvStore.open("t", replica_id="server")
    dialer = CountingTransport()
    async with anyio.create_task_group() as group:
        first = anyio.Event()
        url = await group.start(run_node, store, "ws://127.0.0.1:0", first)
        client = Client(
            url, store="t", timeout=1.0, transports={"ws": dialer}, reconnect_initial=0.05, reconnect_max=0.2
        )
        async with client:
            await client.put("k", "before")
            assert client.connections == 1 and client.connected
            first.set()  # the node stops
            await until(lambda: not client.connected, "the client to see the link end")
            dials = dialer.dials
            with pytest.raises(ConnectFailed, match="attempts"):
                await client.get("k")  # redials for `timeout` seconds, backing off, then gives up
            # the waits between dials are at least half of 0.05 x 1.618**n (at most 0.2) s:
            # within 1 s that allows about a dozen dials, however fast the machine is
            assert 1 <= dialer.dials - dials <= 15
            second = anyio.Event()
            await group.start(run_node, store, url, second)  # the same port again
            with anyio.fail_after(GUARD):
                assert await client.get("k") == "before"
            assert client.connections == 2 and client.connected
            await client.put("k", "after")
            assert store.get("k") == "after"
            second.set()


async def test_without_reconnect_every_call_after_the_link_ended_raises_link_closed() -> None:
    store = KvStore.open("t", replica_id="server")
    dialer = CountingTransport()
    async with anyio.create_task_group() as group:
        stop = anyio.Event()
        url = await group.start(run_node, store, "ws://127.0.0.1:0", stop)
        async with Client(url, store="t", transports={"ws": dialer}, reconnect=False) as client:
            await client.put("k", "v")
            stop.set()
            await until(lambda: not client.connected, "the client to see the link end")
            for _ in range(2):
                with pytest.raises(LinkClosed):
                    await client.get("k")
        assert dialer.dials == 1


async def test_a_refused_secret_is_not_redialed() -> None:
    store = KvStore.open("t", replica_id="server")
    async with serving(store, secret=b"right") as node:
        with pytest.raises(AuthenticationFailed):
            async with Client(node.url or "", store="t", secret=b"wrong"):
                pass


def test_bad_reconnect_settings_are_refused() -> None:
    with pytest.raises(InvalidArgument, match="reconnect"):
        Client("ws://127.0.0.1:1", reconnect_initial=0)
    with pytest.raises(InvalidArgument, match="reconnect"):
        Client("ws://127.0.0.1:1", reconnect_initial=2, reconnect_max=1)


class Relay:
    """A TCP relay on loopback between clients and a node: it can hold the node's bytes and cut every link."""

    def __init__(self, port: int) -> None:
        self.port = port
        #: while True, bytes from the node wait in the relay
        self.hold = False
        self._links: list[anyio.CancelScope] = []

    async def serve(self, *, task_status: anyio.abc.TaskStatus[int]) -> None:
        listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
        async with listener:
            task_status.started(listener.extra(anyio.abc.SocketAttribute.local_port))
            await listener.serve(self._relay)

    async def _relay(self, downstream: anyio.abc.SocketStream) -> None:
        upstream = await anyio.connect_tcp("127.0.0.1", self.port)
        async with downstream, upstream, anyio.create_task_group() as group:
            self._links.append(group.cancel_scope)
            group.start_soon(self._pump, downstream, upstream, False, group.cancel_scope)
            group.start_soon(self._pump, upstream, downstream, True, group.cancel_scope)

    async def _pump(
        self,
        source: anyio.abc.SocketStream,
        target: anyio.abc.SocketStream,
        from_node: bool,
        scope: anyio.CancelScope,
    ) -> None:
        try:
            async for data in source:
                while from_node and self.hold:
                    await anyio.sleep(0.005)
                await target.send(data)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            pass
        scope.cancel()  # one side ended: end the pair

    def cut(self) -> None:
        """Drop every link through the relay at once."""
        for scope in self._links:
            scope.cancel()


async def test_a_call_in_flight_when_the_link_drops_raises_link_closed_and_is_not_resent() -> None:
    store = KvStore.open("t", replica_id="server")
    async with anyio.create_task_group() as group:
        stop = anyio.Event()
        url = await group.start(run_node, store, "ws://127.0.0.1:0", stop)
        relay = Relay(int(url.rsplit(":", 1)[1]))
        async with anyio.create_task_group() as relaying:
            relay_port = await relaying.start(relay.serve)
            async with Client(f"ws://127.0.0.1:{relay_port}", store="t", reconnect_initial=0.05) as client:
                assert await client.incr("n") == 1
                relay.hold = True  # the node's answers stop here
                outcome: list[object] = []

                async def incr() -> None:
                    try:
                        outcome.append(await client.incr("n"))
                    except LinkClosed as exc:
                        outcome.append(exc)

                relaying.start_soon(incr)
                await until(lambda: store.get("n") == 2, "the node to apply the increment")
                relay.cut()  # the link drops before the answer got through
                relay.hold = False
                await until(lambda: bool(outcome), "the call in flight to end")
                assert isinstance(outcome[0], LinkClosed)
                with anyio.fail_after(GUARD):
                    assert await client.get("n") == 2  # the next call redialed; the incr was not resent
                assert client.connections == 2
                assert store.get("n") == 2
            relaying.cancel_scope.cancel()
        stop.set()

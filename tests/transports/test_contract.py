"""The transport contract, run against every shipped transport (see ``case`` in conftest)."""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import pytest

from crdtkv.errors import ConnectFailed, LinkClosed
from crdtkv.transport import Connection, Handler, Listener, TransportSettings, find_transport
from tests.transports.conftest import Case
from transports.memory import MemoryTransport
from transports.websocket import WebSocketTransport

from .common import echo

pytestmark = pytest.mark.anyio

LIMIT = 64 * 1024
SETTINGS = TransportSettings(max_message_bytes=LIMIT, max_queue=4)
#: Hang guard only: nothing here should come close to it.
GUARD = 10


@asynccontextmanager
async def serving(
    case: Case, handler: Handler, settings: TransportSettings = SETTINGS
) -> AsyncIterator[Listener]:
    listener = await case.transport.listen(case.listen_url, handler, settings)
    try:
        yield listener
    finally:
        await listener.aclose()


@asynccontextmanager
async def dialing(
    case: Case, listener: Listener, settings: TransportSettings = SETTINGS
) -> AsyncIterator[Connection]:
    connection = await case.transport.connect(listener.url, settings)
    try:
        yield connection
    finally:
        await connection.aclose()


def numbered(i: int, size: int = 0) -> bytes:
    return i.to_bytes(4, "big") + bytes(size)


def number_of(message: bytes) -> int:
    return int.from_bytes(message[:4], "big")


async def test_many_messages_round_trip_in_order_both_ways(case: Case) -> None:
    count = 300
    heard_by_server: list[bytes] = []

    async def chatty(connection: Connection) -> None:
        async with anyio.create_task_group() as group:
            group.start_soon(send_all, connection, b"s")
            for _ in range(count):
                heard_by_server.append(await connection.receive())

    async def send_all(connection: Connection, prefix: bytes) -> None:
        for i in range(count):
            await connection.send(prefix + numbered(i))

    with anyio.fail_after(GUARD):
        async with serving(case, chatty) as listener, dialing(case, listener) as client:
            assert isinstance(client, Connection)
            async with anyio.create_task_group() as group:
                group.start_soon(send_all, client, b"c")
                heard_by_client = [await client.receive() for _ in range(count)]

    assert heard_by_client == [b"s" + numbered(i) for i in range(count)]
    assert heard_by_server == [b"c" + numbered(i) for i in range(count)]


@pytest.mark.parametrize(
    "payload",
    [b"", b"\x00", bytes(range(256)), b"\xff" * 1000, bytes(LIMIT)],
    ids=["empty", "nul", "all-bytes", "ff", "at-limit"],
)
async def test_binary_payloads_arrive_intact(case: Case, payload: bytes) -> None:
    with anyio.fail_after(GUARD):
        async with serving(case, echo) as listener, dialing(case, listener) as client:
            await client.send(payload)
            echoed = await client.receive()
    assert echoed == payload
    assert type(echoed) is bytes


async def test_message_over_the_limit_closes_the_link_on_both_sides(case: Case) -> None:
    server_saw: list[str] = []

    async def record(connection: Connection) -> None:
        try:
            while True:
                await connection.receive()
        except LinkClosed as exc:
            server_saw.append(exc.reason)

    with anyio.fail_after(GUARD):
        async with serving(case, record) as listener:
            async with dialing(case, listener) as client:
                try:
                    await client.send(bytes(LIMIT + 1))
                except LinkClosed as exc:
                    assert "too large" in exc.reason
                with pytest.raises(LinkClosed) as info:
                    await client.receive()
                assert "too large" in info.value.reason
                with pytest.raises(LinkClosed):
                    await client.send(b"after")
            while not server_saw:
                await anyio.sleep(0.01)
            assert "too large" in server_saw[0]


async def test_listener_keeps_serving_after_an_oversized_message(case: Case) -> None:
    with anyio.fail_after(GUARD):
        async with serving(case, echo) as listener:
            async with dialing(case, listener) as first:
                with pytest.raises(LinkClosed):
                    await first.send(bytes(LIMIT + 1))
                    await first.receive()
            async with dialing(case, listener) as second:
                await second.send(b"still here")
                assert await second.receive() == b"still here"


async def test_closing_the_client_ends_the_servers_receive(case: Case) -> None:
    ended = anyio.Event()
    reasons: list[str] = []

    async def wait_for_close(connection: Connection) -> None:
        try:
            await connection.receive()
        except LinkClosed as exc:
            reasons.append(exc.reason)
            ended.set()

    with anyio.fail_after(GUARD):
        async with serving(case, wait_for_close) as listener:
            client = await case.transport.connect(listener.url, SETTINGS)
            await client.aclose()
            await ended.wait()
    assert reasons


async def test_handler_returning_ends_the_clients_receive(case: Case) -> None:
    async def hello_and_goodbye(connection: Connection) -> None:
        await connection.send(b"hello")

    with anyio.fail_after(GUARD):
        async with serving(case, hello_and_goodbye) as listener, dialing(case, listener) as client:
            assert await client.receive() == b"hello"
            with pytest.raises(LinkClosed):
                await client.receive()
            with pytest.raises(LinkClosed):
                await client.receive()


async def test_messages_sent_before_close_are_delivered(case: Case) -> None:
    async def send_then_close(connection: Connection) -> None:
        for i in range(3):
            await connection.send(numbered(i))

    with anyio.fail_after(GUARD):
        async with serving(case, send_then_close) as listener, dialing(case, listener) as client:
            got = [await client.receive() for _ in range(3)]
            with pytest.raises(LinkClosed):
                await client.receive()
    assert got == [numbered(i) for i in range(3)]


async def test_aclose_is_idempotent_and_use_after_close_raises_link_closed(case: Case) -> None:
    with anyio.fail_after(GUARD):
        async with serving(case, echo) as listener:
            client = await case.transport.connect(listener.url, SETTINGS)
            await client.send(b"x")
            assert await client.receive() == b"x"
            await client.aclose()
            await client.aclose()
            with pytest.raises(LinkClosed):
                await client.send(b"after close")
            with pytest.raises(LinkClosed):
                await client.receive()
            await listener.aclose()
        await listener.aclose()


async def test_connect_where_nothing_listens_fails(case: Case) -> None:
    with anyio.fail_after(GUARD), pytest.raises(ConnectFailed) as info:
        await case.transport.connect(case.dead_url, SETTINGS)
    assert case.dead_url in str(info.value)


async def test_closing_the_listener_closes_its_links_and_stops_accepting(case: Case) -> None:
    with anyio.fail_after(GUARD):
        async with serving(case, echo) as listener, dialing(case, listener) as client:
            await client.send(b"x")
            assert await client.receive() == b"x"
            await listener.aclose()
            with pytest.raises(LinkClosed):
                await client.receive()
            with pytest.raises(LinkClosed):
                await client.send(b"y")
            with pytest.raises(ConnectFailed):
                await case.transport.connect(listener.url, SETTINGS)


async def test_closing_the_listener_cancels_handlers_that_ignore_their_link(case: Case) -> None:
    started = anyio.Event()

    async def stuck(connection: Connection) -> None:
        started.set()
        await anyio.sleep_forever()

    with anyio.fail_after(GUARD):
        async with serving(case, stuck) as listener, dialing(case, listener) as client:
            await started.wait()
            await listener.aclose()
            with pytest.raises(LinkClosed):
                await client.receive()


async def test_a_failing_handler_is_logged_and_the_listener_keeps_serving(
    case: Case, caplog: pytest.LogCaptureFixture
) -> None:
    calls = 0

    async def fails_first(connection: Connection) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("handler bug")
        await echo(connection)

    with caplog.at_level(logging.ERROR, logger="crdtkv.transport"), anyio.fail_after(GUARD):
        async with serving(case, fails_first) as listener:
            async with dialing(case, listener) as first:
                with pytest.raises(LinkClosed):
                    await first.receive()
            async with dialing(case, listener) as second:
                await second.send(b"ok")
                assert await second.receive() == b"ok"
    failures = [r for r in caplog.records if r.name == "crdtkv.transport" and r.levelno >= logging.ERROR]
    assert len(failures) == 1
    assert failures[0].exc_info is not None
    assert "handler bug" in str(failures[0].exc_info[1])


async def test_listener_url_is_dialable(case: Case) -> None:
    with anyio.fail_after(GUARD):
        async with serving(case, echo) as listener:
            if case.listen_url.startswith("ws://"):
                assert listener.url.startswith("ws://127.0.0.1:")
                assert not listener.url.endswith(":0")
            async with dialing(case, listener) as client:
                await client.send(b"ping")
                assert await client.receive() == b"ping"
                assert client.remote == listener.url


async def test_a_receiver_that_does_not_read_slows_the_sender_down(case: Case) -> None:
    """With small queues, 1000 large messages cannot all be sent while nobody reads.

    Loopback TCP buffers hold a few MiB at most, far below 1000 * 128 KiB, so
    this does not depend on timing: the bound only ends the wait.
    """
    settings = TransportSettings(max_message_bytes=256 * 1024, max_queue=2)
    reading = anyio.Event()
    done = anyio.Event()
    received: list[int] = []

    async def slow_reader(connection: Connection) -> None:
        await reading.wait()
        try:
            while True:
                received.append(number_of(await connection.receive()))
        except LinkClosed:
            done.set()

    async with serving(case, slow_reader, settings) as listener:
        client = await case.transport.connect(listener.url, settings)
        sent = 0
        with anyio.move_on_after(0.5):
            for i in range(1000):
                await client.send(numbered(i, 128 * 1024))
                sent += 1
        assert sent < 1000
        reading.set()
        with anyio.fail_after(GUARD):
            await client.aclose()
            await done.wait()
    # Whatever got through arrived in order (WebSocket may deliver the send that was cancelled mid-way).
    assert received == list(range(len(received)))
    assert len(received) >= sent


def test_find_transport_returns_the_registered_transports() -> None:
    assert isinstance(find_transport("ws://127.0.0.1:8765"), WebSocketTransport)
    assert isinstance(find_transport("wss://127.0.0.1:8765"), WebSocketTransport)
    assert isinstance(find_transport("memory://london"), MemoryTransport)
    with pytest.raises(ConnectFailed):
        find_transport("carrier-pigeon://london")


async def test_links_closed_at_once_leave_nothing_behind(case: Case) -> None:
    """Dial and hang up before the handler runs, then close the listener: no unclosed resources."""
    with anyio.fail_after(GUARD):
        listener = await case.transport.listen(case.listen_url, echo, SETTINGS)
        clients = [await case.transport.connect(listener.url, SETTINGS) for _ in range(3)]
        await clients[0].aclose()
        await listener.aclose()
        for client in clients:
            await client.aclose()
    gc.collect()  # unclosed streams or sockets would warn here, and warnings are errors

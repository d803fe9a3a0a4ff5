"""What only the WebSocket transport does: frames, compression, TLS and dialing errors."""

from __future__ import annotations

import socket
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import anyio.abc
import pytest
from websockets.asyncio.client import connect as raw_connect
from websockets.asyncio.server import ServerConnection
from websockets.asyncio.server import serve as raw_serve
from websockets.exceptions import ConnectionClosed

from crdtkv.errors import ConnectFailed, LinkClosed, ListenFailed
from crdtkv.transport import Connection, Handler, Listener, TransportSettings
from transports.websocket import WebSocketConnection, WebSocketTransport

from .common import echo

pytestmark = pytest.mark.anyio

SETTINGS = TransportSettings(max_message_bytes=64 * 1024)
GUARD = 10
TRANSPORT = WebSocketTransport()


@asynccontextmanager
async def serving(
    handler: Handler, settings: TransportSettings = SETTINGS, url: str = "ws://127.0.0.1:0"
) -> AsyncIterator[Listener]:
    listener = await TRANSPORT.listen(url, handler, settings)
    try:
        yield listener
    finally:
        await listener.aclose()


async def test_a_text_message_closes_the_link() -> None:
    reasons: list[str] = []
    done = anyio.Event()

    async def record(connection: Connection) -> None:
        try:
            await connection.receive()
        except LinkClosed as exc:
            reasons.append(exc.reason)
        done.set()

    with anyio.fail_after(GUARD):
        async with serving(record) as listener:
            async with raw_connect(listener.url) as raw:
                await raw.send("this is text")
                with pytest.raises(ConnectionClosed):
                    await raw.recv()
                assert raw.close_code == 1003
            await done.wait()
    assert len(reasons) == 1
    assert "text" in reasons[0]


async def test_compression_is_never_negotiated() -> None:
    sides: list[WebSocketConnection] = []

    async def keep(connection: Connection) -> None:
        assert isinstance(connection, WebSocketConnection)
        sides.append(connection)
        await echo(connection)

    with anyio.fail_after(GUARD):
        async with serving(keep) as listener:
            client = await TRANSPORT.connect(listener.url, SETTINGS)
            try:
                assert isinstance(client, WebSocketConnection)
                await client.send(b"x")
                assert await client.receive() == b"x"
                assert client.websocket.protocol.extensions == []
                assert sides[0].websocket.protocol.extensions == []
            finally:
                await client.aclose()

            # A peer that offers permessage-deflate does not get it either.
            async with raw_connect(listener.url) as raw:
                assert raw.response is not None
                assert "Sec-WebSocket-Extensions" not in raw.response.headers
                assert raw.protocol.extensions == []


async def test_our_client_does_not_offer_compression() -> None:
    offered: list[str | None] = []

    async def inspect(websocket: ServerConnection) -> None:
        assert websocket.request is not None
        offered.append(websocket.request.headers.get("Sec-WebSocket-Extensions"))

    with anyio.fail_after(GUARD):
        async with raw_serve(inspect, "127.0.0.1", 0) as server:
            port = server.sockets[0].getsockname()[1]
            client = await TRANSPORT.connect(f"ws://127.0.0.1:{port}", SETTINGS)
            try:
                assert client.websocket.protocol.extensions == []  # type: ignore[attr-defined]
            finally:
                await client.aclose()
    assert offered == [None]


async def test_the_receiver_enforces_its_own_size_limit() -> None:
    """A peer with a larger limit sends a message over ours: websockets closes with 1009."""
    server_reasons: list[str] = []

    async def record(connection: Connection) -> None:
        try:
            await connection.receive()
        except LinkClosed as exc:
            server_reasons.append(exc.reason)

    small = TransportSettings(max_message_bytes=1024)
    with anyio.fail_after(GUARD):
        async with serving(record, small) as listener:
            client = await TRANSPORT.connect(listener.url, TransportSettings())
            try:
                await client.send(bytes(2048))
                with pytest.raises(LinkClosed) as info:
                    await client.receive()
            finally:
                await client.aclose()
            while not server_reasons:
                await anyio.sleep(0.01)
    assert "too large" in info.value.reason
    assert "1009" in info.value.reason
    assert "too large" in server_reasons[0]


async def test_remote_describes_each_end() -> None:
    remotes: list[str] = []

    async def keep(connection: Connection) -> None:
        remotes.append(connection.remote)
        await echo(connection)

    with anyio.fail_after(GUARD):
        async with serving(keep) as listener:
            client = await TRANSPORT.connect(listener.url, SETTINGS)
            try:
                await client.send(b"x")
                await client.receive()
                assert client.remote == listener.url
            finally:
                await client.aclose()
    assert remotes[0].startswith("127.0.0.1:")


async def test_connect_times_out_on_a_silent_server() -> None:
    """The port accepts TCP (the kernel does, from the backlog) but never answers the handshake."""
    quick = TransportSettings(connect_timeout=0.2)
    with socket.create_server(("127.0.0.1", 0)) as silent:
        url = f"ws://127.0.0.1:{silent.getsockname()[1]}"
        with anyio.fail_after(GUARD), pytest.raises(ConnectFailed, match="timed out") as info:
            await TRANSPORT.connect(url, quick)
    assert url in str(info.value)
    assert isinstance(info.value.__cause__, TimeoutError)


async def test_connect_to_something_that_is_not_a_websocket_server_fails() -> None:
    async def not_found(stream: anyio.abc.SocketStream) -> None:
        async with stream:
            await stream.receive()
            await stream.send(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")

    with anyio.fail_after(GUARD):
        async with await anyio.create_tcp_listener(local_host="127.0.0.1") as http:
            port = http.extra(anyio.abc.SocketAttribute.local_port)
            async with anyio.create_task_group() as group:
                group.start_soon(http.serve, not_found)
                with pytest.raises(ConnectFailed, match="404"):
                    await TRANSPORT.connect(f"ws://127.0.0.1:{port}/", SETTINGS)
                group.cancel_scope.cancel()


@pytest.mark.parametrize("url", ["ws://127.0.0.1:notaport", "http://127.0.0.1:80", "ws://"])
async def test_bad_urls_fail_to_connect(url: str) -> None:
    with anyio.fail_after(GUARD), pytest.raises(ConnectFailed):
        await TRANSPORT.connect(url, SETTINGS)


async def test_listen_errors_are_transport_errors() -> None:
    with (
        socket.create_server(("127.0.0.1", 0)) as taken,
        pytest.raises(ListenFailed, match="cannot listen"),
    ):
        await TRANSPORT.listen(f"ws://127.0.0.1:{taken.getsockname()[1]}", echo, SETTINGS)
    with pytest.raises(ListenFailed, match="ssl_context"):
        await TRANSPORT.listen("wss://127.0.0.1:0", echo, SETTINGS)
    with pytest.raises(ListenFailed):
        await TRANSPORT.listen("memory://london", echo, SETTINGS)


@pytest.fixture
def server_tls(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    """A server TLS context holding the self-signed test certificate."""
    cert, key = certificate
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    return context


async def test_wss_round_trip_with_a_self_signed_certificate(
    certificate: tuple[Path, Path], server_tls: ssl.SSLContext
) -> None:
    client_tls = ssl.create_default_context(cafile=str(certificate[0]))

    with anyio.fail_after(GUARD):
        async with serving(echo, TransportSettings(ssl_context=server_tls), "wss://127.0.0.1:0") as listener:
            assert listener.url.startswith("wss://127.0.0.1:")
            client = await TRANSPORT.connect(listener.url, TransportSettings(ssl_context=client_tls))
            try:
                await client.send(b"secret")
                assert await client.receive() == b"secret"
            finally:
                await client.aclose()


async def test_wss_refuses_an_untrusted_certificate(server_tls: ssl.SSLContext) -> None:
    # (Under PYTHONASYNCIODEBUG asyncio also reports the server's failed handshake as an error.)
    with anyio.fail_after(GUARD):
        async with serving(echo, TransportSettings(ssl_context=server_tls), "wss://127.0.0.1:0") as listener:
            with pytest.raises(ConnectFailed) as info:
                await TRANSPORT.connect(listener.url, TransportSettings())
    assert isinstance(info.value.__cause__, ssl.SSLCertVerificationError)
    assert listener.url in str(info.value)


async def test_ws_dialing_a_tls_node_says_to_use_wss(server_tls: ssl.SSLContext) -> None:
    with anyio.fail_after(GUARD):
        async with serving(echo, TransportSettings(ssl_context=server_tls), "wss://127.0.0.1:0") as listener:
            plain = listener.url.replace("wss://", "ws://")
            with pytest.raises(ConnectFailed) as info:
                await TRANSPORT.connect(plain, SETTINGS)
    message = str(info.value)
    assert plain in message and "use " + listener.url in message and "--tls-ca" in message


async def test_wss_dialing_a_plain_node_says_to_use_ws() -> None:
    with anyio.fail_after(GUARD):
        async with serving(echo) as listener:
            tls = listener.url.replace("ws://", "wss://")
            with pytest.raises(ConnectFailed) as info:
                await TRANSPORT.connect(tls, SETTINGS)
    message = str(info.value)
    assert tls in message and "does not speak TLS" in message and "use " + listener.url in message


async def test_an_untrusted_certificate_points_at_tls_ca(server_tls: ssl.SSLContext) -> None:
    with anyio.fail_after(GUARD):
        async with serving(echo, TransportSettings(ssl_context=server_tls), "wss://127.0.0.1:0") as listener:
            with pytest.raises(ConnectFailed, match="--tls-ca"):
                await TRANSPORT.connect(listener.url, TransportSettings())

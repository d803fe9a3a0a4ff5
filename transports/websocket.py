"""WebSocket transport (``ws://`` and ``wss://``) on the websockets library's asyncio API.

One crdtkv message is one binary WebSocket message. Compression is off:
replication messages are CBOR, mostly incompressible, and permessage-deflate
costs memory per connection and opens the door to compression bombs. The
limits of :class:`~crdtkv.transport.TransportSettings` map onto websockets'
own: ``max_message_bytes`` is ``max_size`` (a larger message closes the link
with code 1009), ``max_queue`` is the receive queue's high-water mark, and the
ping settings drive keepalive.

Every websockets, socket and TLS exception is mapped at this boundary to
:class:`~crdtkv.errors.LinkClosed` or :class:`~crdtkv.errors.ConnectFailed`
(failures to listen raise :class:`~crdtkv.errors.ListenFailed`),
chained to the original.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from typing import Any
from urllib.parse import urlsplit

import anyio
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.asyncio.connection import Connection as WsConnection
from websockets.asyncio.server import Server, ServerConnection
from websockets.asyncio.server import serve as ws_serve
from websockets.exceptions import ConnectionClosed, InvalidMessage, WebSocketException
from websockets.frames import CloseCode
from websockets.protocol import State

from crdtkv.errors import ConnectFailed, LinkClosed, ListenFailed
from crdtkv.transport import Connection, Handler, Listener, TransportSettings, scheme_of, serve_link

__all__ = ["WebSocketConnection", "WebSocketListener", "WebSocketTransport"]

log = logging.getLogger("crdtkv.transport")

SCHEMES = ("ws", "wss")
#: How long a closing handshake may take before the TCP connection is dropped.


def _describe(exc: ConnectionClosed) -> str:
    """A LinkClosed reason naming the close codes and reasons that were exchanged."""
    codes = {frame.code for frame in (exc.rcvd, exc.sent) if frame is not None}
    if CloseCode.MESSAGE_TOO_BIG in codes:
        return f"message too large ({exc})"
    return f"link closed ({exc})"


def _host_for_url(host: str) -> str:
    return f"[{host}]" if ":" in host else host


class WebSocketConnection:
    """One WebSocket carrying whole binary messages."""

    def __init__(self, websocket: WsConnection, remote: str, max_message_bytes: int) -> None:
        self._ws = websocket
        self._remote = remote
        self._max_message_bytes = max_message_bytes
        # websockets refuses concurrent recv() calls; queue them up instead.
        self._receiving = anyio.Lock()

    @property
    def remote(self) -> str:
        return self._remote

    @property
    def websocket(self) -> WsConnection:
        """The underlying websockets connection (for inspection; do not send on it)."""
        return self._ws

    async def send(self, message: bytes) -> None:
        """Send one binary message; waits while the write buffer is full."""
        if len(message) > self._max_message_bytes:
            reason = f"message too large: {len(message)} bytes, limit {self._max_message_bytes}"
            if self._ws.state is State.OPEN:
                await self._close(CloseCode.MESSAGE_TOO_BIG, "message too large")
            raise LinkClosed(reason)
        try:
            await self._ws.send(message, text=False)
        except ConnectionClosed as exc:
            raise LinkClosed(_describe(exc)) from exc

    async def receive(self) -> bytes:
        """Receive the next binary message; a text message is a protocol violation that closes the link."""
        async with self._receiving:
            try:
                message = await self._ws.recv()
            except ConnectionClosed as exc:
                raise LinkClosed(_describe(exc)) from exc
        if isinstance(message, str):
            await self._close(CloseCode.UNSUPPORTED_DATA, "binary messages only")
            raise LinkClosed("peer sent a text message; crdtkv links carry binary messages only")
        return message

    async def aclose(self) -> None:
        """Close the link with the closing handshake (idempotent; never raises)."""
        await self._close(CloseCode.NORMAL_CLOSURE, "")

    async def _close(self, code: int, reason: str) -> None:
        try:
            await self._ws.close(code, reason)
        except Exception:  # close() only fails if the socket is already gone: it is closed either way
            log.debug("error while closing link to %s", self._remote, exc_info=True)


class WebSocketListener:
    """A websockets server serving each accepted connection with a handler."""

    def __init__(self, url: str, handler: Handler, settings: TransportSettings) -> None:
        self._url = url
        self._handler = handler
        self._settings = settings
        self._server: Server | None = None
        self._tasks: set[asyncio.Task[object]] = set()
        self._closed = False

    @property
    def url(self) -> str:
        return self._url

    async def serve_connection(self, websocket: ServerConnection) -> None:
        """Run the handler for one connection; its failure closes that connection only."""
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        peer = websocket.remote_address
        remote = f"{_host_for_url(peer[0])}:{peer[1]}" if peer else "unknown peer"
        connection = WebSocketConnection(websocket, remote, self._settings.max_message_bytes)
        try:
            await serve_link(self._handler, connection, self._url)
        finally:
            self._tasks.discard(task)

    async def aclose(self) -> None:
        """Stop accepting, close every connection (code 1001) and cancel handlers still running."""
        if self._closed or self._server is None:
            return
        self._closed = True
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await self._server.wait_closed()


def _options(settings: TransportSettings) -> dict[str, Any]:
    """The websockets options both ends share: compression off, every limit set."""
    return {
        "compression": None,
        "max_size": settings.max_message_bytes,
        "max_queue": settings.max_queue,
        "write_limit": settings.write_limit,
        "ping_interval": settings.ping_interval,
        "ping_timeout": settings.ping_timeout,
        "open_timeout": settings.connect_timeout,
        "close_timeout": settings.close_timeout,
    }


#: How long the probe that explains a failed dial may take (seconds).
PROBE_TIMEOUT = 2.0


async def _speaks_tls(host: str, port: int, timeout: float) -> bool:
    """True if the server at ``host:port`` completes a TLS handshake (its certificate unchecked).

    Only used to explain a failed ``ws://`` dial: nothing is sent after the handshake.
    """
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with anyio.fail_after(timeout):
            stream = await anyio.connect_tcp(host, port, ssl_context=context, tls_standard_compatible=False)
    except (OSError, ssl.SSLError, TimeoutError, anyio.BrokenResourceError, anyio.EndOfStream):
        return False
    await stream.aclose()
    return True


async def _speaks_plain_http(host: str, port: int, timeout: float) -> bool:
    """True if the server at ``host:port`` answers a plain HTTP request (so it is not TLS)."""
    try:
        with anyio.fail_after(timeout):
            stream = await anyio.connect_tcp(host, port)
            try:
                await stream.send(f"GET / HTTP/1.1\r\nHost: {_host_for_url(host)}\r\n\r\n".encode())
                answer = await stream.receive(16)
            finally:
                await stream.aclose()
    except (OSError, TimeoutError, anyio.BrokenResourceError, anyio.EndOfStream):
        return False
    return answer.startswith(b"HTTP/")


def _tls_mismatch_hint(exc: BaseException) -> bool:
    """Whether a failed TLS dial looks like the server does not speak TLS (not a bad certificate)."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return False
    return isinstance(exc, ssl.SSLError | ConnectionResetError | EOFError | InvalidMessage)


async def _explain(url: str, scheme: str, exc: BaseException, settings: TransportSettings) -> str:
    """Why a dial failed, pointing at the fix where the cause is known.

    A ``ws://`` dial to a TLS server, or a ``wss://`` dial to a plain one, fails
    with an unhelpful EOF or reset; a short probe of the other protocol tells
    which it was.
    """
    detail = str(exc) or type(exc).__name__
    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port or (443 if scheme == "wss" else 80)
    except ValueError:  # a URL websockets refused: nothing to probe
        return f"cannot connect to {url}: {detail}"
    rest = url.split("://", 1)[1]
    timeout = min(PROBE_TIMEOUT, settings.connect_timeout)
    mismatch = host is not None and (
        (scheme == "ws" and isinstance(exc, InvalidMessage | EOFError))
        or (scheme == "wss" and _tls_mismatch_hint(exc))
    )
    if mismatch and scheme == "ws" and await _speaks_tls(host or "", port, timeout):
        return (
            f"cannot connect to {url}: the node speaks TLS (wss://): use wss://{rest} "
            "(and --tls-ca FILE if its certificate is self-signed)"
        )
    if mismatch and scheme == "wss" and await _speaks_plain_http(host or "", port, timeout):
        return (
            f"cannot connect to {url}: the node does not speak TLS, it serves ws://: use ws://{rest} "
            "(or start the node with --tls-cert and --tls-key)"
        )
    if isinstance(exc, ssl.SSLCertVerificationError):
        return (
            f"cannot connect to {url}: {detail} (for a self-signed or private CA certificate, "
            "trust it with --tls-ca FILE)"
        )
    return f"cannot connect to {url}: {detail}"


class WebSocketTransport:
    """The ``ws://`` and ``wss://`` transport."""

    async def connect(self, url: str, settings: TransportSettings) -> Connection:
        """Dial ``url``; raises ConnectFailed naming the URL and the cause."""
        scheme = scheme_of(url)
        if scheme not in SCHEMES:
            raise ConnectFailed(f"cannot connect to {url}: not a ws:// or wss:// URL")
        # ssl=True: websockets builds a default client context that verifies the server.
        tls: ssl.SSLContext | bool | None = None
        if scheme == "wss":
            tls = settings.ssl_context if settings.ssl_context is not None else True
        try:
            websocket: ClientConnection = await ws_connect(url, ssl=tls, **_options(settings))
        except TimeoutError as exc:
            raise ConnectFailed(
                f"cannot connect to {url}: timed out after {settings.connect_timeout} s"
            ) from exc
        except (OSError, WebSocketException, ValueError, EOFError) as exc:
            raise ConnectFailed(await _explain(url, scheme, exc, settings)) from exc
        return WebSocketConnection(websocket, url, settings.max_message_bytes)

    async def listen(self, url: str, handler: Handler, settings: TransportSettings) -> Listener:
        """Serve ``url`` (port 0 picks a free port; ``url`` of the result has the real one)."""
        try:
            parts = urlsplit(url)
            scheme, host, port = parts.scheme.lower(), parts.hostname, parts.port
        except ValueError as exc:
            raise ListenFailed(f"cannot listen on {url}: {exc}") from exc
        if scheme not in SCHEMES:
            raise ListenFailed(f"cannot listen on {url}: not a ws:// or wss:// URL")
        server_tls = settings.server_ssl_context or settings.ssl_context
        if scheme == "wss" and server_tls is None:
            raise ListenFailed(
                f"cannot listen on {url}: wss:// needs settings.server_ssl_context (a server context)"
            )
        if port is None:
            port = 443 if scheme == "wss" else 80
        listener = WebSocketListener(url, handler, settings)
        try:
            server = await ws_serve(
                listener.serve_connection,
                host or None,
                port,
                ssl=server_tls if scheme == "wss" else None,
                **_options(settings),
            )
        except OSError as exc:
            raise ListenFailed(f"cannot listen on {url}: {exc}") from exc
        bound_port = server.sockets[0].getsockname()[1]
        listener._server = server
        listener._url = f"{scheme}://{_host_for_url(host or 'localhost')}:{bound_port}"
        return listener

"""The HTTP face of a PoP node: h11 over non-blocking sockets, inside the node's anyio event loop.

:class:`HttpServer` is the connection loop, with no knowledge of crdtkv: it
reads each request with h11 (sans-I/O, like crdtkv's core), hands it to a
handler, and writes the handler's response. Every buffer a client can fill is
bounded: request line and headers by ``max_header_bytes`` (431), a body by
``max_body_bytes`` (413, refused from ``Content-Length`` before it is read),
and the server reads nothing more from a connection while a response to it is
being written. Every wait has a deadline: ``idle_timeout`` for the first byte
of a request, ``request_timeout`` for the whole request once it started (408:
slowloris), ``send_timeout`` for a client to take a response (a client that
never reads is closed); one watchdog task per server keeps them all. A
refusal or a broken client closes only its own connection.

The sockets are plain non-blocking sockets (:mod:`crdtkv.gateway.sockets`),
read only when a request needs more bytes. :class:`HttpFace` is that server with
crdtkv's routes (:mod:`crdtkv.gateway.http_routes`).
"""

from __future__ import annotations

import contextlib
import logging
import socket
import time
from email.utils import formatdate
from http import HTTPStatus
from typing import TYPE_CHECKING

import anyio
import anyio.abc
import anyio.lowlevel
import h11

from ..errors import (
    CrdtKvError,
    HeadersTooLarge,
    MalformedRequest,
    RequestTimedOut,
    RequestTooLarge,
)
from .http_errors import error_body, status_of
from .http_messages import JSON, BodyStream, Handler, Request, Response
from .http_routes import HttpRoutes
from .settings import HttpSettings
from .sockets import RECEIVE_BYTES, Gone, accept_forever, drain, listen, receive, send_all

if TYPE_CHECKING:
    from ..node import Node

log = logging.getLogger("crdtkv.http")

#: Responses up to this size go out in one write with their head.
ONE_WRITE_BYTES = 16 * 1024
#: After a refusal, how long (seconds) the server keeps reading and dropping what the
#: client still sends, so the client reads the refusal instead of a connection reset.
LINGER_SECONDS = 1.0

INFINITY = float("inf")
_REASONS = {status.value: status.phrase.encode() for status in HTTPStatus}


_date = [0, b""]


def http_date() -> bytes:
    """The ``Date`` header value, formatted once a second."""
    now = int(time.time())
    if now != _date[0]:
        _date[0], _date[1] = now, formatdate(now, usegmt=True).encode()
    return _date[1]  # type: ignore[return-value]


class HttpServer:
    """Serves HTTP/1.1 with ``handler`` on one TCP port, within ``settings``' budgets."""

    def __init__(self, handler: Handler, settings: HttpSettings | None = None) -> None:
        self.handler = handler
        self.settings = settings or HttpSettings()
        #: connections open now
        self.connections = 0
        #: connections refused because ``max_connections`` were open
        self.refused_connections = 0
        self._live: set[_Connection] = set()

    async def serve(
        self,
        host: str,
        port: int,
        *,
        task_status: anyio.abc.TaskStatus[tuple[str, int]] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Listen on ``host:port`` (0: a free port) and serve until cancelled.

        Calls ``task_status.started((host, bound_port))`` once listening.
        """
        listener = listen(host, port, "HTTP")
        try:
            async with anyio.create_task_group() as group:
                group.start_soon(accept_forever, listener, self._serve_one, group, log)
                group.start_soon(self._watchdog)
                task_status.started((host, listener.getsockname()[1]))
        finally:
            anyio.notify_closing(listener)
            listener.close()

    async def _watchdog(self) -> None:
        """Cancel every connection whose deadline passed.

        One task for the whole server instead of a timer per read and per write
        (each would cost a cancel scope per request); a deadline fires up to a
        quarter of the shortest timeout late.
        """
        settings = self.settings
        tick = min(settings.request_timeout, settings.idle_timeout, settings.send_timeout) / 4
        while True:
            await anyio.sleep(tick)
            now = anyio.current_time()
            for connection in self._live:
                if connection.deadline < now:
                    connection.scope.cancel()

    async def _serve_one(self, sock: socket.socket) -> None:
        """One connection, in its own error boundary."""
        try:
            if self.connections >= self.settings.max_connections:
                self.refused_connections += 1
                with contextlib.suppress(OSError):
                    sock.send(_busy_response())  # what fits now; the connection closes anyway
                    sock.shutdown(socket.SHUT_WR)
                await drain(sock, RECEIVE_BYTES, LINGER_SECONDS)
                return
            self.connections += 1
            connection = _Connection(self.handler, self.settings, sock)
            self._live.add(connection)
            try:
                await connection.run()
            except Exception:  # a bug in one connection must not stop the server
                log.exception("http: connection failed")
            finally:
                self._live.discard(connection)
                self.connections -= 1
        finally:
            sock.close()


def _busy_response() -> bytes:
    body = b'{"error":"GatewayError","message":"too many connections"}'
    return (
        b"HTTP/1.1 503 Service Unavailable\r\nconnection: close\r\ncontent-type: application/json\r\n"
        b"content-length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )


class _Connection:
    """The request-response cycles of one client connection."""

    __slots__ = ("deadline", "h11", "handler", "scope", "settings", "slow", "sock")

    def __init__(self, handler: Handler, settings: HttpSettings, sock: socket.socket) -> None:
        self.handler = handler
        self.settings = settings
        self.sock = sock
        self.h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=settings.max_header_bytes)
        #: the server's watchdog cancels ``scope`` once ``deadline`` (event-loop time) passed ...
        self.scope = anyio.CancelScope()
        self.deadline = INFINITY
        #: ... and then answers 408 if ``slow`` (a request was under way), else closes quietly
        self.slow = False

    async def run(self) -> None:
        with self.scope:
            try:
                while await self._cycle():
                    pass
            except Gone:
                pass
        if self.scope.cancelled_caught and self.slow:
            with anyio.move_on_after(self.settings.send_timeout):
                await self._refuse(
                    RequestTimedOut(f"the request took over {self.settings.request_timeout} seconds")
                )

    def _expect(self, deadline: float, slow: bool) -> None:
        """From now on, wait at most until ``deadline``; then answer 408 if ``slow``, else close quietly."""
        self.deadline = deadline
        self.slow = slow

    async def _cycle(self) -> bool:
        """Serve one request; False when the connection should close."""
        conn = self.h11
        try:
            found = await self._read_head()
            if found is None:
                return False
            head, deadline = found
            request, has_body = self._request(head)
            if has_body:
                refusal = self.handler.admit(request)
                if refusal is not None:
                    await self._respond(refusal, request, close=True)
                    await self._linger()
                    return False
                if conn.they_are_waiting_for_100_continue:
                    await self._send(conn.send(h11.InformationalResponse(status_code=100, headers=[])))
            request.body = await self._read_body(deadline)
        except h11.RemoteProtocolError as exc:
            if exc.error_status_hint == 431:
                await self._refuse(
                    HeadersTooLarge(f"request head over {self.settings.max_header_bytes} bytes")
                )
            else:
                await self._refuse(MalformedRequest(f"not a valid HTTP/1.1 request: {exc}"))
            return False
        except RequestTooLarge as error:
            await self._refuse(error)
            return False
        return await self._respond(self.handler.respond(request), request)

    # -- reading -------------------------------------------------------------------------

    async def _receive(self) -> bytes:
        """Bytes from the client (b"" at its end), within the deadline set by :meth:`_expect`.

        The socket is read only here, only when the connection needs more of a
        request: nothing is buffered for a client the server is not reading.
        """
        return await receive(self.sock)

    async def _read_head(self) -> tuple[h11.Request, float] | None:
        """The next request's head and the deadline of the whole request; None if the client left."""
        conn = self.h11
        settings = self.settings
        started = False
        event = conn.next_event()
        if event is h11.NEED_DATA:
            if conn.trailing_data[0]:  # part of a pipelined request
                started = True
                self._expect(anyio.current_time() + settings.request_timeout, True)
            else:
                self._expect(anyio.current_time() + settings.idle_timeout, False)
        while event is h11.NEED_DATA:
            data = await self._receive()
            if data and not started:
                started = True
                self._expect(anyio.current_time() + settings.request_timeout, True)
            conn.receive_data(data)
            event = conn.next_event()
        if type(event) is h11.Request:
            if not started:
                self._expect(anyio.current_time() + settings.request_timeout, True)
            return event, self.deadline
        return None  # ConnectionClosed

    def _request(self, head: h11.Request) -> tuple[Request, bool]:
        """The request (body still unread) and whether it has a body; 413 from ``Content-Length``."""
        headers = dict(head.headers)
        has_body = False
        length = headers.get(b"content-length")
        if length is not None:
            size = int(length)  # h11 checked it is digits
            if size > self.settings.max_body_bytes:
                raise RequestTooLarge(f"a {size}-byte body; the limit is {self.settings.max_body_bytes}")
            has_body = size > 0
        elif b"transfer-encoding" in headers:
            has_body = True
        return Request(head.method.decode("ascii"), head.target, headers), has_body

    async def _read_body(self, deadline: float) -> bytes:
        conn = self.h11
        self._expect(deadline, True)
        parts: list[bytes] = []
        size = 0
        limit = self.settings.max_body_bytes
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await self._receive())
            elif type(event) is h11.Data:
                size += len(event.data)
                if size > limit:
                    raise RequestTooLarge(f"a body over {limit} bytes")
                parts.append(event.data)
            elif type(event) is h11.EndOfMessage:
                return b"".join(parts)  # bytes (h11 may hand out bytearrays)
            else:
                raise Gone

    # -- writing -------------------------------------------------------------------------

    async def _send(self, data: bytes) -> None:
        """Write ``data``; a client that takes none of it within ``send_timeout`` is dropped."""
        self._expect(anyio.current_time() + self.settings.send_timeout, False)
        await send_all(self.sock, data)
        self.deadline = INFINITY
        await anyio.lowlevel.checkpoint()  # one turn for the other connections per write

    async def _respond(self, response: Response, request: Request, close: bool = False) -> bool:
        """Send ``response``; True if the connection serves another request."""
        conn = self.h11
        status = response.status
        headers = [(b"date", http_date()), (b"server", b"crdtkv")]
        if response.content_type is not None:
            headers.append((b"content-type", response.content_type))
        headers += response.headers
        if response.stream is None and status not in (204, 304):
            headers.append((b"content-length", str(len(response.body)).encode()))
        if close:
            headers.append((b"connection", b"close"))
        data = conn.send(h11.Response(status_code=status, headers=headers, reason=_REASONS.get(status, b"")))
        if response.stream is not None:
            await self._send(data)
            if request.method != "HEAD":
                await self._stream(response.stream)
            else:
                await self._send(conn.send(h11.EndOfMessage()))
            return False
        body = response.body
        if body and request.method != "HEAD":
            if len(body) <= ONE_WRITE_BYTES:
                data += conn.send(h11.Data(data=body))
            else:
                await self._send(data)
                data = conn.send(h11.Data(data=body))
        data += conn.send(h11.EndOfMessage())
        await self._send(data)
        if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
            return False  # Connection: close, HTTP/1.0, or a body left unread
        conn.start_next_cycle()
        return True

    async def _stream(self, body: BodyStream) -> None:
        """Send a streamed body until it ends or the client goes (its reads end the stream)."""
        conn = self.h11

        async def send_chunk(chunk: bytes) -> None:
            await self._send(conn.send(h11.Data(data=chunk)))

        async with anyio.create_task_group() as group:
            group.start_soon(self._until_client_leaves, group.cancel_scope)
            try:
                await body(send_chunk)
                await self._send(conn.send(h11.EndOfMessage()))
            except Gone:
                pass
            finally:
                group.cancel_scope.cancel()

    async def _until_client_leaves(self, scope: anyio.CancelScope) -> None:
        """Read (and drop) what the client sends during a stream; end the stream when it leaves."""
        with contextlib.suppress(Gone):
            while await self._receive():
                pass
        scope.cancel()

    async def _refuse(self, error: CrdtKvError) -> None:
        """Answer ``error`` if a response can still be sent, then close gently."""
        conn = self.h11
        if conn.our_state is not h11.IDLE and conn.our_state is not h11.SEND_RESPONSE:
            return
        body = error_body(error)
        status = status_of(error)
        try:
            data = conn.send(
                h11.Response(
                    status_code=status,
                    reason=_REASONS.get(status, b""),
                    headers=[
                        (b"date", http_date()),
                        (b"content-type", JSON),
                        (b"content-length", str(len(body)).encode()),
                        (b"connection", b"close"),
                    ],
                )
            )
            data += conn.send(h11.Data(data=body)) + conn.send(h11.EndOfMessage())
        except h11.LocalProtocolError:
            return
        try:
            await self._send(data)
        except Gone:
            return
        await self._linger()

    async def _linger(self) -> None:
        """Stop writing, then drop what the client still sends for a moment (bounded in time and bytes).

        Closing a socket with unread input resets the connection, and the client
        could lose the response it was sent.
        """
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_WR)
        await drain(self.sock, self.settings.max_body_bytes, LINGER_SECONDS)


class HttpFace:
    """The HTTP face of ``node``: crdtkv's routes on an :class:`HttpServer`.

    ``await task_group.start(face.serve, host, port)`` serves until cancelled.
    """

    def __init__(self, node: Node, settings: HttpSettings | None = None) -> None:
        self.node = node
        self.settings = settings or HttpSettings()
        self.routes = HttpRoutes(node, self.settings)
        self.server = HttpServer(self.routes, self.settings)

    async def serve(
        self,
        host: str,
        port: int,
        *,
        task_status: anyio.abc.TaskStatus[tuple[str, int]] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Listen on ``host:port`` (0: a free port) and serve until cancelled.

        Calls ``task_status.started((host, bound_port))`` once listening.
        """
        await self.server.serve(host, port, task_status=task_status)

    @property
    def connections(self) -> int:
        """HTTP connections open now."""
        return self.server.connections

    @property
    def watchers(self) -> int:
        """``/v1/watch`` streams open now."""
        return self.routes.watchers

    @property
    def watch_backlog_bytes(self) -> int:
        """Bytes of changes waiting for ``/v1/watch`` readers (each within ``max_watch_backlog_bytes``)."""
        return self.routes.watch_backlog_bytes


__all__ = ["HttpFace", "HttpServer", "http_date"]

"""Plain non-blocking TCP sockets awaited through anyio: what both faces read and write with.

A face reads a socket only when it needs more bytes of a request, and writes
with the socket's own buffer as the only queue, so nothing a client sends or
fails to read piles up in the node's memory beyond one read and one reply.
(anyio's ``SocketStream`` on asyncio keeps reading an accepted connection into
memory until a receive first has to wait: without bound for a client that
pipelines requests and never reads the answers.) Waiting goes through
:func:`anyio.wait_readable` and :func:`anyio.wait_writable`, so any anyio
backend works, and only when the socket is not ready: a client whose bytes are
already there costs no event-loop round trip.
"""

from __future__ import annotations

import contextlib
import logging
import socket
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import anyio
import anyio.abc
import anyio.lowlevel

from ..errors import ListenFailed

#: Bytes asked of a socket per read.
RECEIVE_BYTES = 64 * 1024
#: Connections accepted per wake-up of an accept loop.
ACCEPT_BATCH = 64
#: A listening socket's backlog.
BACKLOG = 1024


class Gone(Exception):
    """The connection is over: the client left, or its socket failed or was closed."""


async def wait_until(ready: Callable[[socket.socket], Awaitable[None]], sock: socket.socket) -> None:
    """Wait until ``sock`` is readable or writable; a socket closed meanwhile raises :class:`Gone`."""
    try:
        await ready(sock)
    except (anyio.ClosedResourceError, OSError) as exc:
        raise Gone from exc


async def receive(sock: socket.socket, size: int = RECEIVE_BYTES) -> bytes:
    """Up to ``size`` bytes from ``sock`` (b"" when the client closed its side).

    Bytes already there are returned at once, after one checkpoint so that a
    client that keeps the socket full cannot starve the other connections.
    """
    try:
        data = sock.recv(size)
    except BlockingIOError:
        pass
    except OSError as exc:
        raise Gone from exc
    else:
        await anyio.lowlevel.checkpoint()
        return data
    while True:
        await wait_until(anyio.wait_readable, sock)
        try:
            return sock.recv(size)
        except BlockingIOError:
            continue
        except OSError as exc:
            raise Gone from exc


async def send_all(sock: socket.socket, data: bytes) -> None:
    """Write all of ``data``, waiting while the socket's buffer is full."""
    view = memoryview(data)
    while True:
        try:
            sent = sock.send(view)
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            raise Gone from exc
        if sent == len(view):
            return
        view = view[sent:]
        await wait_until(anyio.wait_writable, sock)


async def drain(sock: socket.socket, most: int, seconds: float) -> None:
    """Read and drop what a client still sends, for ``seconds`` and ``most`` bytes at most.

    Closing a socket with unread input resets the connection, and the client
    could lose the answer it was just sent.
    """
    dropped = 0
    with anyio.move_on_after(seconds), contextlib.suppress(Gone):
        while dropped <= most:
            received = await receive(sock)
            if not received:
                return
            dropped += len(received)


def listen(host: str, port: int, what: str) -> socket.socket:
    """A non-blocking listening socket on the first address ``host`` resolves to.

    ``what`` names the face in the :class:`~crdtkv.errors.ListenFailed` raised
    when the address cannot be bound.
    """
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        listener = socket.socket(family, kind, proto)
    except OSError as exc:
        raise ListenFailed(f"cannot listen for {what} on {host}:{port}: {exc}") from exc
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(address)
        listener.listen(BACKLOG)
        listener.setblocking(False)
    except OSError as exc:
        listener.close()
        raise ListenFailed(f"cannot listen for {what} on {host}:{port}: {exc}") from exc
    return listener


async def accept_forever(
    listener: socket.socket,
    serve: Callable[[socket.socket], Coroutine[Any, Any, None]],
    group: anyio.abc.TaskGroup,
    log: logging.Logger,
) -> None:
    """Accept connections on ``listener`` and serve each in its own task of ``group``.

    ``serve`` owns the socket (and closes it). A failed accept (out of file
    descriptors, for instance) is logged and retried shortly; the connections
    being served go on.
    """
    while True:
        await wait_until(anyio.wait_readable, listener)
        for _ in range(ACCEPT_BATCH):
            try:
                sock, _address = listener.accept()
            except BlockingIOError:
                break
            except OSError as exc:
                log.warning("accept failed: %s", exc)
                await anyio.sleep(0.1)
                break
            sock.setblocking(False)
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            group.start_soon(serve, sock)


__all__ = ["Gone", "accept_forever", "drain", "listen", "receive", "send_all", "wait_until"]

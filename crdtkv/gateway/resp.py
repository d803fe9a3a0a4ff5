"""The Redis-protocol face of a node (``crdtkv serve --resp HOST:PORT``).

:class:`RespFace` listens on an anyio TCP socket inside the node's event loop
and serves each connection in its own task: received bytes go through
:class:`~crdtkv.gateway.resp_protocol.CommandReader`, each command through
:func:`~crdtkv.gateway.resp_commands.execute`, and the replies go back in
order. Budgets (:class:`~crdtkv.gateway.settings.RespSettings`): a frame over
``max_frame_bytes`` or bytes that are not RESP close that connection only;
replies waiting for a client that does not read are at most
``max_reply_bytes`` (plus one reply) before the face stops reading that
client's commands, and a reply it takes more than ``send_timeout`` seconds to
accept closes the connection; at most ``max_connections`` clients at once.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import time
from typing import TYPE_CHECKING

import anyio
import anyio.abc

from .resp_commands import FaceState, execute
from .resp_protocol import CommandReader, encode_error
from .settings import RespSettings
from .sockets import Gone, accept_forever, listen, receive, send_all

if TYPE_CHECKING:
    from ..node import Node

log = logging.getLogger("crdtkv.gateway.resp")

#: What a connection over ``max_connections`` is told before it is closed (Redis's words).
TOO_MANY_CLIENTS = encode_error("ERR max number of clients reached")
#: Seconds a goodbye (the error before a close) may take to go out.
GOODBYE_TIMEOUT = 1.0


class Connection:
    """What the send watchdog knows of one connection."""

    __slots__ = ("scope", "send_started", "timed_out")

    def __init__(self) -> None:
        #: cancelled by the watchdog to close the connection
        self.scope = anyio.CancelScope()
        #: ``time.monotonic()`` when the reply being sent was handed over; 0.0 when none is
        self.send_started = 0.0
        self.timed_out = False


class RespFace:
    """Serve ``node``'s store to Redis clients (RESP2, and RESP3 after ``HELLO 3``).

    Commands act on the local replica exactly like the matching ``KvStore``
    calls. When the node has a secret, a connection must ``AUTH`` (or ``HELLO 3
    AUTH default <secret>``) before any data command.
    """

    def __init__(self, node: Node, settings: RespSettings | None = None) -> None:
        from ..metrics import node_metrics

        self.node = node
        self.settings = settings or RespSettings()
        self.state = FaceState(node, self.settings, node_metrics(node).operation)
        #: the most reply bytes one connection handed to its socket at once
        self.peak_reply_bytes = 0
        #: connections closed for a malformed or oversized frame
        self.protocol_errors = 0
        #: connections closed because a reply waited longer than ``send_timeout``
        self.send_timeouts = 0
        #: connections refused over ``max_connections``
        self.refused = 0
        #: connections being served
        self.connections: set[Connection] = set()

    @property
    def clients(self) -> int:
        """Connections open now."""
        return self.state.clients

    async def serve(
        self,
        host: str,
        port: int,
        *,
        task_status: anyio.abc.TaskStatus[tuple[str, int]] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Listen on ``host:port`` (0: any free port) until cancelled.

        Calls ``task_status.started((host, bound_port))`` once listening.
        Raises :class:`~crdtkv.errors.ListenFailed` if the address cannot be bound.
        """
        listener = listen(host, port, "RESP")
        try:
            async with anyio.create_task_group() as group:
                bound = listener.getsockname()[1]
                self.state.port = bound
                group.start_soon(self.watch_sends)
                group.start_soon(accept_forever, listener, self.handle, group, log)
                task_status.started((host, bound))
        finally:
            anyio.notify_closing(listener)
            listener.close()

    async def watch_sends(self) -> None:
        """Close every connection whose reply has waited more than ``send_timeout`` for its client.

        One watchdog for all connections keeps the per-reply path free of a timer.
        """
        timeout = self.settings.send_timeout
        while True:
            await anyio.sleep(min(1.0, timeout / 4))
            now = time.monotonic()
            for connection in list(self.connections):
                if connection.send_started and now - connection.send_started > timeout:
                    connection.timed_out = True
                    connection.scope.cancel()

    async def handle(self, sock: socket.socket) -> None:
        """Serve one connection until it closes; a failure closes it alone."""
        state = self.state
        try:
            if state.clients >= self.settings.max_connections:
                self.refused += 1
                await self.goodbye(sock, TOO_MANY_CLIENTS)
                return
            state.clients += 1
            connection = Connection()
            self.connections.add(connection)
            try:
                with connection.scope:
                    await self.converse(sock, connection)
            except Gone:
                pass
            except Exception:
                log.exception("RESP connection failed")
            finally:
                self.connections.discard(connection)
                state.clients -= 1
                if connection.timed_out:
                    self.send_timeouts += 1
        finally:
            sock.close()

    async def converse(self, sock: socket.socket, connection: Connection) -> None:
        """Read commands and send replies in order until the client leaves or must go."""
        settings = self.settings
        reader = CommandReader(settings.max_frame_bytes, settings.max_arguments)
        client = self.state.new_client()
        limit = settings.max_reply_bytes
        clock = time.monotonic
        while True:
            data = await receive(sock)
            if not data:
                return
            commands = reader.feed(data)
            if len(commands) == 1:  # the common case: one command, one reply
                reply = execute(client, commands[0])
            else:
                replies: list[bytes] = []
                waiting = 0
                for command in commands:
                    reply = execute(client, command)
                    replies.append(reply)
                    waiting += len(reply)
                    if client.closing:
                        break
                    if waiting >= limit:  # stop here until the client has taken these
                        self.note_reply(waiting)
                        connection.send_started = clock()
                        await send_all(sock, b"".join(replies))
                        connection.send_started = 0.0
                        replies, waiting = [], 0
                reply = b"".join(replies)
            if reply:
                self.peak_reply_bytes = max(self.peak_reply_bytes, len(reply))
                connection.send_started = clock()
                await send_all(sock, reply)
                connection.send_started = 0.0
            if client.closing:
                return
            if reader.failure is not None:  # after the replies to the commands before it
                self.protocol_errors += 1
                await self.goodbye(sock, encode_error(f"ERR {reader.failure.args[0]}"))
                return

    def note_reply(self, size: int) -> None:
        """Keep the largest reply bytes handed to a socket at once."""
        self.peak_reply_bytes = max(self.peak_reply_bytes, size)

    async def goodbye(self, sock: socket.socket, reply: bytes) -> None:
        """Send a last error reply if the client takes it soon; the caller closes the connection."""
        with anyio.move_on_after(GOODBYE_TIMEOUT), contextlib.suppress(Gone):
            await send_all(sock, reply)


__all__ = ["RespFace"]

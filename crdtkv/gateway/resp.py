"""The Redis-protocol face of a node (``crdtkv serve --resp HOST:PORT``).

:class:`RespFace` serves each connection as an asyncio protocol on the node's
own event loop (the loop the WebSocket transport already runs on): received
bytes go through :class:`~crdtkv.gateway.resp_protocol.CommandReader`, each
command through :func:`~crdtkv.gateway.resp_commands.execute`, and the
replies go back in order, written as they are made. A protocol keeps its
socket registered for reading, so a command costs no event-loop round trip
and no readiness registration: about three times the requests per second of
a task per connection awaiting each read and write.

Budgets (:class:`~crdtkv.gateway.settings.RespSettings`): a frame over
``max_frame_bytes`` or bytes that are not RESP close that connection only
(after the replies to the commands before it); replies waiting for a client
that does not read are at most ``max_reply_bytes`` (plus one reply): the face
then stops reading that client and running its commands until it has taken
some, and a client whose replies stay over that budget for ``send_timeout``
seconds is closed (like Redis's soft output-buffer limit); at most
``max_connections`` clients at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Iterable
from typing import TYPE_CHECKING

import anyio
import anyio.abc

from ..errors import ListenFailed
from .resp_commands import execute, execute_batch
from .resp_protocol import Command, CommandReader, encode_error
from .resp_state import Client, FaceState
from .settings import RespSettings

if TYPE_CHECKING:
    from ..node import Node

log = logging.getLogger("crdtkv.gateway.resp")

#: What a connection over ``max_connections`` is told before it is closed (Redis's words).
TOO_MANY_CLIENTS = encode_error("ERR max number of clients reached")
#: The listening socket's backlog.
BACKLOG = 1024


class RespConnection(asyncio.Protocol):
    """One client connection: commands in, replies out, within the face's budgets."""

    def __init__(self, face: RespFace) -> None:
        self.face = face
        self.transport: asyncio.Transport | None = None
        settings = face.settings
        self.reader = CommandReader(settings.max_frame_bytes, settings.max_arguments)
        self.client: Client = face.state.new_client()
        #: commands received but not run yet: the client stopped taking replies
        self.pending: deque[Command] = deque()
        #: replies gathered before one write: at most half the budget, so that what waits
        #: in the transport (below the other half, or writing is paused) plus one gathering
        #: stays within ``max_reply_bytes`` plus one reply
        self.flush_at = max(1, settings.max_reply_bytes // 2)
        #: ``time.monotonic()`` since the transport's buffer is over its limit; 0.0 when it is not
        self.blocked_since = 0.0
        self.counted = False
        self.timed_out = False

    # -- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        face = self.face
        if face.state.clients >= face.settings.max_connections:
            face.refused += 1
            transport.write(TOO_MANY_CLIENTS)
            transport.close()
            return
        face.state.clients += 1
        face.connections.add(self)
        self.counted = True
        transport.set_write_buffer_limits(high=self.flush_at)

    def data_received(self, data: bytes) -> None:
        try:
            self.run(self.reader.feed(data))
        except Exception:  # a bug behind one connection must not reach the event loop
            log.exception("RESP connection failed")
            self.abort()

    def pause_writing(self) -> None:
        """The client's replies are over the budget: run nothing more of it until it reads."""
        self.blocked_since = time.monotonic()
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.blocked_since = 0.0
        pending = self.pending
        if pending:
            self.pending = deque()
            try:
                self.run(pending)
            except Exception:
                log.exception("RESP connection failed")
                self.abort()
                return
        if not self.blocked_since and self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        face = self.face
        if self.counted:
            self.counted = False
            face.state.clients -= 1
            face.connections.discard(self)
            if self.timed_out:
                face.send_timeouts += 1

    # -- commands --------------------------------------------------------------------------

    def run(self, commands: Iterable[Command]) -> None:
        """Run ``commands`` in order, writing their replies; stop while the client reads nothing."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        client = self.client
        if self.pending:  # already waiting for the client: keep the order
            self.pending.extend(commands)
            return
        if type(commands) is list and len(commands) == 1:  # the common case: one command, one reply
            self.write(execute(client, commands[0]))
        else:
            flush_at = self.flush_at
            queue = commands if isinstance(commands, deque) else deque(commands)
            while queue:
                self.write(execute_batch(client, queue, flush_at))
                if client.closing:
                    break
                if self.blocked_since and queue:  # over the budget: the rest waits for the client
                    self.pending = queue
                    return
        if client.closing:
            transport.close()
        elif self.reader.failure is not None and not self.pending:
            # after the replies to the commands before the bad frame
            self.face.protocol_errors += 1
            transport.write(encode_error(f"ERR {self.reader.failure.args[0]}"))
            transport.close()

    def write(self, data: bytes) -> None:
        """Hand ``data`` to the transport, noting the most reply bytes that ever waited in it."""
        transport = self.transport
        assert transport is not None
        transport.write(data)
        waiting = transport.get_write_buffer_size()
        self.face.peak_reply_bytes = max(self.face.peak_reply_bytes, waiting)

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()


class RespFace:
    """Serve ``node``'s store to Redis clients (RESP2, and RESP3 after ``HELLO 3``).

    Commands act on the local replica exactly like the matching ``KvStore``
    calls. When the node has a secret, a connection must ``AUTH`` (or ``HELLO 3
    AUTH default <secret>``) before any data command.
    """

    def __init__(self, node: Node, settings: RespSettings | None = None) -> None:
        self.node = node
        self.settings = settings or RespSettings()
        self.state = FaceState(node, self.settings)
        #: the most reply bytes that ever waited for one client in the node
        self.peak_reply_bytes = 0
        #: connections closed for a malformed or oversized frame
        self.protocol_errors = 0
        #: connections closed because their replies stayed over the budget for ``send_timeout``
        self.send_timeouts = 0
        #: connections refused over ``max_connections``
        self.refused = 0
        #: connections being served
        self.connections: set[RespConnection] = set()

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
        Needs the asyncio event loop (anyio's default backend, the one the
        WebSocket transport runs on).
        """
        loop = asyncio.get_running_loop()
        try:
            server = await loop.create_server(
                lambda: RespConnection(self), host, port, backlog=BACKLOG, reuse_address=True
            )
        except OSError as exc:
            raise ListenFailed(f"cannot listen for RESP on {host}:{port}: {exc}") from exc
        try:
            bound = server.sockets[0].getsockname()[1]
            self.state.port = bound
            async with anyio.create_task_group() as group:
                group.start_soon(self.watch_sends)
                task_status.started((host, bound))
        finally:
            server.close()
            for connection in list(self.connections):
                connection.abort()

    async def watch_sends(self) -> None:
        """Close every connection whose replies stayed over the budget for ``send_timeout`` seconds.

        One watchdog for all connections keeps the per-reply path free of a timer.
        """
        timeout = self.settings.send_timeout
        while True:
            await anyio.sleep(min(1.0, timeout / 4))
            now = time.monotonic()
            for connection in list(self.connections):
                if connection.blocked_since and now - connection.blocked_since > timeout:
                    connection.timed_out = True
                    connection.abort()


__all__ = ["RespConnection", "RespFace"]

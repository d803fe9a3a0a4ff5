"""``Client``: calls a running node's store over the node protocol (for the CLI and tools).

Every error a ``Client`` raises is a :class:`~crdtkv.errors.CrdtKvError`:
:class:`~crdtkv.errors.ConnectFailed` when the node cannot be reached or does
not finish the handshake in time, :class:`~crdtkv.errors.AuthenticationFailed`
when it refuses the secret, :class:`~crdtkv.errors.NotConnected` for a call
outside ``async with``, :class:`~crdtkv.errors.RequestTimeout` (also a
``TimeoutError``) when an answer does not come in time,
:class:`~crdtkv.errors.LinkClosed` once the node closes the link (a watch
ends with it too), :class:`~crdtkv.errors.ProtocolError` when the node closed
it for a protocol reason, and :class:`~crdtkv.errors.RemoteCallError` when the
node refused one request.
"""

from __future__ import annotations

import builtins
import contextlib
import re
import ssl
import time
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Any

import anyio
import anyio.abc

from . import errors
from .checks import check_store_name
from .core.hlc import HybridClock
from .core.limits import DEFAULT_LIMITS
from .core.messages import CLOSE_AUTH, CLOSE_LOST, CLOSE_NORMAL, CLOSE_SHUTDOWN, CLOSE_TIMEOUT, ROLE_CLIENT
from .core.replica import ReplicaState
from .core.sync import Closed, Opened, ResponseReceived, Session, SyncSettings
from .cursor import Page
from .errors import (
    ConnectFailed,
    CrdtKvError,
    DecodeError,
    InvalidArgument,
    LinkClosed,
    NotConnected,
    ProtocolError,
    RemoteCallError,
    RequestTimeout,
)
from .node import secret_bytes
from .storage import new_replica_id
from .transport import Connection, Transport, TransportSettings, find_transport
from .watch import OVERFLOW, Change, ChangeQueue

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")

#: Closes that mean the link ended (the node stopped, the network failed), not a refusal.
_LINK_ENDED = (CLOSE_NORMAL, CLOSE_LOST, CLOSE_SHUTDOWN, CLOSE_TIMEOUT)

#: What a watch yields when this client fell behind (as the node's own notice).
_OVERFLOW_ANSWER: tuple[bool, Any] = (True, ["overflow"])

#: Room kept in each message for the framing around a snapshot chunk.
_CHUNK_OVERHEAD = 4096


def check_url(url: str, what: str = "node URL") -> str:
    """Return ``url`` if it names a scheme; otherwise raise InvalidArgument saying which to add.

    ``127.0.0.1:7001`` or ``localhost:7001`` would otherwise fail later with an
    unknown scheme ('' or 'localhost').
    """
    if not isinstance(url, str) or not _SCHEME.match(url):
        raise InvalidArgument(
            f"{what} {url!r} has no scheme: use ws://{url} (or wss://{url} for a node that serves TLS)"
        )
    return url


class Client:
    """A client link to one node: ``async with Client(url, secret=...) as client``.

    ``timeout`` (seconds) bounds connecting, the handshake and each call.
    """

    def __init__(
        self,
        url: str,
        *,
        store: str = "default",
        secret: bytes | str | None = None,
        timeout: float = 10.0,
        transports: dict[str, Transport] | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.url = check_url(url)
        self._ssl = ssl_context
        self.timeout = timeout
        self._secret = secret_bytes(secret)
        # the client role of a session needs an identity (store name, a fresh
        # origin), limits and a clock: an empty replica that never holds data
        self._limits = DEFAULT_LIMITS
        self._replica = ReplicaState(
            check_store_name(store),
            new_replica_id(),
            HybridClock(time.time_ns, DEFAULT_LIMITS.max_clock_skew),
            DEFAULT_LIMITS,
        )
        self._transport = find_transport(url, transports)
        self._connection: Connection | None = None
        self._session: Session | None = None
        self._next_id = 0
        self._group: anyio.abc.TaskGroup | None = None
        self._opened = anyio.Event()
        self._answers: dict[int, tuple[bool, Any]] = {}
        #: the answers of each watch request, bounded (see crdtkv.watch)
        self._watches: dict[int, ChangeQueue[tuple[bool, Any]]] = {}
        self._abandoned: set[int] = set()
        self._arrived = anyio.Event()
        self._closed: Closed | None = None

    async def __aenter__(self) -> Client:
        settings = TransportSettings(ssl_context=self._ssl, connect_timeout=self.timeout)
        try:
            with anyio.fail_after(self.timeout):
                self._connection = await self._transport.connect(self.url, settings)
        except TimeoutError as exc:
            raise ConnectFailed(f"cannot connect to {self.url}: no answer within {self.timeout:g} s") from exc
        self._session = Session(
            self._replica,
            dialer=True,
            now=time.monotonic(),
            secret=self._secret,
            role=ROLE_CLIENT,
            settings=SyncSettings(handshake_timeout=self.timeout),
        )
        self._group = anyio.create_task_group()
        await self._group.__aenter__()
        self._group.start_soon(self._receive_loop)
        try:
            with anyio.fail_after(self.timeout):
                await self._opened.wait()
        except TimeoutError as exc:
            await self.__aexit__(None, None, None)
            raise ConnectFailed(
                f"cannot connect to {self.url}: "
                f"the node did not finish the handshake within {self.timeout:g} s"
            ) from exc
        except BaseException:
            await self.__aexit__(None, None, None)
            raise
        if self._closed is not None:
            await self.__aexit__(None, None, None)
            raise _closed_error(self._closed)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._session is not None and self._connection is not None and not self._session.closed:
            self._session.close()
            with anyio.move_on_after(1.0, shield=True), contextlib.suppress(LinkClosed):
                await self._flush()
        if self._group is not None:
            self._group.cancel_scope.cancel()
            await self._group.__aexit__(None, None, None)
            self._group = None
        if self._connection is not None:
            await self._connection.aclose()

    async def _flush(self) -> None:
        assert self._session is not None and self._connection is not None
        for data in self._session.outgoing(time.monotonic()):
            await self._connection.send(data)
        for event in self._session.events():  # a close by a timer or by close()
            if isinstance(event, Closed):
                self._closed = self._closed or event

    async def _receive_loop(self) -> None:
        assert self._session is not None and self._connection is not None
        try:
            await self._flush()
            while not self._session.closed:
                data = await self._connection.receive()
                for event in self._session.receive(data, time.monotonic()):
                    if isinstance(event, Opened):
                        self._opened.set()
                    elif isinstance(event, ResponseReceived):
                        answer = event.response
                        watch = self._watches.get(answer.id)
                        if watch is not None:
                            watch.offer((answer.ok, answer.value))  # dropped and noted if full
                            continue
                        if answer.id in self._abandoned:  # its caller timed out
                            self._abandoned.discard(answer.id)
                            continue
                        self._answers[answer.id] = (answer.ok, answer.value)
                        self._arrived.set()
                    elif isinstance(event, Closed):
                        self._closed = event
                await self._flush()
        except LinkClosed as exc:
            for event in self._session.connection_lost(exc.reason):
                if isinstance(event, Closed):
                    self._closed = self._closed or event
        finally:
            # whatever ended the loop, no answer comes any more: wake every waiter
            self._closed = self._closed or Closed(CLOSE_LOST, "the link ended", by_peer=True)
            for watch in self._watches.values():
                watch.finish()
            self._opened.set()
            self._arrived.set()

    def _session_or_raise(self) -> Session:
        """The open session; NotConnected outside ``async with``, the close reason once closed."""
        if self._session is None:
            raise NotConnected(f"the client is not connected to {self.url} (use it inside `async with`)")
        if self._closed is not None:
            raise _closed_error(self._closed)
        return self._session

    async def call(self, op: str, *args: Any) -> Any:
        """Run ``op`` on the node's store; raise RemoteCallError if it refused.

        Raises NotConnected outside ``async with``, RequestTimeout when no
        answer comes within ``timeout``, LinkClosed or ProtocolError once the
        link is closed.
        """
        session = self._session_or_raise()
        self._next_id += 1
        request_id = self._next_id
        session.request(request_id, op, list(args))
        await self._flush()
        try:
            with anyio.fail_after(self.timeout):
                while request_id not in self._answers:
                    if self._closed is not None:
                        raise _closed_error(self._closed)
                    self._arrived = anyio.Event()
                    await self._arrived.wait()
        except TimeoutError as exc:
            self._abandoned.add(request_id)  # a late answer is dropped, not kept forever
            raise RequestTimeout(f"no answer from {self.url} to {op} within {self.timeout:g} s") from exc
        ok, value = self._answers.pop(request_id)
        if not ok:
            raise _refusal(value)
        return value

    async def watch(self, prefix: str = "", *, buffer: int = 10_000) -> AsyncIterator[Change]:
        """Changes under ``prefix`` at the node, as :class:`~crdtkv.watch.Change` objects.

        If this consumer falls more than ``buffer`` changes behind, the changes
        that did not fit, and those after them until it has caught up, are
        dropped, and a ``Change(overflow=True)`` follows (as for a local watch).
        When the link closes (the node stopped, the network failed) the
        iteration raises LinkClosed (ProtocolError if the node closed it for a
        protocol reason) after the changes that arrived before.
        """
        session = self._session_or_raise()
        self._next_id += 1
        request_id = self._next_id
        answers = self._watches[request_id] = ChangeQueue(_OVERFLOW_ANSWER, max_items=buffer)
        session.request(request_id, "watch", [prefix])
        await self._flush()
        try:
            while True:
                answer = await answers.take()
                if answer is None:  # the receive loop ended: the link is gone
                    assert self._closed is not None
                    raise _closed_error(self._closed)
                ok, value = answer
                if not ok:
                    raise _refusal(value)
                if value and value[0] == "change" and len(value) == 4:
                    yield Change(value[1], value[2], value[3])
                elif value and value[0] == "overflow":  # the node's notice, or this client's own
                    yield OVERFLOW
        finally:
            del self._watches[request_id]
            answers.close()

    async def get(self, key: str) -> tuple[bool, Any]:
        """``(found, value)`` for ``key``."""
        found, value = await self.call("get", key)
        return bool(found), value

    async def put(self, key: str, value: Any, ttl: float | None = None, *, metadata: Any = None) -> None:
        """Set ``key`` at the node; ``metadata``, a small dict, travels with the write."""
        if metadata is None:  # nodes before metadata took three arguments
            await self.call("put", key, value, ttl)
        else:
            await self.call("put", key, value, ttl, metadata)

    async def incr(self, key: str, by: int = 1, ttl: float | None = None) -> int:
        result: int = await self.call("incr", key, by, ttl)
        return result

    async def delete(self, key: str) -> bool:
        return bool(await self.call("del", key))

    async def list(self, prefix: str = "", *, limit: int = 1000, cursor: str | None = None) -> Page:
        """One page of the node's live keys with ``prefix``, like :meth:`KvStore.list`.

        The node may return fewer than ``limit`` keys (a reply fits in one
        message); ``page.cursor`` is None only on the last page.
        """
        result = await self.call("list", prefix, limit, cursor)
        if not (isinstance(result, list) and len(result) == 2 and isinstance(result[0], list)):
            raise ProtocolError(f"the node answered list with {type(result).__name__}, not [keys, cursor]")
        keys, next_cursor = result
        if not all(isinstance(key, str) for key in keys) or not isinstance(next_cursor, str | None):
            raise ProtocolError("the node answered list with keys or a cursor that are not strings")
        return Page(keys, next_cursor)

    async def keys(self, prefix: str = "") -> builtins.list[str]:
        """Every live key with ``prefix`` at the node, sorted (fetched page by page)."""
        keys: list[str] = []
        cursor: str | None = None
        while True:
            page = await self.list(prefix, limit=10_000, cursor=cursor)
            keys.extend(page.keys)
            if page.cursor is None:
                return keys
            cursor = page.cursor

    async def snapshot(self) -> bytes:
        """The node's whole state as snapshot bytes (see :meth:`KvStore.snapshot`).

        The node encodes one consistent snapshot and hands it out in chunks
        that each fit in one message, so a snapshot of any size can be fetched.
        """
        begun = await self.call("snapshot_begin")
        if not (isinstance(begun, list) and len(begun) == 2 and isinstance(begun[1], int)):
            raise ProtocolError("the node answered snapshot_begin with something else than [token, size]")
        token, size = begun
        chunk = self._limits.max_message_bytes - _CHUNK_OVERHEAD
        parts: list[bytes] = []
        received = 0
        try:
            while received < size:
                data = await self.call("snapshot_read", token, received, chunk)
                if not isinstance(data, bytes) or not data or received + len(data) > size:
                    raise DecodeError(f"the node sent a bad snapshot chunk at byte {received} of {size}")
                parts.append(data)
                received += len(data)
        except BaseException:
            with anyio.move_on_after(1.0, shield=True), contextlib.suppress(CrdtKvError):
                await self.call("snapshot_end", token)  # free it at the node now, not when it expires
            raise
        return b"".join(parts)

    async def digest(self) -> str:
        result: str = await self.call("digest")
        return result


def _refusal(value: Any) -> RemoteCallError:
    """The error a node's ``[error type, message]`` answer stands for."""
    kind, message = [*value, "", ""][:2] if isinstance(value, list) else ("Error", str(value))
    return RemoteCallError(str(kind), str(message))


def _closed_error(closed: Closed) -> CrdtKvError:
    """The error a closed link stands for: a refusal, a protocol failure or just the end."""
    if closed.code == CLOSE_AUTH:
        return errors.AuthenticationFailed(f"the node refused the connection: {closed.reason}")
    if closed.code in _LINK_ENDED:
        if closed.code == CLOSE_LOST:
            return LinkClosed(f"the link to the node was lost: {closed.reason}")
        return LinkClosed(f"the node closed the link (code {closed.code}): {closed.reason}")
    return ProtocolError(f"the node closed the connection (code {closed.code}): {closed.reason}")

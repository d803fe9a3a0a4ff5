"""``Client``: calls a running node's store over the node protocol (for apps, the CLI and tools).

Every error a ``Client`` raises is a :class:`~crdtkv.errors.CrdtKvError`:
:class:`~crdtkv.errors.ConnectFailed` when the node cannot be reached or does
not finish the handshake in time (also when redialing gives up),
:class:`~crdtkv.errors.AuthenticationFailed` when it refuses the secret,
:class:`~crdtkv.errors.NotConnected` for a call outside ``async with``,
:class:`~crdtkv.errors.RequestTimeout` (also a ``TimeoutError``) when an
answer does not come in time, :class:`~crdtkv.errors.LinkClosed` for a call
(or watch) in flight when the link ended, :class:`~crdtkv.errors.ProtocolError`
when the node closed it for a protocol reason, and
:class:`~crdtkv.errors.RemoteCallError` (``kind`` names the error type) when
the node refused one request.

Reconnecting: once the link has ended (the node stopped or restarted, the
network failed), the next call dials again, waiting between failed dials a
jittered, exponentially growing delay (``reconnect_initial`` times
``reconnect_factor`` per failure, at most ``reconnect_max``), for at most
``timeout`` seconds per call. A call that was in flight when the link ended
raises :class:`~crdtkv.errors.LinkClosed` and is not sent again: the node may
have applied it (an ``incr`` resent could count twice), so the caller decides.
"""

from __future__ import annotations

import builtins
import contextlib
import dataclasses
import random
import re
import ssl
import time
from collections.abc import AsyncGenerator
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
from .cursor import KeyInfo, Page
from .errors import (
    ConnectFailed,
    CrdtKvError,
    DecodeError,
    InvalidArgument,
    InvalidArgumentType,
    LinkClosed,
    NotConnected,
    ProtocolError,
    RemoteCallError,
    RequestTimeout,
)
from .node import secret_bytes
from .ratelimit import Decision
from .storage import new_replica_id
from .store import Record
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


class _Link:
    """One connection to the node: its session, and the calls and watches waiting on it."""

    def __init__(self, connection: Connection, session: Session) -> None:
        self.connection = connection
        self.session = session
        self.opened = anyio.Event()
        self.answers: dict[int, tuple[bool, Any]] = {}
        #: the answers of each watch request, bounded (see crdtkv.watch)
        self.watches: dict[int, ChangeQueue[tuple[bool, Any]]] = {}
        #: requests whose callers gave up (timed out): their late answers are dropped
        self.abandoned: set[int] = set()
        #: request id -> the event its caller waits on (one each: calls may run concurrently)
        self.waiting: dict[int, anyio.Event] = {}
        #: why the link ended, once it has
        self.closed: Closed | None = None
        #: one sender at a time, so messages leave in the order the session queued them
        self.sending = anyio.Lock()

    async def flush(self) -> None:
        """Send what the session has queued; note a close it decided on."""
        async with self.sending:
            for data in self.session.outgoing(time.monotonic()):
                await self.connection.send(data)
        for event in self.session.events():  # a close by a timer or by close()
            if isinstance(event, Closed):
                self.closed = self.closed or event

    async def receive_loop(self) -> None:
        """Deliver answers until the link ends; then wake every waiter."""
        session = self.session
        try:
            await self.flush()
            while not session.closed:
                data = await self.connection.receive()
                for event in session.receive(data, time.monotonic()):
                    if isinstance(event, Opened):
                        self.opened.set()
                    elif isinstance(event, ResponseReceived):
                        answer = event.response
                        watch = self.watches.get(answer.id)
                        if watch is not None:
                            watch.offer((answer.ok, answer.value))  # dropped and noted if full
                            continue
                        if answer.id in self.abandoned:  # its caller timed out
                            self.abandoned.discard(answer.id)
                            continue
                        self.answers[answer.id] = (answer.ok, answer.value)
                        waiter = self.waiting.get(answer.id)
                        if waiter is not None:
                            waiter.set()
                    elif isinstance(event, Closed):
                        self.closed = event
                await self.flush()
        except LinkClosed as exc:
            for event in session.connection_lost(exc.reason):
                if isinstance(event, Closed):
                    self.closed = self.closed or event
        finally:
            # whatever ended the loop, no answer comes any more: wake every waiter
            self.closed = self.closed or Closed(CLOSE_LOST, "the link ended", by_peer=True)
            for watch in self.watches.values():
                watch.finish()
            self.opened.set()
            for waiter in self.waiting.values():
                waiter.set()


class Client:
    """A client link to one node: ``async with Client(url, secret=...) as client``.

    ``timeout`` (seconds) bounds connecting, the handshake and each call
    (redialing included). With ``reconnect`` (the default), a call made after
    the link ended dials again: the first redial waits a random part of
    ``reconnect_initial`` seconds, each failed one multiplies the wait by
    ``reconnect_factor`` (with jitter) up to ``reconnect_max``; a call gives up
    with :class:`~crdtkv.errors.ConnectFailed` once ``timeout`` has passed.
    Calls in flight when the link ended raise :class:`~crdtkv.errors.LinkClosed`
    and are not resent. Without ``reconnect``, every call after the link
    ended raises LinkClosed. A refused secret or a protocol failure is never
    redialed. Methods mirror :class:`~crdtkv.KvStore`'s, acting on the node's store.
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
        reconnect: bool = True,
        reconnect_initial: float = 0.1,
        reconnect_factor: float = 1.618,
        reconnect_max: float = 5.0,
    ) -> None:
        self.url = check_url(url)
        self._ssl = ssl_context
        self.timeout = timeout
        self.reconnect = reconnect
        if not 0 < reconnect_initial <= reconnect_max or reconnect_factor < 1:
            raise InvalidArgument(
                "reconnect settings need 0 < reconnect_initial <= reconnect_max and reconnect_factor >= 1"
            )
        self.reconnect_initial = reconnect_initial
        self.reconnect_factor = reconnect_factor
        self.reconnect_max = reconnect_max
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
        self._active: _Link | None = None
        self._next_id = 0
        self._group: anyio.abc.TaskGroup | None = None
        #: one redial at a time: concurrent calls wait for it
        self._dialing = anyio.Lock()
        #: failed redials in a row, and when the next may start (monotonic seconds)
        self._failures = 0
        self._next_dial = 0.0
        self._rng = random.Random()
        #: links opened so far (1 after ``async with``; each reconnection adds one)
        self.connections = 0

    @property
    def connected(self) -> bool:
        """True while the current link is open (False before ``async with``, and once it ended)."""
        link = self._active
        return link is not None and link.closed is None

    async def __aenter__(self) -> Client:
        self._group = anyio.create_task_group()
        await self._group.__aenter__()
        try:
            self._active = await self._open_link()
        except BaseException:
            await self.__aexit__(None, None, None)
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        link, self._active = self._active, None
        if link is not None and not link.session.closed:
            link.session.close()
            with anyio.move_on_after(1.0, shield=True), contextlib.suppress(LinkClosed):
                await link.flush()
        if self._group is not None:
            self._group.cancel_scope.cancel()
            await self._group.__aexit__(None, None, None)
            self._group = None
        if link is not None:
            await link.connection.aclose()

    async def _open_link(self) -> _Link:
        """Dial, run the handshake and start the receive loop; ConnectFailed if it does not finish."""
        assert self._group is not None
        settings = TransportSettings(ssl_context=self._ssl, connect_timeout=self.timeout)
        try:
            with anyio.fail_after(self.timeout):
                connection = await self._transport.connect(self.url, settings)
        except TimeoutError as exc:
            raise ConnectFailed(f"cannot connect to {self.url}: no answer within {self.timeout:g} s") from exc
        session = Session(
            self._replica,
            dialer=True,
            now=time.monotonic(),
            secret=self._secret,
            role=ROLE_CLIENT,
            settings=SyncSettings(handshake_timeout=self.timeout),
        )
        link = _Link(connection, session)
        scope = anyio.CancelScope()

        async def drive() -> None:
            with scope:
                await link.receive_loop()

        self._group.start_soon(drive)
        try:
            with anyio.fail_after(self.timeout):
                await link.opened.wait()
        except BaseException as exc:
            scope.cancel()
            with anyio.CancelScope(shield=True):
                await connection.aclose()
            if isinstance(exc, TimeoutError):
                raise ConnectFailed(
                    f"cannot connect to {self.url}: "
                    f"the node did not finish the handshake within {self.timeout:g} s"
                ) from exc
            raise
        if link.closed is not None:
            scope.cancel()
            await connection.aclose()
            error = _closed_error(link.closed)
            if isinstance(error, LinkClosed):  # ended before it opened: the node went away
                raise ConnectFailed(f"cannot connect to {self.url}: {error}")
            raise error
        self.connections += 1
        return link

    async def _current_link(self) -> _Link:
        """The open link; a new one if the last ended and reconnecting is on.

        Raises NotConnected outside ``async with``; the close reason when the
        link ended and cannot (or may not) be redialed; ConnectFailed when
        redialing did not succeed within ``timeout``.
        """
        link = self._active
        if self._group is None:
            raise NotConnected(f"the client is not connected to {self.url} (use it inside `async with`)")
        if link is not None:
            closed = link.closed
            if closed is None:
                return link
            if not self.reconnect or closed.code not in _LINK_ENDED:
                raise _closed_error(closed)
        async with self._dialing:
            link = self._active
            if link is not None and link.closed is None:  # another call redialed meanwhile
                return link
            if link is not None:
                self._active = None
                with anyio.CancelScope(shield=True):
                    await link.connection.aclose()
            self._active = link = await self._redial()
            return link

    async def _redial(self) -> _Link:
        """Dial until a link opens, with jittered exponential backoff, for at most ``timeout`` seconds."""
        started = time.monotonic()
        deadline = started + self.timeout
        attempts = 0
        if self._failures == 0 and self._next_dial == 0.0:
            # the first redial waits a random part of reconnect_initial, so clients
            # of a restarted node do not all dial at the same instant
            self._next_dial = started + self._rng.uniform(0.0, self.reconnect_initial)
        while True:
            wait = self._next_dial - time.monotonic()
            if wait > 0:
                if time.monotonic() + wait > deadline:
                    raise ConnectFailed(
                        f"cannot reconnect to {self.url}: {attempts} attempts in "
                        f"{time.monotonic() - started:.1f} s, the next one would come after the "
                        f"timeout ({self.timeout:g} s)"
                    )
                await anyio.sleep(wait)
            attempts += 1
            try:
                link = await self._open_link()
            except ConnectFailed as exc:
                self._failures += 1
                delay = min(
                    self.reconnect_initial * self.reconnect_factor ** (self._failures - 1), self.reconnect_max
                )
                self._next_dial = time.monotonic() + delay * self._rng.uniform(0.5, 1.0)
                if time.monotonic() >= deadline:
                    raise ConnectFailed(
                        f"cannot reconnect to {self.url} ({attempts} attempts): {exc}"
                    ) from exc
                continue
            self._failures = 0
            self._next_dial = 0.0
            return link

    async def call(self, op: str, *args: Any) -> Any:
        """Run ``op`` on the node's store; raise RemoteCallError if it refused.

        Raises NotConnected outside ``async with``, RequestTimeout when no
        answer comes within ``timeout``, LinkClosed (never resent) when the
        link ended before the answer came, ConnectFailed when redialing a link
        that had ended failed, ProtocolError when the node closed it for a
        protocol reason.
        """
        link = await self._current_link()
        self._next_id += 1
        request_id = self._next_id
        arrived = link.waiting[request_id] = anyio.Event()
        try:
            link.session.request(request_id, op, list(args))
            await link.flush()
            with anyio.fail_after(self.timeout):
                while request_id not in link.answers:
                    if link.closed is not None:
                        raise _closed_error(link.closed)
                    await arrived.wait()
                    arrived = link.waiting[request_id] = anyio.Event()
        except TimeoutError as exc:
            link.abandoned.add(request_id)  # a late answer is dropped, not kept forever
            raise RequestTimeout(f"no answer from {self.url} to {op} within {self.timeout:g} s") from exc
        finally:
            del link.waiting[request_id]
        ok, value = link.answers.pop(request_id)
        if not ok:
            raise _refusal(value)
        return value

    async def watch(self, prefix: str = "", *, buffer: int = 10_000) -> AsyncGenerator[Change, None]:
        """Changes under ``prefix`` at the node, as :class:`~crdtkv.watch.Change` objects.

        If this consumer falls more than ``buffer`` changes behind, the changes
        that did not fit, and those after them until it has caught up, are
        dropped, and a ``Change(overflow=True)`` follows (as for a local watch).
        When the link closes (the node stopped, the network failed) the
        iteration raises LinkClosed (ProtocolError if the node closed it for a
        protocol reason) after the changes that arrived before; a new watch
        redials.
        """
        link = await self._current_link()
        self._next_id += 1
        request_id = self._next_id
        answers = link.watches[request_id] = ChangeQueue(_OVERFLOW_ANSWER, max_items=buffer)
        link.session.request(request_id, "watch", [prefix])
        await link.flush()
        try:
            while True:
                answer = await answers.take()
                if answer is None:  # the receive loop ended: the link is gone
                    assert link.closed is not None
                    raise _closed_error(link.closed)
                ok, value = answer
                if not ok:
                    raise _refusal(value)
                if value and value[0] == "change" and len(value) in (4, 5):
                    # a node before the delete flag sends four items: None meant deleted
                    deleted = bool(value[4]) if len(value) == 5 else value[2] is None
                    yield Change(value[1], value[2], value[3], deleted=deleted)
                elif value and value[0] == "overflow":  # the node's notice, or this client's own
                    yield OVERFLOW
        finally:
            del link.watches[request_id]
            answers.close()

    # -- the store's operations -----------------------------------------------------------

    async def get(self, key: str, default: Any = None) -> Any:
        """The value at ``key`` at the node; ``default`` if missing, deleted or expired."""
        found, value = await self.call("get", key)
        return value if found else default

    async def get_with_metadata(self, key: str) -> Record | None:
        """The value at ``key`` with its metadata, expiry and provenance; None if missing."""
        result = await self.call("get_with_metadata", key)
        if result is None:
            return None
        try:
            return Record(**{name: result[name] for name in _RECORD_FIELDS})
        except (KeyError, TypeError) as exc:
            raise ProtocolError(f"the node answered get_with_metadata with {result!r}") from exc

    async def get_many(self, keys: builtins.list[str], default: Any = None) -> builtins.list[Any]:
        """The values of ``keys`` at the node, in their order: ``default`` for each one missing.

        Asked in as many requests as the replies need (each fits in one message).
        """
        if isinstance(keys, (str, bytes)) or not isinstance(keys, (builtins.list, tuple)):
            raise InvalidArgumentType(f"get_many takes a list of keys, not {type(keys).__name__}")
        keys = builtins.list(keys)
        values: builtins.list[Any] = []
        while len(values) < len(keys):
            answers = await self.call("get_many", keys[len(values) :])
            if not isinstance(answers, builtins.list) or not answers:
                raise ProtocolError("the node answered get_many with no values")
            for answer in answers:
                if not (isinstance(answer, builtins.list) and len(answer) == 2):
                    raise ProtocolError("the node answered get_many with something else than [found, value]")
                values.append(answer[1] if answer[0] else default)
        return values[: len(keys)]

    async def put(
        self,
        key: str,
        value: Any,
        ttl: float | None = None,
        *,
        expiration: float | None = None,
        metadata: Any = None,
    ) -> None:
        """Set ``key`` at the node: ``ttl`` seconds from now or ``expiration`` (epoch seconds) to live;
        ``metadata``, a small dict, travels with the write."""
        if expiration is not None:
            await self.call("put", key, value, ttl, metadata, expiration)
        elif metadata is not None:
            await self.call("put", key, value, ttl, metadata)
        else:  # nodes before metadata took three arguments
            await self.call("put", key, value, ttl)

    async def incr(
        self, key: str, by: int = 1, ttl: float | None = None, *, expiration: float | None = None
    ) -> int:
        """Add ``by`` to the counter at ``key`` at the node; its new value there."""
        if expiration is None:
            result: int = await self.call("incr", key, by, ttl)
        else:
            result = await self.call("incr", key, by, ttl, expiration)
        return result

    async def delete(self, key: str) -> bool:
        return bool(await self.call("del", key))

    async def expire(self, key: str, ttl: float | None = None, *, expiration: float | None = None) -> bool:
        """Make ``key`` expire at the node (see :meth:`KvStore.expire`); False if it is missing there."""
        return bool(await self.call("expire", key, ttl, expiration))

    async def persist(self, key: str) -> bool:
        """Remove the expiry of ``key`` at the node; True if it had one."""
        return bool(await self.call("persist", key))

    async def ttl(self, key: str) -> float | None:
        """Seconds until ``key`` expires at the node; None when missing or never expiring."""
        result = await self.call("ttl", key)
        if result is not None and not isinstance(result, (int, float)):
            raise ProtocolError(f"the node answered ttl with {type(result).__name__}")
        return None if result is None else float(result)

    async def kind(self, key: str) -> str | None:
        """ "register", "counter" or "document" for ``key`` at the node; None when missing."""
        result = await self.call("kind", key)
        if result is not None and not isinstance(result, str):
            raise ProtocolError(f"the node answered kind with {type(result).__name__}")
        return result

    async def rate_limit(self, key: str, limit: int, window: float, cost: int = 1) -> Decision:
        """Admit or refuse one request at the node (see :meth:`KvStore.rate_limit`)."""
        result = await self.call("rate_limit", key, limit, window, cost)
        try:
            return Decision(**{name: result[name] for name in _DECISION_FIELDS})
        except (KeyError, TypeError) as exc:
            raise ProtocolError(f"the node answered rate_limit with {result!r}") from exc

    async def list(
        self, prefix: str = "", *, limit: int = 1000, cursor: str | None = None, detailed: bool = False
    ) -> Page:
        """One page of the node's live keys with ``prefix``, like :meth:`KvStore.list`.

        The node may return fewer than ``limit`` keys (a reply fits in one
        message); ``page.cursor`` is None only on the last page. With
        ``detailed``, ``page.details`` gives each key's expiration and metadata.
        """
        if detailed:
            result = await self.call("list", prefix, limit, cursor, True)
        else:
            result = await self.call("list", prefix, limit, cursor)
        if not (
            isinstance(result, builtins.list)
            and len(result) in (2, 3)
            and isinstance(result[0], builtins.list)
        ):
            raise ProtocolError(f"the node answered list with {type(result).__name__}, not [keys, cursor]")
        keys, next_cursor = result[0], result[1]
        if not all(isinstance(key, str) for key in keys) or not isinstance(next_cursor, str | None):
            raise ProtocolError("the node answered list with keys or a cursor that are not strings")
        if not detailed:
            return Page(keys, next_cursor)
        rows = result[2] if len(result) == 3 else None
        if not isinstance(rows, builtins.list) or len(rows) != len(keys):
            raise ProtocolError("the node answered a detailed list without one detail per key")
        details = []
        for key, row in zip(keys, rows, strict=True):
            if not (isinstance(row, builtins.list) and len(row) == 2):
                raise ProtocolError("the node answered a detailed list with a bad detail row")
            details.append(KeyInfo(key, row[0], row[1]))
        return Page(keys, next_cursor, details)

    async def keys(self, prefix: str = "") -> builtins.list[str]:
        """Every live key with ``prefix`` at the node, sorted (fetched page by page)."""
        keys: builtins.list[str] = []
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
        if not (isinstance(begun, builtins.list) and len(begun) == 2 and isinstance(begun[1], int)):
            raise ProtocolError("the node answered snapshot_begin with something else than [token, size]")
        token, size = begun
        chunk = self._limits.max_message_bytes - _CHUNK_OVERHEAD
        parts: builtins.list[bytes] = []
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


_RECORD_FIELDS = tuple(field.name for field in dataclasses.fields(Record))
_DECISION_FIELDS = tuple(field.name for field in dataclasses.fields(Decision))


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

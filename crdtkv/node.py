"""``Node``: replicates a KvStore with its peers in the background (anyio).

The node is the I/O shell around :class:`~crdtkv.core.sync.Session`: one
session per link, each with a receive loop and a send loop in its own error
boundary, so a broken or hostile peer closes that link and nothing else. Dialed
peers are redialed forever with jittered exponential backoff. The store stays
synchronous: local writes wake the send loops, which send batches after a
short window.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import anyio
import anyio.abc
import anyio.lowlevel

from .core.messages import CLOSE_PROTOCOL, CLOSE_SHUTDOWN, ROLE_CLIENT
from .core.sync import Closed, Opened, RequestReceived, Session, SyncSettings
from .errors import ConnectFailed, InvalidArgument, InvalidArgumentType, LinkClosed
from .requests import execute
from .store import KvStore
from .transport import Connection, Listener, Transport, TransportSettings, find_transport

log = logging.getLogger("crdtkv.node")

#: Messages that may wait for a watching client before its changes are dropped.
MAX_WATCH_BACKLOG = 1000


@dataclass(frozen=True)
class NodeSettings:
    """Everything a node can be tuned with; the defaults suit WAN links between PoPs."""

    sync: SyncSettings = field(default_factory=SyncSettings)
    transport: TransportSettings = field(default_factory=TransportSettings)
    #: First redial waits a random time up to this (seconds) ...
    reconnect_initial: float = 0.1
    #: ... then each failure multiplies the wait by ``reconnect_factor`` up to ``reconnect_max``.
    reconnect_factor: float = 1.618
    reconnect_max: float = 5.0
    #: Inbound links served at once; more are refused.
    max_connections: int = 256
    #: How often (seconds) the node garbage-collects old tombstones and expired values.
    gc_interval: float = 60.0


def secret_bytes(secret: bytes | str | None) -> bytes | None:
    """Normalise a shared secret given as bytes or str."""
    if secret is None:
        return None
    if isinstance(secret, str):
        secret = secret.encode("utf-8")
    if not isinstance(secret, bytes):
        raise InvalidArgumentType(f"secret must be bytes or str, not {type(secret).__name__}")
    if not secret:
        raise InvalidArgument("secret must not be empty")
    return secret


class _Link:
    """A session on a connection, plus what wakes its send loop."""

    def __init__(self, session: Session, connection: Connection, label: str) -> None:
        self.session = session
        self.connection = connection
        self.label = label
        self.wake = anyio.Event()
        #: change-feed hooks this link's client registered on the store
        self.watchers: list[Callable[[Sequence[str]], None]] = []

    def poke(self) -> None:
        self.wake.set()


class Node:
    """Replicate ``store`` with ``peers`` and serve peers and clients on ``listen``.

    Use as ``async with Node(store, listen=..., peers=[...], secret=...) as node:``;
    replication runs while the block runs.
    """

    def __init__(
        self,
        store: KvStore,
        *,
        listen: str | None = None,
        peers: Sequence[str] = (),
        secret: bytes | str | None = None,
        settings: NodeSettings | None = None,
        transports: dict[str, Transport] | None = None,
    ) -> None:
        if not isinstance(store, KvStore):
            raise InvalidArgumentType(f"Node needs a KvStore, not {type(store).__name__}")
        if isinstance(peers, str):
            raise InvalidArgumentType("peers must be a list of URLs, not one string")
        self.store = store
        self.listen_url = listen
        self.peers = list(peers)
        self.secret = secret_bytes(secret)
        self.settings = settings or NodeSettings()
        self._transports = transports
        self._links: set[_Link] = set()
        self._listener: Listener | None = None
        self._task_group: anyio.abc.TaskGroup | None = None
        self._rng = random.Random()
        #: links that completed a handshake, by peer origin
        self.connected: dict[str, str] = {}
        self._dialers = anyio.CancelScope()
        self._closing = False

    # -- lifecycle -------------------------------------------------------------------

    async def __aenter__(self) -> Node:
        state = self.store._state
        dialers = [
            (url, find_transport(url, self._transports)) for url in self.peers
        ]  # unknown scheme: fail now
        self._task_group = anyio.create_task_group()
        await self._task_group.__aenter__()
        try:
            if self.listen_url is not None:
                transport = find_transport(self.listen_url, self._transports)
                self._listener = await transport.listen(self.listen_url, self._serve, self.settings.transport)
            self._task_group.start_soon(self._dial_all, dialers)
            self._task_group.start_soon(self._collect_garbage)
        except BaseException:
            self._task_group.cancel_scope.cancel()
            await self._task_group.__aexit__(None, None, None)
            raise
        state.listeners.append(self._store_changed)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if not self.store.closed and self._store_changed in self.store._state.listeners:
            self.store._state.listeners.remove(self._store_changed)
        # no new links from here on: stop dialing, refuse new inbound links
        self._closing = True
        self._dialers.cancel()
        for link in list(self._links):
            link.session.close(CLOSE_SHUTDOWN, "node shutting down")
            link.poke()
        with anyio.move_on_after(1.0, shield=True):  # let the close messages go out
            while self._links:
                await anyio.sleep(0.005)
        assert self._task_group is not None
        self._task_group.cancel_scope.cancel()
        await self._task_group.__aexit__(exc_type, exc, tb)
        if self._listener is not None:
            with anyio.CancelScope(shield=True):
                await self._listener.aclose()

    @property
    def url(self) -> str | None:
        """The URL this node listens on (with the real port), or None."""
        return self._listener.url if self._listener is not None else None

    async def wait_for_peers(self, count: int, timeout: float = 10.0) -> None:
        """Wait until ``count`` replication links are open (raises TimeoutError)."""
        with anyio.fail_after(timeout):
            while len(self.connected) < count:
                await anyio.sleep(0.005)

    # -- change notification ---------------------------------------------------------

    def _store_changed(self) -> None:
        now = 0.0
        for link in self._links:
            session = link.session
            if not session.dirty:  # already scheduled: its send loop has the deadline
                now = now or time.monotonic()
                session.local_changed(now)
                link.poke()

    async def _collect_garbage(self) -> None:
        while True:
            await anyio.sleep(self.settings.gc_interval)
            try:
                removed = self.store.collect_garbage()
            except Exception:  # a storage failure is reported by the store; keep replicating
                log.exception("garbage collection failed")
            else:
                if removed:
                    log.info("garbage-collected %d entries", removed)

    # -- dialing and serving -----------------------------------------------------------

    async def _dial_forever(self, url: str, transport: Transport) -> None:
        settings = self.settings
        delay = settings.reconnect_initial
        while True:
            started = time.monotonic()
            try:
                connection = await transport.connect(url, settings.transport)
            except ConnectFailed as exc:
                log.debug("dialing %s failed: %s", url, exc)
            else:
                session = Session(
                    self.store._state,
                    dialer=True,
                    now=time.monotonic(),
                    secret=self.secret,
                    settings=settings.sync,
                )
                await self._run(session, connection, url)
                if time.monotonic() - started > 10 * settings.reconnect_max:
                    delay = settings.reconnect_initial
            # the first redial waits a random part of reconnect_initial, so peers that
            # lost each other at the same moment do not all come back at once
            await anyio.sleep(
                delay * self._rng.uniform(0.0 if delay == settings.reconnect_initial else 0.5, 1.0)
            )
            delay = min(delay * settings.reconnect_factor, settings.reconnect_max)

    async def _dial_all(self, dialers: list[tuple[str, Transport]]) -> None:
        with self._dialers:
            async with anyio.create_task_group() as group:
                for url, transport in dialers:
                    group.start_soon(self._dial_forever, url, transport)

    async def _serve(self, connection: Connection) -> None:
        if self._closing:
            await connection.aclose()
            return
        if len(self._links) >= self.settings.max_connections:
            log.warning("refusing %s: max_connections (%d) reached", connection.remote, len(self._links))
            await connection.aclose()
            return
        session = Session(
            self.store._state,
            dialer=False,
            now=time.monotonic(),
            secret=self.secret,
            settings=self.settings.sync,
        )
        await self._run(session, connection, connection.remote)

    async def _run(self, session: Session, connection: Connection, label: str) -> None:
        """Drive one link; every failure ends here, closing this link only."""
        link = _Link(session, connection, label)
        self._links.add(link)
        try:
            async with anyio.create_task_group() as group:
                group.start_soon(self._receive_loop, link, group.cancel_scope)
                await self._send_loop(link)
                group.cancel_scope.cancel()
        except LinkClosed as exc:
            log.info("link %s closed: %s", label, exc.reason)
        except Exception:  # an error boundary: a bug on one link must not take the node down
            log.exception("link %s failed", label)
        finally:
            if not self.store.closed:
                for watcher in link.watchers:
                    if watcher in self.store._state.watchers:
                        self.store._state.watchers.remove(watcher)
            self._links.discard(link)
            if session.peer_origin is not None and self.connected.get(session.peer_origin) == label:
                del self.connected[session.peer_origin]
            with anyio.CancelScope(shield=True):
                await connection.aclose()

    async def _receive_loop(self, link: _Link, scope: anyio.CancelScope) -> None:
        session = link.session
        try:
            while not session.closed:
                data = await link.connection.receive()
                for event in session.receive(data, time.monotonic()):
                    self._on_event(link, event)
                link.poke()
        except LinkClosed as exc:
            if not session.closed:
                log.info("link %s lost: %s", link.label, exc.reason)
            scope.cancel()

    def _on_event(self, link: _Link, event: Any) -> None:
        session = link.session
        if isinstance(event, Opened):
            if event.role != ROLE_CLIENT:
                self.connected[event.peer_origin] = link.label
                log.info("replicating with %s (%s)", event.peer_origin, link.label)
        elif isinstance(event, RequestReceived):
            request = event.request
            if request.op == "watch":
                self._watch_for(link, request.id, request.args)
            else:
                ok, value = execute(self.store, request.op, request.args)
                session.respond(request.id, ok, value)
        elif isinstance(event, Closed):
            level = (
                logging.WARNING
                if event.code >= CLOSE_PROTOCOL and event.code != CLOSE_SHUTDOWN
                else logging.INFO
            )
            who = "peer" if event.by_peer else "we"
            log.log(level, "link %s closed (%s): code %d, %s", link.label, who, event.code, event.reason)

    def _watch_for(self, link: _Link, request_id: int, args: list[Any]) -> None:
        """Stream changes under a prefix to a client as responses to one request.

        Bounded like local watchers: while more than ``MAX_WATCH_BACKLOG``
        messages wait for the client, changes are dropped, and an
        ``["overflow"]`` notice goes out once it has caught up.
        """
        session = link.session
        if len(args) != 1 or not isinstance(args[0], str):
            session.respond(request_id, False, ["InvalidArgument", "watch takes one prefix string"])
            return
        prefix = args[0]
        store = self.store
        lost = False

        def on_change(keys: Sequence[str]) -> None:
            nonlocal lost
            for key in keys:
                if not key.startswith(prefix) or key.startswith("\x00"):
                    continue
                if session.backlog() >= MAX_WATCH_BACKLOG:
                    lost = True
                    continue
                if lost:
                    session.respond(request_id, True, ["overflow"])
                    lost = False
                session.respond(
                    request_id, True, ["change", key, store.get(key), store._state.origin_of(key)]
                )
            link.poke()

        link.watchers.append(on_change)
        store._state.watchers.append(on_change)
        session.respond(request_id, True, ["watching", prefix])
        link.poke()

    async def _send_loop(self, link: _Link) -> None:
        try:
            await self._send_all(link)
        except LinkClosed as exc:  # the receive loop reports why; just stop
            log.debug("link %s: send stopped: %s", link.label, exc.reason)

    async def _send_all(self, link: _Link) -> None:
        session = link.session
        connection = link.connection
        while True:
            now = time.monotonic()
            for data in session.outgoing(now):
                await connection.send(data)
            if session.closed:
                return
            if session.has_more():
                await anyio.lowlevel.checkpoint()
                continue
            wait = session.next_deadline(now) - time.monotonic()
            if wait > 0:
                with anyio.move_on_after(wait):
                    await link.wake.wait()
            link.wake = anyio.Event()


__all__ = ["Node", "NodeSettings"]

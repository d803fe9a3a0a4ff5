"""``Node``: replicates a KvStore with its peers in the background (anyio).

The node is the I/O shell around :class:`~crdtkv.core.sync.Session`: one
session per link, each with a receive loop and a send loop in its own error
boundary, so a broken or hostile peer closes that link and nothing else. Dialed
peers are redialed forever with jittered exponential backoff. The store stays
synchronous: local writes wake the send loops, which send batches after a
short window.

Every buffer a remote party can fill is bounded in bytes: a link stops being
read while its unsent messages exceed ``max_unsent_bytes`` (a client that does
not read its replies is slowed down, the node is not), a watching client's
backlog is bounded by ``max_watch_backlog_bytes``, and links still
authenticating have their own cap and deadline, apart from ``max_connections``.
Every close of a link is logged once, with its code and reason.

For operators the node keeps plain counters, read when someone asks (see
:mod:`crdtkv.metrics` and :mod:`crdtkv.status`): per link the bytes, messages
and entries each way (counted by its session), link closes by reason, failed
dials, garbage collected, client operations, and propagation delays (one
sample per adopted batch: the time it was applied minus the stamp of the newest
write it brought). :attr:`Node.ready` says when the node has caught up.
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Final, Generic, TypeVar

import anyio
import anyio.abc
import anyio.lowlevel

from .core.entry import Kind, resolve
from .core.feed import Cause, Stage
from .core.forwarding import Holds
from .core.keyindex import INTERNAL_PREFIX
from .core.limits import MIB
from .core.messages import (
    CLOSE_AUTH,
    CLOSE_BUSY,
    CLOSE_CLOCK,
    CLOSE_DUPLICATE,
    CLOSE_LOST,
    CLOSE_NORMAL,
    CLOSE_PROTOCOL,
    CLOSE_SELF,
    CLOSE_SHUTDOWN,
    CLOSE_STALE,
    CLOSE_STORE,
    CLOSE_TIMEOUT,
    CLOSE_VERSION,
    ROLE_CLIENT,
)
from .core.sync import (
    Applied,
    Closed,
    EntryTooLarge,
    Event,
    Opened,
    RequestReceived,
    Session,
    SyncSettings,
)
from .errors import ConnectFailed, InvalidArgument, InvalidArgumentType, LinkClosed
from .requests import MAX_SNAPSHOT_TRANSFER_BYTES, OPERATIONS, SnapshotTransfers, execute
from .stats import DELAY_BUCKETS, Buckets
from .store import KvStore
from .transport import Connection, Listener, Transport, TransportSettings, find_transport
from .version import __version__
from .watch import OVERFLOW, ChangeQueue, Follower

log = logging.getLogger("crdtkv.node")

_MERGE: Final = Cause.MERGE
_COLLECTION: Final = Cause.COLLECTION

T = TypeVar("T")

#: Entries merged from peers after which the garbage collector freezes what it tracks.
FREEZE_AFTER_ENTRIES = 100_000

#: The label of each close code in the close counters (a bounded set: any other code is "other").
CLOSE_NAMES: dict[int, str] = {
    CLOSE_NORMAL: "normal",
    CLOSE_LOST: "lost",
    CLOSE_PROTOCOL: "protocol",
    CLOSE_AUTH: "auth",
    CLOSE_STORE: "store",
    CLOSE_CLOCK: "clock",
    CLOSE_VERSION: "version",
    CLOSE_TIMEOUT: "timeout",
    CLOSE_SHUTDOWN: "shutdown",
    CLOSE_STALE: "stale",
    CLOSE_DUPLICATE: "duplicate",
    CLOSE_SELF: "self",
    CLOSE_BUSY: "busy",
}

#: Client operations counted under their own name; any other is counted as "other".
COUNTED_OPERATIONS = frozenset(OPERATIONS) | {
    "watch",
    "status",
    "snapshot_begin",
    "snapshot_read",
    "snapshot_end",
}

#: Key counts and the digest for operators (walks over every entry) take at most this share
#: of the time: one is reused until ``1 / COUNT_SHARE`` times its own duration has passed.
COUNT_SHARE = 0.1
#: Counts that take less than this (seconds; stores of a few thousand keys) are always fresh.
CHEAP_COUNT = 0.002


class Reused(Generic[T]):
    """A value that costs a walk over the whole store (key counts, the digest), for operators.

    Computed again when the store moved since (or after ``max_age`` seconds),
    except that a computation taking more than :data:`CHEAP_COUNT` is reused
    until ``1 / COUNT_SHARE`` times its duration has passed: on a large store
    that changes all the time, answering status and metrics takes at most
    that share of the node's time, and the answer may be that old.
    """

    def __init__(self, max_age: float | None) -> None:
        self.max_age = max_age
        self.value: T | None = None
        self.shape: object = None
        self.at = 0.0
        self.cost = 0.0

    def get(self, shape: object, compute: Callable[[], T]) -> T:
        now = time.monotonic()
        value = self.value
        if value is not None:
            age = now - self.at
            if shape == self.shape and (self.max_age is None or age < self.max_age):
                return value
            if self.cost > CHEAP_COUNT and age < self.cost / COUNT_SHARE:
                return value
        value = self.value = compute()
        done = time.monotonic()
        self.shape, self.at, self.cost = shape, done, done - now
        return value


@dataclass(frozen=True)
class PeerInfo:
    """One replication peer as the node sees it now (for status and metrics).

    A dialed peer with no link appears with ``state`` "connecting" or "down"
    and zero counters; counters count from the moment the current link opened.
    """

    #: the peer's origin id (None for a dialed peer never reached)
    origin: str | None
    #: the URL dialed, or the remote address of a link the peer dialed
    url: str
    #: "out" (this node dials it) or "in" (it dialed this node)
    direction: str
    #: "up" (replicating), "connecting" (dialing or handshaking) or "down" (the last dial failed)
    state: str
    #: seconds the peer has acknowledged nothing while batches wait for its ack (0.0: none
    #: waits); None when the link is not up
    lag_seconds: float | None
    #: keys with changes the peer does not demonstrably hold yet
    lacking: int
    #: seconds since the peer's last ack (None: none on this link yet)
    last_ack_age: float | None
    sent_bytes: int
    received_bytes: int
    sent_entries: int
    received_entries: int
    #: why the last dial or link failed (None when up or never failed)
    last_error: str | None

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


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
    #: Authenticated inbound links (peers and clients) served at once; more are closed (code 4010).
    #: A regional hub serves 1,000 PoPs at the default (``crdtkv serve`` raises the process's
    #: open-file limit to fit).
    max_connections: int = 1024
    #: Inbound links still authenticating at once; one more closes the oldest of them.
    max_handshaking: int = 64
    #: How long (seconds) an inbound link may take to authenticate (dialed links:
    #: ``sync.handshake_timeout``).
    inbound_handshake_timeout: float = 3.0
    #: Bytes a link may have waiting to be sent (replies, acks) before the node stops
    #: reading from it until the peer has taken some; one message may go over.
    max_unsent_bytes: int = 2 * MIB
    #: Bytes that may wait for a watching client before its changes are dropped
    #: (it is told with an overflow notice once it has caught up).
    max_watch_backlog_bytes: int = 4 * MIB
    #: Bytes of encoded snapshots held for clients reading them (``crdtkv snapshot``),
    #: all links together; a snapshot that does not fit is refused.
    max_snapshot_transfer_bytes: int = MAX_SNAPSHOT_TRANSFER_BYTES
    #: How often (seconds) the node garbage-collects old tombstones and expired values.
    gc_interval: float = 60.0

    def __post_init__(self) -> None:
        for name in (
            "max_connections",
            "max_handshaking",
            "max_unsent_bytes",
            "max_watch_backlog_bytes",
            "max_snapshot_transfer_bytes",
        ):
            if getattr(self, name) <= 0:
                raise InvalidArgument(f"NodeSettings.{name} must be positive")
        if self.inbound_handshake_timeout <= 0:
            raise InvalidArgument("NodeSettings.inbound_handshake_timeout must be positive")


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


class _Dialer:
    """One peer URL the node dials, and what it last logged about reaching it.

    The first failure and every change of reason are warnings; the same reason
    again is debug output, so a peer that is down does not flood the log.
    """

    def __init__(self, url: str, transport: Transport) -> None:
        self.url = url
        self.transport = transport
        self.failure: str | None = None
        self.failures = 0
        #: every failed dial (or handshake) of this URL since the node started
        self.failed_total = 0
        #: True once the URL turned out to reach this very node: it is not dialed again
        self.stopped = False
        #: the link being driven to this URL, if any
        self.link: Link | None = None
        #: the origin this URL reached last (None: never reached)
        self.origin: str | None = None
        #: why the last dial or link to it failed or closed (None: never)
        self.last_error: str | None = None

    def failed(self, reason: str) -> None:
        self.failures += 1
        self.failed_total += 1
        self.last_error = reason
        if reason == self.failure:
            log.debug("still cannot reach peer %s (%d attempts): %s", self.url, self.failures, reason)
        else:
            log.warning("cannot reach peer %s: %s (retrying with backoff)", self.url, reason)
        self.failure = reason

    def reached(self) -> None:
        if self.failure is not None:
            log.info("reached peer %s after %d failed attempts", self.url, self.failures)
        self.failure = None
        self.failures = 0


class Link:
    """One link the node drives: a session on a connection.

    For code outside the node it is read-only: ``unsent_bytes`` is what waits
    to be sent on it (the session's queue plus what the send loop has taken but
    not yet handed to the transport), ``peak_unsent_bytes`` the most it ever was.
    """

    def __init__(self, session: Session, connection: Connection, label: str, dialer: _Dialer | None) -> None:
        self.session = session
        self.connection = connection
        self.label = label
        self.dialer = dialer
        self.wake = anyio.Event()
        #: set each time the send loop handed a message to the transport
        self.drained = anyio.Event()
        #: the watches this link's client asked for
        self.watchers: list[Follower] = []
        #: True while the node does not read from this link because too much waits to be sent
        self.reading_paused = False
        self.peak_unsent_bytes = 0
        self._taken = 0

    @property
    def unsent_bytes(self) -> int:
        """Bytes queued for the peer and not yet handed to the transport."""
        return self.session.unsent_bytes + self._taken

    @property
    def inbound(self) -> bool:
        """True for a link the peer dialed."""
        return not self.session.dialer

    @property
    def peer_origin(self) -> str | None:
        return self.session.peer_origin

    def poke(self) -> None:
        self.wake.set()

    def _note(self) -> None:
        self.peak_unsent_bytes = max(self.peak_unsent_bytes, self.unsent_bytes)


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
        self._inbound_sync = dataclasses.replace(
            self.settings.sync, handshake_timeout=self.settings.inbound_handshake_timeout
        )
        self._transports = transports
        self._links: set[Link] = set()
        #: snapshots being read by this node's clients, within their byte budget
        self._snapshots = SnapshotTransfers(budget=self.settings.max_snapshot_transfer_bytes)
        #: inbound links still authenticating, oldest first
        self._handshaking: dict[Link, None] = {}
        #: inbound links that authenticated (what max_connections counts)
        self._authenticated: set[Link] = set()
        #: the replication link in use, by peer origin
        self._peer_links: dict[str, Link] = {}
        self._peers_changed = anyio.Event()
        self._dialer_states: list[_Dialer] = []
        self._listener: Listener | None = None
        self._task_group: anyio.abc.TaskGroup | None = None
        self._rng = random.Random()
        #: changes merged from peers, held back from forwarding (shared by every session)
        self._holds = Holds(self.settings.sync.forward_delay)
        #: entries merged since the collector last froze what it tracks
        self._merged_since_freeze = 0
        #: links that completed a handshake, by peer origin
        self.connected: dict[str, str] = {}
        self._dialers = anyio.CancelScope()
        self._closing = False
        self._entered = False
        #: when the node started serving (epoch seconds)
        self.started_at = time.time()
        #: True once a replication link completed its first catch-up (see :attr:`ready`)
        self._caught_up = False
        #: link closes by close-code label (:data:`CLOSE_NAMES`) and role ("peer", "client",
        #: "handshake": closed before the handshake completed)
        self.closes: dict[tuple[str, str], int] = {}
        #: seconds from a write's stamp to its application here, one sample per adopted batch
        self.propagation = Buckets(DELAY_BUCKETS)
        #: entries removed by the node's garbage collection runs
        self.garbage_collected = 0
        #: operations served, by (face, kind, result): counted by the faces and client links
        self.operations: dict[tuple[str, str, str], int] = {}
        self._key_counts: Reused[tuple[int, int]] = Reused(max_age=1.0)
        self._digest: Reused[str] = Reused(max_age=None)

    # -- lifecycle -------------------------------------------------------------------

    async def __aenter__(self) -> Node:
        state = self.store.replica
        # unknown scheme: fail now
        self._dialer_states = [_Dialer(url, find_transport(url, self._transports)) for url in self.peers]
        self._task_group = anyio.create_task_group()
        await self._task_group.__aenter__()
        try:
            if self.listen_url is not None:
                transport = find_transport(self.listen_url, self._transports)
                self._listener = await transport.listen(self.listen_url, self._serve, self.settings.transport)
            self._task_group.start_soon(self._dial_all)
            self._task_group.start_soon(self._collect_garbage)
        except BaseException:
            self._task_group.cancel_scope.cancel()
            await self._task_group.__aexit__(None, None, None)
            raise
        state.feed.subscribe(self._store_changed, Stage.REPLICATION)
        self.started_at = time.time()
        self._entered = True
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if not self.store.closed:
            self.store.replica.feed.unsubscribe(self._store_changed)
        # no new links from here on; every link says goodbye, then dialing stops
        self._closing = True
        for link in list(self._links):
            self._close(link, CLOSE_SHUTDOWN, "node shutting down")
        with anyio.move_on_after(1.0, shield=True):  # let the close messages go out
            while self._links:
                await anyio.sleep(0.005)
        self._dialers.cancel()
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

    @property
    def links(self) -> tuple[Link, ...]:
        """Every link open now: replication links, clients, and links still authenticating."""
        return tuple(self._links)

    @property
    def handshaking(self) -> int:
        """Inbound links that have not authenticated yet."""
        return len(self._handshaking)

    @property
    def dialing(self) -> list[str]:
        """The peer URLs the node (re)dials; a URL that reached this node itself is dropped."""
        return [dialer.url for dialer in self._dialer_states if not dialer.stopped]

    @property
    def snapshot_bytes_held(self) -> int:
        """Bytes of encoded snapshots this node holds for clients still reading them."""
        return self._snapshots.held

    # -- for operators -----------------------------------------------------------------

    @property
    def ready(self) -> bool:
        """True while the node serves with its store open and, when it has peers to dial,
        once a replication link completed its first catch-up.

        A catch-up is complete when this replica holds everything the peer's
        hello said the peer held (:attr:`Session.caught_up
        <crdtkv.core.sync.Session.caught_up>`), from any replication link,
        dialed or not. Once ready, a node stays ready while it runs: losing
        its peers later does not make its data unfit to serve.
        """
        if not self._entered or self._closing or self.store.closed:
            return False
        if self._caught_up:
            return True
        if not any(not dialer.stopped for dialer in self._dialer_states):
            return True
        for link in self._peer_links.values():
            if link.session.caught_up:
                self._caught_up = True
                log.info("caught up with %s: ready", link.peer_origin)
                return True
        return False

    @property
    def dial_failures(self) -> int:
        """Failed dials (and handshakes of dialed links) since the node started, all peers together."""
        return sum(dialer.failed_total for dialer in self._dialer_states)

    @property
    def dialers(self) -> list[tuple[str, int]]:
        """Each peer URL dialed, with its failed dials since the node started."""
        return [(dialer.url, dialer.failed_total) for dialer in self._dialer_states]

    def count_operation(self, face: str, kind: str, result: str) -> None:
        """Count one operation served (cheap: one dict update; exported when scraped)."""
        key = (face, kind, result)
        operations = self.operations
        operations[key] = operations.get(key, 0) + 1

    def _shape(self) -> tuple[int, int]:
        """Moves with every write, merge and collection: the entry count and the version vector's sum."""
        state = self.store.replica
        return len(state.entries), sum(state.vv.values())

    def count_keys(self) -> tuple[int, int]:
        """``(live keys, entries kept for deleted or expired keys)``, crdtkv's reserved keys aside.

        A walk over every entry, done again once the store changed (or a
        second passed: values expire without a change), within the share of
        time :class:`Reused` allows.
        """
        return self._key_counts.get(self._shape(), self._count_keys)

    def _count_keys(self) -> tuple[int, int]:
        state = self.store.replica
        now_ms = state.clock.now_ms()
        live = gone = 0
        missing = Kind.MISSING
        for key, entry in state.entries.items():
            if key.startswith(INTERNAL_PREFIX):
                continue
            if resolve(entry, now_ms) is missing:
                gone += 1
            else:
                live += 1
        return live, gone

    def digest(self) -> str:
        """The store's digest, within the share of time :class:`Reused` allows (a hash of every entry)."""
        return self._digest.get(self._shape(), self.store.digest)

    def peer_infos(self) -> list[PeerInfo]:
        """Every replication peer: its links up now, and dialed peers without one."""
        now = time.monotonic()
        infos: list[PeerInfo] = []
        for origin, link in self._peer_links.items():
            session = link.session
            stats = session.stats
            waiting = session.waiting_since
            up = session.replicating
            infos.append(
                PeerInfo(
                    origin=origin,
                    url=link.dialer.url if link.dialer is not None else link.label,
                    direction="in" if link.inbound else "out",
                    state="up" if up else "connecting",
                    lag_seconds=(max(0.0, now - waiting) if waiting is not None else 0.0) if up else None,
                    lacking=session.lacking(),
                    last_ack_age=None if session.last_ack_at is None else max(0.0, now - session.last_ack_at),
                    sent_bytes=stats["bytes_sent"],
                    received_bytes=stats["bytes_received"],
                    sent_entries=stats["entries_sent"],
                    received_entries=stats["entries_received"],
                    last_error=None,
                )
            )
        for dialer in self._dialer_states:
            if dialer.stopped or (dialer.origin is not None and dialer.origin in self._peer_links):
                continue
            connecting = dialer.link is not None or dialer.failure is None
            infos.append(
                PeerInfo(
                    origin=dialer.origin,
                    url=dialer.url,
                    direction="out",
                    state="connecting" if connecting else "down",
                    lag_seconds=None,
                    lacking=0,
                    last_ack_age=None,
                    sent_bytes=0,
                    received_bytes=0,
                    sent_entries=0,
                    received_entries=0,
                    last_error=dialer.last_error,
                )
            )
        return infos

    def status(self) -> dict[str, Any]:
        """This node at a glance, JSON-ready (the shape :func:`crdtkv.status.node_status` documents)."""
        store = self.store
        keys, tombstones = self.count_keys()
        return {
            "id": store.replica_id,
            "origin": store.origin,
            "version": __version__,
            "uptime": max(0.0, time.time() - self.started_at),
            "started_at": self.started_at,
            "ready": self.ready,
            "keys": keys,
            "tombstones": tombstones,
            "digest": self.digest(),
            "peers": [info.as_dict() for info in self.peer_infos()],
        }

    async def wait_for_peers(self, count: int, timeout: float = 10.0) -> None:
        """Wait until ``count`` replication links are open (raises TimeoutError)."""
        with anyio.fail_after(timeout):
            while len(self.connected) < count:
                await anyio.sleep(0.005)

    # -- change notification ---------------------------------------------------------

    def _store_changed(self, keys: Sequence[str], cause: Cause) -> None:
        # (called on every write: a node with no link returns at once, and the causes are
        # module constants, which cost less than an enum's class attribute)
        if not self._links or cause is _COLLECTION:  # collections are not replicated
            return
        if cause is _MERGE:
            # every peer hears that this node holds it; the others get it once the hold ends
            now = time.monotonic()
            origins = self.store.replica.merged_origins  # noted by the merge that publishes this
            for link in self._links:
                # (route modes this merge told other links are sent by the receive loop's wake)
                if link.session.local_changed(now, forwarded=True, origins=origins):
                    link.poke()
            return
        now = 0.0  # a write: the clock is read only if a link has no batch scheduled yet
        for link in self._links:
            session = link.session
            if not session.dirty:  # already scheduled: the batch will hold this write too
                now = now or time.monotonic()
                session.local_changed(now)
                link.poke()

    def _peers_moved(self) -> None:
        self._peers_changed.set()
        self._peers_changed = anyio.Event()

    async def _collect_garbage(self) -> None:
        while True:
            await anyio.sleep(self.settings.gc_interval)
            pruned = len(self.store.replica.pruned)
            try:
                removed = self.store.collect_garbage()
            except Exception:  # a storage failure is reported by the store; keep replicating
                log.exception("garbage collection failed")
            else:
                self.garbage_collected += removed
                if removed:
                    log.info("garbage-collected %d entries", removed)
            retired = self.store.replica.pruned
            if len(retired) != pruned:  # origins retired: no link keeps anything about them
                self._holds.forget_origins(retired)
                for link in self._links:
                    link.session.forget_origins(retired)

    # -- dialing and serving -----------------------------------------------------------

    async def _dial_forever(self, dialer: _Dialer) -> None:
        settings = self.settings
        delay = settings.reconnect_initial
        while not dialer.stopped and not self._closing:
            started = time.monotonic()
            try:
                connection = await dialer.transport.connect(dialer.url, settings.transport)
            except ConnectFailed as exc:
                dialer.failed(str(exc))
            else:
                if self._closing:
                    await connection.aclose()
                    return
                session = Session(
                    self.store.replica,
                    dialer=True,
                    now=time.monotonic(),
                    secret=self.secret,
                    settings=settings.sync,
                    max_message_bytes=settings.transport.max_message_bytes,
                    holds=self._holds,
                )
                link = dialer.link = Link(session, connection, dialer.url, dialer)
                try:
                    await self._run(link)
                finally:
                    dialer.link = None
                if dialer.stopped or self._closing:
                    return
                if session.close_code == CLOSE_DUPLICATE and session.peer_origin is not None:
                    # the other link to this peer is kept: redial only once it is gone
                    while session.peer_origin in self.connected:
                        await self._peers_changed.wait()
                    delay = settings.reconnect_initial
                elif time.monotonic() - started > 10 * settings.reconnect_max:
                    delay = settings.reconnect_initial
            # the first redial waits a random part of reconnect_initial, so peers that
            # lost each other at the same moment do not all come back at once
            await anyio.sleep(
                delay * self._rng.uniform(0.0 if delay == settings.reconnect_initial else 0.5, 1.0)
            )
            delay = min(delay * settings.reconnect_factor, settings.reconnect_max)

    async def _dial_all(self) -> None:
        with self._dialers:
            async with anyio.create_task_group() as group:
                for dialer in self._dialer_states:
                    group.start_soon(self._dial_forever, dialer)

    async def _serve(self, connection: Connection) -> None:
        if self._closing:
            await connection.aclose()
            return
        session = Session(
            self.store.replica,
            dialer=False,
            now=time.monotonic(),
            secret=self.secret,
            settings=self._inbound_sync,
            max_message_bytes=self.settings.transport.max_message_bytes,
            admit=self._admit,
            holds=self._holds,
        )
        link = Link(session, connection, connection.remote, None)
        limit = self.settings.max_handshaking
        while len(self._handshaking) >= limit:
            # the oldest goes, so a flood of silent connections cannot keep real peers out
            oldest = next(iter(self._handshaking))
            del self._handshaking[oldest]
            self._close(oldest, CLOSE_BUSY, f"too many links authenticating (max_handshaking {limit})")
        self._handshaking[link] = None
        await self._run(link)

    async def _run(self, link: Link) -> None:
        """Drive one link; every failure ends here, closing this link only."""
        session = link.session
        self._links.add(link)
        try:
            async with anyio.create_task_group() as group:
                group.start_soon(self._receive_loop, link, group.cancel_scope)
                await self._send_loop(link)
                group.cancel_scope.cancel()
        except Exception as exc:  # an error boundary: a bug on one link must not take the node down
            log.exception("link %s failed", link.label)
            self._handle(link, session.connection_lost(f"node error: {type(exc).__name__}: {exc}"))
        finally:
            self._forget(link)
            if not session.closed:  # cancelled: the node is stopping
                session.close(CLOSE_SHUTDOWN, "node shutting down")
            self._handle(link, session.events())
            with anyio.CancelScope(shield=True):
                await link.connection.aclose()

    def _forget(self, link: Link) -> None:
        if not self._caught_up and link.session.replicating and link.session.caught_up:
            self._caught_up = True  # caught up on a link that goes before anyone asked
        self._snapshots.release(link)
        for watcher in link.watchers:
            watcher.close()
        self._links.discard(link)
        self._handshaking.pop(link, None)
        self._authenticated.discard(link)
        origin = link.peer_origin
        if origin is not None and self._peer_links.get(origin) is link:
            del self._peer_links[origin]
            del self.connected[origin]
            self._peers_moved()
        self._wake_routed()  # routes set back to the hold go out now

    def _wake_routed(self) -> None:
        """Wake every link with something to send: route modes told to it (see crdtkv.core.forwarding)."""
        for link in self._links:
            if link.session.wants_send:
                link.poke()

    def _close(self, link: Link, code: int, reason: str) -> None:
        """Close a link from the node's side (the send loop sends the close and logs it)."""
        link.session.close(code, reason)
        link.poke()

    async def _receive_loop(self, link: Link, scope: anyio.CancelScope) -> None:
        session = link.session
        holds = self._holds
        budget = self.settings.max_unsent_bytes
        try:
            while not session.closed:
                while link.unsent_bytes > budget:  # the peer is not taking its replies: stop reading
                    link.reading_paused = True
                    link.drained = anyio.Event()
                    await link.drained.wait()
                link.reading_paused = False
                data = await link.connection.receive()
                told = holds.told
                self._handle(link, session.receive(data, time.monotonic()))
                if session.wants_send:  # a reply or an ack to send: not for an ack received
                    link._note()
                    link.poke()
                if holds.told != told:  # routes changed: the links told of them send it now
                    self._wake_routed()
        except LinkClosed as exc:
            self._handle(link, session.connection_lost(exc.reason))
            scope.cancel()

    def _handle(self, link: Link, events: list[Event]) -> None:
        for event in events:
            self._on_event(link, event)

    def _on_event(self, link: Link, event: Event) -> None:
        session = link.session
        if isinstance(event, Opened):
            self._on_opened(link, event)
        elif isinstance(event, RequestReceived):
            request = event.request
            op = request.op
            kind = op if op in COUNTED_OPERATIONS else "other"
            if op == "watch":
                self._watch_for(link, request.id, request.args)
                self.count_operation("ws", kind, "ok")
            elif op == "status" and not request.args:
                session.respond(request.id, True, self.status())
                self.count_operation("ws", kind, "ok")
            else:
                try:
                    ok, value = execute(self.store, op, request.args, link, self._snapshots)
                except Exception as exc:  # a bug behind one request answers it; the link stays
                    log.exception("request %r from %s failed", op, link.label)
                    ok, value = False, ["InternalError", f"{type(exc).__name__}: {exc}"]
                session.respond(request.id, ok, value)
                self.count_operation("ws", kind, "ok" if ok else str(value[0]))
        elif isinstance(event, Applied):
            if event.newest:
                # the write's stamp (hybrid clock: wall milliseconds in the high bits) to now
                delay = time.time() - (event.newest >> 16) / 1000
                self.propagation.observe(delay if delay > 0 else 0.0)
            self._merged_since_freeze += event.entries
            if self._merged_since_freeze >= FREEZE_AFTER_ENTRIES:
                # a large catch-up leaves many long-lived objects: stop the collector
                # from walking them again and again (its pauses are event-loop lag)
                self._merged_since_freeze = 0
                gc.freeze()
        elif isinstance(event, Closed):
            self._log_close(link, event)
        elif isinstance(event, EntryTooLarge):
            log.error(
                "key %r was not sent to %s: its entry is %d bytes encoded, more than one message "
                "may carry (%d); the peer gets it once it is written smaller",
                event.key,
                link.label,
                event.size,
                event.limit,
            )

    def _admit(self, origin: str, role: str) -> tuple[int, str] | None:
        """Refuse an authenticated inbound link while max_connections are served."""
        limit = self.settings.max_connections
        if len(self._authenticated) >= limit:
            return CLOSE_BUSY, f"too many connections (max_connections {limit})"
        return None

    def _on_opened(self, link: Link, event: Opened) -> None:
        if link.inbound:
            self._handshaking.pop(link, None)
            self._authenticated.add(link)
        if event.role == ROLE_CLIENT:
            log.debug("client connected from %s", link.label)
            return
        if link.dialer is not None:
            link.dialer.reached()
            link.dialer.origin = event.peer_origin
        origin = event.peer_origin
        other = self._peer_links.get(origin)
        if other is not None and not other.session.closed:
            keep = self._keep(other, link)
            drop = link if keep is other else other
            self._close(drop, CLOSE_DUPLICATE, f"duplicate link: the one from {keep.label} is kept")
            if drop is link:
                return
        # the rank of this link among the replication links: a sender holds forwarded
        # changes longer for a link ranked later (see crdtkv.core.forwarding)
        link.session.prefer(len(self._peer_links))
        self._peer_links[origin] = link
        self.connected[origin] = link.label
        self._peers_moved()
        log.info("replicating with %s (%s)", origin, link.label)

    def _keep(self, old: Link, new: Link) -> Link:
        """Which of two replication links to one peer stays: both nodes pick the same.

        Links dialed by different nodes: the one dialed by the smaller origin id.
        Both dialed by the same node (a peer listed under two URLs): the one
        already in use.
        """
        mine, theirs = self.store.origin, new.session.peer_origin
        assert theirs is not None

        def dialed_by(link: Link) -> str:
            return mine if link.session.dialer else theirs

        if dialed_by(old) == dialed_by(new):
            return old
        return old if dialed_by(old) == min(mine, theirs) else new

    def _log_close(self, link: Link, event: Closed) -> None:
        """Log and count one close of one link, once, with its code and reason."""
        session = link.session
        dialer = link.dialer
        role = "handshake"
        if session.opened:
            role = "client" if session.peer_role == ROLE_CLIENT else "peer"
        label = (CLOSE_NAMES.get(event.code, "other"), role)
        self.closes[label] = self.closes.get(label, 0) + 1
        if dialer is not None and session.opened:
            dialer.last_error = (
                f"link {'lost' if event.code == CLOSE_LOST else 'closed'}: code {event.code}, {event.reason}"
            )
        if dialer is not None and not session.opened:
            if event.code == CLOSE_SELF:
                dialer.stopped = True
                log.warning("peer %s is this node itself: not dialing it again", dialer.url)
            else:
                dialer.failed(f"the link closed during the handshake: code {event.code}, {event.reason}")
            return
        if event.code == CLOSE_LOST:
            how = "lost"
        elif event.by_peer:
            how = "closed by the peer"
        else:
            how = "closed"
        # a node dialing itself warns on its dialing side; duplicates are closed by design
        quiet = event.code in (CLOSE_NORMAL, CLOSE_SHUTDOWN, CLOSE_LOST, CLOSE_DUPLICATE, CLOSE_SELF)
        if not session.authenticated:
            level = logging.INFO  # anyone who reaches the port can cause these
        elif not session.opened or session.peer_role != ROLE_CLIENT:
            level = logging.INFO if quiet or event.code < CLOSE_PROTOCOL else logging.WARNING
        else:
            level = logging.DEBUG if quiet else logging.WARNING
        log.log(level, "link %s %s: code %d, %s", link.label, how, event.code, event.reason)

    def _watch_for(self, link: Link, request_id: int, args: list[Any]) -> None:
        """Stream changes under a prefix to a client as responses to one request.

        Bounded in bytes (see :mod:`crdtkv.watch`): a change that would take
        what waits to be sent on the link over ``max_watch_backlog_bytes`` is
        dropped, with every change after it, and an ``["overflow"]`` notice goes
        out once the link is below its budget again.
        """
        session = link.session
        if len(args) != 1 or not isinstance(args[0], str):
            session.respond(request_id, False, ["InvalidArgument", "watch takes one prefix string"])
            return
        budget = self.settings.max_watch_backlog_bytes
        queue = ChangeQueue(OVERFLOW, max_bytes=budget, waiting=lambda: link.unsent_bytes)

        def forward() -> None:
            # what the queue let in goes to the link at once; a due notice once it is below budget
            sent = False
            while link.unsent_bytes < budget and (change := queue.take_nowait()) is not None:
                if change.overflow:
                    session.respond(request_id, True, ["overflow"])
                else:
                    session.respond(
                        request_id, True, ["change", change.key, change.value, change.origin, change.deleted]
                    )
                sent = True
            if sent:
                link._note()
                link.poke()

        link.watchers.append(Follower(self.store.replica, args[0], queue, forward))
        session.respond(request_id, True, ["watching", args[0]])
        link.poke()

    async def _send_loop(self, link: Link) -> None:
        try:
            await self._send_all(link)
        except LinkClosed as exc:
            self._handle(link, link.session.connection_lost(exc.reason))

    async def _send_all(self, link: Link) -> None:
        session = link.session
        connection = link.connection
        stall = self.settings.sync.keepalive_timeout
        while True:
            now = time.monotonic()
            out = session.outgoing(now)
            link._taken = sum(len(data) for data in out)
            link._note()
            self._handle(link, session.events())
            if out:
                # one cancel scope for what goes out now, its deadline renewed per message:
                # a send that makes no progress for ``stall`` closes the link
                with anyio.CancelScope() as scope:
                    for data in out:
                        scope.deadline = anyio.current_time() + stall
                        await connection.send(data)
                        link._taken -= len(data)
                if scope.cancelled_caught:  # the peer takes nothing: it is gone or hostile
                    if not session.closed:
                        session.close(CLOSE_TIMEOUT, f"the peer read nothing for {stall:g} s")
                    self._handle(link, session.events())
                    return
                link.drained.set()
            for watcher in link.watchers:  # the link took some: a watch may forward again
                if watcher.forward is not None:
                    watcher.forward()
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


__all__ = ["Link", "Node", "NodeSettings"]

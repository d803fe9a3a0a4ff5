"""The replication protocol (version 3) as a sans-I/O state machine, one per link.

A :class:`Session` is fed the messages that arrive on a link
(:meth:`Session.receive`) and asked for the messages to send
(:meth:`Session.outgoing`); time is passed in. It never raises on remote
garbage: a malformed message, a failed challenge, a stamp from a clock too far
ahead or a message out of turn closes the session with a reason code, and the
shell closes the link. What each message does in each phase is one table,
:data:`TRANSITIONS`, in the style of h11.

Handshake (the listener never reveals anything before the dialer has proved
the shared secret)::

    listener -> dialer    Challenge(nonce_l)
    dialer   -> listener  Hello(version, store, origin, role, nonce_d, proof_d, vv_d)
    listener -> dialer    Hello(version, store, origin, peer, nonce_l, proof_l, vv_l)

``proof_d = HMAC(secret, "dial" | nonce_l | nonce_d | store | origin | role)`` and
``proof_l`` likewise with "listen", each bound to the other side's fresh nonce,
so a recorded proof is useless on a new connection and cannot be reflected.
Without a secret the proofs are empty; a side with a secret refuses a peer
whose proof is empty or wrong. A peer of another protocol version is refused
with a close that names both versions.

Replication: version vectors cross a link once, in the hellos. Afterwards
each side keeps, per link, what the other holds (``sent``) and what the
other knows it holds (``told``), and sends only what changed:

* **Batches** are numbered per link. A batch carries the entries with
  changes the peer lacks, cut into parts that fit a message, and (in its
  last part) only the origins the batch brings the peer further in, with
  their stamps ("moves"). The receiver joins them into the vector it last
  adopted from this link and adopts the result once it has every part and
  holds the batch it builds on (``base``); drops, duplicates and
  reordering never make it claim what it lacks. A one-key batch costs the
  same at 3 PoPs and at 300.
* **Acks** name the last batch adopted, flag a gap (a batch that could not
  be adopted: the peer demonstrably lacks something, and the sender resends
  from the acknowledged batch), and list the origins of the receiver's own
  vector that moved since it last told the sender ("have"). A node sends a
  have-only ack to every peer after it merged a change, so no peer forwards
  it what it holds. Acks and haves gather for up to a quarter of the long
  hold (0.5 s at the defaults).
* **Routes** (:class:`~.messages.Route`): the receiving side tells each
  link, per origin, whether it wants that origin's changes at once (its
  route), gets them elsewhere (held for the long hold), or has no route
  yet (held by the link's rank). Routes spread from each writer as links
  open, so each change crosses each link once in any topology; a peer
  still lacking a change when a hold ends gets it through any surviving
  path (see :mod:`.forwarding`).
* **Resends** happen on a gap flag at once, or when no ack has come for
  ``resync_after`` while batches are outstanding, with that wait doubling on
  every resend that brings no ack (up to 16 times). At most
  ``max_unacked_batches`` batches are outstanding: a busy peer makes the next
  batch larger, never a storm of resends. Nothing is queued per change, so a
  slow peer costs no memory.

Every message the session emits fits in ``max_message_bytes``: a reply too
large becomes a ``TooLarge`` error reply, and an entry too large for a message
on its own is left out of the batch and reported (:class:`EntryTooLarge`)
rather than sent to make the peer close the link. Documents are trimmed to
what the peer may lack, by the function :meth:`~.replica.ReplicaState.delta_since` uses.

Every close, whatever its cause, is one :class:`Closed` event: returned by
:meth:`Session.receive` when a message caused it, by
:meth:`Session.connection_lost` when the transport lost the link, and queued
for :meth:`Session.events` when a timer or :meth:`Session.close` caused it.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import os
from collections import deque
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from typing import Any, Final

import cbor2

from ..errors import ClockSkewError, DecodeError, StoreMismatch
from .entry import dots
from .forwarding import RELEASES_PER_HOLD, Holds
from .messages import (
    CLOSE_AUTH,
    CLOSE_CLOCK,
    CLOSE_LOST,
    CLOSE_NORMAL,
    CLOSE_PROTOCOL,
    CLOSE_SELF,
    CLOSE_STALE,
    CLOSE_STORE,
    CLOSE_TIMEOUT,
    CLOSE_VERSION,
    NONCE_BYTES,
    PROTOCOL_VERSION,
    ROLE_CLIENT,
    ROLE_PEER,
    ROUTE_AT_ONCE,
    ROUTE_ELSEWHERE,
    ROUTE_HOLD,
    Ack,
    Challenge,
    Close,
    Deltas,
    Hello,
    Message,
    Ping,
    Pong,
    Prefer,
    Request,
    Response,
    Route,
    decode_message,
    encode_message,
)
from .replica import ReplicaState
from .vv import VersionVector, join_into
from .wire import Delta, decode_delta, encode_delta

#: A resend that brings no ack doubles the wait for the next, up to this many times ``resync_after``.
MAX_RESEND_BACKOFF: Final = 16
#: Origins a peer may ask this side to forward at once (more are held like the rest).
MAX_ROUTED_ORIGINS: Final = 65_536


@dataclass(frozen=True)
class SyncSettings:
    """Protocol timing and pacing; times in seconds."""

    #: Wait this long after a local write before sending, to batch changes (0: at once).
    batch_window: float = 0.002
    #: Send a ping after this long without sending anything.
    keepalive_interval: float = 5.0
    #: Close the link after this long without receiving anything.
    keepalive_timeout: float = 15.0
    #: Close the link if the handshake is not done within this.
    handshake_timeout: float = 10.0
    #: Resend from the last acknowledged batch after this long without any ack while
    #: batches are outstanding (doubling on each resend that brings none). A peer
    #: gathers acks for up to ``forward_delay * 10`` (0.5 s), so keep this well above
    #: that plus a round trip.
    resync_after: float = 5.0
    #: Keys per delta part before size-based splitting.
    keys_per_part: int = 4096
    #: Hold changes merged from a peer this long (times one plus the rank the receiving
    #: peer gave the link) before forwarding them, so peers that already hold them can
    #: say so: longer than one hop's latency plus ``batch_window``. A peer that gets an
    #: origin's changes another way is held 40 times this, and acks and haves gather for
    #: 10 times this (see :mod:`.forwarding`).
    forward_delay: float = 0.05
    #: Batches sent and not yet acknowledged at most; a busy peer gets larger batches.
    max_unacked_batches: int = 64


# -- events for the shell ------------------------------------------------------------


@dataclass(frozen=True)
class Opened:
    """The handshake completed."""

    peer_origin: str
    role: str


@dataclass(frozen=True)
class Applied:
    """A batch part was merged into the store.

    ``newest`` is the largest hybrid-clock stamp among the origins the batch
    moved, once its last part is adopted (0 otherwise): the stamp of the newest
    write it brought, for one propagation-delay sample per batch.
    """

    changed: int
    entries: int
    newest: int = 0


@dataclass(frozen=True)
class RequestReceived:
    request: Request


@dataclass(frozen=True)
class ResponseReceived:
    response: Response


@dataclass(frozen=True)
class Closed:
    """The session is over; ``by_peer`` tells whether the peer closed it.

    ``code`` is :data:`~.messages.CLOSE_LOST` (never sent) when the transport
    lost the link.
    """

    code: int
    reason: str
    by_peer: bool


@dataclass(frozen=True)
class EntryTooLarge:
    """An entry could not be sent: alone it is larger than one message may be.

    It was left out of its batch so the link stays usable; the peer does not
    receive it until it is written again (smaller).
    """

    key: str
    size: int
    limit: int


Event = Opened | Applied | RequestReceived | ResponseReceived | Closed | EntryTooLarge


def make_proof(secret: bytes, side: str, their_nonce: bytes, my_nonce: bytes, hello: Hello) -> bytes:
    """HMAC-SHA256 binding the sender's claims to both fresh nonces."""
    claims = cbor2.dumps([side, their_nonce, my_nonce, hello.store, hello.origin, hello.role])
    return hmac.new(secret, b"crdtkv-auth-v1" + claims, hashlib.sha256).digest()


class Phase(enum.Enum):
    """Where a session is in its life."""

    AWAIT_CHALLENGE = "await-challenge"
    AWAIT_HELLO = "await-hello"
    OPEN = "open"
    CLOSED = "closed"


class _Batch:
    """A batch being sent: its keys, cut into parts as it goes out."""

    __slots__ = ("base", "frame", "index", "keys", "moves", "number", "position")

    def __init__(self, number: int, base: int, keys: list[str], moves: VersionVector) -> None:
        self.number = number
        #: the batch this one builds on (0: the peer's hello)
        self.base = base
        self.keys = keys
        #: the origins the batch brings the peer further in, with this side's stamps
        #: (all of its vector that the last part carries)
        self.moves = moves
        self.position = 0
        self.index = 0
        #: bytes around a part's payload (measured once per batch)
        self.frame = 0


class _Incoming:
    """The parts of the batch being received."""

    __slots__ = ("base", "moves", "number", "seen", "total")

    def __init__(self, number: int, base: int) -> None:
        self.number = number
        self.base = base
        self.seen: set[int] = set()
        self.total: int | None = None
        self.moves: VersionVector | None = None

    @property
    def complete(self) -> bool:
        return self.total is not None and len(self.seen) == self.total


class Session:
    """One end of one link, replicating ``state`` or serving a client."""

    def __init__(
        self,
        state: ReplicaState,
        *,
        dialer: bool,
        now: float,
        secret: bytes | None = None,
        role: str = ROLE_PEER,
        settings: SyncSettings | None = None,
        random_bytes: Callable[[int], bytes] = os.urandom,
        max_message_bytes: int | None = None,
        admit: Callable[[str, str], tuple[int, str] | None] | None = None,
        holds: Holds | None = None,
    ) -> None:
        self.state = state
        #: asked ``(origin, role)`` once an inbound peer has authenticated and before anything is
        #: revealed to it; a ``(code, reason)`` answer refuses it (a node at its capacity)
        self.admit = admit
        self.dialer = dialer
        self.role = role
        self.secret = secret
        self.settings = settings or SyncSettings()
        self.limits = state.limits
        #: the largest message this session emits (the smaller of the store's limit and the link's)
        self.max_message_bytes = min(
            state.limits.max_message_bytes,
            max_message_bytes if max_message_bytes is not None else state.limits.max_message_bytes,
        )
        #: the replica's forwarding holds, shared by its sessions (None: forward at once)
        self.holds = holds
        self._nonce = random_bytes(NONCE_BYTES)
        self._peer_nonce = b""
        self._outbox: list[bytes] = []
        self._outbox_bytes = 0
        #: events not caused by a received message (timers, close()), for :meth:`events`
        self._events: list[Event] = []
        self.phase = Phase.AWAIT_CHALLENGE if dialer else Phase.AWAIT_HELLO
        #: the peer proved the secret (or none is needed): it may hear why we close
        self._peer_verified = False
        self.peer_origin: str | None = None
        self.peer_role: str | None = None
        self.close_code: int | None = None
        self.close_reason: str | None = None
        # -- what goes out
        #: what the peer holds, or will once the batches in flight arrive
        self.sent: VersionVector = {}
        #: what the peer demonstrably holds (its hello, acks and haves): where resends start
        self.known: VersionVector = {}
        #: what the peer knows this side holds
        self.told: VersionVector = {}
        self._dirty = True
        self._dirty_since = now
        #: when held changes are released for this link, if any are held
        self._release_at: float | None = None
        #: when a have-only ack was first due (a change merged from another link), if one is
        self._have_since: float | None = None
        #: a have is due for an origin the peer holds back only by the link's rank (not the long hold)
        self._have_urgent = False
        #: batches adopted and not yet acknowledged, and when the first of them was adopted
        self._acks_owed = 0
        self._ack_since: float | None = None
        self._batch: _Batch | None = None
        self._batch_number = 0
        #: the batch the next one builds on (the last sent, or after a resend the last acknowledged)
        self._base = 0
        #: origins whose stamp here may have moved past ``sent`` (None: any may have)
        self._moved: set[str] | None = None
        #: origins held back from the peer, looked at again only once the hold releases them
        self._waiting: set[str] = set()
        #: origins whose stamp here may have moved past ``told`` (None: any may have)
        self._have_moved: set[str] | None = set()
        #: (number, moves) of batches sent and not yet acknowledged, oldest first
        self._unacked: deque[tuple[int, VersionVector]] = deque()
        self._progress_at = now
        self._backoff = 1
        self._rewound_to = -1
        #: the last batch the peer acknowledged: resends build on it
        self._acked = 0
        #: the rank the peer gave this link, and the one this side gave it (see :mod:`.forwarding`)
        self.peer_rank = 0
        self.rank = 0
        #: origins whose changes the peer asked to get at once (see :class:`~.messages.Route`)
        self.routed: set[str] = set()
        #: origins whose changes the peer gets another way: held for the long hold
        self.elsewhere: set[str] = set()
        #: route modes to tell the peer (origin -> mode), sent with the next control messages
        self._route_out: dict[str, int] = {}
        #: origins this side told the peer a route for (at once or elsewhere): the peer never
        #: forwards them before the long hold, so their haves may wait longer
        self._told_routed: set[str] = set()
        self._reopened = False
        # -- what comes in
        #: the number of the last batch adopted from the peer
        self._adopted = 0
        self._incoming: _Incoming | None = None
        self._gap_reported = -1
        #: origins of the peer's hello whose stamps this replica does not hold yet
        #: (None before the hello; see :attr:`caught_up`)
        self._catch_up: dict[str, int] | None = None
        self._caught_up = False
        #: when the last ack came from the peer (None: none yet)
        self.last_ack_at: float | None = None
        # -- timers
        self._started = now
        self._last_sent = now
        self._last_received = now
        self._ping_token = 0
        #: statistics for operators and tests
        self.stats = {
            "parts_sent": 0,
            "bytes_sent": 0,
            "messages_sent": 0,
            "bytes_received": 0,
            "messages_received": 0,
            "entries_sent": 0,
            "entries_received": 0,
            "entries_too_large": 0,
            "acks_sent": 0,
            "haves_sent": 0,
            "resyncs": 0,
        }
        if not dialer:
            self._send(Challenge(self._nonce))

    # -- properties ------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self.phase is Phase.CLOSED

    @property
    def replicating(self) -> bool:
        return self.phase is Phase.OPEN and self.role == ROLE_PEER and self.peer_role == ROLE_PEER

    @property
    def authenticated(self) -> bool:
        """True once the peer proved the shared secret (or none is needed)."""
        return self._peer_verified

    @property
    def opened(self) -> bool:
        """True once the handshake completed (and still after the session closed)."""
        return self.peer_role is not None

    @property
    def unsent_bytes(self) -> int:
        """Bytes queued for the peer and not yet taken by :meth:`outgoing`."""
        return self._outbox_bytes

    @property
    def wants_send(self) -> bool:
        """True if :meth:`outgoing` has something for the peer now: a reply, an ack, a batch let go.

        The shell wakes its sender only then, not for every message received.
        """
        return bool(self._outbox or self._route_out) or self._reopened or self.phase is Phase.CLOSED

    @property
    def caught_up(self) -> bool:
        """True once this replica holds everything the peer's hello said the peer held.

        That is the first catch-up from this peer: for every origin of the
        peer's hello, this replica's version vector reaches the stamp the peer
        announced (or the origin was pruned here), however the entries came
        (from this link or another). Once true it stays true. Checked when
        asked, against the origins still missing, so it costs nothing per message.
        """
        if self._caught_up:
            return True
        pending = self._catch_up
        if pending is None or self.peer_role != ROLE_PEER:
            return False
        vv, pruned = self.state.vv, self.state.pruned
        for origin in [o for o, stamp in pending.items() if vv.get(o, 0) >= stamp or o in pruned]:
            del pending[origin]
        if not pending:
            self._caught_up = True
            self._catch_up = None
        return self._caught_up

    @property
    def waiting_since(self) -> float | None:
        """Since when the peer has acknowledged nothing while batches wait for its ack (None: none wait)."""
        return self._progress_at if self._unacked else None

    def lacking(self) -> int:
        """Keys with changes the peer does not demonstrably hold (its hello, acks and haves).

        Computed from this link's vectors when asked: it costs the keys counted.
        """
        if not self.replicating:
            return 0
        return len(self.state.changed_keys_since(self.known))

    # -- input -----------------------------------------------------------------------

    def receive(self, data: bytes, now: float) -> list[Event]:
        """Handle one message from the peer; return what the shell should know."""
        if self.phase is Phase.CLOSED:
            return []
        self._last_received = now
        stats = self.stats
        stats["bytes_received"] += len(data)
        stats["messages_received"] += 1
        try:
            message = decode_message(data, self.limits)
            if isinstance(message, Close):
                self._closed(message.code, message.reason)
                return [Closed(message.code, message.reason, by_peer=True)]
            handler = TRANSITIONS.get((self.phase, type(message)))
            if handler is None or (type(message) in REPLICATION_MESSAGES and not self.replicating):
                return [self._fail(CLOSE_PROTOCOL, f"unexpected {type(message).__name__} message")]
            return handler(self, message, now)
        # (one name per clause: compiled, a name reused across clauses keeps its first type)
        except DecodeError as undecodable:
            return [self._fail(CLOSE_PROTOCOL, f"{type(undecodable).__name__}: {undecodable}")]
        except ClockSkewError as skewed:
            return [self._fail(CLOSE_CLOCK, f"ClockSkewError: {skewed}")]
        except StoreMismatch as mismatched:
            return [self._fail(CLOSE_STORE, f"StoreMismatch: {mismatched}")]

    def _on_challenge(self, message: Challenge, now: float) -> list[Event]:
        if len(message.nonce) != NONCE_BYTES:
            return [self._fail(CLOSE_PROTOCOL, "expected a challenge")]
        self._peer_nonce = message.nonce
        self._send(self._hello(ROLE_CLIENT if self.role == ROLE_CLIENT else ROLE_PEER))
        self.phase = Phase.AWAIT_HELLO
        return []

    def _hello(self, role: str) -> Hello:
        vv = dict(self.state.vv) if role == ROLE_PEER else {}
        self.told = dict(vv)
        unsigned = Hello(PROTOCOL_VERSION, self.state.name, self.state.origin, role, self._nonce, b"", vv)
        if self.secret is None:
            return unsigned
        side = "dial" if self.dialer else "listen"
        proof = make_proof(self.secret, side, self._peer_nonce, self._nonce, unsigned)
        return Hello(unsigned.version, unsigned.store, unsigned.origin, role, self._nonce, proof, vv)

    def _on_hello(self, hello: Hello, now: float) -> list[Event]:
        if self.secret is not None:
            side = "listen" if self.dialer else "dial"
            expected = make_proof(self.secret, side, self._nonce, hello.nonce, hello)
            if not hmac.compare_digest(expected, hello.proof) or len(hello.nonce) != NONCE_BYTES:
                return [self._fail(CLOSE_AUTH, "authentication failed")]
        self._peer_verified = True
        if hello.version != PROTOCOL_VERSION:
            return [
                self._fail(
                    CLOSE_VERSION,
                    f"protocol version {hello.version} is not this node's version {PROTOCOL_VERSION}: "
                    "upgrade both ends to the same crdtkv protocol",
                )
            ]
        if hello.store != self.state.name:
            return [self._fail(CLOSE_STORE, f"store {hello.store!r} is not {self.state.name!r}")]
        if hello.role not in (ROLE_PEER, ROLE_CLIENT) or (self.dialer and hello.role != ROLE_PEER):
            return [self._fail(CLOSE_PROTOCOL, f"unexpected role {hello.role!r}")]
        if hello.origin == self.state.origin:
            return [self._fail(CLOSE_SELF, "connected to itself")]
        if hello.role == ROLE_PEER and self.state.missed_collection(hello.vv):
            return [
                self._fail(
                    CLOSE_STALE,
                    f"replica {hello.origin} missed deletions or retired origins already "
                    "garbage-collected or pruned here (offline longer than gc_grace): rebuild it from a peer",
                )
            ]
        if hello.vv:
            self.state.clock.check(max(hello.vv.values()))
        if self.dialer and hello.nonce != self._peer_nonce:
            return [self._fail(CLOSE_AUTH, "the peer's hello does not answer our challenge")]
        if not self.dialer and self.admit is not None:
            refusal = self.admit(hello.origin, hello.role)
            if refusal is not None:
                return [self._fail(*refusal)]
        self._peer_nonce = hello.nonce
        self.peer_origin = hello.origin
        self.peer_role = hello.role
        if not self.dialer:
            self._send(self._hello(ROLE_PEER))
        self.phase = Phase.OPEN
        self.sent = dict(hello.vv)
        self.known = dict(hello.vv)
        self._catch_up = dict(hello.vv)
        self._dirty = True
        self._dirty_since = now - self.settings.batch_window  # catch up at once
        self._progress_at = now
        if self.holds is not None and self.replicating:
            self.holds.opened(self, hello.origin)
        return [Opened(hello.origin, hello.role)]

    def _on_ping(self, message: Ping, now: float) -> list[Event]:
        self._send(Pong(message.token))
        return []

    def _on_pong(self, message: Pong, now: float) -> list[Event]:
        return []

    def _on_prefer(self, message: Prefer, now: float) -> list[Event]:
        self.peer_rank = message.rank
        return []

    def _on_route(self, message: Route, now: float) -> list[Event]:
        """The peer says how to forward these origins' changes to it, and what it holds of them."""
        stamps = message.origins
        if not stamps:
            return []
        self.state.clock.check(max(stamps.values()))
        join_into(self.sent, stamps)
        join_into(self.known, stamps)
        origins = [origin for origin in stamps if origin != self.state.origin]
        routed, elsewhere = self.routed, self.elsewhere
        routed.difference_update(origins)
        elsewhere.difference_update(origins)
        holds = self.holds
        if message.mode == ROUTE_ELSEWHERE:
            elsewhere.update(origins[: max(0, MAX_ROUTED_ORIGINS - len(elsewhere))])
            if holds is not None:
                holds.route(self, origins)  # an announcement: the peer reaches them
            return []
        if message.mode == ROUTE_AT_ONCE:
            routed.update(origins[: max(0, MAX_ROUTED_ORIGINS - len(routed))])
        if holds is not None:
            holds.withdrawn(self, origins)
        # what the peer still lacks of them goes out with the next batch (held as the mode says)
        if self._moved is not None:
            self._moved.update(origins)
        if not self._dirty:
            self._dirty = True
            self._dirty_since = now
            self._reopened = True
        return []

    def tell_route(self, mode: int, origins: Iterable[str]) -> None:
        """Tell the peer how to forward these origins' changes to this side (see :mod:`.forwarding`)."""
        if self.replicating:
            peer = self.peer_origin
            out = self._route_out
            for origin in origins:
                if origin != peer:
                    out[origin] = mode

    def _send_routes(self) -> None:
        """One :class:`~.messages.Route` per mode for what :meth:`tell_route` gathered."""
        by_mode: dict[int, VersionVector] = {}
        vv = self.state.vv
        told_routed = self._told_routed
        for origin, mode in self._route_out.items():
            by_mode.setdefault(mode, {})[origin] = vv.get(origin, 0)
            if mode != ROUTE_HOLD:
                told_routed.add(origin)
            else:
                told_routed.discard(origin)
        self._route_out = {}
        for mode, stamps in by_mode.items():
            join_into(self.told, stamps)  # the stamps are a have
            self._send(Route(mode, stamps))

    def _on_request(self, message: Request, now: float) -> list[Event]:
        if self.dialer or self.peer_role != ROLE_CLIENT:
            return [self._fail(CLOSE_PROTOCOL, "unexpected Request message")]
        return [RequestReceived(message)]

    def _on_response(self, message: Response, now: float) -> list[Event]:
        if self.role != ROLE_CLIENT:
            return [self._fail(CLOSE_PROTOCOL, "unexpected Response message")]
        return [ResponseReceived(message)]

    def _on_ack(self, ack: Ack, now: float) -> list[Event]:
        """The peer adopted batches up to ``ack.batch`` (and holds ``ack.have``)."""
        if ack.batch > self._batch_number:
            return [self._fail(CLOSE_PROTOCOL, "an ack for a batch never sent")]
        self.last_ack_at = now
        if ack.have:
            self.state.clock.check(max(ack.have.values()))
            join_into(self.sent, ack.have)
            join_into(self.known, ack.have)
        unacked = self._unacked
        full = len(unacked) >= self.settings.max_unacked_batches
        self._acked = max(self._acked, ack.batch)
        progressed = False
        while unacked and unacked[0][0] <= ack.batch:
            _, moves = unacked.popleft()
            join_into(self.known, moves)
            progressed = True
        if progressed:
            self._progress_at = now
            self._backoff = 1
            if full and (self._dirty or self._release_at is not None):
                self._reopened = True  # the window opened with a batch waiting: wake the sender
        if ack.missing and unacked and self._rewound_to != ack.batch:
            self._rewind(now, ack.batch)
            self._reopened = True
        return []

    def _on_deltas(self, part: Deltas, now: float) -> list[Event]:
        """Merge a part; adopt the sender's vector once its whole batch is here and builds on ours."""
        delta = decode_delta(part.payload, self.limits)
        incoming = self._incoming
        if part.batch > self._adopted and (incoming is None or part.batch > incoming.number):
            incoming = self._incoming = _Incoming(part.batch, part.base)
        adopt: VersionVector | None = None  # the batch's moves, once it may be adopted
        gap = False
        if incoming is not None and part.batch == incoming.number and part.index not in incoming.seen:
            incoming.seen.add(part.index)
            if part.last:
                incoming.total = part.index + 1
                incoming.moves = delta.vv
            if incoming.complete:
                self._incoming = None
                if incoming.base <= self._adopted:
                    adopt = incoming.moves
                else:
                    gap = True  # it builds on a batch never adopted here
        state = self.state
        vv = state.vv
        # the stamps held here before the merge, of the origins whose stamp it may move
        before = {origin: vv.get(origin, 0) for origin in adopt} if adopt else {}
        changed = state.apply(Delta(delta.name, adopt or {}, delta.entries, delta.top, delta.owned))
        holds = self.holds
        if holds is not None and delta.entries:
            # the origins whose operations this part brought (the replica noted them while
            # merging): held back from the other links, and routed through this one if new
            merged = {origin: before.get(origin, vv.get(origin, 0)) for origin in state.merged_origins}
            holds.merged(now, merged)
            holds.route(self, [origin for origin in merged if origin != self.peer_origin])
        self.stats["entries_received"] += len(delta.entries)
        if adopt is not None:
            assert incoming is not None
            # the batch's vector is the one adopted before it joined with its moves: joining
            # the moves alone into this replica's vector, and into what the sender is known
            # to hold, is the same
            self._adopted = incoming.number
            join_into(self.sent, adopt)  # the sender holds it: never echo it back
            join_into(self.known, adopt)
            join_into(self.told, adopt)  # and it knows this side holds it now
            self._acks_owed += 1
            if self._acks_owed >= max(1, self.settings.max_unacked_batches // 2):
                self._send_ack(False)  # the sender may soon wait for it
            elif self._ack_since is None:
                self._ack_since = now
                self._reopened = True  # a new deadline for the sender
        elif gap and self._gap_reported != self._adopted:
            # ask for a resend from the last batch adopted, once per gap
            self._gap_reported = self._adopted
            self._send_ack(True)
        return [Applied(changed, len(delta.entries), max(adopt.values(), default=0) if adopt else 0)]

    @property
    def _ack_window(self) -> float:
        """How long acks and haves gather before one message carries them.

        While a have is due for an origin the peer holds back by the link's
        rank: half of that hold, so the have reaches the peer before it would
        forward what this side holds. Otherwise a quarter of the long hold
        (0.5 s at the defaults): the peer needs acks only to free its window
        of unacknowledged batches (an ack goes at once when half of it is
        used) and to know where a resend would start, so a link carries a
        couple of acks a second however many changes cross it.
        """
        settings = self.settings
        holds = self.holds
        if holds is None:
            return max(settings.batch_window, settings.forward_delay / 4)
        if self._have_urgent:
            return max(settings.batch_window, holds.hold_for(self.rank) / 2)
        return max(settings.batch_window, holds.elsewhere_hold / RELEASES_PER_HOLD)

    def _send_ack(self, missing: bool) -> None:
        """Send what is owed: an ack of the batches adopted, and what this side newly holds.

        A have-only ack with nothing new is not sent.
        """
        have = self._have()
        if self._acks_owed or missing:
            self.stats["acks_sent"] += 1
        elif have:
            self.stats["haves_sent"] += 1
        else:
            self._have_since = None
            self._have_urgent = False
            return
        self._send(Ack(self._adopted, missing, have))
        self._acks_owed = 0
        self._ack_since = self._have_since = None
        self._have_urgent = False

    def _have(self) -> VersionVector:
        """The origins of this replica's vector that moved since the peer was last told."""
        told = self.told
        vv = self.state.vv
        candidates = vv if self._have_moved is None else self._have_moved
        have = {origin: vv[origin] for origin in candidates if told.get(origin, 0) < vv.get(origin, 0)}
        told.update(have)
        self._have_moved = set()
        return have

    # -- output ----------------------------------------------------------------------

    @property
    def dirty(self) -> bool:
        """True while a batch for the peer is already scheduled."""
        return self._dirty

    def local_changed(
        self, now: float, forwarded: bool = False, origins: Iterable[str] | None = None
    ) -> bool:
        """The store changed: schedule a batch for the peer; True if the sender must wake for it.

        ``forwarded`` changes were merged from a peer: this side tells the
        peer it holds them and forwards what the peer still lacks once the
        hold its route mode sets ends (see :mod:`.forwarding`). ``origins``
        names the origins that moved, if known: the session then looks at
        those only. Nothing is due sooner than before (a hub merging a
        hundred changes a second for a PoP that gets them elsewhere): False.
        """
        if not forwarded:
            if self._moved is not None:
                self._moved.add(self.state.origin)
            if not self._dirty:
                self._dirty = True
                self._dirty_since = now
                return True
            return False
        holds = self.holds
        if origins is None:
            self._moved = self._have_moved = None
        else:
            if self._have_moved is not None:
                self._have_moved.update(origins)
            if holds is None and self._moved is not None:
                self._moved.update(origins)
        if holds is None:
            if not self._dirty:
                self._dirty = True
                self._dirty_since = now
                return True
            return False
        wake = False
        at_once = held = lazy = urgent = False
        if origins is None:
            held = urgent = True
        else:
            routed, elsewhere, told_routed = self.routed, self.elsewhere, self._told_routed
            moved, waiting = self._moved, self._waiting
            for origin in origins:
                if origin in routed:
                    at_once = True
                    if moved is not None:
                        moved.add(origin)
                else:
                    if origin in elsewhere:
                        lazy = True
                    else:
                        held = True
                    waiting.add(origin)  # looked at when the hold releases it
                if origin not in told_routed:
                    urgent = True
        if self._have_since is None:
            self._have_since = now
            wake = True
        if urgent and not self._have_urgent:
            self._have_urgent = wake = True
        if at_once and not self._dirty:
            # the peer asked for these at once: the next batch goes after the batch window
            self._dirty = True
            self._dirty_since = now
            wake = True
        if held or lazy:
            release = now + (holds.hold_for(self.peer_rank) if held else holds.elsewhere_hold)
            if self._release_at is None or release < self._release_at:
                self._release_at = release
                wake = True
        return wake

    def forget_origins(self, origins: Collection[str]) -> None:
        """Drop what this link keeps about ``origins`` (retired and pruned here)."""
        for vector in (self.sent, self.known, self.told):
            for origin in origins:
                vector.pop(origin, None)
        for modes in (self.routed, self.elsewhere, self._told_routed):
            modes.difference_update(origins)
        for origin in origins:
            self._route_out.pop(origin, None)
        self._waiting.difference_update(origins)
        for moved in (self._moved, self._have_moved):
            if moved is not None:
                moved.difference_update(origins)

    def prefer(self, rank: int) -> None:
        """Tell the peer the rank this side gives the link among its replication links."""
        if self.replicating:
            self.rank = max(0, rank)
            self._send(Prefer(self.rank))

    def outgoing(self, now: float) -> list[bytes]:
        """Messages to send now: control messages first, then at most one delta part."""
        self._reopened = False
        if self.phase is not Phase.CLOSED:
            self._check_timers(now)
        if self.replicating:
            if self._route_out:
                self._send_routes()
            due = self._ack_deadline()
            if due is not None and now >= due:
                self._send_ack(False)
            if not self._outbox:  # control messages (a hello, acks) go first
                self._maybe_resend(now)
                part = self._next_part(now)
                if part is not None:
                    self._send(part)
        out = self._outbox
        self._outbox = []
        self._outbox_bytes = 0
        if out:
            self._last_sent = now
        return out

    def events(self) -> list[Event]:
        """Events not caused by a received message, oldest first, each returned once.

        A close by a timer (handshake or keepalive timeout) or by :meth:`close`,
        and entries left out of a batch (:class:`EntryTooLarge`) by :meth:`outgoing`.
        """
        events = self._events
        self._events = []
        return events

    def backlog(self) -> int:
        """Messages queued for the peer and not yet taken by :meth:`outgoing`."""
        return len(self._outbox)

    def has_more(self) -> bool:
        """True if :meth:`outgoing` would produce more right now (a batch in flight)."""
        return self._batch is not None or bool(self._outbox)

    def next_deadline(self, now: float) -> float:
        """The latest time at which :meth:`outgoing` must be called again."""
        settings = self.settings
        deadlines = []
        if self.phase in (Phase.AWAIT_CHALLENGE, Phase.AWAIT_HELLO):
            deadlines.append(self._started + settings.handshake_timeout)
        elif self.phase is Phase.OPEN:
            deadlines.append(self._last_sent + settings.keepalive_interval)
            deadlines.append(self._last_received + settings.keepalive_timeout)
            if self.replicating:
                window_open = len(self._unacked) < settings.max_unacked_batches
                if self._dirty and window_open:
                    deadlines.append(self._dirty_since + settings.batch_window)
                if self._release_at is not None and window_open:
                    deadlines.append(self._release_at)
                due = self._ack_deadline()
                if due is not None:
                    deadlines.append(due)
                if self._unacked:
                    deadlines.append(self._progress_at + settings.resync_after * self._backoff)
        return min(deadlines, default=now + settings.keepalive_interval)

    def _ack_deadline(self) -> float | None:
        """When the next ack (or have-only ack) must go out, if one is owed."""
        since = [t for t in (self._ack_since, self._have_since) if t is not None]
        return min(since) + self._ack_window if since else None

    def _check_timers(self, now: float) -> None:
        settings = self.settings
        if self.phase in (Phase.AWAIT_CHALLENGE, Phase.AWAIT_HELLO):
            if now - self._started >= settings.handshake_timeout:
                self._events.append(
                    self._fail(CLOSE_TIMEOUT, f"handshake timed out after {settings.handshake_timeout:g} s")
                )
            return
        if now - self._last_received >= settings.keepalive_timeout:
            silent = settings.keepalive_timeout
            reason = f"keepalive timed out: nothing received for {silent:g} s"
            self._events.append(self._fail(CLOSE_TIMEOUT, reason))
        elif now - self._last_sent >= settings.keepalive_interval:
            self._ping_token += 1
            self._send(Ping(self._ping_token))

    def _maybe_resend(self, now: float) -> None:
        """Resend from the last ack when no ack came for ``resync_after`` (times the backoff)."""
        if self._batch is not None or not self._unacked:
            return
        if now - self._progress_at >= self.settings.resync_after * self._backoff:
            self._rewind(now, self._acked)
            self._backoff = min(self._backoff * 2, MAX_RESEND_BACKOFF)
            self._progress_at = now

    def _rewind(self, now: float, acked: int) -> None:
        """Resend everything after batch ``acked``, which the peer adopted (its vector is ``known``)."""
        self._rewound_to = acked
        self._batch = None
        self.sent = dict(self.known)
        self._base = acked  # the peer holds it: the next batch builds on it
        self._moved = None
        self._unacked.clear()
        self._dirty = True
        self._dirty_since = now - self.settings.batch_window
        self.stats["resyncs"] += 1

    def _next_part(self, now: float) -> Deltas | None:
        batch = self._batch
        if batch is None:
            batch = self._next_batch(now)
            if batch is None:
                return None
        part = self._cut(batch)
        if part.last:
            self._batch = None
            join_into(self.sent, batch.moves)
            join_into(self.told, batch.moves)  # what the peer learns this side holds
            self._base = batch.number
            self._unacked.append((batch.number, batch.moves))
            if len(self._unacked) == 1:
                self._progress_at = now
        return part

    def _next_batch(self, now: float) -> _Batch | None:
        """Start the next batch if one is due: the keys with changes the peer lacks and may get now."""
        settings = self.settings
        released = self._release_at is not None and now >= self._release_at
        due = self._dirty and now - self._dirty_since >= settings.batch_window
        if not (due or released) or len(self._unacked) >= settings.max_unacked_batches:
            return None
        self._dirty = False
        state = self.state
        sent = self.sent
        vv = state.vv
        own = state.origin
        holds = self.holds
        # this replica's own origin is always looked at: a write schedules a batch once, and
        # writes after it (before the batch is cut) are in it too; origins held back are looked
        # at again once their hold may have ended
        waiting = self._waiting
        if self._moved is None:
            candidates: Collection[str] = vv
            waiting.clear()
        elif released:
            candidates = self._moved | waiting | {own}
            waiting.clear()
        else:
            candidates = self._moved | {own}
        if released:
            self._release_at = None
        # the moves: each origin that may have moved, up to what this side holds (held
        # origins up to their hold) where that is more than the peer holds
        moves: VersionVector = {}
        held: dict[str, int] = {}
        if holds is None:
            for origin in candidates:
                stamp = vv.get(origin, 0)
                if stamp > sent.get(origin, 0):
                    moves[origin] = stamp
        else:
            hold = holds.hold_for(self.peer_rank)
            lazy = holds.elsewhere_hold
            routed, elsewhere = self.routed, self.elsewhere
            release = self._release_at
            for origin in candidates:
                waiting.discard(origin)  # looked at now: waits again below if still held
                stamp = vv.get(origin, 0)
                if stamp <= sent.get(origin, 0):
                    continue
                if origin != own and origin not in routed:
                    found = holds.held(origin, now, lazy if origin in elsewhere else hold)
                    if found is not None and found[0] < stamp:
                        limit, at = found
                        held[origin] = limit
                        if release is None or at < release:
                            release = at
                        if limit <= sent.get(origin, 0):
                            continue
                        stamp = limit
                moves[origin] = stamp
            waiting.update(held)
            self._release_at = release
        self._moved = set()
        if not moves:
            return None
        keys = list(state.changed_keys_since(sent, moves))
        if held or waiting:
            entries = state.entries
            keys = [
                key for key in keys if key in entries and _sendable(dots(entries[key]), sent, held, waiting)
            ]
        self._batch_number += 1
        batch = self._batch = _Batch(self._batch_number, self._base, keys, moves)
        return batch

    def _cut(self, batch: _Batch) -> Deltas:
        """Encode the next part of ``batch``: as many keys as fit in one message.

        A key whose entry alone does not fit is left out (an :class:`EntryTooLarge`
        event names it): sent, it would make the peer close the link, again after
        every redial, and no later change would get through.
        """
        state = self.state
        if not batch.frame:
            # 16 bytes more cover the payload's CBOR length header (at most 9) and numbers
            # that grow to several bytes
            empty = Deltas(batch.number, batch.base, batch.index, True, b"")
            batch.frame = len(encode_message(empty)) + 16
        budget = self.max_message_bytes - batch.frame
        count = self.settings.keys_per_part
        while True:
            keys = batch.keys[batch.position : batch.position + count]
            last = batch.position + len(keys) >= len(batch.keys)
            items = state.entries_for(keys, self.sent, copy=False)  # documents trimmed to it
            payload = encode_delta(Delta(state.name, batch.moves if last else {}, items))
            if len(payload) <= budget:
                break
            if count == 1:
                self._events.append(EntryTooLarge(keys[0], len(payload), budget))
                self.stats["entries_too_large"] += 1
                items = []
                payload = encode_delta(Delta(state.name, batch.moves if last else {}, items))
                break
            count = max(1, count // 2)
        batch.position += len(keys)
        part = Deltas(batch.number, batch.base, batch.index, last, payload)
        batch.index += 1
        self.stats["parts_sent"] += 1
        self.stats["entries_sent"] += len(items)
        return part

    # -- requests (client links) -----------------------------------------------------

    def request(self, request_id: int, op: str, args: list[Any]) -> None:
        """Queue a client request (client sessions only, once open)."""
        self._send(Request(request_id, op, args))

    def respond(self, request_id: int, ok: bool, value: Any) -> None:
        """Queue the answer to a :class:`RequestReceived`.

        An answer larger than one message is replaced by a ``TooLarge`` error
        answer, so the link stays usable.
        """
        data = encode_message(Response(request_id, ok, value))
        if len(data) > self.max_message_bytes:
            refusal = ["TooLarge", f"the reply is {len(data)} bytes; the limit is {self.max_message_bytes}"]
            data = encode_message(Response(request_id, False, refusal))
        self._queue(data)

    # -- closing ---------------------------------------------------------------------

    def close(self, code: int = CLOSE_NORMAL, reason: str = "closing") -> None:
        """Close the session; a Close message is queued for the peer, a Closed event for :meth:`events`."""
        if self.phase is not Phase.CLOSED:
            self._events.append(self._fail(code, reason))

    def connection_lost(self, reason: str) -> list[Event]:
        """The transport lost the link: the session is over (code :data:`~.messages.CLOSE_LOST`).

        Returns the Closed event, or nothing if the session had already closed.
        """
        if self.phase is Phase.CLOSED:
            return []
        self._closed(CLOSE_LOST, reason)
        return [Closed(CLOSE_LOST, reason, by_peer=True)]

    def _closed(self, code: int, reason: str) -> None:
        was_replicating = self.replicating
        self.phase = Phase.CLOSED
        self.close_code, self.close_reason = code, reason
        self._batch = None
        if self.holds is not None:
            # its origins get a route through the next link that brings them
            self.holds.closed(self, self.peer_origin if was_replicating else None)

    def _fail(self, code: int, reason: str) -> Closed:
        authenticated = self._peer_verified
        self._closed(code, reason)
        if authenticated or code == CLOSE_AUTH or self.dialer:
            self._queue(encode_message(Close(code, reason)))
        return Closed(code, reason, by_peer=False)

    def _send(self, message: Message) -> None:
        self._queue(encode_message(message))

    def _queue(self, data: bytes) -> None:
        self._outbox.append(data)
        self._outbox_bytes += len(data)
        self.stats["messages_sent"] += 1
        self.stats["bytes_sent"] += len(data)


def _sendable(
    entry_dots: dict[str, int], sent: VersionVector, held: dict[str, int], waiting: set[str]
) -> bool:
    """True if an entry has a change the peer lacks from an origin not held (or below its hold).

    ``held`` maps the origins held back in this batch to their limits;
    ``waiting`` holds every origin held back, this batch or before.
    """
    for origin, stamp in entry_dots.items():
        if stamp > sent.get(origin, 0):
            floor = held.get(origin)
            if floor is None:
                if origin not in waiting:
                    return True
            elif stamp <= floor:
                return True
    return False


_Handler = Callable[[Session, Any, float], list[Event]]

#: Messages only a replication link (peer to peer) may carry.
REPLICATION_MESSAGES: Final = frozenset({Deltas, Ack, Prefer, Route})

#: What each message does in each phase; anything else closes the session (code 4000).
TRANSITIONS: Final[dict[tuple[Phase, type], _Handler]] = {
    (Phase.AWAIT_CHALLENGE, Challenge): Session._on_challenge,
    (Phase.AWAIT_HELLO, Hello): Session._on_hello,
    (Phase.OPEN, Ping): Session._on_ping,
    (Phase.OPEN, Pong): Session._on_pong,
    (Phase.OPEN, Deltas): Session._on_deltas,
    (Phase.OPEN, Ack): Session._on_ack,
    (Phase.OPEN, Prefer): Session._on_prefer,
    (Phase.OPEN, Route): Session._on_route,
    (Phase.OPEN, Request): Session._on_request,
    (Phase.OPEN, Response): Session._on_response,
}

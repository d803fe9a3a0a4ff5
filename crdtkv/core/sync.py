"""The replication protocol as a sans-I/O state machine (one per link).

A :class:`Session` is fed the messages that arrive on a link
(:meth:`Session.receive`) and asked for the messages to send
(:meth:`Session.outgoing`); time is passed in. It never raises on remote
garbage: a malformed message, a failed challenge, a stamp from a clock too far
ahead or a message out of turn closes the session with a reason code, and the
shell closes the link.

Handshake (the listener never reveals anything before the dialer has proved
the shared secret)::

    listener -> dialer    Challenge(nonce_l)
    dialer   -> listener  Hello(store, origin, role, nonce_d, proof_d, vv_d)
    listener -> dialer    Hello(store, origin, peer, nonce_l, proof_l, vv_l)

``proof_d = HMAC(secret, "dial" | nonce_l | nonce_d | store | origin | role)`` and
``proof_l`` likewise with "listen", each bound to the other side's fresh nonce,
so a recorded proof is useless on a new connection and cannot be reflected.
Without a secret the proofs are empty; a side with a secret refuses a peer
whose proof is empty or wrong.

Replication is state-based: a session keeps ``sent`` (what the peer is known
or assumed to hold) and sends ``delta_since(sent)`` whenever the store has
changed and the batching window has passed, split into parts that fit a
message. Nothing is queued per change, so a slow peer costs no memory: it just
receives a larger batch later. A receiver adopts the sender's version vector
only when it holds the batch's ``base`` and has every part (in any order), so drops,
duplicates and reordering never make it claim what it lacks. Acks carry the
receiver's version vector; if none comes for ``resync_after`` while batches
are unacknowledged, ``sent`` rewinds to the last ack and the gap is resent.

Every message the session emits fits in ``max_message_bytes``: a reply too
large becomes a ``TooLarge`` error reply, and an entry too large for a message
on its own is left out of the batch and reported (:class:`EntryTooLarge`)
rather than sent to make the peer close the link.

Every close, whatever its cause, is one :class:`Closed` event: returned by
:meth:`Session.receive` when a message caused it, by
:meth:`Session.connection_lost` when the transport lost the link, and queued
for :meth:`Session.events` when a timer or :meth:`Session.close` caused it.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import cbor2

from ..errors import ClockSkewError, DecodeError, StoreMismatch
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
    Ack,
    Challenge,
    Close,
    Deltas,
    Hello,
    Message,
    Ping,
    Pong,
    Request,
    Response,
    decode_message,
    encode_message,
)
from .replica import ReplicaState
from .vv import VersionVector, dominates, join_into
from .wire import Delta, decode_delta, encode_delta

#: Unconfirmed batches a peer may lag behind before it is resynced from its acks.
MAX_PENDING_BATCHES: Final = 64


@dataclass(frozen=True)
class SyncSettings:
    """Protocol timing; every value in seconds."""

    #: Wait this long after a change before sending, to batch changes.
    batch_window: float = 0.002
    #: Send a ping after this long without sending anything.
    keepalive_interval: float = 5.0
    #: Close the link after this long without receiving anything.
    keepalive_timeout: float = 15.0
    #: Close the link if the handshake is not done within this.
    handshake_timeout: float = 10.0
    #: Resend from the last acknowledged state after this long without an ack.
    resync_after: float = 5.0
    #: Keys per delta part before size-based splitting.
    keys_per_part: int = 4096


# -- events for the shell ------------------------------------------------------------


@dataclass(frozen=True)
class Opened:
    """The handshake completed."""

    peer_origin: str
    role: str


@dataclass(frozen=True)
class Applied:
    """A batch part was merged into the store."""

    changed: int
    entries: int


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


class _Batch:
    """A batch being sent: its keys, cut into parts as it goes out."""

    def __init__(self, number: int, keys: list[str], base: VersionVector, vv: VersionVector) -> None:
        self.number = number
        self.keys = keys
        self.base = base
        self.vv = vv
        self.position = 0
        self.index = 0
        #: bytes around a part's payload (measured once: the base vector is the batch's)
        self.frame = 0


_AWAIT_CHALLENGE: Final = "await-challenge"
_AWAIT_HELLO: Final = "await-hello"
_OPEN: Final = "open"
_CLOSED: Final = "closed"


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
        self._nonce = random_bytes(NONCE_BYTES)
        self._peer_nonce = b""
        self._outbox: list[bytes] = []
        self._outbox_bytes = 0
        #: events not caused by a received message (timers, close()), for :meth:`events`
        self._events: list[Event] = []
        self._phase = _AWAIT_CHALLENGE if dialer else _AWAIT_HELLO
        #: the peer proved the secret (or none is needed): it may hear why we close
        self._peer_verified = False
        self.peer_origin: str | None = None
        self.peer_role: str | None = None
        self.close_code: int | None = None
        self.close_reason: str | None = None
        # replication bookkeeping
        self.sent: VersionVector = {}
        self.acked: VersionVector = {}
        self._dirty = True
        self._dirty_since = now
        self._batch: _Batch | None = None
        self._batch_number = 0
        #: (sent at, vv) of batches sent but not yet covered by an ack, oldest first
        self._pending: deque[tuple[float, VersionVector]] = deque()
        self._rx_batch: int | None = None
        self._rx_seen: set[int] | None = None
        self._rx_total: int | None = None
        # timers
        self._started = now
        self._last_sent = now
        self._last_received = now
        self._ping_token = 0
        #: statistics for operators and tests
        self.stats = {
            "parts_sent": 0,
            "bytes_sent": 0,
            "entries_sent": 0,
            "entries_received": 0,
            "entries_too_large": 0,
            "resyncs": 0,
        }
        if not dialer:
            self._send(Challenge(self._nonce))

    # -- properties ------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._phase == _CLOSED

    @property
    def replicating(self) -> bool:
        return self._phase == _OPEN and self.role == ROLE_PEER and self.peer_role == ROLE_PEER

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

    # -- input -----------------------------------------------------------------------

    def receive(self, data: bytes, now: float) -> list[Event]:
        """Handle one message from the peer; return what the shell should know."""
        if self._phase == _CLOSED:
            return []
        self._last_received = now
        try:
            message = decode_message(data, self.limits)
            return self._handle(message, now)
        except DecodeError as exc:
            return [self._fail(CLOSE_PROTOCOL, f"{type(exc).__name__}: {exc}")]
        except ClockSkewError as exc:
            return [self._fail(CLOSE_CLOCK, f"ClockSkewError: {exc}")]
        except StoreMismatch as exc:
            return [self._fail(CLOSE_STORE, f"StoreMismatch: {exc}")]

    def _handle(self, message: Message, now: float) -> list[Event]:
        if isinstance(message, Close):
            self._phase = _CLOSED
            self.close_code, self.close_reason = message.code, message.reason
            return [Closed(message.code, message.reason, by_peer=True)]
        if self._phase == _AWAIT_CHALLENGE:
            if not isinstance(message, Challenge) or len(message.nonce) != NONCE_BYTES:
                return [self._fail(CLOSE_PROTOCOL, "expected a challenge")]
            self._peer_nonce = message.nonce
            self._send(self._hello(ROLE_CLIENT if self.role == ROLE_CLIENT else ROLE_PEER))
            self._phase = _AWAIT_HELLO
            return []
        if self._phase == _AWAIT_HELLO:
            if not isinstance(message, Hello):
                return [self._fail(CLOSE_PROTOCOL, "expected a hello")]
            return self._on_hello(message, now)
        # open
        if isinstance(message, Ping):
            self._send(Pong(message.token))
            return []
        if isinstance(message, Pong):
            return []
        if isinstance(message, Deltas) and self.replicating:
            return self._on_deltas(message)
        if isinstance(message, Ack) and self.replicating:
            join_into(self.acked, message.vv)
            join_into(self.sent, message.vv)
            pending = self._pending
            while pending and dominates(self.acked, pending[0][1]):
                pending.popleft()
            return []
        if isinstance(message, Request) and not self.dialer and self.peer_role == ROLE_CLIENT:
            return [RequestReceived(message)]
        if isinstance(message, Response) and self.role == ROLE_CLIENT:
            return [ResponseReceived(message)]
        return [self._fail(CLOSE_PROTOCOL, f"unexpected {type(message).__name__} message")]

    def _hello(self, role: str) -> Hello:
        vv = dict(self.state.vv) if role == ROLE_PEER else {}
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
            return [self._fail(CLOSE_VERSION, f"protocol version {hello.version} is not {PROTOCOL_VERSION}")]
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
                    f"replica {hello.origin} missed deletions already garbage-collected here "
                    "(offline longer than gc_grace): rebuild it from a peer",
                )
            ]
        if hello.vv:
            top = max(hello.vv.values())
            try:
                self.state.clock.check(top)
            except ClockSkewError as exc:
                return [self._fail(CLOSE_CLOCK, f"ClockSkewError: {exc}")]
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
        self._phase = _OPEN
        self.sent = dict(hello.vv)
        self.acked = dict(hello.vv)
        self._dirty = True
        self._dirty_since = now - self.settings.batch_window  # catch up at once
        return [Opened(hello.origin, hello.role)]

    def _on_deltas(self, part: Deltas) -> list[Event]:
        """Merge a part; adopt the sender's vv once the whole batch is here."""
        delta = decode_delta(part.payload, self.limits)
        their_vv = delta.vv
        if self._rx_batch is None or part.batch > self._rx_batch:
            self._rx_batch, self._rx_seen, self._rx_total = part.batch, set(), None
        adopt = False
        if part.batch == self._rx_batch and self._rx_seen is not None:
            self._rx_seen.add(part.index)
            if part.last:
                self._rx_total = part.index + 1
            adopt = (
                self._rx_total is not None
                and len(self._rx_seen) == self._rx_total
                and dominates(self.state.vv, part.base)
            )
        changed = self.state.apply(delta if adopt else Delta(delta.name, {}, delta.entries))
        # whatever happens to the batch, the sender holds its own vv: never echo it back
        join_into(self.sent, their_vv)
        self.stats["entries_received"] += len(delta.entries)
        if adopt:
            self._rx_seen = None  # done: later duplicates of this batch change nothing
        if adopt or part.last:
            self._send(Ack(dict(self.state.vv)))
        return [Applied(changed, len(delta.entries))]

    # -- output ----------------------------------------------------------------------

    @property
    def dirty(self) -> bool:
        """True while a batch for the peer is already scheduled."""
        return self._dirty

    def local_changed(self, now: float) -> None:
        """The store changed: schedule a batch for the peer."""
        if not self._dirty:
            self._dirty = True
            self._dirty_since = now

    def outgoing(self, now: float) -> list[bytes]:
        """Messages to send now: control messages first, then at most one delta part."""
        if self._phase != _CLOSED:
            self._check_timers(now)
        if self.replicating and not self._outbox:  # control messages (a hello, acks) go first
            self._maybe_resync(now)
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
        if self._phase in (_AWAIT_CHALLENGE, _AWAIT_HELLO):
            deadlines.append(self._started + settings.handshake_timeout)
        elif self._phase == _OPEN:
            deadlines.append(self._last_sent + settings.keepalive_interval)
            deadlines.append(self._last_received + settings.keepalive_timeout)
            if self.replicating:
                if self._dirty:
                    deadlines.append(self._dirty_since + settings.batch_window)
                if self._pending:
                    deadlines.append(self._pending[0][0] + settings.resync_after)
        return min(deadlines, default=now + settings.keepalive_interval)

    def _check_timers(self, now: float) -> None:
        settings = self.settings
        if self._phase in (_AWAIT_CHALLENGE, _AWAIT_HELLO):
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

    def _maybe_resync(self, now: float) -> None:
        """Resend from the last ack when a batch went unconfirmed too long or too many are pending."""
        pending = self._pending
        if self._batch is not None or not pending:
            return
        if now - pending[0][0] >= self.settings.resync_after or len(pending) > MAX_PENDING_BATCHES:
            self.sent = dict(self.acked)
            pending.clear()
            self._dirty = True
            self._dirty_since = now - self.settings.batch_window
            self.stats["resyncs"] += 1

    def _next_part(self, now: float) -> Deltas | None:
        batch = self._batch
        if batch is None:
            if not self._dirty or now - self._dirty_since < self.settings.batch_window:
                return None
            self._dirty = False
            state = self.state
            if dominates(self.sent, state.vv):
                return None
            keys = list(state.changed_keys_since(self.sent))
            self._batch_number += 1
            batch = self._batch = _Batch(self._batch_number, keys, dict(self.sent), dict(state.vv))
        part = self._cut(batch)
        if part.last:
            self._batch = None
            join_into(self.sent, batch.vv)
            self._pending.append((now, dict(self.sent)))
        return part

    def _cut(self, batch: _Batch) -> Deltas:
        """Encode the next part of ``batch``: as many keys as fit in one message.

        A key whose entry alone does not fit is left out (an :class:`EntryTooLarge`
        event names it): sent, it would make the peer close the link, again after
        every redial, and no later change would get through.
        """
        entries = self.state.entries
        if not batch.frame:
            # the frame around the payload, measured once per batch (the base vector grows
            # with the origins); 16 bytes more cover the payload's CBOR length header (at
            # most 9) and a part index that grows to several bytes
            empty = Deltas(batch.number, batch.index, True, batch.base, b"")
            batch.frame = len(encode_message(empty)) + 16
        budget = self.max_message_bytes - batch.frame
        count = self.settings.keys_per_part
        while True:
            keys = batch.keys[batch.position : batch.position + count]
            last = batch.position + len(keys) >= len(batch.keys)
            items = [(key, entries[key]) for key in keys if key in entries]
            payload = encode_delta(Delta(self.state.name, batch.vv, items))
            if len(payload) <= budget:
                break
            if count == 1:
                self._events.append(EntryTooLarge(keys[0], len(payload), budget))
                self.stats["entries_too_large"] += 1
                items = []
                payload = encode_delta(Delta(self.state.name, batch.vv, items))
                break
            count = max(1, count // 2)
        batch.position += len(keys)
        part = Deltas(batch.number, batch.index, last, batch.base, payload)
        batch.index += 1
        self.stats["parts_sent"] += 1
        self.stats["bytes_sent"] += len(payload)
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
        if self._phase != _CLOSED:
            self._events.append(self._fail(code, reason))

    def connection_lost(self, reason: str) -> list[Event]:
        """The transport lost the link: the session is over (code :data:`~.messages.CLOSE_LOST`).

        Returns the Closed event, or nothing if the session had already closed.
        """
        if self._phase == _CLOSED:
            return []
        self._phase = _CLOSED
        self.close_code, self.close_reason = CLOSE_LOST, reason
        self._batch = None
        return [Closed(CLOSE_LOST, reason, by_peer=True)]

    def _fail(self, code: int, reason: str) -> Closed:
        authenticated = self._peer_verified
        self._phase = _CLOSED
        self.close_code, self.close_reason = code, reason
        self._batch = None
        if authenticated or code == CLOSE_AUTH or self.dialer:
            self._queue(encode_message(Close(code, reason)))
        return Closed(code, reason, by_peer=False)

    def _send(self, message: Message) -> None:
        self._queue(encode_message(message))

    def _queue(self, data: bytes) -> None:
        self._outbox.append(data)
        self._outbox_bytes += len(data)

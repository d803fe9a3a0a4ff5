"""Replication and client messages: frozen dataclasses and their CBOR form.

Every message is a CBOR array whose first item is a type code. Decoding is
strict (see :mod:`.cbor`) and checks each field's type, so a
session only ever sees well-formed messages; anything else is a
:class:`~crdtkv.errors.DecodeError`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any, Final

import cbor2

from .cbor import fail, load_bounded
from .hlc import MAX_STAMP
from .limits import Limits
from .vv import VersionVector, read_rows, write_rows

PROTOCOL_VERSION: Final = 3
NONCE_BYTES: Final = 32
MAX_REASON_CHARS: Final = 200

#: Close codes: whose fault and why (WebSocket-style 4xxx private range).
CLOSE_NORMAL: Final = 1000
CLOSE_PROTOCOL: Final = 4000
CLOSE_AUTH: Final = 4001
CLOSE_STORE: Final = 4002
CLOSE_CLOCK: Final = 4003
CLOSE_VERSION: Final = 4004
CLOSE_TIMEOUT: Final = 4005
CLOSE_SHUTDOWN: Final = 4006
CLOSE_STALE: Final = 4007
#: A second replication link between the same two nodes; the other one is kept.
CLOSE_DUPLICATE: Final = 4008
#: The dialed URL reached the dialing node itself.
CLOSE_SELF: Final = 4009
#: The node serves as many links as its settings allow.
CLOSE_BUSY: Final = 4010
#: Never sent: the transport lost the link (as WebSocket's 1006, "abnormal closure").
CLOSE_LOST: Final = 1006

ROLE_PEER: Final = "peer"
ROLE_CLIENT: Final = "client"


@dataclass(frozen=True)
class Challenge:
    """Listener's first message: a fresh nonce the dialer must sign."""

    nonce: bytes


@dataclass(frozen=True)
class Hello:
    """Who I am, proof that I hold the shared secret, and what I have."""

    version: int
    store: str
    origin: str
    role: str
    nonce: bytes
    proof: bytes
    vv: VersionVector = field(default_factory=dict)


@dataclass(frozen=True)
class Deltas:
    """One part of a batch of entries, numbered per link.

    ``base`` names the earlier batch of this link whose version vector the
    batch builds on (0: the receiver's hello). The last part's payload (an
    encoded delta) carries, as its version vector, only the origins that
    moved since ``base``; the receiver joins them into the sender's vector as
    it last adopted it. It adopts the result once it has every part
    (``last`` marks the final one, which gives the count) and holds
    ``base``: so drops, duplicates and reordering never make it claim what
    it lacks, and a one-key message costs the same at 3 PoPs and at 300.
    """

    batch: int
    base: int
    index: int
    last: bool
    payload: bytes


@dataclass(frozen=True)
class Ack:
    """Batches adopted, and what the sender newly holds.

    ``batch`` is the number of the last batch of this link the sender
    adopted; ``missing`` says a later batch arrived that it could not adopt
    (a gap: the peer should resend from ``batch``). ``have`` lists only the
    origins of the sender's version vector that moved since it last told the
    peer, so the peer never forwards what it already holds.
    """

    batch: int
    missing: bool
    have: VersionVector


@dataclass(frozen=True)
class Prefer:
    """The sender's rank for this link among its replication links (0: preferred).

    A node forwards changes it merged from others to a peer after
    ``forward_delay`` times one plus the rank that peer gave it, so a PoP
    with two hubs hears each change from its first hub and tells the
    second in time (see :mod:`.sync`).
    """

    rank: int


#: :class:`Route` modes: how the peer forwards an origin's changes to the sender.
#: Hold them back by the link's rank, like any origin with no route yet (the default).
ROUTE_HOLD: Final = 0
#: Forward them at once: this link is on the sender's quickest path from the origin.
ROUTE_AT_ONCE: Final = 1
#: The sender gets them another way (another link, or straight from their writer):
#: forward only what it still lacks after the long hold, a fallback that never fires
#: while its haves arrive.
ROUTE_ELSEWHERE: Final = 2
ROUTE_MODES: Final = (ROUTE_HOLD, ROUTE_AT_ONCE, ROUTE_ELSEWHERE)


@dataclass(frozen=True)
class Route:
    """How to forward changes of these origins to the sender from now on (``mode``).

    A node asks the peer that first brought it a change of an origin to
    forward that origin's changes at once, and tells every other link that
    it gets them elsewhere; it sets them back to the rank's hold when that
    route closes (see :mod:`.forwarding`). Each origin comes with the
    sender's stamp of it, which the peer records as held, like a have.
    """

    mode: int
    origins: VersionVector


@dataclass(frozen=True)
class Ping:
    token: int


@dataclass(frozen=True)
class Pong:
    token: int


@dataclass(frozen=True)
class Close:
    code: int
    reason: str


@dataclass(frozen=True)
class Request:
    """A client's call: ``op`` is get, put, incr, del, keys or digest."""

    id: int
    op: str
    args: list[Any]


@dataclass(frozen=True)
class Response:
    """The answer to a request: a value, or ``[error type, message]`` when not ok."""

    id: int
    ok: bool
    value: Any


Message = Challenge | Hello | Deltas | Ack | Prefer | Route | Ping | Pong | Close | Request | Response


def _message_fields(message: Message) -> list[Any]:
    """The fields of a message in wire order (version vectors as rows)."""
    if isinstance(message, Hello):
        return [
            message.version,
            message.store,
            message.origin,
            message.role,
            message.nonce,
            message.proof,
            write_rows(message.vv),
        ]
    if isinstance(message, Ack):
        return [message.batch, message.missing, write_rows(message.have)]
    if isinstance(message, Route):
        return [message.mode, write_rows(message.origins)]
    if isinstance(message, Close):
        return [message.code, message.reason[:MAX_REASON_CHARS]]
    return [getattr(message, name.name) for name in fields(message)]


def encode_message(message: Message) -> bytes:
    """The CBOR bytes of one message."""
    return cbor2.dumps([_REGISTRY_BY_TYPE[type(message)].code, *_message_fields(message)])


# -- decoding -------------------------------------------------------------------


def _typed(item: object, kind: type, what: str) -> Any:
    if type(item) is not kind:
        fail(f"{what} must be {kind.__name__}, not {type(item).__name__}")
    return item


def _uint(item: object, what: str, top: int = MAX_STAMP) -> int:
    if type(item) is not int or not 0 <= item <= top:
        fail(f"{what} must be an integer in 0..{top}")
    return item


def _challenge(body: list[Any]) -> Challenge:
    return Challenge(_typed(body[0], bytes, "a nonce"))


def _hello(body: list[Any]) -> Hello:
    version, store, origin, role, nonce, proof, vv = body
    return Hello(
        _uint(version, "a protocol version", 2**16),
        _typed(store, str, "a store name"),
        _typed(origin, str, "an origin"),
        _typed(role, str, "a role"),
        _typed(nonce, bytes, "a nonce"),
        _typed(proof, bytes, "a proof"),
        read_rows(vv, "a version vector", zero=True),
    )


def _deltas(body: list[Any]) -> Deltas:
    batch, base, index, last, payload = body
    batch = _uint(batch, "a batch number")
    base = _uint(base, "a base batch number")
    if base >= batch:
        fail("a batch must build on an earlier one")
    return Deltas(
        batch,
        base,
        _uint(index, "a part index"),
        _typed(last, bool, "the last-part flag"),
        _typed(payload, bytes, "a delta payload"),
    )


def _ack(body: list[Any]) -> Ack:
    return Ack(
        _uint(body[0], "a batch number"),
        _typed(body[1], bool, "the missing flag"),
        read_rows(body[2], "a version vector", zero=True),
    )


def _route(body: list[Any]) -> Route:
    mode = _uint(body[0], "a route mode", 2**16)
    if mode not in ROUTE_MODES:
        fail(f"unknown route mode {mode}")
    return Route(mode, read_rows(body[1], "route stamps", zero=True))


def _close(body: list[Any]) -> Close:
    reason = _typed(body[1], str, "a close reason")
    return Close(_uint(body[0], "a close code", 9999), reason[:MAX_REASON_CHARS])


def _request(body: list[Any]) -> Request:
    return Request(
        _uint(body[0], "a request id"), _typed(body[1], str, "an op"), _typed(body[2], list, "args")
    )


def _response(body: list[Any]) -> Response:
    return Response(_uint(body[0], "a request id"), _typed(body[1], bool, "the ok flag"), body[2])


@dataclass(frozen=True)
class MessageType:
    """One row of the registry: a message's type code, class, field count and decoder."""

    code: int
    cls: type
    arity: int
    decode: Callable[[list[Any]], Message]


#: Every message of the protocol, one row each: the only place codes are assigned.
REGISTRY: Final = (
    MessageType(1, Challenge, 1, _challenge),
    MessageType(2, Hello, 7, _hello),
    MessageType(3, Deltas, 5, _deltas),
    MessageType(4, Ack, 3, _ack),
    MessageType(5, Ping, 1, lambda body: Ping(_uint(body[0], "a ping token"))),
    MessageType(6, Pong, 1, lambda body: Pong(_uint(body[0], "a pong token"))),
    MessageType(7, Close, 2, _close),
    MessageType(8, Request, 3, _request),
    MessageType(9, Response, 3, _response),
    MessageType(10, Prefer, 1, lambda body: Prefer(_uint(body[0], "a rank", 2**16))),
    MessageType(11, Route, 2, _route),
)
_REGISTRY_BY_CODE: Final = {row.code: row for row in REGISTRY}
_REGISTRY_BY_TYPE: Final = {row.cls: row for row in REGISTRY}


def decode_message(data: bytes, limits: Limits) -> Message:
    """Decode and check one message; raise :class:`DecodeError` if it is not one."""
    tree = load_bounded(
        data, max_bytes=limits.max_message_bytes, max_depth=limits.max_value_depth + 8, what="message"
    )
    tree = _typed(tree, list, "a message")
    row = _REGISTRY_BY_CODE.get(tree[0]) if tree and type(tree[0]) is int else None
    if row is None:
        fail("unknown message type")
    body = tree[1:]
    if len(body) != row.arity:
        fail(f"message type {row.code} needs {row.arity} fields, got {len(body)}")
    return row.decode(body)

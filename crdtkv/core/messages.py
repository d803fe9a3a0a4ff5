"""Replication and client messages: frozen dataclasses and their CBOR form.

Every message is a CBOR array whose first item is a type code. Decoding is
strict (see :mod:`.cbor`) and checks each field's type, so a
session only ever sees well-formed messages; anything else is a
:class:`~crdtkv.errors.DecodeError`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

import cbor2

from .cbor import fail, load_bounded
from .hlc import MAX_STAMP
from .limits import Limits
from .vv import VersionVector, read_rows, write_rows

PROTOCOL_VERSION: Final = 1
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
    """One part of a batch of entries.

    ``base`` is the version vector the batch was computed against; the
    payload (an encoded delta) carries the sender's version vector. The
    receiver adopts it once it holds ``base`` and has every part of the batch
    (``last`` marks the final part, which gives the count), in any order.
    """

    batch: int
    index: int
    last: bool
    base: VersionVector
    payload: bytes


@dataclass(frozen=True)
class Ack:
    """The receiver's version vector after applying a batch."""

    vv: VersionVector


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


Message = Challenge | Hello | Deltas | Ack | Ping | Pong | Close | Request | Response

_CODES: Final[dict[type, int]] = {
    Challenge: 1,
    Hello: 2,
    Deltas: 3,
    Ack: 4,
    Ping: 5,
    Pong: 6,
    Close: 7,
    Request: 8,
    Response: 9,
}


def encode_message(message: Message) -> bytes:
    """The CBOR bytes of one message."""
    code = _CODES[type(message)]
    if isinstance(message, Challenge):
        body: list[Any] = [message.nonce]
    elif isinstance(message, Hello):
        body = [
            message.version,
            message.store,
            message.origin,
            message.role,
            message.nonce,
            message.proof,
            write_rows(message.vv),
        ]
    elif isinstance(message, Deltas):
        body = [message.batch, message.index, message.last, write_rows(message.base), message.payload]
    elif isinstance(message, Ack):
        body = [write_rows(message.vv)]
    elif isinstance(message, (Ping, Pong)):
        body = [message.token]
    elif isinstance(message, Close):
        body = [message.code, message.reason[:MAX_REASON_CHARS]]
    elif isinstance(message, Request):
        body = [message.id, message.op, message.args]
    else:
        body = [message.id, message.ok, message.value]
    return cbor2.dumps([code, *body])


# -- decoding -------------------------------------------------------------------


def _typed(item: object, kind: type, what: str) -> Any:
    if type(item) is not kind:
        fail(f"{what} must be {kind.__name__}, not {type(item).__name__}")
    return item


def _uint(item: object, what: str, top: int = MAX_STAMP) -> int:
    if type(item) is not int or not 0 <= item <= top:
        fail(f"{what} must be an integer in 0..{top}")
    return item


_ARITY: Final = {1: 1, 2: 7, 3: 5, 4: 1, 5: 1, 6: 1, 7: 2, 8: 3, 9: 3}


def decode_message(data: bytes, limits: Limits) -> Message:
    """Decode and check one message; raise :class:`DecodeError` if it is not one."""
    tree = load_bounded(
        data, max_bytes=limits.max_message_bytes, max_depth=limits.max_value_depth + 8, what="message"
    )
    tree = _typed(tree, list, "a message")
    if not tree or type(tree[0]) is not int or tree[0] not in _ARITY:
        fail("unknown message type")
    code, body = tree[0], tree[1:]
    if len(body) != _ARITY[code]:
        fail(f"message type {code} needs {_ARITY[code]} fields, got {len(body)}")
    if code == 1:
        return Challenge(_typed(body[0], bytes, "a nonce"))
    if code == 2:
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
    if code == 3:
        batch, index, last, base, payload = body
        return Deltas(
            _uint(batch, "a batch number"),
            _uint(index, "a part index"),
            _typed(last, bool, "the last-part flag"),
            read_rows(base, "the base version vector", zero=True),
            _typed(payload, bytes, "a delta payload"),
        )
    if code == 4:
        return Ack(read_rows(body[0], "a version vector", zero=True))
    if code == 5:
        return Ping(_uint(body[0], "a ping token"))
    if code == 6:
        return Pong(_uint(body[0], "a pong token"))
    if code == 7:
        reason = _typed(body[1], str, "a close reason")
        return Close(_uint(body[0], "a close code", 9999), reason[:MAX_REASON_CHARS])
    if code == 8:
        return Request(
            _uint(body[0], "a request id"), _typed(body[1], str, "an op"), _typed(body[2], list, "args")
        )
    return Response(_uint(body[0], "a request id"), _typed(body[1], bool, "the ok flag"), body[2])

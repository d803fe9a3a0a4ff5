"""What the RESP face's commands share: face and connection state, command specs, argument helpers."""

from __future__ import annotations

import re
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..errors import GatewayError
from .jsonvalues import json_bytes
from .resp_protocol import (
    Command,
    encode_bulk,
    encode_error,
    null,
)
from .settings import RespSettings

if TYPE_CHECKING:
    from ..node import Node
    from ..store import KvStore
#: The Redis version this face answers like (HELLO, INFO): the commands it has behave as in Redis 7.0.
REDIS_VERSION = "7.0.0"
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
_INTEGER = re.compile(rb"-?(?:0|[1-9][0-9]*)")
MISSING = object()

NOAUTH = encode_error("NOAUTH Authentication required.")
WRONGPASS = encode_error("WRONGPASS invalid username-password pair or user is disabled.")
SYNTAX = encode_error("ERR syntax error")


class ReplyError(GatewayError):
    """A command refused with a Redis error reply (``code`` and text, e.g. ``ERR syntax error``)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.reply = encode_error(message)


class FaceState:
    """What every connection of one RESP face shares: the node, the secret, counters and SCAN cursors."""

    def __init__(self, node: Node, settings: RespSettings) -> None:
        self.node = node
        self.store: KvStore = node.store
        self.secret = node.secret
        self.settings = settings
        #: the node's operation counts, (face, kind, result) -> count (exported as metrics)
        self.operations = node.operations
        self.started = time.monotonic()
        self.port = 0
        #: connections open now
        self.clients = 0
        self.next_client_id = 1
        #: SCAN cursor number -> the key the next page starts after (oldest first, bounded)
        self.scan_cursors: OrderedDict[int, str] = OrderedDict()
        self.next_scan_cursor = 1

    def count(self, kind: str, result: str) -> None:
        """Count one command of ``kind`` that ended in ``result`` (``ok`` or an error code)."""
        self.count_key(("resp", kind, result))

    def count_key(self, key: tuple[str, str, str]) -> None:
        """Count one command under its metrics key ``("resp", kind, result)``."""
        operations = self.operations
        operations[key] = operations.get(key, 0) + 1

    def new_client(self) -> Client:
        client = Client(self, self.next_client_id)
        self.next_client_id += 1
        return client


class Client:
    """One connection's state: protocol version, name, whether it authenticated."""

    __slots__ = ("authenticated", "closing", "face", "id", "library", "name", "protocol", "store")

    def __init__(self, face: FaceState, client_id: int) -> None:
        self.face = face
        self.store = face.store
        self.id = client_id
        self.protocol = 2
        self.name: str | None = None
        self.authenticated = face.secret is None
        #: set by QUIT: close once the reply is sent
        self.closing = False
        self.library: dict[str, str] = {}


Handler = Callable[[Client, Command], bytes]


class CommandSpec:
    """One command: its handler, Redis arity (negative: at least), flags and documentation."""

    __slots__ = (
        "arguments",
        "arity",
        "first_key",
        "flags",
        "group",
        "handler",
        "kind",
        "last_key",
        "name",
        "noauth",
        "ok",
        "summary"
    )  # fmt: skip

    def __init__(
        self,
        name: str,
        handler: Handler,
        arity: int,
        flags: tuple[str, ...],
        summary: str,
        group: str,
        arguments: list[dict[str, Any]],
        keys: tuple[int, int] = (0, 0),
    ) -> None:
        self.name = name
        #: what the node's metrics count it as: the lower-case name
        self.kind = name.lower()
        #: its count key when it succeeds, built once (it is counted on every call)
        self.ok = ("resp", self.kind, "ok")
        self.handler = handler
        self.arity = arity
        self.flags = flags
        #: allowed before the connection authenticated
        self.noauth = "no-auth" in flags
        self.summary = summary
        self.group = group
        self.arguments = arguments
        self.first_key, self.last_key = keys


# -- argument helpers ------------------------------------------------------------------


def text(raw: bytes) -> str:
    """A key, pattern or name: UTF-8 text (crdtkv keys are strings)."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ReplyError("ERR invalid key: crdtkv keys are UTF-8 text") from None


def integer(raw: bytes) -> int:
    """A 64-bit signed integer argument, spelled as Redis accepts it."""
    if _INTEGER.fullmatch(raw) is None:
        raise ReplyError("ERR value is not an integer or out of range")
    value = int(raw)
    if not INT64_MIN <= value <= INT64_MAX:
        raise ReplyError("ERR value is not an integer or out of range")
    return value


def stored_value(raw: bytes) -> str | bytes:
    """What ``SET`` stores: a str when the bytes are UTF-8, else the bytes."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw


def value_bytes(value: Any) -> bytes:
    """A value as ``GET`` answers it: strings as UTF-8, bytes as they are, a counter's decimal,
    anything else as JSON (:func:`~crdtkv.gateway.jsonvalues.json_bytes`, as the HTTP face)."""
    kind = type(value)
    if kind is str:
        return value.encode("utf-8")  # type: ignore[no-any-return]
    if kind is bytes:
        return value  # type: ignore[no-any-return]
    if kind is int:
        return b"%d" % value
    return json_bytes(value)


def reply_value(client: Client, value: Any) -> bytes:
    """The bulk-string reply of a value read, or null when missing."""
    if value is MISSING:
        return null(client.protocol)
    kind = type(value)
    if kind is str:
        data = value.encode("utf-8")
        return b"$%d\r\n%b\r\n" % (len(data), data)
    return encode_bulk(value_bytes(value))


def unknown_subcommand(args: Command) -> bytes:
    sub = args[1].decode("utf-8", "replace")
    name = args[0].decode("utf-8", "replace").upper()
    return encode_error(f"ERR unknown subcommand or wrong number of arguments for '{sub}'. Try {name} HELP.")


__all__ = [
    "Client",
    "CommandSpec",
    "FaceState",
    "Handler",
    "INT64_MAX",
    "INT64_MIN",
    "MISSING",
    "NOAUTH",
    "REDIS_VERSION",
    "ReplyError",
    "SYNTAX",
    "WRONGPASS",
    "integer",
    "reply_value",
    "stored_value",
    "text",
    "unknown_subcommand",
    "value_bytes",
]

"""The Redis commands of the RESP face: one function per command over ``KvStore``, and their table.

``COMMANDS`` maps an upper-case command name to its :class:`CommandSpec`
(handler, Redis arity, flags); :func:`execute` runs one command for one
:class:`Client` and answers its encoded reply. Every command acts on the local
replica exactly like the matching ``KvStore`` call: conditional forms (``SET
NX``/``XX``/``GET``, ``GETDEL``, ``EXPIRE NX``/``XX``/``GT``/``LT``) are checked
against what this replica holds when the command runs.
"""

from __future__ import annotations

import base64
import hmac
import json
import os
import re
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .. import __version__
from ..cursor import MAX_PAGE, encode_cursor
from ..errors import CrdtKvError, GatewayError, StoreClosed, WrongType
from .resp_protocol import (
    OK,
    ONE,
    PONG,
    ZERO,
    Command,
    Status,
    encode,
    encode_array,
    encode_bulk,
    encode_error,
    encode_integer,
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
_MISSING = object()

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

    def __init__(
        self, node: Node, settings: RespSettings, operation: Callable[[str, str, str], None]
    ) -> None:
        self.node = node
        self.store: KvStore = node.store
        self.secret = node.secret
        self.settings = settings
        #: counts one command: ``operation(face, kind, result)`` (the node's metrics)
        self.operation = operation
        self.started = time.monotonic()
        self.port = 0
        #: connections open now
        self.clients = 0
        self.next_client_id = 1
        #: SCAN cursor number -> the key the next page starts after (oldest first, bounded)
        self.scan_cursors: OrderedDict[int, str] = OrderedDict()
        self.next_scan_cursor = 1

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


def _json_default(value: object) -> object:
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    raise TypeError(f"{type(value).__name__} is not JSON")


def value_bytes(value: Any) -> bytes:
    """A value as ``GET`` answers it: strings as UTF-8, bytes as they are, a counter's decimal,
    anything else as JSON (bytes inside lists or dicts as base64 strings)."""
    kind = type(value)
    if kind is str:
        return value.encode("utf-8")  # type: ignore[no-any-return]
    if kind is bytes:
        return value  # type: ignore[no-any-return]
    if kind is int:
        return b"%d" % value
    return json.dumps(value, default=_json_default, separators=(",", ":")).encode("utf-8")


def reply_value(client: Client, value: Any) -> bytes:
    """The bulk-string reply of a value read, or null when missing."""
    if value is _MISSING:
        return null(client.protocol)
    kind = type(value)
    if kind is str:
        data = value.encode("utf-8")
        return b"$%d\r\n%b\r\n" % (len(data), data)
    return encode_bulk(value_bytes(value))


# -- connection --------------------------------------------------------------------------


def cmd_ping(client: Client, args: Command) -> bytes:
    if len(args) == 1:
        return PONG
    return encode_bulk(args[1])


def cmd_echo(client: Client, args: Command) -> bytes:
    return encode_bulk(args[1])


def cmd_quit(client: Client, args: Command) -> bytes:
    client.closing = True
    return OK


def check_password(client: Client, user: bytes | None, password: bytes) -> bool:
    """Authenticate ``client`` if ``password`` is the node's secret (compared in constant time)."""
    secret = client.face.secret
    if secret is None:
        return True
    good = hmac.compare_digest(password, secret)
    if user is not None and user != b"default":
        good = False
    if good:
        client.authenticated = True
    return good


def cmd_auth(client: Client, args: Command) -> bytes:
    if len(args) > 3:
        return SYNTAX
    if client.face.secret is None:
        return encode_error(
            "ERR AUTH <password> called without any password configured for the default user. "
            "Are you sure your configuration is correct?"
        )
    user, password = (None, args[1]) if len(args) == 2 else (args[1], args[2])
    return OK if check_password(client, user, password) else WRONGPASS


def cmd_hello(client: Client, args: Command) -> bytes:
    protocol = client.protocol
    if len(args) > 1:
        try:
            protocol = integer(args[1])
        except ReplyError:
            return encode_error("ERR Protocol version is not an integer or out of range")
        if protocol not in (2, 3):
            return encode_error("NOPROTO unsupported protocol version")
    position, name, authenticated_now = 2, None, False
    while position < len(args):
        option = args[position].upper()
        if option == b"AUTH" and position + 2 < len(args):
            if not check_password(client, args[position + 1], args[position + 2]):
                return WRONGPASS
            authenticated_now = True
            position += 3
        elif option == b"SETNAME" and position + 1 < len(args):
            name = args[position + 1]
            position += 2
        else:
            return encode_error(
                f"ERR Syntax error in HELLO option '{args[position].decode('utf-8', 'replace')}'"
            )
    if not client.authenticated and not authenticated_now:
        return encode_error(
            "NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO "
            "<proto> AUTH <user> <pass> option can be used to authenticate the client and select the "
            "RESP protocol version at the same time"
        )
    if name is not None:
        refused = set_name(client, name)
        if refused is not None:
            return refused
    client.protocol = protocol
    return encode(
        {
            "server": "redis",
            "version": REDIS_VERSION,
            "proto": protocol,
            "id": client.id,
            "mode": "standalone",
            "role": "master",
            "modules": [],
        },
        protocol,
    )


def set_name(client: Client, raw: bytes) -> bytes | None:
    """Name the connection; an error reply if the name has spaces or special characters."""
    if any(byte < 0x21 or byte > 0x7E for byte in raw):
        return encode_error("ERR Client names cannot contain spaces, newlines or special characters.")
    client.name = raw.decode("ascii") or None
    return None


def cmd_client(client: Client, args: Command) -> bytes:
    sub = args[1].upper()
    if sub == b"SETNAME" and len(args) == 3:
        return set_name(client, args[2]) or OK
    if sub == b"GETNAME" and len(args) == 2:
        return null(client.protocol) if client.name is None else encode_bulk(client.name.encode())
    if sub == b"ID" and len(args) == 2:
        return encode_integer(client.id)
    if sub == b"SETINFO" and len(args) == 4:
        attribute = args[2].upper()
        if attribute not in (b"LIB-NAME", b"LIB-VER"):
            return encode_error(f"ERR Unrecognized option '{args[2].decode('utf-8', 'replace')}'")
        if any(byte < 0x21 or byte > 0x7E for byte in args[3]):
            return encode_error(
                f"ERR {attribute.decode().lower()} cannot contain spaces, newlines or special characters."
            )
        client.library[attribute.decode().lower()] = args[3].decode("ascii")
        return OK
    return unknown_subcommand(args)


def unknown_subcommand(args: Command) -> bytes:
    sub = args[1].decode("utf-8", "replace")
    name = args[0].decode("utf-8", "replace").upper()
    return encode_error(f"ERR unknown subcommand or wrong number of arguments for '{sub}'. Try {name} HELP.")


def cmd_select(client: Client, args: Command) -> bytes:
    if integer(args[1]) != 0:
        return encode_error("ERR DB index is out of range")
    return OK


# -- server ------------------------------------------------------------------------------


def command_info(spec: CommandSpec) -> list[Any]:
    """One command's entry in ``COMMAND`` / ``COMMAND INFO`` (Redis 7 shape)."""
    flags: list[Any] = [Status(flag) for flag in spec.flags]
    return [
        spec.name.lower(),
        spec.arity,
        flags,
        spec.first_key,
        spec.last_key,
        1 if spec.first_key else 0,
        [],
        [],
        [],
        [],
    ]


def command_docs(spec: CommandSpec) -> dict[str, Any]:
    """One command's entry in ``COMMAND DOCS`` (what redis-cli's help and hints read)."""
    return {"summary": spec.summary, "since": "1.0.0", "group": spec.group, "arguments": spec.arguments}


def cmd_command(client: Client, args: Command) -> bytes:
    protocol = client.protocol
    if len(args) == 1:
        return encode([command_info(spec) for spec in COMMANDS.values()], protocol)
    sub = args[1].upper()
    if sub == b"COUNT" and len(args) == 2:
        return encode_integer(len(COMMANDS))
    if sub == b"LIST" and len(args) == 2:
        return encode([spec.name.lower() for spec in COMMANDS.values()], protocol)
    if sub == b"DOCS":
        if len(args) == 2:
            specs = list(COMMANDS.values())
        else:
            specs = [spec for spec in (COMMANDS.get(name.upper()) for name in args[2:]) if spec is not None]
        return encode({spec.name.lower(): command_docs(spec) for spec in specs}, protocol)
    if sub == b"INFO":
        names = args[2:] if len(args) > 2 else [name for name in COMMANDS]
        found = [COMMANDS.get(name.upper()) for name in names]
        return encode([None if spec is None else command_info(spec) for spec in found], protocol)
    return unknown_subcommand(args)


#: What ``INFO replication`` says of each peer, from ``node_status``.
PEER_FIELDS = (
    "origin", "url", "direction", "state", "lag_seconds", "lacking", "last_ack_age",
    "sent_entries", "received_entries", "sent_bytes", "received_bytes", "last_error",
)  # fmt: skip


def info_sections(face: FaceState) -> dict[str, list[tuple[str, Any]]]:
    """Every ``INFO`` section as (field, value) lines."""
    from ..status import node_status

    status = node_status(face.node)
    keys = sum(1 for _ in face.store.keys())
    peers = status.get("peers", [])
    replication: list[tuple[str, Any]] = [
        ("role", "master"),
        ("crdtkv_ready", int(bool(status.get("ready")))),
        ("crdtkv_replica_id", face.store.replica_id),
        ("crdtkv_origin", status.get("origin", face.store.origin)),
        ("crdtkv_digest", status.get("digest", "")),
        ("connected_peers", sum(1 for peer in peers if peer.get("state") == "up")),
        ("peers", len(peers)),
    ]
    for index, peer in enumerate(peers):
        fields = []
        for name in PEER_FIELDS:
            value = peer.get(name)
            if value is None:
                continue
            if isinstance(value, float):
                value = f"{value:.6f}"
            fields.append(f"{name}={str(value).replace(',', ';').replace('=', ':')}")
        replication.append((f"peer{index}", ",".join(fields)))
    return {
        "server": [
            ("redis_version", REDIS_VERSION),
            ("redis_mode", "standalone"),
            ("crdtkv_version", __version__),
            ("process_id", os.getpid()),
            ("tcp_port", face.port),
            ("uptime_in_seconds", int(time.monotonic() - face.started)),
            ("node_uptime_in_seconds", int(status.get("uptime", 0))),
            ("store", face.store.name),
        ],
        "clients": [
            ("connected_clients", face.clients),
            ("maxclients", face.settings.max_connections),
        ],
        "replication": replication,
        "keyspace": [("db0", f"keys={keys},expires=0,avg_ttl=0")] if keys else [],
    }


def cmd_info(client: Client, args: Command) -> bytes:
    sections = info_sections(client.face)
    wanted = {arg.decode("utf-8", "replace").lower() for arg in args[1:]}
    if not wanted or wanted & {"all", "default", "everything"}:
        wanted = set(sections)
    lines: list[str] = []
    for name, fields in sections.items():
        if name in wanted:
            if lines:
                lines.append("")
            lines.append(f"# {name.capitalize()}")
            lines.extend(f"{field}:{value}" for field, value in fields)
    return encode_bulk(("\r\n".join(lines) + "\r\n").encode("utf-8") if lines else b"")


def cmd_config(client: Client, args: Command) -> bytes:
    """``CONFIG GET``: crdtkv has none of Redis's parameters, so every pattern matches nothing
    (tools such as redis-benchmark ask for ``save`` and ``appendonly`` and carry on)."""
    if args[1].upper() == b"GET" and len(args) >= 3:
        return encode({}, client.protocol)
    return unknown_subcommand(args)


def cmd_dbsize(client: Client, args: Command) -> bytes:
    return encode_integer(sum(1 for _ in client.store.keys()))


# -- keys --------------------------------------------------------------------------------


TYPE_NAMES = {"register": "string", "counter": "counter", "document": "document"}


def cmd_type(client: Client, args: Command) -> bytes:
    kind = client.store.kind(text(args[1]))
    return b"+%b\r\n" % (b"none" if kind is None else TYPE_NAMES[kind].encode())


def cmd_del(client: Client, args: Command) -> bytes:
    store = client.store
    return encode_integer(sum(store.delete(text(raw)) for raw in args[1:]))


def cmd_exists(client: Client, args: Command) -> bytes:
    store = client.store
    return encode_integer(sum(text(raw) in store for raw in args[1:]))


def glob_regex(pattern: str) -> re.Pattern[str]:
    """A regex matching what the Redis glob ``pattern`` matches (``* ? [abc] [^a-z] \\x``)."""
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        char = pattern[i]
        i += 1
        if char == "*":
            out.append(".*")
        elif char == "?":
            out.append(".")
        elif char == "\\" and i < n:
            out.append(re.escape(pattern[i]))
            i += 1
        elif char == "[":
            end = i
            negate = end < n and pattern[end] == "^"
            if negate:
                end += 1
            members: list[str] = []
            while end < n and pattern[end] != "]":
                if pattern[end] == "\\" and end + 1 < n:
                    members.append(re.escape(pattern[end + 1]))
                    end += 2
                elif end + 2 < n and pattern[end + 1] == "-" and pattern[end + 2] != "]":
                    low, high = sorted((pattern[end], pattern[end + 2]))
                    members.append(f"{re.escape(low)}-{re.escape(high)}")
                    end += 3
                else:
                    members.append(re.escape(pattern[end]))
                    end += 1
            i = end + 1
            if not members:
                out.append("[^\\s\\S]" if not negate else "[\\s\\S]")
            else:
                out.append(f"[{'^' if negate else ''}{''.join(members)}]")
        else:
            out.append(re.escape(char))
    return re.compile("".join(out), re.DOTALL)


def literal_prefix(pattern: str) -> str:
    """The text every key matching the glob ``pattern`` starts with."""
    for index, char in enumerate(pattern):
        if char in "*?[\\":
            return pattern[:index]
    return pattern


def cmd_keys(client: Client, args: Command) -> bytes:
    pattern = text(args[1])
    prefix = literal_prefix(pattern)
    keys = client.store.keys(prefix)
    if pattern != prefix + "*":
        match = glob_regex(pattern).fullmatch
        keys = (key for key in keys if match(key))
    return encode_array([encode_bulk(key.encode("utf-8")) for key in keys])


def cmd_scan(client: Client, args: Command) -> bytes:
    face = client.face
    store = client.store
    number = integer(args[1])
    pattern: str | None = None
    count = 10
    wanted_type: str | None = None
    position = 2
    while position < len(args):
        option = args[position].upper()
        if position + 1 >= len(args):
            return SYNTAX
        if option == b"MATCH":
            pattern = text(args[position + 1])
        elif option == b"COUNT":
            count = integer(args[position + 1])
            if count < 1:
                return SYNTAX
        elif option == b"TYPE":
            wanted_type = args[position + 1].decode("utf-8", "replace").lower()
        else:
            return SYNTAX
        position += 2
    after: str | None = None
    if number != 0:
        found = face.scan_cursors.pop(number, None)
        if found is None:
            return encode_error("ERR invalid cursor")
        after = found
    prefix = literal_prefix(pattern) if pattern is not None else ""
    page = store.list(
        prefix, limit=min(count, MAX_PAGE), cursor=None if after is None else encode_cursor(after)
    )
    keys = page.keys
    next_number = 0
    if page.cursor is not None and keys:
        next_number = face.next_scan_cursor
        face.next_scan_cursor += 1
        cursors = face.scan_cursors
        cursors[next_number] = keys[-1]
        while len(cursors) > face.settings.max_scan_cursors:
            cursors.popitem(last=False)
    if pattern is not None and pattern != prefix + "*":
        match = glob_regex(pattern).fullmatch
        keys = [key for key in keys if match(key)]
    if wanted_type is not None:
        keys = [key for key in keys if TYPE_NAMES.get(store.kind(key) or "") == wanted_type]
    return b"*2\r\n%b%b" % (
        encode_bulk(b"%d" % next_number),
        encode_array([encode_bulk(key.encode("utf-8")) for key in keys]),
    )


# -- strings -------------------------------------------------------------------------------


def cmd_get(client: Client, args: Command) -> bytes:
    value = client.store.get(text(args[1]), _MISSING)
    if type(value) is str:
        data = value.encode("utf-8")
        return b"$%d\r\n%b\r\n" % (len(data), data)
    return reply_value(client, value)


def cmd_mget(client: Client, args: Command) -> bytes:
    store = client.store
    values = store.get_many([text(raw) for raw in args[1:]], _MISSING)
    return encode_array([reply_value(client, value) for value in values])


def expiry_argument(raw: bytes, unit: float, command: str) -> float:
    """Seconds of a TTL (or epoch seconds) given in ``unit`` seconds; positive or an error."""
    amount = integer(raw)
    if amount <= 0 or (unit == 1.0 and amount > INT64_MAX // 1000):
        raise ReplyError(f"ERR invalid expire time in '{command}' command")
    return amount * unit


def cmd_set(client: Client, args: Command) -> bytes:
    store = client.store
    key = text(args[1])
    value = stored_value(args[2])
    if len(args) == 3:
        store.put(key, value)
        return OK
    condition: bytes | None = None
    want_old = keep_ttl = False
    ttl: float | None = None
    expiration: float | None = None
    position = 3
    while position < len(args):
        option = args[position].upper()
        has_value = position + 1 < len(args)
        timed = ttl is not None or expiration is not None or keep_ttl
        if option in (b"NX", b"XX") and condition is None:
            condition = option
        elif option == b"GET" and not want_old:
            want_old = True
        elif option == b"KEEPTTL" and not timed:
            keep_ttl = True
        elif option in (b"EX", b"PX") and has_value and not timed:
            position += 1
            ttl = expiry_argument(args[position], 1.0 if option == b"EX" else 0.001, "set")
        elif option in (b"EXAT", b"PXAT") and has_value and not timed:
            position += 1
            expiration = expiry_argument(args[position], 1.0 if option == b"EXAT" else 0.001, "set")
        else:
            return SYNTAX
        position += 1
    old: Any = _MISSING
    if want_old or condition is not None:
        old = store.get(key, _MISSING)
    if (condition == b"NX" and old is not _MISSING) or (condition == b"XX" and old is _MISSING):
        return reply_value(client, old) if want_old else null(client.protocol)
    if keep_ttl:
        record = store.get_with_metadata(key)
        if record is not None and record.expires_at is not None:
            expiration = record.expires_at
    if expiration is not None:
        store.put(key, value, expiration=expiration)
    else:
        store.put(key, value, ttl=ttl)
    return reply_value(client, old) if want_old else OK


def cmd_setnx(client: Client, args: Command) -> bytes:
    store = client.store
    key = text(args[1])
    if key in store:
        return ZERO
    store.put(key, stored_value(args[2]))
    return ONE


def cmd_setex(client: Client, args: Command) -> bytes:
    unit = 1.0 if args[0].upper() == b"SETEX" else 0.001
    ttl = expiry_argument(args[2], unit, args[0].decode().lower())
    client.store.put(text(args[1]), stored_value(args[3]), ttl=ttl)
    return OK


def cmd_getdel(client: Client, args: Command) -> bytes:
    store = client.store
    key = text(args[1])
    value = store.get(key, _MISSING)
    if value is not _MISSING:
        store.delete(key)
    return reply_value(client, value)


def cmd_mset(client: Client, args: Command) -> bytes:
    if len(args) % 2 == 0:
        return encode_error("ERR wrong number of arguments for 'mset' command")
    pairs = [(text(args[i]), stored_value(args[i + 1])) for i in range(1, len(args), 2)]
    store = client.store
    for key, value in pairs:
        store.put(key, value)
    return OK


def incr_by(client: Client, raw_key: bytes, by: int) -> bytes:
    """Add ``by`` to the counter at the key; a result outside Redis's 64-bit range is taken back."""
    store = client.store
    key = text(raw_key)
    try:
        value = store.incr(key, by)
    except WrongType:
        if store.kind(key) == "register":
            raise ReplyError(
                f"WRONGTYPE key '{key}' holds a value set with SET; a crdtkv counter is its own kind of "
                "value: it starts with INCR (or INCRBY, DECR, DECRBY) on a missing key, so DEL the key first"
            ) from None
        raise
    if INT64_MIN <= value <= INT64_MAX:
        return encode_integer(value)
    store.incr(key, -by)  # rare: an increment and its reverse, which replicate as no change
    return encode_error("ERR increment or decrement would overflow")


def cmd_incr(client: Client, args: Command) -> bytes:
    return incr_by(client, args[1], 1)


def cmd_decr(client: Client, args: Command) -> bytes:
    return incr_by(client, args[1], -1)


def cmd_incrby(client: Client, args: Command) -> bytes:
    return incr_by(client, args[1], integer(args[2]))


def cmd_decrby(client: Client, args: Command) -> bytes:
    by = integer(args[2])
    if by == INT64_MIN:
        return encode_error("ERR decrement would overflow")
    return incr_by(client, args[1], -by)


# -- expiry --------------------------------------------------------------------------------


def cmd_expire(client: Client, args: Command) -> bytes:
    """EXPIRE, PEXPIRE, EXPIREAT and PEXPIREAT, with Redis 7's NX XX GT LT."""
    name = args[0].upper()
    store = client.store
    key = text(args[1])
    amount = integer(args[2])
    unit = 0.001 if name.startswith(b"P") else 1.0
    absolute = name.endswith(b"AT")
    if abs(amount) > INT64_MAX // 1000:
        return encode_error(f"ERR invalid expire time in '{name.decode().lower()}' command")
    condition: set[bytes] = {arg.upper() for arg in args[3:]}
    if not condition <= {b"NX", b"XX", b"GT", b"LT"} or len(condition) != len(args) - 3:
        return SYNTAX
    if (
        {b"NX", b"XX"} <= condition
        or {b"GT", b"LT"} <= condition
        or (b"NX" in condition and condition & {b"GT", b"LT"})
    ):
        return encode_error("ERR NX and XX, GT or LT options at the same time are not compatible")
    if key not in store:
        return ZERO
    seconds = amount * unit - (time.time() if absolute else 0.0)
    if condition:
        current = store.ttl(key)  # None: no expiry, which counts as infinite for GT and LT
        if b"NX" in condition and current is not None:
            return ZERO
        if b"XX" in condition and current is None:
            return ZERO
        if b"GT" in condition and (current is None or seconds <= current):
            return ZERO
        if b"LT" in condition and current is not None and seconds >= current:
            return ZERO
    if seconds <= 0:
        return ONE if store.delete(key) else ZERO
    done = store.expire(key, expiration=amount * unit) if absolute else store.expire(key, seconds)
    return ONE if done else ZERO


def cmd_ttl(client: Client, args: Command) -> bytes:
    store = client.store
    key = text(args[1])
    left = store.ttl(key)
    if left is None:
        return encode_integer(-1 if key in store else -2)
    if args[0].upper() == b"PTTL":
        return encode_integer(max(0, round(left * 1000)))
    return encode_integer(max(0, int(left + 0.5)))


def cmd_persist(client: Client, args: Command) -> bytes:
    return ONE if client.store.persist(text(args[1])) else ZERO


# -- the table -----------------------------------------------------------------------------


def arg(
    name: str,
    kind: str = "string",
    *,
    token: str | None = None,
    optional: bool = False,
    multiple: bool = False,
    arguments: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """One argument as ``COMMAND DOCS`` describes it."""
    found: dict[str, Any] = {"name": name, "type": kind}
    if token is not None:
        found["token"] = token
    flags = [Status(flag) for flag, on in (("optional", optional), ("multiple", multiple)) if on]
    if flags:
        found["flags"] = flags
    if arguments is not None:
        found["arguments"] = arguments
    return found


KEY = arg("key", "key")
KEYS = arg("key", "key", multiple=True)
EXPIRE_CONDITION = arg(
    "condition", "oneof", optional=True,
    arguments=[arg(flag.lower(), "pure-token", token=flag) for flag in ("NX", "XX", "GT", "LT")],
)  # fmt: skip


def spec(
    name: str,
    handler: Handler,
    arity: int,
    flags: str,
    summary: str,
    group: str,
    arguments: list[dict[str, Any]] | None = None,
    keys: tuple[int, int] = (0, 0),
) -> CommandSpec:
    return CommandSpec(name, handler, arity, tuple(flags.split()), summary, group, arguments or [], keys)


#: Every command the face answers, by upper-case name.
COMMANDS: dict[bytes, CommandSpec] = {
    s.name.encode(): s
    for s in [
        spec("PING", cmd_ping, -1, "fast", "Returns the server's liveliness response.", "connection",
             [arg("message", optional=True)]),
        spec("ECHO", cmd_echo, 2, "fast", "Returns the given string.", "connection", [arg("message")]),
        spec("QUIT", cmd_quit, -1, "no-auth fast", "Closes the connection.", "connection"),
        spec("AUTH", cmd_auth, -2, "no-auth fast", "Authenticates the connection with the node's secret.",
             "connection", [arg("username", optional=True), arg("password")]),
        spec("HELLO", cmd_hello, -1, "no-auth fast", "Handshakes with the server (RESP2 or RESP3).",
             "connection", [arg("arguments", "block", optional=True, arguments=[
                 arg("protover", "integer"),
                 arg("auth", "block", token="AUTH", optional=True,
                     arguments=[arg("username"), arg("password")]),
                 arg("clientname", token="SETNAME", optional=True)])]),
        spec("SELECT", cmd_select, 2, "fast", "Selects the database: crdtkv has only database 0.",
             "connection", [arg("index", "integer")]),
        spec("CLIENT", cmd_client, -2, "", "SETNAME, GETNAME, ID and SETINFO of this connection.",
             "connection", [arg("subcommand"), arg("arguments", optional=True, multiple=True)]),
        spec("COMMAND", cmd_command, -1, "", "Returns information about the commands (COUNT DOCS INFO LIST).",
             "server", [arg("subcommand", optional=True), arg("command-name", optional=True, multiple=True)]),
        spec("INFO", cmd_info, -1, "", "Returns information about this node: server, clients, keyspace, "
             "replication (peers with link state and lag).", "server",
             [arg("section", optional=True, multiple=True)]),
        spec("CONFIG", cmd_config, -2, "", "CONFIG GET answers no parameters: crdtkv has none of Redis's.",
             "server", [arg("subcommand"), arg("parameter", multiple=True)]),
        spec("DBSIZE", cmd_dbsize, 1, "readonly", "Counts the live keys at this replica.", "server"),
        spec("TYPE", cmd_type, 2, "readonly fast", "Returns the kind of a key's value: string, counter or "
             "document (none if missing).", "generic", [KEY], (1, 1)),
        spec("GET", cmd_get, 2, "readonly fast", "Returns the value of a key (a counter's decimal, other "
             "non-strings as JSON).", "string", [KEY], (1, 1)),
        spec("SET", cmd_set, -3, "write", "Sets the value of a key (a string if UTF-8, else bytes), "
             "conditions checked at this replica.", "string",
             [KEY, arg("value"),
              arg("condition", "oneof", optional=True,
                  arguments=[arg("nx", "pure-token", token="NX"), arg("xx", "pure-token", token="XX")]),
              arg("get", "pure-token", token="GET", optional=True),
              arg("expiration", "oneof", optional=True, arguments=[
                  arg("seconds", "integer", token="EX"), arg("milliseconds", "integer", token="PX"),
                  arg("unix-time-seconds", "unix-time", token="EXAT"),
                  arg("unix-time-milliseconds", "unix-time", token="PXAT"),
                  arg("keepttl", "pure-token", token="KEEPTTL")])], (1, 1)),
        spec("SETEX", cmd_setex, 4, "write", "Sets a key's value and its time to live in seconds.", "string",
             [KEY, arg("seconds", "integer"), arg("value")], (1, 1)),
        spec("PSETEX", cmd_setex, 4, "write", "Sets a key's value and its time to live in milliseconds.",
             "string", [KEY, arg("milliseconds", "integer"), arg("value")], (1, 1)),
        spec("SETNX", cmd_setnx, 3, "write fast", "Sets a key's value only if it is missing at this replica.",
             "string", [KEY, arg("value")], (1, 1)),
        spec("GETDEL", cmd_getdel, 2, "write fast", "Returns a key's value and deletes the key.", "string",
             [KEY], (1, 1)),
        spec("MGET", cmd_mget, -2, "readonly fast", "Returns the values of keys.", "string", [KEYS], (1, -1)),
        spec("MSET", cmd_mset, -3, "write", "Sets the values of keys.", "string",
             [arg("data", "block", multiple=True, arguments=[KEY, arg("value")])], (1, -1)),
        spec("DEL", cmd_del, -2, "write", "Deletes keys; returns how many were present here.", "generic",
             [KEYS], (1, -1)),
        spec("UNLINK", cmd_del, -2, "write fast", "Deletes keys (as DEL).", "generic", [KEYS], (1, -1)),
        spec("EXISTS", cmd_exists, -2, "readonly fast", "Counts the keys present at this replica.", "generic",
             [KEYS], (1, -1)),
        spec("INCR", cmd_incr, 2, "write fast", "Adds 1 to a crdtkv counter (a missing key starts at 0).",
             "string", [KEY], (1, 1)),
        spec("INCRBY", cmd_incrby, 3, "write fast", "Adds an integer to a crdtkv counter.", "string",
             [KEY, arg("increment", "integer")], (1, 1)),
        spec("DECR", cmd_decr, 2, "write fast", "Subtracts 1 from a crdtkv counter.", "string",
             [KEY], (1, 1)),
        spec("DECRBY", cmd_decrby, 3, "write fast", "Subtracts an integer from a crdtkv counter.", "string",
             [KEY, arg("decrement", "integer")], (1, 1)),
        spec("EXPIRE", cmd_expire, -3, "write fast", "Sets a key's time to live in seconds.", "generic",
             [KEY, arg("seconds", "integer"), EXPIRE_CONDITION], (1, 1)),
        spec("PEXPIRE", cmd_expire, -3, "write fast", "Sets a key's time to live in milliseconds.", "generic",
             [KEY, arg("milliseconds", "integer"), EXPIRE_CONDITION], (1, 1)),
        spec("EXPIREAT", cmd_expire, -3, "write fast", "Sets a key's expiry as a Unix time in seconds.",
             "generic", [KEY, arg("unix-time-seconds", "unix-time"), EXPIRE_CONDITION], (1, 1)),
        spec("PEXPIREAT", cmd_expire, -3, "write fast", "Sets a key's expiry as a Unix time in milliseconds.",
             "generic", [KEY, arg("unix-time-milliseconds", "unix-time"), EXPIRE_CONDITION], (1, 1)),
        spec("TTL", cmd_ttl, 2, "readonly fast", "Returns a key's time to live in seconds.", "generic",
             [KEY], (1, 1)),
        spec("PTTL", cmd_ttl, 2, "readonly fast", "Returns a key's time to live in milliseconds.", "generic",
             [KEY], (1, 1)),
        spec("PERSIST", cmd_persist, 2, "write fast", "Removes a key's expiry.", "generic", [KEY], (1, 1)),
        spec("KEYS", cmd_keys, 2, "readonly", "Returns the live keys matching a glob pattern.", "generic",
             [arg("pattern", "pattern")]),
        spec("SCAN", cmd_scan, -2, "readonly", "Iterates over the live keys (MATCH, COUNT, TYPE).", "generic",
             [arg("cursor", "integer"), arg("pattern", "pattern", token="MATCH", optional=True),
              arg("count", "integer", token="COUNT", optional=True),
              arg("type", token="TYPE", optional=True)]),
    ]
}  # fmt: skip


def wrong_arity(name: str) -> bytes:
    return encode_error(f"ERR wrong number of arguments for '{name.lower()}' command")


def unknown_command(args: Command) -> bytes:
    shown = " ".join(f"'{arg[:128].decode('utf-8', 'replace')}'" for arg in args[1:17])
    name = args[0][:128].decode("utf-8", "replace")
    return encode_error(f"ERR unknown command '{name}', with args beginning with: {shown}")


def execute(client: Client, args: Command) -> bytes:
    """Run one command for ``client``; its encoded reply (errors included, never raises for bad input)."""
    command = COMMANDS.get(args[0])
    if command is None:
        command = COMMANDS.get(args[0].upper())
        if command is None:
            client.face.operation("resp", "unknown", "ERR")
            return unknown_command(args)
    arity = command.arity
    if (len(args) != arity) if arity > 0 else (len(args) < -arity):
        reply = wrong_arity(command.name)
    elif not client.authenticated and not command.noauth:
        reply = NOAUTH
    else:
        try:
            reply = command.handler(client, args)
        except ReplyError as exc:
            reply = exc.reply
        except WrongType as exc:
            reply = encode_error(f"WRONGTYPE {exc}")
        except StoreClosed:
            reply = encode_error("ERR the store is closed")
        except CrdtKvError as exc:
            reply = encode_error(f"ERR {exc}")
    if reply[0] == 45:  # "-": an error reply, counted by its code (ERR, WRONGTYPE, NOAUTH, ...)
        client.face.operation("resp", command.kind, reply[1 : reply.find(b" ")].decode("ascii", "replace"))
    else:
        client.face.operation("resp", command.kind, "ok")
    return reply


__all__ = [
    "COMMANDS",
    "REDIS_VERSION",
    "Client",
    "CommandSpec",
    "FaceState",
    "ReplyError",
    "execute",
    "glob_regex",
    "literal_prefix",
    "value_bytes",
]

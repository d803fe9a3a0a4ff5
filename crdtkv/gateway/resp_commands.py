"""The RESP face's command table, ``COMMAND`` itself, and :func:`execute`.

``COMMANDS`` maps an upper-case command name to its
:class:`~crdtkv.gateway.resp_state.CommandSpec` (handler, Redis arity, flags,
the docs ``COMMAND DOCS`` answers); the handlers live in
:mod:`~crdtkv.gateway.resp_connection` and :mod:`~crdtkv.gateway.resp_keyspace`,
one function per command. :func:`execute` runs one command for one
connection and answers its encoded reply. Every command acts on the local
replica exactly like the matching ``KvStore`` call: conditional forms (``SET
NX``/``XX``/``GET``, ``GETDEL``, ``EXPIRE NX``/``XX``/``GT``/``LT``) are checked
against what this replica holds when the command runs.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from ..errors import CrdtKvError, StoreClosed, WrongType
from .resp_connection import (
    cmd_auth,
    cmd_client,
    cmd_config,
    cmd_dbsize,
    cmd_echo,
    cmd_hello,
    cmd_info,
    cmd_ping,
    cmd_quit,
    cmd_select,
)
from .resp_keyspace import (
    cmd_decr,
    cmd_decrby,
    cmd_del,
    cmd_exists,
    cmd_expire,
    cmd_get,
    cmd_getdel,
    cmd_incr,
    cmd_incrby,
    cmd_keys,
    cmd_mget,
    cmd_mset,
    cmd_persist,
    cmd_scan,
    cmd_set,
    cmd_setex,
    cmd_setnx,
    cmd_ttl,
    cmd_type,
)
from .resp_protocol import (
    Command,
    Status,
    encode,
    encode_error,
    encode_integer,
)
from .resp_state import (
    NOAUTH,
    Client,
    CommandSpec,
    Handler,
    ReplyError,
    unknown_subcommand,
)


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
            client.face.count("unknown", "ERR")
            return unknown_command(args)
    arity = command.arity
    if (len(args) != arity) if arity > 0 else (len(args) < -arity):
        reply = wrong_arity(command.name)
    elif not client.authenticated and not command.noauth:
        reply = NOAUTH
    else:
        try:
            reply = command.handler(client, args)
        # (one name per clause: compiled, a name reused across clauses keeps its first type)
        except ReplyError as refused:
            reply = refused.reply
        except WrongType as wrong:
            reply = encode_error(f"WRONGTYPE {wrong}")
        except StoreClosed:
            reply = encode_error("ERR the store is closed")
        except CrdtKvError as failed:
            reply = encode_error(f"ERR {failed}")
    if reply[0] == 45:  # "-": an error reply, counted by its code (ERR, WRONGTYPE, NOAUTH, ...)
        client.face.count(command.kind, reply[1 : reply.find(b" ")].decode("ascii", "replace"))
    else:
        client.face.count_key(command.ok)
    return reply


def execute_batch(client: Client, queue: deque[Command], flush_at: int) -> bytes:
    """Run commands from ``queue`` until their replies reach ``flush_at`` bytes, the queue is
    empty or the client quits; their replies, joined (compiled: one call per batch of commands)."""
    replies: list[bytes] = []
    size = 0
    while queue:
        reply = execute(client, queue.popleft())
        replies.append(reply)
        size += len(reply)
        if client.closing or size >= flush_at:
            break
    return b"".join(replies)


__all__ = ["COMMANDS", "command_docs", "command_info", "execute", "execute_batch"]

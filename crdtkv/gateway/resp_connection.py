"""RESP commands of the connection and the server: PING, AUTH, HELLO, CLIENT, SELECT, INFO, CONFIG, DBSIZE."""

from __future__ import annotations

import hmac
import os
import time
from typing import Any

from ..version import __version__
from .resp_protocol import (
    OK,
    PONG,
    Command,
    encode,
    encode_bulk,
    encode_error,
    encode_integer,
    null,
)
from .resp_state import (
    REDIS_VERSION,
    SYNTAX,
    WRONGPASS,
    Client,
    FaceState,
    ReplyError,
    integer,
    unknown_subcommand,
)

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


def cmd_select(client: Client, args: Command) -> bytes:
    if integer(args[1]) != 0:
        return encode_error("ERR DB index is out of range")
    return OK


# -- server ------------------------------------------------------------------------------


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


__all__ = [
    "PEER_FIELDS",
    "check_password",
    "cmd_auth",
    "cmd_client",
    "cmd_config",
    "cmd_dbsize",
    "cmd_echo",
    "cmd_hello",
    "cmd_info",
    "cmd_ping",
    "cmd_quit",
    "cmd_select",
    "info_sections",
    "set_name",
]

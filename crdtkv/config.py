"""What ``crdtkv serve`` runs with: a TOML file, ``CRDTKV_*`` variables and flags, in that order.

A value given as a flag wins over the same one in the environment, which
wins over the file, which wins over the built-in default. The file holds the
serve options at its top level and one table per settings class, each key a
field of that class (the names and defaults documented on the classes)::

    id = "london"
    listen = "ws://0.0.0.0:7001"
    peers = ["wss://paris.example:7001", "wss://frankfurt.example:7001"]
    data = "/var/lib/crdtkv/london.db"
    secret_file = "/etc/crdtkv/secret"
    http = "127.0.0.1:8080"         # or an [http] table with listen = "HOST:PORT"
    log_format = "json"

    [node]       # crdtkv.NodeSettings (all but sync and transport)
    max_connections = 2048
    [sync]       # crdtkv.core.sync.SyncSettings
    batch_window = 0.005
    [transport]  # crdtkv.transport.TransportSettings (TLS comes from tls_cert, tls_key, tls_ca)
    max_message_bytes = 2097152
    [limits]     # crdtkv.Limits
    gc_grace = 172800.0
    [resp]       # crdtkv.gateway.settings.RespSettings, plus listen = "HOST:PORT"
    listen = "127.0.0.1:6380"
    max_connections = 256

Every key is checked: an unknown key or a value of the wrong type is a
:class:`ConfigError` naming the file, the table and the key.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import types
import typing
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from .core.limits import Limits
from .core.sync import SyncSettings
from .errors import CrdtKvError, InvalidArgument
from .gateway.settings import HttpSettings, RespSettings
from .node import NodeSettings
from .transport import TransportSettings


class ConfigError(InvalidArgument):
    """A configuration file, variable or flag that cannot be used; the message says where and why."""


#: The serve options (flags) a file may set at its top level, with their types.
SERVE_OPTIONS: Final[dict[str, type]] = {
    "id": str,
    "listen": str,
    "peers": list,
    "data": str,
    "durability": str,
    "secret_file": str,
    "store": str,
    "tls_cert": str,
    "tls_key": str,
    "tls_ca": str,
    "http": str,
    "resp": str,
    "log_format": str,
    "verbose": bool,
}

#: The environment variable standing in for each serve option left out of the flags.
ENVIRONMENT: Final[dict[str, str]] = {
    "id": "CRDTKV_ID",
    "listen": "CRDTKV_LISTEN",
    "peers": "CRDTKV_PEERS",
    "data": "CRDTKV_DATA",
    "durability": "CRDTKV_DURABILITY",
    "secret_file": "CRDTKV_SECRET_FILE",
    "store": "CRDTKV_STORE",
    "tls_cert": "CRDTKV_TLS_CERT",
    "tls_key": "CRDTKV_TLS_KEY",
    "tls_ca": "CRDTKV_TLS_CA",
    "http": "CRDTKV_HTTP",
    "resp": "CRDTKV_RESP",
    "log_format": "CRDTKV_LOG_FORMAT",
}
#: The variable naming the configuration file when ``--config`` is not given.
ENV_CONFIG: Final = "CRDTKV_CONFIG"

LOG_FORMATS: Final = ("text", "json")
DURABILITIES: Final = ("batch", "sync")

#: Fields set from other options, never from a table.
_DERIVED: Final = {
    "node": {"sync", "transport"},
    "transport": {"ssl_context", "server_ssl_context"},
}

#: The tables of a configuration file and the settings class each fills.
TABLES: Final[dict[str, type]] = {
    "node": NodeSettings,
    "sync": SyncSettings,
    "transport": TransportSettings,
    "limits": Limits,
    "http": HttpSettings,
    "resp": RespSettings,
}

#: Tables that may also hold ``listen = "HOST:PORT"`` (the face's address).
_FACE_TABLES: Final = ("http", "resp")


@dataclass
class ServeConfig:
    """Everything ``crdtkv serve`` runs with, once file, environment and flags are merged."""

    id: str | None = None
    listen: str | None = None
    peers: list[str] = field(default_factory=list)
    data: str | None = None
    durability: str = "batch"
    secret_file: str | None = None
    store: str = "default"
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_ca: str | None = None
    #: ``HOST:PORT`` of the HTTP face (None: off)
    http: str | None = None
    #: ``HOST:PORT`` of the Redis-protocol face (None: off)
    resp: str | None = None
    log_format: str = "text"
    verbose: bool = False
    #: the node's settings without TLS (the serve command adds the contexts)
    node: NodeSettings = field(default_factory=NodeSettings)
    limits: Limits = field(default_factory=Limits)
    http_settings: HttpSettings = field(default_factory=HttpSettings)
    resp_settings: RespSettings = field(default_factory=RespSettings)


def _type_name(expected: Any) -> str:
    if isinstance(expected, type):
        return {"str": "a string", "int": "an integer", "float": "a number", "bool": "true or false"}.get(
            expected.__name__, expected.__name__
        )
    return " or ".join(_type_name(arg) for arg in typing.get_args(expected) if arg is not type(None))


def _convert(value: Any, expected: Any) -> Any:
    """``value`` as the field type ``expected`` wants it, or raise TypeError."""
    if isinstance(expected, types.UnionType) or typing.get_origin(expected) is typing.Union:
        for arg in typing.get_args(expected):
            if arg is type(None):
                continue
            try:
                return _convert(value, arg)
            except TypeError:
                pass
        raise TypeError
    if expected is float and type(value) in (int, float):
        return float(value)
    if expected in (bool, int, str) and type(value) is expected:
        return value
    raise TypeError


def _describe(value: Any) -> str:
    kind = {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "an array"}.get(
        type(value), "a table" if isinstance(value, dict) else type(value).__name__
    )
    return f"{kind} ({value!r})"


def settings_from_table(
    cls: type,
    table: Mapping[str, Any],
    where: str,
    *,
    skip: Collection[str] = (),
    extra: Sequence[str] = (),
) -> Any:
    """An instance of the frozen dataclass ``cls`` from a TOML table; each value type-checked.

    ``where`` names the file and table in errors; fields in ``skip`` may not be
    set; keys in ``extra`` are left for the caller to read.
    """
    hints = typing.get_type_hints(cls)
    settable = [f.name for f in dataclasses.fields(cls) if f.name not in skip]
    values: dict[str, Any] = {}
    for key, value in table.items():
        if key in extra:
            continue
        if key not in settable:
            known = ", ".join(sorted([*settable, *extra]))
            raise ConfigError(f"{where} has no key {key!r} (known keys: {known})")
        expected = hints[key]
        try:
            values[key] = _convert(value, expected)
        except TypeError:
            raise ConfigError(
                f"{where}: {key} must be {_type_name(expected)}, not {_describe(value)}"
            ) from None
    try:
        return cls(**values)
    except CrdtKvError as exc:
        raise ConfigError(f"{where}: {exc}") from exc


@dataclass
class ConfigFile:
    """What one TOML file says: serve options (only those it sets) and settings tables."""

    options: dict[str, Any] = field(default_factory=dict)
    tables: dict[str, Any] = field(default_factory=dict)


def load_config(path: str | os.PathLike[str]) -> ConfigFile:
    """Read and check a configuration file (see the module docstring)."""
    try:
        text = Path(path).read_bytes().decode("utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {path} is not UTF-8 text: {exc}") from exc
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc
    result = ConfigFile()
    for key, value in document.items():
        if key in TABLES and (isinstance(value, dict) or key not in _FACE_TABLES):
            where = f"{path} [{key}]"
            if not isinstance(value, dict):
                raise ConfigError(f"{where} must be a table, not {_describe(value)}")
            extra = ("listen",) if key in _FACE_TABLES else ()
            skip = _DERIVED.get(key, set())
            result.tables[key] = settings_from_table(TABLES[key], value, where, skip=skip, extra=extra)
            if "listen" in value and key in _FACE_TABLES:
                listen = value["listen"]
                if type(listen) is not str:
                    raise ConfigError(f"{where}: listen must be a string, not {_describe(listen)}")
                result.options[key] = listen
            continue
        expected = SERVE_OPTIONS.get(key)
        if expected is None:
            known = ", ".join(sorted({*SERVE_OPTIONS, *TABLES}))
            raise ConfigError(f"{path}: unknown key {key!r} at the top level (known: {known})")
        if expected is list:
            if not (isinstance(value, list) and all(type(item) is str for item in value)):
                raise ConfigError(f"{path}: {key} must be an array of strings, not {_describe(value)}")
        elif type(value) is not expected:
            raise ConfigError(f"{path}: {key} must be {_type_name(expected)}, not {_describe(value)}")
        result.options[key] = value
    return result


def split_peers(text: str) -> list[str]:
    """Peer URLs from one variable: separated by commas or whitespace."""
    return [part for part in text.replace(",", " ").split() if part]


def parse_address(text: str, what: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` for IPv6) as ``(host, port)``; port 0 picks a free one."""
    host, sep, port_text = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not port_text.isdigit() or int(port_text) > 65535:
        raise ConfigError(f"{what} must be HOST:PORT (e.g. 127.0.0.1:8080), not {text!r}")
    return host, int(port_text)


def resolve(
    flags: Mapping[str, Any],
    environ: Mapping[str, str] | None = None,
    config_path: str | None = None,
) -> ServeConfig:
    """Merge the defaults, the file, the environment and the flags (each over the one before).

    ``flags`` maps option names to what was given on the command line: None (or
    an empty list of peers, or False for ``verbose``) when left out.
    ``config_path`` is ``--config``; without it, ``CRDTKV_CONFIG`` names the file.
    """
    environ = os.environ if environ is None else environ
    path = config_path or environ.get(ENV_CONFIG) or None
    loaded = load_config(path) if path is not None else ConfigFile()
    merged: dict[str, Any] = dict(loaded.options)
    for option, variable in ENVIRONMENT.items():
        text = environ.get(variable)
        if text:
            merged[option] = split_peers(text) if option == "peers" else text
    for option, value in flags.items():
        if value is None or value is False or (option == "peers" and not value):
            continue
        merged[option] = list(value) if option == "peers" else value
    if merged.get("log_format", "text") not in LOG_FORMATS:
        raise ConfigError(f"log format must be one of {', '.join(LOG_FORMATS)}, not {merged['log_format']!r}")
    if merged.get("durability", "batch") not in DURABILITIES:
        raise ConfigError(
            f"durability must be one of {', '.join(DURABILITIES)}, not {merged['durability']!r}"
        )
    for face in _FACE_TABLES:
        if merged.get(face) is not None:
            parse_address(merged[face], f"--{face}")
    tables = loaded.tables
    node: NodeSettings = tables.get("node", NodeSettings())
    node = dataclasses.replace(
        node,
        sync=tables.get("sync", SyncSettings()),
        transport=tables.get("transport", TransportSettings()),
    )
    return ServeConfig(
        **merged,
        node=node,
        limits=tables.get("limits", Limits()),
        http_settings=tables.get("http", HttpSettings()),
        resp_settings=tables.get("resp", RespSettings()),
    )


__all__ = [
    "ENVIRONMENT",
    "ENV_CONFIG",
    "SERVE_OPTIONS",
    "TABLES",
    "ConfigError",
    "ConfigFile",
    "ServeConfig",
    "load_config",
    "parse_address",
    "resolve",
    "settings_from_table",
]

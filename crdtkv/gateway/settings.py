"""Settings of the HTTP and Redis-protocol faces: every buffer a client can fill has a byte budget."""

from __future__ import annotations

from dataclasses import dataclass, fields

from ..errors import InvalidArgument

KIB = 1024
MIB = 1024 * KIB


def _check_positive(settings: object) -> None:
    """Every numeric field of a face's settings must be positive."""
    for field in fields(settings):  # type: ignore[arg-type]
        value = getattr(settings, field.name)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value <= 0:
            raise InvalidArgument(f"{type(settings).__name__}.{field.name} must be positive, not {value!r}")


@dataclass(frozen=True)
class HttpSettings:
    """Budgets and timeouts of the HTTP face (``crdtkv serve --http``)."""

    #: Bytes of a request line and headers together; more answers 431 and closes the connection.
    max_header_bytes: int = 16 * KIB
    #: Bytes of one request body (a value is at most ``Limits.max_value_bytes``); more answers 413.
    max_body_bytes: int = 1 * MIB
    #: Connections served at once; one more is closed at once.
    max_connections: int = 1024
    #: Seconds a client may take to send one whole request once it started; then 408 and close.
    request_timeout: float = 10.0
    #: Seconds an idle keep-alive connection stays open.
    idle_timeout: float = 60.0
    #: Seconds a response may wait for a client that reads nothing before the connection closes.
    send_timeout: float = 15.0
    #: Bytes of changes that may wait for a slow ``/v1/watch`` reader before it gets an overflow event.
    max_watch_backlog_bytes: int = 4 * MIB
    #: Seconds without a change after which a ``/v1/watch`` stream sends a comment line
    #: (keeps proxies from closing it; a client that left is noticed).
    watch_heartbeat: float = 15.0

    def __post_init__(self) -> None:
        _check_positive(self)


@dataclass(frozen=True)
class RespSettings:
    """Budgets and timeouts of the Redis-protocol face (``crdtkv serve --resp``)."""

    #: Bytes of one command frame (all its arguments); more closes the connection.
    max_frame_bytes: int = 1 * MIB
    #: Arguments of one command.
    max_arguments: int = 1024 * 1024
    #: Connections served at once; one more is refused with an error and closed.
    max_connections: int = 1024
    #: Bytes of replies that may wait for a client that does not read them; the face stops
    #: reading that client's commands until it has taken some (pipelining stays bounded).
    max_reply_bytes: int = 4 * MIB
    #: Seconds a client's replies may stay over ``max_reply_bytes`` before the connection closes.
    send_timeout: float = 15.0
    #: SCAN cursors the face remembers (each holds one key); the oldest is forgotten first, and
    #: continuing a forgotten cursor answers ``-ERR invalid cursor``.
    max_scan_cursors: int = 10_000

    def __post_init__(self) -> None:
        _check_positive(self)


__all__ = ["HttpSettings", "RespSettings"]

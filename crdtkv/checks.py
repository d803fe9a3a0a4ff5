"""Argument checks shared by the store and its helpers: names, replica ids, durations.

Each returns the checked value or raises a typed error from :mod:`crdtkv.errors`
that names the problem.
"""

from __future__ import annotations

import math

from .errors import InvalidArgument, InvalidArgumentType

MAX_REPLICA_ID_CHARS = 64
MAX_NAME_CHARS = 256
#: Separates a replica id from its incarnation in an origin id (``london~1a2b3c4d``).
INCARNATION_SEPARATOR = "~"
#: The longest ttl or rate-limit window accepted, in seconds (about 100 years).
MAX_SECONDS = 100 * 365 * 86_400


def check_store_name(name: object) -> str:
    """``name`` if it is a valid store name (1 to MAX_NAME_CHARS characters), else a typed error."""
    if not isinstance(name, str):
        raise InvalidArgumentType(f"store names must be str, not {type(name).__name__}")
    if not 0 < len(name) <= MAX_NAME_CHARS:
        raise InvalidArgument(f"store names must have 1 to {MAX_NAME_CHARS} characters")
    return name


def check_replica_id(replica_id: object) -> str:
    """``replica_id`` if it is a valid replica id (printable, no spaces or separator), else a typed error."""
    if not isinstance(replica_id, str):
        raise InvalidArgumentType(f"replica ids must be str, not {type(replica_id).__name__}")
    if not 0 < len(replica_id) <= MAX_REPLICA_ID_CHARS:
        raise InvalidArgument(f"replica ids must have 1 to {MAX_REPLICA_ID_CHARS} characters")
    if INCARNATION_SEPARATOR in replica_id or not replica_id.isprintable() or " " in replica_id:
        raise InvalidArgument(
            f"replica id {replica_id!r} may not contain spaces, {INCARNATION_SEPARATOR!r} "
            "or unprintable characters"
        )
    return replica_id


def count(value: object, what: str, *, zero: bool = False) -> int:
    """``value`` as a positive int (or zero too, with ``zero``); bools refused.

    Raises InvalidArgument naming ``what``.
    """
    if type(value) is not int or value < (0 if zero else 1):
        kind = "non-negative" if zero else "positive"
        raise InvalidArgument(f"{what} must be a {kind} int, not {value!r}")
    return value


def seconds(value: object, what: str) -> float:
    """A positive duration of at most MAX_SECONDS, or a typed error."""
    if type(value) not in (int, float):
        raise InvalidArgumentType(f"{what} must be a number of seconds, not {type(value).__name__}")
    assert isinstance(value, (int, float))
    if not 0 < value <= MAX_SECONDS:  # also refuses NaN and infinities
        raise InvalidArgument(
            f"{what} must be a positive number of seconds up to {MAX_SECONDS}, not {value!r}"
        )
    return float(value)


def expiry_ms(ttl: object, now_ms: int) -> int:
    """When a value written at ``now_ms`` with ``ttl`` seconds expires (epoch ms, at least 1 ms later)."""
    return now_ms + max(1, math.ceil(seconds(ttl, "ttl") * 1000))


def expiration_ms(expiration: object, now_ms: int) -> int:
    """An absolute expiry given in epoch seconds, as epoch ms (at least 1).

    It may lie in the past (what it applies to then reads as missing), but
    not more than MAX_SECONDS ahead of ``now_ms``.
    """
    if type(expiration) not in (int, float):
        raise InvalidArgumentType(
            f"expiration must be a number of seconds since the epoch, not {type(expiration).__name__}"
        )
    assert isinstance(expiration, (int, float))
    if not 0 <= expiration <= now_ms / 1000 + MAX_SECONDS:  # also refuses NaN and infinities
        raise InvalidArgument(
            f"expiration must be epoch seconds from 0 up to {MAX_SECONDS} s from now, not {expiration!r}"
        )
    return max(1, round(expiration * 1000))


def expires_at(ttl: object, expiration: object, now_ms: int) -> int | None:
    """The expiry (epoch ms) that ``ttl`` (seconds from now) or ``expiration`` (epoch seconds) name.

    None when both are None; InvalidArgument when both are given.
    """
    if expiration is None:
        return None if ttl is None else expiry_ms(ttl, now_ms)
    if ttl is not None:
        raise InvalidArgument("give ttl or expiration, not both")
    return expiration_ms(expiration, now_ms)


__all__ = [
    "INCARNATION_SEPARATOR",
    "MAX_NAME_CHARS",
    "MAX_REPLICA_ID_CHARS",
    "MAX_SECONDS",
    "check_replica_id",
    "check_store_name",
    "expiration_ms",
    "expires_at",
    "expiry_ms",
    "seconds",
]

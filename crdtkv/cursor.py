"""Listing pages and their cursors (:meth:`KvStore.list <crdtkv.KvStore.list>`).

A cursor is the last key of a page, encoded as ``c1.`` plus URL-safe base64 of
its UTF-8 bytes: opaque to callers, and valid however keys come and go, since
the next page starts after that key in sorted order.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

from .errors import InvalidArgument

#: Most keys one page of :meth:`KvStore.list` returns.
MAX_PAGE = 10_000
#: Every cursor starts with this (its format version).
CURSOR_PREFIX = "c1."


@dataclass(frozen=True)
class KeyInfo:
    """One listed key with its expiry and metadata (:meth:`KvStore.list` with ``detailed=True``)."""

    name: str
    #: when the key expires, in seconds since the epoch, or None
    expiration: float | None
    #: the metadata of the write that set it (None for none, counters and documents)
    metadata: dict[str, Any] | None


@dataclass(frozen=True)
class Page:
    """One page of :meth:`KvStore.list`: sorted keys, and the cursor of the next page."""

    keys: list[str]
    cursor: str | None
    #: one :class:`KeyInfo` per key, in the same order, when listed with ``detailed=True``
    details: list[KeyInfo] | None = None


def encode_cursor(last_key: str) -> str:
    """The cursor of the page that follows ``last_key``."""
    return CURSOR_PREFIX + base64.urlsafe_b64encode(last_key.encode("utf-8")).decode("ascii")


def decode_cursor(cursor: object) -> str:
    """The key a cursor continues after; InvalidArgument if it is not a crdtkv cursor."""
    if not isinstance(cursor, str) or not cursor.startswith(CURSOR_PREFIX):
        raise InvalidArgument(f"not a crdtkv listing cursor: {cursor!r}")
    try:
        raw = base64.b64decode(cursor[len(CURSOR_PREFIX) :].encode("ascii"), altchars=b"-_", validate=True)
        return raw.decode("utf-8")
    except (ValueError, UnicodeError) as exc:
        raise InvalidArgument(f"not a crdtkv listing cursor: {cursor!r}") from exc


__all__ = ["CURSOR_PREFIX", "MAX_PAGE", "KeyInfo", "Page", "decode_cursor", "encode_cursor"]

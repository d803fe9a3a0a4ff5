"""Storage rows: one entry as the bytes a backend stores under its key.

A row is the CRC-32 of key and body, then the entry's wire form without its
key, with origins written inline (a file has no per-message origin table).
The key is the row's primary key, and the checksum covers it, so a row copied
under another key is caught too. The journal encodes rows as the state
changes and decodes them when a store opens; backends only store the bytes.
"""

from __future__ import annotations

import zlib

import cbor2

from ..core.cbor import as_array, as_origin, fail, strict_loads
from ..core.entry import Entry
from ..core.limits import Limits
from ..core.wire import EntryReader, entry_to_wire


class _RowReader(EntryReader):
    """Reads rows, which name origins inline instead of by table index."""

    def __init__(self, limits: Limits) -> None:
        super().__init__([], limits)
        self._interned: dict[str, str] = {}

    def origin(self, item: object) -> str:
        """The origin named in a row, one string object per origin (rows repeat them)."""
        name = as_origin(item)
        return self._interned.setdefault(name, name)


def encode_row(key: str, entry: Entry) -> bytes:
    """The row of ``entry`` under ``key``."""
    body = cbor2.dumps(entry_to_wire(key, entry, str)[1:])
    return zlib.crc32(body, zlib.crc32(key.encode("utf-8"))).to_bytes(4, "big") + body


def decode_rows(rows: list[tuple[str, bytes]], limits: Limits) -> list[tuple[str, Entry]]:
    """Check and decode ``(key, row)`` pairs (one strict CBOR parse for the whole batch).

    Raises :class:`~crdtkv.errors.DecodeError` for a damaged row.
    """
    bodies = []
    for key, row in rows:
        if type(row) is not bytes or len(row) < 5 or type(key) is not str:
            fail("a storage row is truncated")
        body = row[4:]
        if zlib.crc32(body, zlib.crc32(key.encode("utf-8", "surrogatepass"))).to_bytes(4, "big") != row[:4]:
            fail(f"the row of key {key!r} fails its checksum")
        bodies.append(body)
    # n items back to back, behind an array header of length n, are one CBOR array
    header = cbor2.dumps([None] * len(bodies))[: -len(bodies)] if bodies else b"\x80"
    tree = as_array(strict_loads(header + b"".join(bodies), max_depth=limits.max_value_depth + 8), "rows")
    if len(tree) != len(rows):
        fail("storage rows do not match their count")
    reader = _RowReader(limits)
    return [reader.entry([key, *as_array(item, "a row")]) for (key, _), item in zip(rows, tree, strict=True)]


__all__ = ["decode_rows", "encode_row"]

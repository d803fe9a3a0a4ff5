"""Storage rows: one entry as the bytes a backend stores under its key.

A row is the CRC-32 of key and body, then the entry's wire form without its
key, with origins written inline (a file has no per-message origin table).
The key is the row's primary key, and the checksum covers it, so a row copied
under another key is caught too. The journal encodes rows as the state
changes and decodes them when a store opens; backends only store the bytes.
"""

from __future__ import annotations

import struct
import zlib
from typing import Final

import cbor2

from ..core.cbor import as_array, as_origin, fail, strict_loads
from ..core.entry import TOMBSTONE, Entry
from ..core.limits import Limits
from ..core.values import Packed
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


#: A register's fields (stamp, writer, value, expires, meta): all an entry without a counter or
#: a document holds.
Register = tuple[int, str, object, "int | None", object]


#: A row's array head (one item), the register's array head (2 or 3 items), and its stamp (uint64).
_STAMPED: Final = struct.Struct(">BBBQ")


#: The heads of text strings shorter than 24 bytes, by length.
_TEXT: Final = [bytes((0x60 | size,)) for size in range(24)]


def _head(major: int, length: int) -> bytes:
    """A CBOR head: major type (shifted) and a length or value below 2**64, in the shortest form."""
    if length < 24:
        return bytes((major | length,))
    if length < 0x100:
        return bytes((major | 24, length))
    if length < 0x10000:
        return bytes((major | 25,)) + length.to_bytes(2, "big")
    if length < 0x100000000:
        return bytes((major | 26,)) + length.to_bytes(4, "big")
    return bytes((major | 27,)) + length.to_bytes(8, "big")


def _value(value: object) -> bytes:
    """A stored value as CBOR: the bytes ``cbor2.dumps`` writes for it inside a row."""
    kind = type(value)
    if kind is str:
        assert isinstance(value, str)
        data = value.encode("utf-8")
        return _head(0x60, len(data)) + data
    if kind is bytes:
        assert isinstance(value, bytes)
        return _head(0x40, len(value)) + value
    if kind is Packed:
        assert isinstance(value, Packed)
        return b"\x81" + _head(0x40, len(value.data)) + value.data
    if kind is int:
        assert isinstance(value, int)
        if 0 <= value < 0x10000000000000000:
            return _head(0x00, value)
        if -0x10000000000000000 <= value < 0:
            return _head(0x20, -1 - value)
    return cbor2.dumps(value)  # floats, bools, None, big integers


def encode_register_row(key: str, register: Register, names: dict[str, bytes]) -> bytes:
    """The row of an entry holding only ``register``: the same bytes as :func:`encode_row`, faster.

    CBOR items concatenate, so the row's heads and stamp (one struct), the
    writer's name (cached in ``names``) and the value are written one by one.
    """
    stamp, writer, value, expires, meta = register
    if expires is not None or meta is not None or not 0x100000000 <= stamp < 0x10000000000000000:
        return encode_row(key, Entry(stamp, writer, value, expires, meta))  # not a stamp a clock gives
    name = names.get(writer)
    if name is None:
        data = writer.encode("utf-8")
        name = names[writer] = _head(0x60, len(data)) + data
    if value is TOMBSTONE:
        body = _STAMPED.pack(0x81, 0x82, 0x1B, stamp) + name
    elif type(value) is str:
        data = value.encode("utf-8")
        size = len(data)
        body = (
            _STAMPED.pack(0x81, 0x83, 0x1B, stamp)
            + name
            + (_TEXT[size] if size < 24 else _head(0x60, size))
            + data
        )
    else:
        body = _STAMPED.pack(0x81, 0x83, 0x1B, stamp) + name + _value(value)
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


__all__ = ["Register", "decode_rows", "encode_register_row", "encode_row"]

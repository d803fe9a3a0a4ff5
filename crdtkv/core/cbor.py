"""Strict CBOR loading, and the schema readers every decoder shares.

Everything that arrives from outside (a peer's message, a snapshot file, a
storage row, a packed value) is size-checked, then decoded by
:func:`strict_loads`: bounded nesting, no indefinite lengths, no duplicate
map keys, no semantic tags except bignums, no trailing bytes. The decoded
tree is then checked field by field with the readers below before anything
touches replica state. Any failure is a :class:`~crdtkv.errors.DecodeError`
(or :class:`~crdtkv.errors.TooLarge` for the size check); no ``cbor2``
exception escapes.

This module imports nothing else from the core but the stamp and expiry
bounds, so every decoder (values, messages, the wire format, storage rows)
can use it without importing each other.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from typing import Any, Final, NoReturn

import cbor2

from ..errors import DecodeError, TooLarge
from .hlc import MAX_STAMP
from .limits import MAX_EXPIRY_MS

#: Longest origin (replica incarnation) name anywhere in the formats.
MAX_ORIGIN_CHARS: Final = 256

# cbor2 decodes these tags itself; everything but bignums (2, 3) is refused.
_BUILTIN_TAGS: Final = (
    *(0, 1, 4, 5, 25, 28, 29, 30, 35, 36, 37, 52, 54, 100),
    *(256, 258, 260, 261, 1004, 43000, 55799),
)


def _refuse_tag(decoder: Any, *args: object) -> NoReturn:
    raise ValueError("CBOR tags are not accepted")


_REFUSE_SEMANTIC: Final = {tag: _refuse_tag for tag in _BUILTIN_TAGS}


def strict_loads(data: bytes, *, max_depth: int) -> Any:
    """Decode exactly one CBOR item from ``data`` under crdtkv's strict rules."""
    stream = io.BytesIO(data)
    decoder = cbor2.CBORDecoder(
        stream,
        tag_hook=_refuse_tag,
        semantic_decoders=_REFUSE_SEMANTIC,
        max_depth=max_depth,
        allow_indefinite=False,
        allow_duplicate_keys=False,
        strict_hashable_types=True,
    )
    try:
        item = decoder.decode()
    except (cbor2.CBORError, ValueError, TypeError, OverflowError, RecursionError, MemoryError) as exc:
        raise DecodeError(f"malformed CBOR: {exc}") from exc
    if stream.tell() != len(data):
        raise DecodeError(f"{len(data) - stream.tell()} trailing bytes after the CBOR item")
    return item


def load_bounded(data: bytes, *, max_bytes: int, max_depth: int, what: str = "input") -> Any:
    """:func:`strict_loads` after the size check: :class:`TooLarge` beyond ``max_bytes``."""
    if len(data) > max_bytes:
        raise TooLarge(f"{what} is {len(data)} bytes; the limit is {max_bytes}")
    return strict_loads(data, max_depth=max_depth)


# -- schema readers --------------------------------------------------------------


def fail(what: str) -> NoReturn:
    """Refuse the input: raise :class:`DecodeError` saying ``what`` is wrong."""
    raise DecodeError(what)


def as_array(item: object, what: str) -> list[Any]:
    """``item`` if it is a CBOR array."""
    if type(item) is not list:
        fail(f"{what} must be an array")
    return item


def as_stamp(item: object, what: str) -> int:
    """``item`` if it is a stamp: an integer in 1..2**64-1."""
    if type(item) is not int or not 0 < item <= MAX_STAMP:
        fail(f"{what} must be a stamp (an integer in 1..2**64-1)")
    return item


def as_count(item: object, what: str, top: int) -> int:
    """``item`` if it is an integer in 0..top."""
    if type(item) is not int or not 0 <= item <= top:
        fail(f"{what} must be a non-negative integer of at most {top.bit_length()} bits")
    return item


def as_expiry(item: object, what: str) -> int:
    """An expiry in epoch milliseconds: at most what a stamp can name."""
    if type(item) is not int or not 0 <= item <= MAX_EXPIRY_MS:
        fail(f"{what} must be epoch milliseconds in 0..2**48-1")
    return item


def as_origin(item: object) -> str:
    """``item`` if it is an origin written out: a string of 1 to 256 characters."""
    if type(item) is not str or not 0 < len(item) <= MAX_ORIGIN_CHARS:
        fail(f"origins must be strings of 1 to {MAX_ORIGIN_CHARS} characters")
    return item


def origin_rows(
    item: object, what: str, fields: tuple[str, ...], origin: Callable[[object], str]
) -> Iterator[tuple[str, list[Any]]]:
    """``(origin, row)`` for each row of ``[[origin, ...]...]``: one item per ``fields``, each origin once.

    ``origin`` reads a row's first field (an index into a message's origin
    table, or a name written out). The shape of per-origin tables: version
    vectors, counter totals.
    """
    seen: set[str] = set()
    width = len(fields)
    for row in as_array(item, what):
        row = as_array(row, what)
        if len(row) != width:
            fail(f"{what} rows must be [{', '.join(fields)}]")
        name = origin(row[0])
        if name in seen:
            fail(f"{what} names an origin twice")
        seen.add(name)
        yield name, row


__all__ = [
    "MAX_ORIGIN_CHARS",
    "as_array",
    "as_count",
    "as_expiry",
    "fail",
    "load_bounded",
    "as_origin",
    "origin_rows",
    "as_stamp",
    "strict_loads",
]

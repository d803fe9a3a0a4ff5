"""Version vectors: ``{origin: highest stamp seen}``, the pointwise operations on them, and their CBOR forms.

Every place that joins, compares, reads or writes per-origin maxima uses
these, so the rule ("the larger stamp per origin wins") and the checks on
what arrives from outside are written once. Two encodings exist:

* rows, ``[[origin, stamp]...]``, in messages, deltas and entries, where the
  origin is a name or an index into the message's origin table
  (:func:`write_rows` / :func:`read_rows`);
* a CBOR map ``{origin: stamp}``, in a SQLite file's ``meta`` table
  (:func:`write_map` / :func:`read_map`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import cbor2

from ..errors import DecodeError
from .cbor import as_origin, as_stamp, origin_rows, strict_loads
from .hlc import MAX_STAMP

#: What a replica has seen: the highest stamp of each origin.
VersionVector = dict[str, int]

_ROW: tuple[str, ...] = ("origin", "stamp")


def join_into(into: dict[str, int], other: Mapping[str, int]) -> bool:
    """Raise each origin in ``into`` to its value in ``other``; True if any rose."""
    grew = False
    for origin, seen in other.items():
        if into.get(origin, 0) < seen:
            into[origin] = seen
            grew = True
    return grew


def joined(mine: Mapping[str, int], theirs: Mapping[str, int]) -> dict[str, int]:
    """The pointwise maximum of two vectors, as a new dict."""
    result = dict(mine)
    join_into(result, theirs)
    return result


def dominates(mine: Mapping[str, int], other: Mapping[str, int]) -> bool:
    """True if ``mine`` has seen everything ``other`` has (pointwise >=)."""
    return all(mine.get(origin, 0) >= seen for origin, seen in other.items())


# -- rows: [[origin, stamp]...] ---------------------------------------------------


def write_rows(
    vv: Mapping[str, int], ref: Callable[[str], object] | None = None, *, sort: bool = False
) -> list[list[object]]:
    """``[[origin, stamp]...]`` in the vector's order (by origin with ``sort``).

    ``ref`` maps an origin to what the format writes for it (an index into an
    origin table); without it the name is written.
    """
    items = sorted(vv.items()) if sort else vv.items()
    if ref is None:
        return [[origin, seen] for origin, seen in items]
    return [[ref(origin), seen] for origin, seen in items]


def read_rows(
    item: object, what: str, origin: Callable[[object], str] = as_origin, *, zero: bool = False
) -> dict[str, int]:
    """Check and convert ``[[origin, stamp]...]``: each origin once, each stamp in 1..2**64-1.

    ``origin`` reads the first field (default: a name written out). With
    ``zero`` a stamp of 0 is accepted too (the replication messages always
    accepted it).
    """
    if zero:
        result: dict[str, int] = {}
        for name, row in origin_rows(item, what, _ROW, origin):
            seen = row[1]
            if type(seen) is not int or not 0 <= seen <= MAX_STAMP:
                raise DecodeError(f"{what} stamps must be integers in 0..2**64-1")
            result[name] = seen
        return result
    return {name: as_stamp(row[1], what) for name, row in origin_rows(item, what, _ROW, origin)}


# -- a CBOR map: {origin: stamp} ----------------------------------------------------


def write_map(vv: Mapping[str, int]) -> bytes:
    """The CBOR map form of a vector (as a SQLite file stores it)."""
    return cbor2.dumps(vv)


def read_map(blob: object, what: str = "the stored version vector") -> dict[str, int]:
    """Check and convert the CBOR map form; None (nothing stored) is the empty vector."""
    if blob is None:
        return {}
    if not isinstance(blob, bytes):
        raise DecodeError(f"{what} is not a blob")
    tree = strict_loads(blob, max_depth=4)
    if not isinstance(tree, dict) or not all(
        type(origin) is str and type(seen) is int and seen > 0 for origin, seen in tree.items()
    ):
        raise DecodeError(f"{what} is malformed")
    return tree


__all__ = [
    "VersionVector",
    "dominates",
    "join_into",
    "joined",
    "read_map",
    "read_rows",
    "write_map",
    "write_rows",
]

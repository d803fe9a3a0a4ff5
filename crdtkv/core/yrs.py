"""Yrs (pycrdt) operations on document update bytes, every failure typed.

Everything here is synchronous and deterministic: pycrdt's update functions
and a scratch ``Doc`` are pure Rust code. pycrdt is imported on first use,
because importing its package also loads anyio for async helpers this module
never calls; replicas that hold no documents never load it.

Three facts about Yrs shape this module:

* Update *bytes* are not canonical: two replicas holding the same document
  can encode it differently (merge grouping and block squashing vary). A
  document's identity is therefore its state vector plus its normalised
  delete set (:func:`load`), not its bytes.
* Applying many updates to one ``Doc`` in an arbitrary order can leave some
  of them pending for good. Replicas therefore keep one merged update and
  load it whole into a fresh ``Doc``; a scratch ``Doc`` kept from that takes
  further edits only while each one integrates whole (:func:`apply_edit`).
* Root types are not part of an update (a root reads back untyped), so each
  document carries a schema: root name -> ``"array"``, ``"map"`` or ``"text"``.

Malformed bytes make pycrdt raise ``ValueError`` or, from a Rust panic,
``PanicException``, which derives from ``BaseException``; :func:`_guarded`
turns both into :class:`~crdtkv.errors.DecodeError`.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Final, NamedTuple

import cbor2

from ..errors import DecodeError, InvalidValue

#: Integers Yrs stores exactly (it stores numbers as 64-bit floats).
MAX_SAFE_INTEGER: Final = 2**53
#: Root kinds a document may declare.
ROOT_KINDS: Final = ("array", "map", "text")
#: The update of a document with nothing in it.
EMPTY_UPDATE: Final = b"\x00\x00"


def pycrdt_module() -> Any:
    """The pycrdt package, imported on first use."""
    import pycrdt

    return pycrdt


@contextmanager
def _guarded(what: str) -> Iterator[None]:
    """Turn anything pycrdt raises (a Rust panic included) into DecodeError."""
    try:
        yield
    except (KeyboardInterrupt, SystemExit, GeneratorExit):
        raise
    except InvalidValue:
        raise
    except BaseException as exc:
        if not isinstance(exc, Exception) and type(exc).__name__ != "PanicException":
            raise
        raise DecodeError(f"{what}: {type(exc).__name__}: {exc}") from None


def client_id(origin: str) -> int:
    """The Yrs client id an origin edits documents under (53 bits, as Yrs requires).

    Derived from the origin, so every replica agrees on it and a new
    incarnation gets a new one; two origins collide with probability about
    n**2 / 2**54.
    """
    digest = hashlib.blake2b(origin.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") & (MAX_SAFE_INTEGER - 1)


# -- lib0 varints (the encoding of state vectors and delete sets) ----------------


def _read_uint(data: bytes, position: int) -> tuple[int, int]:
    value = 0
    shift = 0
    while True:
        if position >= len(data):
            raise DecodeError("a Yrs varint is truncated")
        byte = data[position]
        position += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, position
        shift += 7
        if shift > 70:
            raise DecodeError("a Yrs varint is too long")


def _write_uint(out: bytearray, value: int) -> None:
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)


def decode_state_vector(data: bytes) -> dict[int, int]:
    """client -> clock, from an encoded state vector."""
    count, position = _read_uint(data, 0)
    result: dict[int, int] = {}
    for _ in range(count):
        client, position = _read_uint(data, position)
        result[client], position = _read_uint(data, position)
    return result


def encode_state_vector(vector: dict[int, int]) -> bytes:
    out = bytearray()
    _write_uint(out, len(vector))
    for client, clock in sorted(vector.items()):
        _write_uint(out, client)
        _write_uint(out, clock)
    return bytes(out)


def _normalised_delete_set(data: bytes) -> list[list[int]]:
    """The delete set of a struct-free update, as sorted, merged ranges per client."""
    clients, position = _read_uint(data, 0)
    if clients:
        raise DecodeError("expected an update without structs")
    count, position = _read_uint(data, position)
    ranges: dict[int, list[tuple[int, int]]] = {}
    for _ in range(count):
        client, position = _read_uint(data, position)
        spans, position = _read_uint(data, position)
        for _ in range(spans):
            clock, position = _read_uint(data, position)
            length, position = _read_uint(data, position)
            ranges.setdefault(client, []).append((clock, clock + length))
    result: list[list[int]] = []
    for client in sorted(ranges):
        row = [client]
        start = end = -1
        for low, high in sorted(ranges[client]):
            if low <= end:
                end = max(end, high)
                continue
            if end >= 0:
                row += (start, end)
            start, end = low, high
        if end >= 0:
            row += (start, end)
        result.append(row)
    return result


# -- operations on update bytes ---------------------------------------------------


def merge(*updates: bytes) -> bytes:
    """One update holding everything in ``updates``."""
    with _guarded("document update bytes do not merge"):
        return bytes(pycrdt_module().merge_updates(*updates))


def diff(update: bytes, vector: dict[int, int]) -> bytes:
    """The part of ``update`` a holder of state vector ``vector`` lacks (plus the delete set)."""
    if not vector:
        return update
    with _guarded("document update bytes are malformed"):
        return bytes(pycrdt_module().get_update(update, encode_state_vector(vector)))


def root_types() -> dict[str, type[Any]]:
    pycrdt = pycrdt_module()
    return {"array": pycrdt.Array, "map": pycrdt.Map, "text": pycrdt.Text}


def new_doc(update: bytes | None, schema: dict[str, str]) -> Any:
    """A scratch pycrdt ``Doc`` holding ``update``, its schema roots typed."""
    pycrdt = pycrdt_module()
    types = root_types()
    with _guarded("document update bytes do not load"):
        doc = pycrdt.Doc()
        if update is not None and update != EMPTY_UPDATE:
            doc.apply_update(update)
        for name, kind in sorted(schema.items()):
            doc.get(name, type=types[kind])
    return doc


class Loaded(NamedTuple):
    """What :func:`load` learns about a document."""

    #: its content as JSON text (see :func:`content_json`), numbers checked
    json: str
    #: canonical CBOR of the state vector and the normalised delete set: equal on
    #: two replicas exactly when they hold the same operations (None if not asked for)
    identity: bytes | None
    #: the document encoded afresh, deleted content dropped (Yrs garbage
    #: collection); the update itself if some structs wait for missing ones,
    #: which only the full bytes keep
    compact: bytes
    #: client -> clock
    vector: dict[int, int]
    #: the scratch pycrdt document holding it, for further local edits (see :func:`apply_edit`)
    doc: Any


def load(update: bytes, schema: dict[str, str], *, identity: bool = True, verify: bool = True) -> Loaded:
    """Load a document into a scratch Yrs document and read it (see :class:`Loaded`).

    ``verify`` checks whether any structs wait for missing ones; without it
    the update is taken to be complete. Raises :class:`DecodeError` if the
    bytes do not load and :class:`InvalidValue` if the content holds a
    number Yrs cannot keep exact.
    """
    doc = new_doc(update, schema)
    with _guarded("document content does not read"):
        text = content_json(doc, schema)
        encoded_vector = bytes(doc.get_state())
        vector = decode_state_vector(encoded_vector)
        identity_bytes = None
        if identity:
            deletes = _normalised_delete_set(bytes(doc.get_update(encoded_vector)))
            identity_bytes = cbor2.dumps([sorted(vector.items()), deletes], canonical=True)
        complete = not verify or vector == decode_state_vector(bytes(pycrdt_module().get_state(update)))
        compact = bytes(doc.get_update()) if complete else update
    return Loaded(text, identity_bytes, compact, vector, doc)


def apply_edit(doc: Any, update: bytes, schema: dict[str, str], typed: dict[str, str]) -> Loaded | None:
    """Apply an update to a scratch document from :func:`load` and read it again.

    Much cheaper than loading the merged update afresh. ``typed`` maps the
    roots already typed in ``doc`` to their kind. Returns None if a root's
    kind changed, or the update did not integrate whole (some of its structs
    wait for others): the caller then loads the merged update instead.
    Raises like :func:`load`.
    """
    if any(typed.get(name, kind) != kind for name, kind in schema.items()):
        return None  # a Yrs root keeps the type it was first read as
    types = root_types()
    with _guarded("document edit does not apply"):
        for name, kind in schema.items():
            if name not in typed:
                doc.get(name, type=types[kind])
                typed[name] = kind
        doc.apply_update(update)
        vector = decode_state_vector(bytes(doc.get_state()))
        needed = decode_state_vector(bytes(pycrdt_module().get_state(update)))
        if any(vector.get(client, 0) < clock for client, clock in needed.items()):
            return None
        text = content_json(doc, schema)
        compact = bytes(doc.get_update())
    return Loaded(text, None, compact, vector, doc)


def content_json(doc: Any, schema: dict[str, str]) -> str:
    """The content as one JSON object, root name -> value, for every root in ``schema``.

    Written by Yrs' own JSON encoder, in Rust, so reading a document costs
    little Python: document values are JSON values. Yrs keeps every number
    as a 64-bit float and writes whole ones as integers. An integer beyond
    +-2**53 that no float holds raises :class:`InvalidValue`; a NaN or
    infinity written by a raw pycrdt document reads as null, and bytes as a
    list of ints.
    """
    parts = []
    for name in sorted(schema):
        value = str(doc[name])
        if schema[name] == "text":
            value = json.dumps(value)
        elif _LONG_INTEGER.search(value):  # rare: only then is every integer checked
            json.loads(value, parse_int=_checked_int)
        parts.append(f"{json.dumps(name)}:{value}")
    return "{" + ",".join(parts) + "}"


def parse_content(text: str) -> dict[str, Any]:
    """Plain Python data from :func:`content_json`: map keys in order, whole floats beyond 2**53 as floats."""
    if _LONG_INTEGER.search(text):
        result = json.loads(text, parse_int=_checked_int, object_pairs_hook=_sorted_dict)
    else:
        result = json.loads(text, object_pairs_hook=_sorted_dict)
    assert isinstance(result, dict)
    return result


def plain_content(doc: Any, schema: dict[str, str]) -> dict[str, Any]:
    """Root name -> plain Python data, for every root in ``schema`` (roots typed already)."""
    return parse_content(content_json(doc, schema))


#: A run of 16 digits or more: the only integers that can lie beyond 2**53
#: (also matched inside strings, which only costs a slower, exact check).
_LONG_INTEGER: Final = re.compile(r"\d{16}")


def _sorted_dict(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """Map keys in order, so every replica reads (and prints) a document alike."""
    pairs.sort(key=_first)
    return dict(pairs)


def _first(pair: tuple[str, Any]) -> str:
    return pair[0]


def _checked_int(text: str) -> int | float:
    """A JSON integer from Yrs: an int within +-2**53, else a whole float, else refused.

    Beyond 2**53 Yrs writes a whole 64-bit float and a 64-bit integer alike;
    a value no float holds can only be an integer Yrs kept beside its floats.
    """
    value = int(text)
    if -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
        return value
    try:
        whole = float(value)
    except OverflowError:  # beyond every float: refused below
        whole = 0.0
    # Compared as integers: a float comparison (as the compiled build makes of
    # `float(value) == value`) rounds the int first and would accept 2**53 + 1.
    if int(whole) == value:
        return whole
    check_number(value)
    return value


def check_number(value: int) -> None:
    if not -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
        raise InvalidValue(
            f"integer {value} is outside +-2**53: document values keep numbers as 64-bit "
            "floats (as Yrs does), so it would lose precision; store it as a str"
        )

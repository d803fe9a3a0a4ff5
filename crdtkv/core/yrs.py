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
  always load it whole into a fresh ``Doc``.
* Root types are not part of an update (a root reads back untyped), so each
  document carries a schema: root name -> ``"array"``, ``"map"`` or ``"text"``.

Malformed bytes make pycrdt raise ``ValueError`` or, from a Rust panic,
``PanicException``, which derives from ``BaseException``; :func:`_guarded`
turns both into :class:`~crdtkv.errors.DecodeError`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Final, TypeVar

import cbor2

from ..errors import DecodeError, InvalidValue

#: Integers Yrs stores exactly (it stores numbers as 64-bit floats).
MAX_SAFE_INTEGER: Final = 2**53
#: Root kinds a document may declare.
ROOT_KINDS: Final = ("array", "map", "text")
#: The update of a document with nothing in it.
EMPTY_UPDATE: Final = b"\x00\x00"

_T = TypeVar("_T")


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


def state_vector(update: bytes) -> dict[int, int]:
    """client -> clock of the structs in ``update``."""
    with _guarded("document update bytes are malformed"):
        encoded = bytes(pycrdt_module().get_state(update))
    return decode_state_vector(encoded)


def diff(update: bytes, vector: dict[int, int]) -> bytes:
    """The part of ``update`` a holder of state vector ``vector`` lacks (plus the delete set)."""
    if not vector:
        return update
    with _guarded("document update bytes are malformed"):
        return bytes(pycrdt_module().get_update(update, encode_state_vector(vector)))


def root_types() -> dict[str, type[Any]]:
    pycrdt = pycrdt_module()
    return {"array": pycrdt.Array, "map": pycrdt.Map, "text": pycrdt.Text}


def new_doc(update: bytes | None, schema: dict[str, str], client: int | None = None) -> Any:
    """A pycrdt ``Doc`` holding ``update``, its schema roots typed."""
    pycrdt = pycrdt_module()
    types = root_types()
    with _guarded("document update bytes do not load"):
        doc = pycrdt.Doc() if client is None else pycrdt.Doc(client_id=client)
        if update is not None and update != EMPTY_UPDATE:
            doc.apply_update(update)
        for name, kind in sorted(schema.items()):
            doc.get(name, type=types[kind])
    return doc


def load(update: bytes, schema: dict[str, str]) -> tuple[bytes, bytes, bytes]:
    """``(plain, identity, compact)`` of a document.

    ``plain`` is its content as canonical CBOR: each schema root as plain
    Python data (dicts, lists, str). ``identity`` is the canonical CBOR of the
    state vector and the normalised delete set, equal on two replicas exactly
    when they hold the same operations. ``compact`` is the document encoded
    afresh, with the content of deleted items dropped (Yrs garbage
    collection); it is ``update`` itself if some structs wait for missing
    ones, which only the full bytes keep. Raises :class:`DecodeError` if the
    bytes do not load and :class:`InvalidValue` if the content holds a number
    Yrs cannot keep exact.
    """
    doc = new_doc(update, schema)
    with _guarded("document content does not read"):
        plain = plain_content(doc, schema)
        vector = bytes(doc.get_state())
        deletes = bytes(doc.get_update(vector))
        complete = decode_state_vector(vector) == decode_state_vector(
            bytes(pycrdt_module().get_state(update))
        )
        compact = bytes(doc.get_update()) if complete else update
    identity = [sorted(decode_state_vector(vector).items()), _normalised_delete_set(deletes)]
    return cbor2.dumps(plain, canonical=True), cbor2.dumps(identity, canonical=True), compact


def plain_content(doc: Any, schema: dict[str, str]) -> dict[str, Any]:
    """Root name -> plain Python data, for every root in ``schema`` (roots typed already)."""
    empty: dict[str, Any] = {"array": [], "map": {}, "text": ""}
    result: dict[str, Any] = {}
    for name in sorted(schema):
        value = doc[name].to_py()
        result[name] = empty[schema[name]] if value is None else plain_value(value)
    return result


def plain_value(value: object) -> Any:
    """Plain data from pycrdt's ``to_py``: dict keys sorted, whole floats as ints.

    Yrs keeps every number as a 64-bit float, so ``3`` reads back as ``3.0``;
    whole numbers within +-2**53 are returned as ints (as JSON would).
    """
    if isinstance(value, dict):
        return {key: plain_value(value[key]) for key in sorted(value)}
    if isinstance(value, (list, tuple)):
        return [plain_value(item) for item in value]
    if isinstance(value, float):
        if value.is_integer() and -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
            return int(value)
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        check_number(value)
    return value


def check_number(value: int) -> None:
    if not -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
        raise InvalidValue(
            f"integer {value} is outside +-2**53: document values keep numbers as 64-bit "
            "floats (as Yrs does), so it would lose precision; store it as a str"
        )


def guarded_call(what: str, function: Callable[[], _T]) -> _T:
    """Call ``function`` with pycrdt failures turned into DecodeError."""
    with _guarded(what):
        return function()

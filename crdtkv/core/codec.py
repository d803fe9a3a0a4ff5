"""CBOR wire forms of entries, deltas and snapshots, decoded strictly.

Everything that arrives from outside (a peer's message, a snapshot file) goes
through :func:`strict_loads` after a size check: bounded nesting, no
indefinite lengths, no duplicate map keys, no semantic tags except bignums,
no trailing bytes. The decoded tree is then checked against the schema below
before anything touches replica state. Any failure is a
:class:`~crdtkv.errors.DecodeError`; no ``cbor2`` exception escapes.

Schema (CBOR arrays throughout; ``w`` indexes the message's origin table)::

    delta    = [FORMAT, store_name, [origin...], [[w, stamp]...] (vv), registers, [entry...]]
    registers = [[key...], [stamp...], [w...], [value...]]
             (plain live registers, column by column: compact, and fast to check)
    entry    = [key, register] / [key, register, counter] / [key, register, counter / null, doc]
             (everything else)
    register = [] (never written) / [stamp, w] (tombstone) / [stamp, w, value]
             / [stamp, w, value, expires_ms / null, meta]
    value    = str / bytes / int / float / bool / null / [bytes] (canonical CBOR list or map)
    counter  = [[[w, inc, dec, stamp]...] totals, [[w, inc, dec, stamp]...] removed,
                [[w, stamp]...] context (, [epoch, expires_ms] expiry)]
    doc      = [gen_stamp, gen_w / null, update bytes, [[w, stamp]...] context, [[w, stamp]...] removed,
                [[root name, kind]...] schema, [[w, stamp, yrs clock]...] clocks]

A snapshot is ``MAGIC + delta + blake2b-128(delta)``, so truncation and bit
flips are detected even where the damaged bytes would still decode.
"""

from __future__ import annotations

import hashlib
import io
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Final, NoReturn

import cbor2

from ..errors import DecodeError, InvalidKey, TooLarge
from .bulk import collector_paused
from .document import MAX_CLOCK_PAIRS, DocState
from .entry import TOMBSTONE, CounterState, Entry, Totals
from .hlc import MAX_STAMP
from .limits import MAX_EXPIRY_MS, Limits
from .values import SCALAR_TYPES, Packed, check_key, packed_from_wire
from .yrs import ROOT_KINDS

FORMAT: Final = 1
SNAPSHOT_MAGIC: Final = b"CRDTKV\x00S"
CHECKSUM_BYTES: Final = 16
MAX_ORIGIN_CHARS: Final = 256
#: Longest document root name, and most roots one document may declare.
MAX_ROOT_CHARS: Final = 256
MAX_ROOTS: Final = 64
#: Yrs clocks are 32-bit.
MAX_YRS_CLOCK: Final = (1 << 32) - 1

# cbor2 decodes these tags itself; everything but bignums (2, 3) is refused.
_BUILTIN_TAGS: Final = (
    *(0, 1, 4, 5, 25, 28, 29, 30, 35, 36, 37, 52, 54, 100),
    *(256, 258, 260, 261, 1004, 43000, 55799),
)


def _refuse_tag(decoder: Any, *args: object) -> NoReturn:
    raise ValueError("CBOR tags are not accepted")


_REFUSE_SEMANTIC: Final = {tag: _refuse_tag for tag in _BUILTIN_TAGS}


@dataclass
class Delta:
    """A batch of whole entries plus the version vector the sender had."""

    name: str
    vv: dict[str, int] = field(default_factory=dict)
    entries: list[tuple[str, Entry]] = field(default_factory=list)


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


# -- encoding -------------------------------------------------------------------


def _value_to_wire(value: object) -> object:
    return [value.data] if type(value) is Packed else value


def _totals_to_wire(totals: dict[str, Totals], ref: Callable[[str], object]) -> list[list[object]]:
    return [[ref(origin), inc, dec, stamp] for origin, (inc, dec, stamp) in sorted(totals.items())]


def _doc_to_wire(doc: DocState, ref: Callable[[str], object], identity: bool) -> list[object]:
    return [
        doc.gen[0],
        ref(doc.gen[1]) if doc.gen[1] else None,
        doc.identity() if identity else doc.update,
        [[ref(origin), stamp] for origin, stamp in sorted(doc.context.items())],
        [[ref(origin), stamp] for origin, stamp in sorted(doc.removed.items())],
        [[name, kind] for name, kind in sorted(doc.schema.items())],
        [
            [ref(origin), stamp, clock]
            for origin, pairs in sorted(doc.clocks.items())
            for stamp, clock in pairs
        ],
    ]


def entry_to_wire(
    key: str, entry: Entry, ref: Callable[[str], object], *, identity: bool = False
) -> list[object]:
    """The wire form of one entry; ``ref`` maps an origin to its reference.

    With ``identity`` a document is written as its identity instead of its
    update bytes (which differ between replicas holding the same document):
    the canonical form :func:`digest_entries` hashes.
    """
    if not entry.stamp:
        register: list[object] = []
    elif entry.value is TOMBSTONE:
        register = [entry.stamp, ref(entry.writer)]
    elif entry.expires is None and entry.meta is None:
        register = [entry.stamp, ref(entry.writer), _value_to_wire(entry.value)]
    else:
        register = [
            entry.stamp,
            ref(entry.writer),
            _value_to_wire(entry.value),
            entry.expires,
            _value_to_wire(entry.meta),
        ]
    counter = entry.counter
    doc = entry.doc
    if counter is None:
        if doc is None:
            return [key, register]
        return [key, register, None, _doc_to_wire(doc, ref, identity)]
    wire_counter: list[object] = [
        _totals_to_wire(counter.totals, ref),
        _totals_to_wire(counter.removed, ref),
        [[ref(origin), stamp] for origin, stamp in sorted(counter.full_context().items())],
    ]
    if counter.expiry is not None:
        wire_counter.append(list(counter.expiry))
    if doc is None:
        return [key, register, wire_counter]
    return [key, register, wire_counter, _doc_to_wire(doc, ref, identity)]


class _OriginTable:
    """Assigns each origin named in a message a small index."""

    def __init__(self) -> None:
        self.index: dict[str, int] = {}

    def ref(self, origin: str) -> int:
        found = self.index.get(origin)
        if found is None:
            found = self.index[origin] = len(self.index)
        return found


def encode_delta(delta: Delta) -> bytes:
    """The CBOR bytes of a delta (or of a whole state)."""
    table = _OriginTable()
    ref = table.ref
    keys: list[str] = []
    stamps: list[int] = []
    refs: list[int] = []
    values: list[object] = []
    others: list[list[object]] = []
    for key, entry in delta.entries:
        if (
            entry.counter is None
            and entry.doc is None
            and entry.expires is None
            and entry.meta is None
            and entry.stamp
            and entry.value is not TOMBSTONE
        ):
            keys.append(key)
            stamps.append(entry.stamp)
            refs.append(ref(entry.writer))
            values.append(_value_to_wire(entry.value))
        else:
            others.append(entry_to_wire(key, entry, ref))
    vv = [[ref(origin), stamp] for origin, stamp in delta.vv.items()]
    return cbor2.dumps([FORMAT, delta.name, list(table.index), vv, [keys, stamps, refs, values], others])


def encode_snapshot(delta: Delta) -> bytes:
    """A self-checking snapshot: magic, delta bytes, checksum."""
    body = encode_delta(delta)
    return SNAPSHOT_MAGIC + body + hashlib.blake2b(body, digest_size=CHECKSUM_BYTES).digest()


def digest_entries(items: Iterable[tuple[str, Entry]]) -> str:
    """SHA-256 over the canonical encoding of entries, in key order."""
    hasher = hashlib.sha256()
    same = str
    for key, entry in sorted(items, key=lambda item: item[0]):
        hasher.update(cbor2.dumps(entry_to_wire(key, entry, same, identity=True), canonical=True))
    return hasher.hexdigest()


# -- decoding -------------------------------------------------------------------


def _fail(what: str) -> NoReturn:
    raise DecodeError(what)


def _array(item: object, what: str) -> list[Any]:
    if type(item) is not list:
        _fail(f"{what} must be an array")
    return item


def _stamp(item: object, what: str) -> int:
    if type(item) is not int or not 0 < item <= MAX_STAMP:
        _fail(f"{what} must be a stamp (an integer in 1..2**64-1)")
    return item


def _count(item: object, what: str, top: int) -> int:
    if type(item) is not int or not 0 <= item <= top:
        _fail(f"{what} must be a non-negative integer of at most {top.bit_length()} bits")
    return item


def _expiry(item: object, what: str) -> int:
    """An expiry in epoch milliseconds: at most what a stamp can name."""
    if type(item) is not int or not 0 <= item <= MAX_EXPIRY_MS:
        _fail(f"{what} must be epoch milliseconds in 0..2**48-1")
    return item


class _Reader:
    """Turns a checked wire tree back into entries."""

    def __init__(self, origins: list[str], limits: Limits) -> None:
        self.origins = origins
        self.limits = limits
        self.max_key = limits.max_key_bytes
        self.max_value = limits.max_value_bytes
        self.max_total = limits.max_counter_total - 1

    def origin(self, item: object) -> str:
        if type(item) is not int or not 0 <= item < len(self.origins):
            _fail("origin reference out of range")
        return self.origins[item]

    def value(self, item: object) -> object:
        kind = type(item)
        if kind is list:
            assert isinstance(item, list)
            if len(item) != 1 or type(item[0]) is not bytes:
                _fail("a packed value must be [bytes]")
            return packed_from_wire(item[0], self.limits)
        if kind not in SCALAR_TYPES:
            _fail(f"values may not be of CBOR type {kind.__name__}")
        if kind is str or kind is bytes:
            size = len(item.encode("utf-8")) if isinstance(item, str) else len(item)  # type: ignore[arg-type]
            if size > self.max_value:
                _fail(f"value is {size} bytes; the limit is {self.max_value}")
        elif kind is int and item.bit_length() > 8 * self.max_value:  # type: ignore[attr-defined]
            _fail(f"an integer value is larger than the limit of {self.max_value} bytes")
        return item

    def meta(self, item: object) -> object:
        """Metadata: None, or a packed map of at most ``max_metadata_bytes``."""
        if item is None:
            return None
        limit = self.limits.max_metadata_bytes
        if type(item) is not list or len(item) != 1 or type(item[0]) is not bytes:
            _fail("metadata must be null or a packed map")
        if len(item[0]) > limit:
            _fail(f"metadata is {len(item[0])} bytes; the limit (max_metadata_bytes) is {limit}")
        packed = packed_from_wire(item[0], self.limits)
        if not 0xA0 <= packed.data[0] <= 0xBB:
            _fail("metadata must be a map")
        return packed

    def totals(self, item: object, what: str) -> dict[str, Totals]:
        result: dict[str, Totals] = {}
        for row in _array(item, what):
            row = _array(row, what)
            if len(row) != 4:
                _fail(f"{what} rows must be [origin, inc, dec, stamp]")
            origin = self.origin(row[0])
            if origin in result:
                _fail(f"{what} names an origin twice")
            top = self.max_total
            result[origin] = (_count(row[1], what, top), _count(row[2], what, top), _stamp(row[3], what))
        return result

    def registers(self, block: object) -> list[tuple[str, Entry]]:
        """Check and convert the column block of plain registers.

        Each column is checked as a whole with builtins running at C speed;
        a column that fails the quick check is checked item by item, which
        either accepts it (non-ASCII text, containers) or names the problem.
        """
        columns = _array(block, "the register block")
        if len(columns) != 4:
            _fail("the register block must have 4 columns")
        keys, stamps, refs, values = (_array(column, "a register column") for column in columns)
        count = len(keys)
        if not len(stamps) == len(refs) == len(values) == count:
            _fail("register columns differ in length")
        if not count:
            return []
        if (
            set(map(type, keys)) != {str}
            or not all(map(str.isascii, keys))
            or min(map(len, keys)) == 0
            or max(map(len, keys)) > self.max_key
        ):
            keys = [self.key(key) for key in keys]
        if set(map(type, stamps)) != {int} or min(stamps) <= 0 or max(stamps) > MAX_STAMP:
            _fail("register stamps must be integers in 1..2**64-1")
        if set(map(type, refs)) != {int} or min(refs) < 0 or max(refs) >= len(self.origins):
            _fail("origin reference out of range")
        if (
            set(map(type, values)) != {str}
            or not all(map(str.isascii, values))
            or max(map(len, values)) > self.max_value
        ):
            values = [self.value(value) for value in values]
        writers = list(map(self.origins.__getitem__, refs))
        return list(zip(keys, map(Entry, stamps, writers, values), strict=True))

    def key(self, item: object) -> str:
        try:
            return check_key(item, self.limits)
        except InvalidKey as exc:
            raise DecodeError(f"bad key from remote: {exc}") from exc

    def entry(self, item: object) -> tuple[str, Entry]:
        """Check and convert one entry of the general form."""
        item = _array(item, "an entry")
        if not 2 <= len(item) <= 4:
            _fail("an entry must be [key, register] followed by an optional counter and document")
        key = self.key(item[0])
        register = _array(item[1], "a register")
        size = len(register)
        if size == 0:
            entry = Entry(0, "", TOMBSTONE)
        elif size == 2:
            entry = Entry(_stamp(register[0], "a stamp"), self.origin(register[1]), TOMBSTONE)
        elif size == 3:
            entry = Entry(_stamp(register[0], "a stamp"), self.origin(register[1]), self.value(register[2]))
        elif size == 5:
            expires = register[3]
            if expires is not None:
                expires = _expiry(expires, "an expiry")
            entry = Entry(
                _stamp(register[0], "a stamp"),
                self.origin(register[1]),
                self.value(register[2]),
                expires,
                self.meta(register[4]),
            )
        else:
            _fail("a register must have 0, 2, 3 or 5 fields")
        if len(item) == 4:
            entry.doc = self.doc(item[3])
        if len(item) >= 3 and (item[2] is not None or len(item) == 3):
            counter = _array(item[2], "a counter")
            if len(counter) not in (3, 4):
                _fail("a counter must be [totals, removed, context] or [totals, removed, context, expiry]")
            expiry: tuple[int, int] | None = None
            if len(counter) == 4:
                pair = _array(counter[3], "a counter expiry")
                if len(pair) != 2:
                    _fail("a counter expiry must be [epoch, expires_ms]")
                expiry = (_count(pair[0], "an expiry epoch", MAX_STAMP), _expiry(pair[1], "an expiry"))
            totals = self.totals(counter[0], "counter totals")
            removed = self.totals(counter[1], "counter removed")
            context = self.stamps(counter[2], "counter context")
            for origin, (_, _, stamp) in totals.items():
                if context.get(origin, 0) < stamp:
                    _fail("counter context is behind its totals")
                if context[origin] == stamp:
                    del context[origin]  # the totals say it already: keep only what they do not
            for origin, (inc, dec, stamp) in removed.items():
                have = totals.get(origin)
                if have is None or have[2] < stamp or have[0] < inc or have[1] < dec:
                    _fail("counter removed baseline exceeds its totals")
            entry.counter = CounterState(totals, removed, context, expiry)
        elif not entry.stamp and entry.doc is None:
            _fail("an entry needs a register write, a counter or a document")
        return key, entry

    def stamps(self, item: object, what: str) -> dict[str, int]:
        """Check and convert ``[[origin, stamp]...]`` rows: each origin once."""
        result: dict[str, int] = {}
        for row in _array(item, what):
            row = _array(row, what)
            if len(row) != 2:
                _fail(f"{what} rows must be [origin, stamp]")
            origin = self.origin(row[0])
            if origin in result:
                _fail(f"{what} names an origin twice")
            result[origin] = _stamp(row[1], what)
        return result

    def doc(self, item: object) -> DocState:
        """Check and convert a document (its Yrs bytes are checked when merged)."""
        item = _array(item, "a document")
        if len(item) != 7:
            _fail("a document must have 7 fields")
        if item[1] is None:  # a generation named by no write: a first one
            if type(item[0]) is not int or not 0 <= item[0] <= MAX_STAMP:
                _fail("a document generation must be a stamp")
            gen: tuple[int, str] = (item[0], "")
        else:
            gen = (_stamp(item[0], "a document generation"), self.origin(item[1]))
        update = item[2]
        if type(update) is not bytes or len(update) < 2:
            _fail("a document update must be bytes")
        if len(update) > self.max_value:
            _fail(f"document is {len(update)} bytes; the limit (max_value_bytes) is {self.max_value}")
        context = self.stamps(item[3], "document context")
        removed = self.stamps(item[4], "document removed")
        if not context:
            _fail("a document needs a context")
        for origin, stamp in removed.items():
            if context.get(origin, 0) < stamp:
                _fail("document removed baseline exceeds its context")
        schema: dict[str, str] = {}
        for row in _array(item[5], "document schema"):
            row = _array(row, "document schema")
            if (
                len(row) != 2
                or type(row[0]) is not str
                or not 0 < len(row[0]) <= MAX_ROOT_CHARS
                or row[1] not in ROOT_KINDS
                or row[0] in schema
            ):
                _fail("document schema rows must be [root name, 'array' / 'map' / 'text'], names unique")
            schema[row[0]] = row[1]
        if len(schema) > MAX_ROOTS:
            _fail(f"a document may declare at most {MAX_ROOTS} roots")
        clocks: dict[str, list[tuple[int, int]]] = {}
        for row in _array(item[6], "document clocks"):
            row = _array(row, "document clocks")
            if len(row) != 3:
                _fail("document clock rows must be [origin, stamp, clock]")
            pairs = clocks.setdefault(self.origin(row[0]), [])
            pairs.append((_stamp(row[1], "a clock stamp"), _count(row[2], "a Yrs clock", MAX_YRS_CLOCK)))
        for pairs in clocks.values():
            if len(pairs) > MAX_CLOCK_PAIRS or pairs != sorted(set(pairs)):
                _fail(f"document clocks must be sorted, unique and at most {MAX_CLOCK_PAIRS} per origin")
        return DocState(gen, update, context, removed, schema, {o: tuple(p) for o, p in clocks.items()})


class _RowReader(_Reader):
    """Reads storage rows, which name origins inline instead of by table index."""

    def __init__(self, limits: Limits) -> None:
        super().__init__([], limits)
        self._interned: dict[str, str] = {}

    def origin(self, item: object) -> str:
        if type(item) is not str or not 0 < len(item) <= MAX_ORIGIN_CHARS:
            _fail("an origin must be a string of 1 to 256 characters")
        return self._interned.setdefault(item, item)


def encode_row(key: str, entry: Entry) -> bytes:
    """A storage row: CRC-32 of key and body, then the entry's CBOR without its key.

    Origins are written inline; the key is the row's primary key, and the
    checksum covers it, so a row copied under another key is caught too.
    """
    body = cbor2.dumps(entry_to_wire(key, entry, str)[1:])
    return zlib.crc32(body, zlib.crc32(key.encode("utf-8"))).to_bytes(4, "big") + body


def decode_rows(rows: list[tuple[str, bytes]], limits: Limits) -> list[tuple[str, Entry]]:
    """Check and decode ``(key, row)`` pairs (one strict CBOR parse for the whole batch)."""
    bodies = []
    for key, row in rows:
        if type(row) is not bytes or len(row) < 5 or type(key) is not str:
            _fail("a storage row is truncated")
        body = row[4:]
        if zlib.crc32(body, zlib.crc32(key.encode("utf-8", "surrogatepass"))).to_bytes(4, "big") != row[:4]:
            _fail(f"the row of key {key!r} fails its checksum")
        bodies.append(body)
    # n items back to back, behind an array header of length n, are one CBOR array
    header = cbor2.dumps([None] * len(bodies))[: -len(bodies)] if bodies else b"\x80"
    tree = _array(strict_loads(header + b"".join(bodies), max_depth=limits.max_value_depth + 8), "rows")
    if len(tree) != len(rows):
        _fail("storage rows do not match their count")
    reader = _RowReader(limits)
    return [reader.entry([key, *_array(item, "a row")]) for (key, _), item in zip(rows, tree, strict=True)]


def decode_delta(data: bytes, limits: Limits, *, max_bytes: int | None = None) -> Delta:
    """Decode and check a delta; raise :class:`DecodeError` on anything amiss."""
    cap = limits.max_message_bytes if max_bytes is None else max_bytes
    if len(data) > cap:
        raise TooLarge(f"input is {len(data)} bytes; the limit is {cap}")
    with collector_paused(len(data) // 16):  # about one entry per 16 bytes at most
        return _decode_delta_tree(strict_loads(data, max_depth=limits.max_value_depth + 8), limits)


def _decode_delta_tree(tree: object, limits: Limits) -> Delta:
    tree = _array(tree, "a delta")
    if len(tree) != 6:
        _fail("a delta must have 6 fields")
    version, name, origins, vv_rows, register_block, entry_rows = tree
    if version != FORMAT or type(version) is not int:
        _fail(f"unsupported format version {version!r} (this build reads {FORMAT})")
    if type(name) is not str:
        _fail("the store name must be a string")
    origins = _array(origins, "the origin table")
    for origin in origins:
        if type(origin) is not str or not 0 < len(origin) <= MAX_ORIGIN_CHARS:
            _fail("origins must be non-empty strings of at most 256 characters")
    if len(set(origins)) != len(origins):
        _fail("the origin table names an origin twice")
    reader = _Reader(origins, limits)
    vv = reader.stamps(vv_rows, "the version vector")
    entries = reader.registers(register_block)
    entries.extend(reader.entry(row) for row in _array(entry_rows, "the entries"))
    if len({key for key, _ in entries}) != len(entries):
        _fail("a delta names a key twice")
    return Delta(name, vv, entries)


def decode_snapshot(data: bytes, limits: Limits) -> Delta:
    """Check a snapshot's framing and checksum, then decode it."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise DecodeError(f"a snapshot must be bytes, not {type(data).__name__}")
    data = bytes(data)
    if len(data) > limits.max_snapshot_bytes:
        raise TooLarge(
            f"snapshot is {len(data)} bytes; the limit (max_snapshot_bytes) is {limits.max_snapshot_bytes}"
        )
    if not data.startswith(SNAPSHOT_MAGIC):
        raise DecodeError("not a crdtkv snapshot (bad magic bytes)")
    if len(data) < len(SNAPSHOT_MAGIC) + CHECKSUM_BYTES + 1:
        raise DecodeError("snapshot is truncated")
    body = data[len(SNAPSHOT_MAGIC) : -CHECKSUM_BYTES]
    if hashlib.blake2b(body, digest_size=CHECKSUM_BYTES).digest() != data[-CHECKSUM_BYTES:]:
        raise DecodeError("snapshot is truncated or corrupted (checksum mismatch)")
    return decode_delta(body, limits, max_bytes=len(body))

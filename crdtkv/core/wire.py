"""The wire format: entries, deltas and snapshots as CBOR, and their strict decoding.

A delta (a batch of entries, or a whole state) is what replicas exchange; a
snapshot is a delta with framing and a checksum, for files. Decoding loads
the bytes with :mod:`.cbor` after a size check, then checks the tree against
the schema below before anything touches replica state. Any failure is a
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
                [[w, stamp]...] context (, expiry)]
             / [totals, removed, context, expiry / null, base]
    expiry   = [epoch, expires_ms] (set by incr with a ttl)
             / [epoch, expires_ms / 0, expiry_stamp] (set by or after an expire or persist,
               stamped; 0: persisted; see entry.expiry_rank)
    base     = [cut, zero_at, inc, dec, top] (the folded totals of retired origins; see entry.Base)
    doc      = [gen_stamp, gen_w / null, update bytes, [[w, stamp]...] context, [[w, stamp]...] removed,
                [[root name, kind]...] schema, [[w, stamp, yrs clock]...] clocks]

A snapshot is ``MAGIC + delta + blake2b-128(delta)``, so truncation and bit
flips are detected even where the damaged bytes would still decode.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

import cbor2

from ..errors import DecodeError, InvalidKey, TooLarge
from .bulk import collector_paused
from .cbor import as_array, as_count, as_expiry, as_origin, as_stamp, fail, load_bounded, origin_rows
from .document import MAX_CLOCK_PAIRS, DocState
from .entry import TOMBSTONE, Base, CounterState, Entry, Totals, max_stamp
from .hlc import MAX_STAMP
from .limits import Limits
from .values import SCALAR_TYPES, Packed, check_key, packed_from_wire
from .vv import dominates, read_rows, write_rows
from .yrs import ROOT_KINDS

FORMAT: Final = 1
SNAPSHOT_MAGIC: Final = b"CRDTKV\x00S"
CHECKSUM_BYTES: Final = 16
#: Longest document root name, and most roots one document may declare.
MAX_ROOT_CHARS: Final = 256
MAX_ROOTS: Final = 64
#: Yrs clocks are 32-bit.
MAX_YRS_CLOCK: Final = (1 << 32) - 1

_TOTALS_ROW: Final = ("origin", "inc", "dec", "stamp")
#: A counter base sums the totals of up to 2**BASE_SUM_BITS retired origins.
BASE_SUM_BITS: Final = 32


@dataclass
class Delta:
    """A batch of whole entries plus the version vector the sender had."""

    name: str
    vv: dict[str, int] = field(default_factory=dict)
    entries: list[tuple[str, Entry]] = field(default_factory=list)
    #: the largest stamp in ``entries`` when whoever built them knew it (the decoder
    #: does), else -1: :meth:`~.replica.ReplicaState.apply` then finds it itself
    top: int = -1
    #: True when nothing else holds the entries (a decoder's fresh ones): the first
    #: :meth:`~.replica.ReplicaState.apply` may keep them instead of copying, and clears it
    owned: bool = False


# -- encoding -------------------------------------------------------------------


def _value_to_wire(value: object) -> object:
    return [value.data] if type(value) is Packed else value


def _totals_to_wire(totals: dict[str, Totals], ref: Callable[[str], object]) -> list[list[object]]:
    return [[ref(origin), inc, dec, stamp] for origin, (inc, dec, stamp) in sorted(totals.items())]


def _expiry_to_wire(counter: CounterState) -> list[int]:
    """A counter's expiry: the two-field form unless an ``expire`` or ``persist`` stamped it."""
    assert counter.expiry is not None
    if counter.expiry_stamp:
        return [*counter.expiry, counter.expiry_stamp]
    return list(counter.expiry)


def _doc_to_wire(doc: DocState, ref: Callable[[str], object], identity: bool) -> list[object]:
    return [
        doc.gen[0],
        ref(doc.gen[1]) if doc.gen[1] else None,
        doc.identity() if identity else doc.update,
        write_rows(doc.context, ref, sort=True),
        write_rows(doc.removed, ref, sort=True),
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
    the canonical form :func:`~.digest.digest_entries` hashes.
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
        write_rows(counter.full_context(), ref, sort=True),
    ]
    if counter.base is not None:
        wire_counter.append(_expiry_to_wire(counter) if counter.expiry is not None else None)
        wire_counter.append(list(counter.base))
    elif counter.expiry is not None:
        wire_counter.append(_expiry_to_wire(counter))
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
    vv = write_rows(delta.vv, ref)
    return cbor2.dumps([FORMAT, delta.name, list(table.index), vv, [keys, stamps, refs, values], others])


def encode_snapshot(delta: Delta) -> bytes:
    """A self-checking snapshot: magic, delta bytes, checksum."""
    body = encode_delta(delta)
    return SNAPSHOT_MAGIC + body + hashlib.blake2b(body, digest_size=CHECKSUM_BYTES).digest()


# -- decoding -------------------------------------------------------------------


class EntryReader:
    """Turns a checked wire tree back into entries (origins named by index into ``origins``)."""

    def __init__(self, origins: list[str], limits: Limits) -> None:
        self.origins = origins
        self.limits = limits
        self.max_key = limits.max_key_bytes
        self.max_value = limits.max_value_bytes
        self.max_total = limits.max_counter_total - 1
        #: the largest stamp in the register blocks read so far
        self.top = 0

    def origin(self, item: object) -> str:
        """The origin a row names (subclasses read origins written another way)."""
        if type(item) is not int or not 0 <= item < len(self.origins):
            fail("origin reference out of range")
        return self.origins[item]

    def value(self, item: object) -> object:
        kind = type(item)
        if kind is list:
            assert isinstance(item, list)
            if len(item) != 1 or type(item[0]) is not bytes:
                fail("a packed value must be [bytes]")
            return packed_from_wire(item[0], self.limits)
        if kind not in SCALAR_TYPES:
            fail(f"values may not be of CBOR type {kind.__name__}")
        if kind is str or kind is bytes:
            size = len(item.encode("utf-8")) if isinstance(item, str) else len(item)  # type: ignore[arg-type]
            if size > self.max_value:
                fail(f"value is {size} bytes; the limit is {self.max_value}")
        elif kind is int and item.bit_length() > 8 * self.max_value:  # type: ignore[attr-defined]
            fail(f"an integer value is larger than the limit of {self.max_value} bytes")
        return item

    def meta(self, item: object) -> object:
        """Metadata: None, or a packed map of at most ``max_metadata_bytes``."""
        if item is None:
            return None
        limit = self.limits.max_metadata_bytes
        if type(item) is not list or len(item) != 1 or type(item[0]) is not bytes:
            fail("metadata must be null or a packed map")
        if len(item[0]) > limit:
            fail(f"metadata is {len(item[0])} bytes; the limit (max_metadata_bytes) is {limit}")
        packed = packed_from_wire(item[0], self.limits)
        if not 0xA0 <= packed.data[0] <= 0xBB:
            fail("metadata must be a map")
        return packed

    def totals(self, item: object, what: str) -> dict[str, Totals]:
        """Check and convert ``[[origin, inc, dec, stamp]...]`` rows: each origin once."""
        top = self.max_total
        return {
            origin: Totals(as_count(row[1], what, top), as_count(row[2], what, top), as_stamp(row[3], what))
            for origin, row in origin_rows(item, what, _TOTALS_ROW, self.origin)
        }

    def base(self, item: object) -> Base:
        """Check and convert a counter base ``[cut, zero_at, inc, dec, top]``.

        Its sums may exceed one origin's limit: they add up many origins' totals.
        """
        row = as_array(item, "a counter base")
        if len(row) != 5:
            fail("a counter base must be [cut, zero_at, inc, dec, top]")
        cut = as_stamp(row[0], "a counter base cut")
        zero_at = as_stamp(row[1], "a counter base zero_at")
        top = as_count(row[4], "a counter base top", MAX_STAMP)
        sums = self.max_total << BASE_SUM_BITS
        inc = as_count(row[2], "a counter base sum", sums)
        dec = as_count(row[3], "a counter base sum", sums)
        if zero_at < cut or top >= cut:
            fail("a counter base must have cut <= zero_at and top < cut")
        return Base(cut, zero_at, inc, dec, top)

    def registers(self, block: object) -> list[tuple[str, Entry]]:
        """Check and convert the column block of plain registers.

        Each column is checked as a whole with builtins running at C speed;
        a column that fails the quick check is checked item by item, which
        either accepts it (non-ASCII text, containers) or names the problem.
        """
        columns = as_array(block, "the register block")
        if len(columns) != 4:
            fail("the register block must have 4 columns")
        keys, stamps, refs, values = (as_array(column, "a register column") for column in columns)
        count = len(keys)
        if not len(stamps) == len(refs) == len(values) == count:
            fail("register columns differ in length")
        if not count:
            return []
        if (
            set(map(type, keys)) != {str}
            or not all(map(str.isascii, keys))
            or min(map(len, keys)) == 0
            or max(map(len, keys)) > self.max_key
        ):
            keys = [self.key(key) for key in keys]
        if set(map(type, stamps)) != {int}:
            fail("register stamps must be integers in 1..2**64-1")
        top = max(stamps)
        if min(stamps) <= 0 or top > MAX_STAMP:
            fail("register stamps must be integers in 1..2**64-1")
        self.top = max(self.top, top)
        if set(map(type, refs)) != {int} or min(refs) < 0 or max(refs) >= len(self.origins):
            fail("origin reference out of range")
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
        item = as_array(item, "an entry")
        if not 2 <= len(item) <= 4:
            fail("an entry must be [key, register] followed by an optional counter and document")
        key = self.key(item[0])
        register = as_array(item[1], "a register")
        size = len(register)
        if size == 0:
            entry = Entry(0, "", TOMBSTONE)
        elif size == 2:
            entry = Entry(as_stamp(register[0], "a stamp"), self.origin(register[1]), TOMBSTONE)
        elif size == 3:
            entry = Entry(as_stamp(register[0], "a stamp"), self.origin(register[1]), self.value(register[2]))
        elif size == 5:
            expires = register[3]
            if expires is not None:
                expires = as_expiry(expires, "an expiry")
            entry = Entry(
                as_stamp(register[0], "a stamp"),
                self.origin(register[1]),
                self.value(register[2]),
                expires,
                self.meta(register[4]),
            )
        else:
            fail("a register must have 0, 2, 3 or 5 fields")
        if len(item) == 4:
            entry.doc = self.doc(item[3])
        if len(item) >= 3 and (item[2] is not None or len(item) == 3):
            counter = as_array(item[2], "a counter")
            if len(counter) not in (3, 4, 5):
                fail(
                    "a counter must be [totals, removed, context], [totals, removed, context, expiry] "
                    "or [totals, removed, context, expiry / null, base]"
                )
            expiry: tuple[int, int] | None = None
            expiry_stamp = 0
            if len(counter) == 4 or (len(counter) == 5 and counter[3] is not None):
                pair = as_array(counter[3], "a counter expiry")
                if len(pair) not in (2, 3):
                    fail("a counter expiry must be [epoch, expires_ms] or [epoch, expires_ms, stamp]")
                expiry = (as_count(pair[0], "an expiry epoch", MAX_STAMP), as_expiry(pair[1], "an expiry"))
                if len(pair) == 3:
                    expiry_stamp = as_stamp(pair[2], "an expiry stamp")
            totals = self.totals(counter[0], "counter totals")
            removed = self.totals(counter[1], "counter removed")
            context = read_rows(counter[2], "counter context", self.origin)
            for origin, (_, _, stamp) in totals.items():
                if context.get(origin, 0) < stamp:
                    fail("counter context is behind its totals")
                if context[origin] == stamp:
                    del context[origin]  # the totals say it already: keep only what they do not
            for origin, (inc, dec, stamp) in removed.items():
                have = totals.get(origin)
                if have is None or have[2] < stamp or have[0] < inc or have[1] < dec:
                    fail("counter removed baseline exceeds its totals")
            base = self.base(counter[4]) if len(counter) == 5 else None
            entry.counter = CounterState(totals, removed, context, expiry, base, expiry_stamp)
        elif not entry.stamp and entry.doc is None:
            fail("an entry needs a register write, a counter or a document")
        return key, entry

    def doc(self, item: object) -> DocState:
        """Check and convert a document (its Yrs bytes are checked when merged)."""
        item = as_array(item, "a document")
        if len(item) != 7:
            fail("a document must have 7 fields")
        if item[1] is None:  # a generation named by no write: a first one
            if type(item[0]) is not int or not 0 <= item[0] <= MAX_STAMP:
                fail("a document generation must be a stamp")
            gen: tuple[int, str] = (item[0], "")
        else:
            gen = (as_stamp(item[0], "a document generation"), self.origin(item[1]))
        update = item[2]
        if type(update) is not bytes or len(update) < 2:
            fail("a document update must be bytes")
        if len(update) > self.max_value:
            fail(f"document is {len(update)} bytes; the limit (max_value_bytes) is {self.max_value}")
        context = read_rows(item[3], "document context", self.origin)
        removed = read_rows(item[4], "document removed", self.origin)
        if not context:
            fail("a document needs a context")
        if not dominates(context, removed):
            fail("document removed baseline exceeds its context")
        schema: dict[str, str] = {}
        for row in as_array(item[5], "document schema"):
            row = as_array(row, "document schema")
            if (
                len(row) != 2
                or type(row[0]) is not str
                or not 0 < len(row[0]) <= MAX_ROOT_CHARS
                or row[1] not in ROOT_KINDS
                or row[0] in schema
            ):
                fail("document schema rows must be [root name, 'array' / 'map' / 'text'], names unique")
            schema[row[0]] = row[1]
        if len(schema) > MAX_ROOTS:
            fail(f"a document may declare at most {MAX_ROOTS} roots")
        clocks: dict[str, list[tuple[int, int]]] = {}
        for row in as_array(item[6], "document clocks"):
            row = as_array(row, "document clocks")
            if len(row) != 3:
                fail("document clock rows must be [origin, stamp, clock]")
            pairs = clocks.setdefault(self.origin(row[0]), [])
            pairs.append((as_stamp(row[1], "a clock stamp"), as_count(row[2], "a Yrs clock", MAX_YRS_CLOCK)))
        for pairs in clocks.values():
            if len(pairs) > MAX_CLOCK_PAIRS or pairs != sorted(set(pairs)):
                fail(f"document clocks must be sorted, unique and at most {MAX_CLOCK_PAIRS} per origin")
        return DocState(gen, update, context, removed, schema, {o: tuple(p) for o, p in clocks.items()})


def decode_delta(data: bytes, limits: Limits, *, max_bytes: int | None = None) -> Delta:
    """Decode and check a delta; raise :class:`DecodeError` on anything amiss."""
    cap = limits.max_message_bytes if max_bytes is None else max_bytes
    tree = load_bounded(data, max_bytes=cap, max_depth=limits.max_value_depth + 8)
    with collector_paused(len(data) // 16):  # about one entry per 16 bytes at most
        return _decode_delta_tree(tree, limits)


def _decode_delta_tree(tree: object, limits: Limits) -> Delta:
    tree = as_array(tree, "a delta")
    if len(tree) != 6:
        fail("a delta must have 6 fields")
    version, name, origins, vv_rows, register_block, entry_rows = tree
    if version != FORMAT or type(version) is not int:
        fail(f"unsupported format version {version!r} (this build reads {FORMAT})")
    if type(name) is not str:
        fail("the store name must be a string")
    origins = as_array(origins, "the origin table")
    for origin in origins:
        as_origin(origin)
    if len(set(origins)) != len(origins):
        fail("the origin table names an origin twice")
    reader = EntryReader(origins, limits)
    vv = read_rows(vv_rows, "the version vector", reader.origin)
    entries = reader.registers(register_block)
    top = reader.top
    for row in as_array(entry_rows, "the entries"):
        item = reader.entry(row)
        top = max(top, max_stamp(item[1]))
        entries.append(item)
    if len({key for key, _ in entries}) != len(entries):
        fail("a delta names a key twice")
    return Delta(name, vv, entries, top, owned=True)


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

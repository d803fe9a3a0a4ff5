#!/usr/bin/env python3
"""By-hand benchmark of document keys against register keys holding the same data as a whole value.

Run it by hand and paste the Markdown table it prints into the README. CI runs
it with ``--quick`` (tests/test_bench.py), which checks that it still runs and
that every measurement succeeds (the exit status is 1 if one failed), not its
figures. The machine is assumed shared and noisy, so every figure is set
against a baseline measured in the same process, in the same run, in the same
loop shape: a *document* key (``store.doc(key)``, one edit = one assignment or
insert outside a transaction = one Yrs update recorded in the store) against a
*register* key holding the same data as one value, changed by read-modify-write
(``get``, change one item or append one character, ``put`` the whole value
back). Five data shapes: a cart (map root ``items``) of 10, 100 and 1,000
items, each value a small int, and a text (text root ``body``) of 1,000 and
10,000 characters that grows one character per edit.

1. Local edits per second at replica A.
2. Bytes per edit that replicate: for each edit at A, the encoded delta a peer B
   (up to date before the edit) is sent, ``encode_delta(a.delta_since(b.vv))``,
   which B then decodes and applies.
3. Edits per second applied at a receiver: ``decode_delta`` + ``apply`` of those
   per-edit messages, in order, at a store holding the state from before them.
4. Catch-up of a stale peer that missed all N edits of one run: the delta it is
   sent, with the key's full state for reference.
5. The same for a peer that missed only the last few edits (``CLOCK_PAIRS - 1``:
   a document keeps the clock pairs of that many recent edits per origin, plus
   one per span of Yrs clock, to trim deltas with).

Timing rules (see ``bench/report.py``): each timing is the best of ``repeats``
runs on a fresh store (set up untimed), the variants of one comparison run
round-robin, the cyclic gc is disabled in every timed region, for all alike.

Usage::

    .venv/bin/python bench/documents.py              # best of 5, 100 to 500 edits per run
    .venv/bin/python bench/documents.py --quick      # a smoke run in seconds (CI): 50 edits, one run
    .venv/bin/python bench/documents.py --repeats 7 --edits 300
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from report import (  # before crdtkv: it makes crdtkv importable from a checkout without `pip install -e .`
    Variant,
    add_repeats_option,
    chosen_repeats,
    command_line,
    crdtkv_revision,
    exit_status,
    fmt_num,
    fmt_ratio,
    fmt_time,
    header,
    progress,
    race,
    version_of,
)

from crdtkv import KvStore
from crdtkv.core import DEFAULT_LIMITS, decode_delta, encode_delta
from crdtkv.core.document import CLOCK_BUCKET, CLOCK_BUCKETS, CLOCK_PAIRS

SCRIPT = os.path.abspath(__file__)
STORE = "bench-documents"

DEFAULT_REPEATS = 5
QUICK_REPEATS = 1
#: edits per run of every case in a --quick run
QUICK_EDITS = 50

DOC_KEY = "doc"
REG_KEY = "reg"
MAP_ROOT = "items"
TEXT_ROOT = "body"
#: the initial text repeats this sentence; appended characters cycle through APPEND
SENTENCE = "The quick brown fox jumps over the lazy dog. "
APPEND = "abcdefghijklmnopqrstuvwxyz "
#: rows 5: missed edits a document's delta can still be trimmed for (it keeps CLOCK_PAIRS clock pairs)
FEW_MISSED = CLOCK_PAIRS - 1

#: one edit: a cart item and its new quantity, or one character appended to the text
Op = tuple[str, int] | str


# -- the data shapes ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    num: str
    kind: str  # "cart" or "text"
    size: int
    #: edits per timed run and per wire pass
    edits: int

    @property
    def label(self) -> str:
        unit = "items" if self.kind == "cart" else "chars"
        return f"{self.kind}, {self.size:,} {unit}"

    def initial(self) -> dict[str, int] | str:
        if self.kind == "cart":
            return {sku(i): 1 + i % 9 for i in range(self.size)}
        return (SENTENCE * (self.size // len(SENTENCE) + 1))[: self.size]

    def ops(self, n: int) -> list[Op]:
        """``n`` edits: cart items spread over the whole cart (stride 37), or appended characters."""
        if self.kind == "cart":
            return [(sku((j * 37) % self.size), 10 + j % 90) for j in range(n)]
        return [APPEND[j % len(APPEND)] for j in range(n)]

    def expected(self, ops: Sequence[Op]) -> dict[str, int] | str:
        """The value after ``ops``, computed on plain Python data."""
        value = self.initial()
        if isinstance(value, dict):
            for op in ops:
                assert isinstance(op, tuple)
                value[op[0]] = op[1]
            return value
        return value + "".join(op for op in ops if isinstance(op, str))


CASES = (
    Case("a", "cart", 10, 500),
    Case("b", "cart", 100, 500),
    Case("c", "cart", 1_000, 100),
    Case("d", "text", 1_000, 500),
    Case("e", "text", 10_000, 500),
)


def sku(i: int) -> str:
    return f"sku-{i:04d}"


# -- the two ways to hold the data (each: open a replica with the initial data; edit it; read it) -------


def open_doc(case: Case, replica: str) -> tuple[KvStore, Any]:
    """A store whose key DOC_KEY is a document holding the initial data (one edit); and its root."""
    store = KvStore.open(STORE, replica_id=replica)
    doc = store.doc(DOC_KEY)
    initial = case.initial()
    if isinstance(initial, dict):
        root: Any = doc.map(MAP_ROOT)
        with doc.transaction():
            for k, v in initial.items():
                root[k] = v
    else:
        root = doc.text(TEXT_ROOT)
        root += initial
    return store, root


def open_reg(case: Case, replica: str) -> KvStore:
    """A store whose key REG_KEY is a register holding the initial data as one value."""
    store = KvStore.open(STORE, replica_id=replica)
    store.put(REG_KEY, case.initial())
    return store


def edit_doc_map(items: Any, ops: Sequence[Any]) -> None:
    for k, v in ops:
        items[k] = v


def edit_doc_text(text: Any, ops: Sequence[Any]) -> None:
    for c in ops:
        text += c


def edit_reg_map(store: KvStore, ops: Sequence[Any]) -> None:
    get, put = store.get, store.put
    for k, v in ops:
        value = get(REG_KEY)
        value[k] = v
        put(REG_KEY, value)


def edit_reg_text(store: KvStore, ops: Sequence[Any]) -> None:
    get, put = store.get, store.put
    for c in ops:
        put(REG_KEY, get(REG_KEY) + c)


def doc_editor(case: Case) -> Callable[[Any, Sequence[Any]], None]:
    return edit_doc_map if case.kind == "cart" else edit_doc_text


def reg_editor(case: Case) -> Callable[[KvStore, Sequence[Any]], None]:
    return edit_reg_map if case.kind == "cart" else edit_reg_text


def doc_value(store: KvStore) -> Any:
    """The document's content as the data a register holds (its one root)."""
    content = store.get(DOC_KEY)
    if not isinstance(content, dict) or len(content) != 1:
        return content
    return next(iter(content.values()))


# -- 1. local edits per second ---------------------------------------------------------------------------


def race_edits(case: Case, ops: list[Op], repeats: int) -> dict[str, Variant]:
    progress(f"1{case.num}. {case.label}: {len(ops):,} local edits per run, best of {repeats}")
    expected = case.expected(ops)
    edit_doc, edit_reg = doc_editor(case), reg_editor(case)

    def doc_setup() -> tuple[KvStore, Any]:
        return open_doc(case, "a")

    def doc_run(ctx: tuple[KvStore, Any]) -> None:
        edit_doc(ctx[1], ops)

    def doc_check(ctx: tuple[KvStore, Any], result: object) -> bool:
        return bool(doc_value(ctx[0]) == expected)

    def reg_check(store: KvStore, result: object) -> bool:
        return bool(store.get(REG_KEY) == expected)

    return race(
        [
            Variant("document", doc_run, doc_setup, doc_check),
            Variant("register", lambda s: edit_reg(s, ops), lambda: open_reg(case, "a"), reg_check),
        ],
        repeats,
    )


# -- 2 and 4. bytes on the wire ----------------------------------------------------------------------


@dataclass
class Wire:
    """One pass of per-edit replication from A to B, and what a stale peer would be sent."""

    #: encoded size of each per-edit delta
    sizes: list[int] = field(default_factory=list)
    #: the per-edit deltas themselves, replayed in section 3
    messages: list[bytes] = field(default_factory=list)
    #: A's snapshot before the edits (B's state before the first message)
    initial: bytes = b""
    #: the delta for a peer that holds the initial state and missed every edit
    stale: int = 0
    #: ``catch_up[k - 1]``: the delta for a peer that missed the last ``k`` edits only
    catch_up: list[int] = field(default_factory=list)
    #: A's whole state (this key only) before and after the edits
    start: int = 0
    full: int = 0
    #: the empty delta from A: the fixed part of every message (store name, version vector)
    empty: int = 0
    error: str | None = None

    @property
    def mean(self) -> float:
        return statistics.fmean(self.sizes) if self.sizes else math.nan


def wire_pass(
    store: KvStore,
    edit: Callable[[Op], None],
    read: Callable[[KvStore], Any],
    ops: Sequence[Op],
    expected: Any,
) -> Wire:
    """Edit at ``store`` (A) one op at a time; after each, send B the delta it lacks, as bytes."""
    wire = Wire()
    try:
        peer = KvStore.open(STORE, replica_id="b")
        peer.merge(store)
        wire.initial = store.snapshot()
        wire.start = len(encode_delta(store._state.full_state()))
        stale_vv = dict(peer._state.vv)
        seen: list[dict[str, int]] = []  # the peer's version vector before each edit
        for op in ops:
            seen.append(dict(peer._state.vv))
            edit(op)
            message = encode_delta(store._state.delta_since(peer._state.vv))
            wire.sizes.append(len(message))
            wire.messages.append(message)
            peer._state.apply(decode_delta(message, DEFAULT_LIMITS))
        wire.stale = len(encode_delta(store._state.delta_since(stale_vv)))
        wire.catch_up = [len(encode_delta(store._state.delta_since(vv))) for vv in reversed(seen)]
        wire.full = len(encode_delta(store._state.full_state()))
        wire.empty = len(encode_delta(store._state.delta_since(store._state.vv)))
        if not read(store) == read(peer) == expected:
            wire.error = "the peer's value differs from the sender's or the expected one"
    except Exception as exc:
        wire.error = f"{type(exc).__name__}: {exc}"
    return wire


def wires(case: Case, ops: list[Op]) -> tuple[Wire, Wire]:
    progress(f"2{case.num}/4{case.num}. {case.label}: {len(ops):,} edits, each replicated A -> B as bytes")
    expected = case.expected(ops)
    edit_doc, edit_reg = doc_editor(case), reg_editor(case)
    a_doc, root = open_doc(case, "a")
    a_reg = open_reg(case, "a")
    doc = wire_pass(a_doc, lambda op: edit_doc(root, (op,)), doc_value, ops, expected)
    reg = wire_pass(a_reg, lambda op: edit_reg(a_reg, (op,)), lambda s: s.get(REG_KEY), ops, expected)
    return doc, reg


# -- 3. edits per second applied at a receiver -------------------------------------------------------


def replay(ctx: tuple[KvStore, list[bytes], Any]) -> None:
    apply = ctx[0]._state.apply
    for message in ctx[1]:
        apply(decode_delta(message, DEFAULT_LIMITS))


def race_apply(case: Case, doc: Wire, reg: Wire, expected: Any, repeats: int) -> dict[str, Variant]:
    progress(f"3{case.num}. {case.label}: {len(doc.messages):,} per-edit deltas applied, best of {repeats}")
    root_of = (lambda d: d.map(MAP_ROOT)) if case.kind == "cart" else (lambda d: d.text(TEXT_ROOT))

    def receiver(wire: Wire, *, bind: bool) -> Callable[[], tuple[KvStore, list[bytes], Any]]:
        def setup() -> tuple[KvStore, list[bytes], Any]:
            store = KvStore.open(STORE, replica_id="r")
            store.merge(wire.initial)
            root = root_of(store.doc(DOC_KEY)) if bind else None
            return store, wire.messages, root

        return setup

    def doc_check(ctx: tuple[KvStore, list[bytes], Any], result: object) -> bool:
        root = ctx[2]
        bound = root is None or (root.to_py() if case.kind == "cart" else str(root)) == expected
        return bool(bound and doc_value(ctx[0]) == expected)

    def reg_check(ctx: tuple[KvStore, list[bytes], Any], result: object) -> bool:
        return bool(ctx[0].get(REG_KEY) == expected)

    variants = [
        Variant("document", replay, receiver(doc, bind=False), doc_check),
        Variant("document, open", replay, receiver(doc, bind=True), doc_check),
        Variant("register", replay, receiver(reg, bind=False), reg_check),
    ]
    for wire, v in ((doc, variants[0]), (doc, variants[1]), (reg, variants[2])):
        if wire.error is not None:
            v.error = f"no messages: {wire.error}"
    return race(variants, repeats)


# -- the table -------------------------------------------------------------------------------------------


@dataclass
class Line:
    num: str
    what: str
    case: str
    document: str
    register: str
    ratio: str
    better: str
    notes: str = ""


def render(lines: Sequence[Line]) -> str:
    """The Markdown table; a ``|`` inside a cell becomes ``/``."""
    head = (
        "#",
        "Measurement",
        "Case",
        "Document key",
        "Register key (whole value)",
        "Ratio doc/reg",
        "Better",
    )
    head = (*head, "Notes")
    out = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for ln in lines:
        cells = (ln.num, ln.what, ln.case, ln.document, ln.register, ln.ratio, ln.better, ln.notes)
        out.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    return "\n".join(out)


def fmt_bytes(x: float) -> str:
    if math.isnan(x):
        return "n/a"
    return f"{x:,.0f} B" if x >= 100 or x == int(x) else f"{x:.1f} B"


def better(doc: float, reg: float, *, higher: bool) -> str:
    if math.isnan(doc) or math.isnan(reg) or doc == reg:
        return "n/a" if math.isnan(doc) or math.isnan(reg) else "equal"
    return "document" if (doc > reg) == higher else "register"


def fmt_each(seconds: float) -> str:
    return f"{seconds * 1e6:.2f} us" if seconds < 1e-5 else fmt_time(seconds)


def per_edit(v: Variant, n: int) -> str:
    return f"{fmt_num(v.rate(n))} edits/s ({fmt_each(v.best / n)} each)" if v.ok else "ERROR"


def checked(v: Variant) -> Variant:
    """``v``, failed if some run's result was not the expected value."""
    if v.ok and not all(v.summaries):
        v.error = "the value after a run differs from the expected one"
    return v


def rate_line(
    num: str, what: str, case: Case, doc: Variant, reg: Variant, n: int, notes: str, extra: str = ""
) -> Line:
    doc, reg = checked(doc), checked(reg)
    errors = "; ".join(f"{v.name}: {v.error}" for v in (doc, reg) if v.error is not None)
    if errors:
        return Line(num, what, case.label, per_edit(doc, n), per_edit(reg, n), "n/a", "n/a", errors[:300])
    d, r = doc.rate(n), reg.rate(n)
    ratio = fmt_ratio(d / r)
    return Line(
        num,
        what,
        case.label,
        per_edit(doc, n),
        per_edit(reg, n),
        ratio,
        better(d, r, higher=True),
        notes + extra,
    )


def bytes_line(
    num: str, what: str, case: Case, doc: float, reg: float, docs: str, regs: str, notes: str
) -> Line:
    ratio = fmt_ratio(doc / reg) if reg and not math.isnan(doc + reg) else "n/a"
    return Line(num, what, case.label, docs, regs, ratio, better(doc, reg, higher=False), notes)


def wire_lines(case: Case, doc: Wire, reg: Wire) -> tuple[Line, Line, Line]:
    n = len(doc.sizes)
    few = min(FEW_MISSED, n)
    what2 = "bytes per edit sent to an up-to-date peer"
    what4 = f"catch-up after all {n:,} edits of the run were missed: delta bytes"
    what5 = f"catch-up after {few} missed edits: delta bytes"
    if doc.error is not None or reg.error is not None:
        errors = "; ".join(
            f"{name}: {w.error}" for name, w in (("document", doc), ("register", reg)) if w.error
        )[:300]
        bad = [
            Line(f"{row}{case.num}", what, case.label, "ERROR", "ERROR", "n/a", "n/a", errors)
            for row, what in (("2", what2), ("4", what4), ("5", what5))
        ]
        return bad[0], bad[1], bad[2]

    def spread(w: Wire) -> str:
        return f"{min(w.sizes):,}-{max(w.sizes):,}"

    def sizes_at(w: Wire, ks: Sequence[int]) -> str:
        return " / ".join(f"{w.catch_up[k - 1]:,}" for k in ks)

    def with_full(size: int, w: Wire) -> str:
        return f"{fmt_bytes(size)} (full state {fmt_bytes(w.full)})"

    per = bytes_line(
        f"2{case.num}",
        what2,
        case,
        doc.mean,
        reg.mean,
        fmt_bytes(doc.mean),
        fmt_bytes(reg.mean),
        f"mean of {n:,} per-edit deltas; range doc {spread(doc)} B, reg {spread(reg)} B; "
        f"each includes the {doc.empty} B of an empty delta (store name, version vector)",
    )
    whole = next((k for k, size in enumerate(doc.catch_up, 1) if size >= doc.full), None)
    cliff = (
        f"the document's catch-up delta is its full state from {whole} missed edits on"
        if whole is not None
        else f"the document's catch-up delta stays below its full state up to {n:,} missed edits"
    )
    stale = bytes_line(
        f"4{case.num}",
        what4,
        case,
        doc.stale,
        reg.stale,
        with_full(doc.stale, doc),
        with_full(reg.stale, reg),
        f"delta / full state: doc {doc.stale / doc.full:.2f}, reg {reg.stale / reg.full:.2f}; {cliff}",
    )
    doc_few, reg_few = doc.catch_up[few - 1], reg.catch_up[few - 1]
    ks = sorted({1, few, min(FEW_MISSED + 1, n)})
    recent = bytes_line(
        f"5{case.num}",
        what5,
        case,
        doc_few,
        reg_few,
        with_full(doc_few, doc),
        with_full(reg_few, reg),
        f"missed {' / '.join(map(str, ks))} edits: doc {sizes_at(doc, ks)} B, reg {sizes_at(reg, ks)} B",
    )
    return per, stale, recent


# -- main -------------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"a smoke run: {QUICK_REPEATS} repeat and {QUICK_EDITS} edits per run (unless --edits); its "
        "figures do not compare with a full run's (a document's per-edit cost depends on the edits per run)",
    )
    add_repeats_option(parser, DEFAULT_REPEATS, QUICK_REPEATS)
    parser.add_argument(
        "--edits",
        type=int,
        default=None,
        help="edits per run for every case (default: "
        + "; ".join(f"{c.label} {c.edits}" for c in CASES)
        + ")",
    )
    args = parser.parse_args(argv)
    repeats = chosen_repeats(args, DEFAULT_REPEATS, QUICK_REPEATS)
    if repeats < 1 or (args.edits is not None and args.edits < 1):
        parser.error("--repeats and --edits must be at least 1")

    revision = crdtkv_revision()  # the code was imported just now: record which
    command = command_line(SCRIPT, argv)
    started = time.perf_counter()

    edit_lines: list[Line] = []
    byte_lines: list[Line] = []
    apply_lines: list[Line] = []
    stale_lines: list[Line] = []
    recent_lines: list[Line] = []
    for case in CASES:
        n = args.edits or (min(QUICK_EDITS, case.edits) if args.quick else case.edits)
        ops = case.ops(n)
        expected = case.expected(ops)

        res = race_edits(case, ops, repeats)
        doc_wire, reg_wire = wires(case, ops)
        growth = (
            f"; full state of the key before / after the run: doc {doc_wire.start:,} / {doc_wire.full:,} B, "
            f"reg {reg_wire.start:,} / {reg_wire.full:,} B"
            if doc_wire.error is None and reg_wire.error is None
            else ""
        )
        edit_lines.append(
            rate_line(
                f"1{case.num}",
                "local edits/s at A",
                case,
                res["document"],
                res["register"],
                n,
                f"{n:,} edits per run, fresh store each run",
                growth,
            )
        )
        per, stale, recent = wire_lines(case, doc_wire, reg_wire)
        byte_lines.append(per)
        stale_lines.append(stale)
        recent_lines.append(recent)

        res = race_apply(case, doc_wire, reg_wire, expected, repeats)
        opened = checked(res["document, open"])
        apply_lines.append(
            rate_line(
                f"3{case.num}",
                "per-edit deltas applied/s at a receiver",
                case,
                res["document"],
                res["register"],
                n,
                f"{n:,} messages per run, decode + apply; ",
                f"with the document open at the receiver: {per_edit(opened, n)}"
                if opened.ok
                else f"document open: {opened.error}",
            )
        )
    elapsed = time.perf_counter() - started

    print(f"{header(SCRIPT, revision)}; pycrdt {version_of('pycrdt')}")
    print()
    print(
        "A document key (`store.doc(key)`; one edit = one assignment `items[k] = v` or one `text += c` "
        "outside a transaction = one Yrs update recorded in the store) against a register key holding "
        "the same data as one whole value, changed by read-modify-write (`v = store.get(key)`, change one "
        "item or append one character, `store.put(key, v)`). In-memory stores, one key each. Rows 1 and 3: "
        "ratio = document edits/s / register edits/s (higher favours the document); rows 2, 4 and 5: ratio "
        "= document bytes / register bytes (lower favours the document). Each timing is the best of "
        f"{repeats} runs on a fresh store set up untimed; per case the variants run round-robin; the cyclic "
        "gc is disabled in every timed region, for all variants alike. 'Better' is computed from the "
        "measured numbers."
    )
    print()
    print(render([*edit_lines, *byte_lines, *apply_lines, *stale_lines, *recent_lines]))
    print()
    notes = [
        "Carts: map root `items` with keys `sku-0000`... and small-int values; each edit sets one "
        "existing item (stride 37 through the cart) to a new value. Texts: text root `body`; each edit "
        "appends one character. The document's initial content is written in one transaction (one "
        "edit), the register's in one put; the edits then change the same data the same way in both.",
        "Rows 1: edits at replica A only (no replication); the time per edit is the run's mean. A "
        "document edit merges the Yrs update into the key's stored update and checks the result, so its "
        "cost grows with the document, history included: every edit adds to the Yrs update (see the "
        "state before / after the run in the Notes), so the mean depends on the edits per run. A "
        "register edit (get, change, put) encodes and decodes the whole value, so its cost grows with "
        "the value.",
        "Rows 2: after each edit at A, `encode_delta(a._state.delta_since(b._state.vv))` for a peer B "
        "that holds everything before that edit: the CBOR delta replication sends (before message and "
        "transport framing). B decodes and applies each one; B's value is checked against A's and the "
        "expected value at the end.",
        "Rows 3: the row-2 messages replayed in order at a fresh receiver that holds A's snapshot from "
        "before the edits: `decode_delta` + `apply` per message, no Document bound at the receiver (a "
        "relay); the Notes give the rate with `store.doc(key)` open at the receiver, which brings its "
        "bound pycrdt document up to date after every message. Every run's final value is checked.",
        "Rows 4 and 5: `encode_delta(a._state.delta_since(vv))` for a peer whose version vector `vv` is "
        "from before the run's edits (rows 4) or before its last few (rows 5); 'full state' is "
        "`encode_delta(a._state.full_state())`, A holding only that key, after the edits. The register's "
        "delta is always the latest whole value. The document's carries only the Yrs structs the peer "
        "lacks, found from the (stamp, Yrs clock) pairs the document keeps per origin: those of its "
        f"{CLOCK_PAIRS} latest edits (`CLOCK_PAIRS`) and the first in each of its last {CLOCK_BUCKETS} "
        f"spans of {CLOCK_BUCKET} clock units; past the latest pairs the peer gets up to one span more "
        "than it lacks, and a peer further behind than every pair gets the whole document. Rows 4 need "
        "every edit's struct (history included: overwritten map values stay in Yrs as deleted items), "
        "which can exceed the register's latest value.",
    ]
    for note in notes:
        print(f"- {note}")
    print()
    print(f"Command: `{command}`")
    print()
    print(f"Total wall time: {elapsed:.1f} s (pid {os.getpid()}).")
    return exit_status([*edit_lines, *byte_lines, *apply_lines, *stale_lines, *recent_lines])


if __name__ == "__main__":
    sys.exit(main())

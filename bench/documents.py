"""Document keys (``store.doc``) against register keys holding the same data as one whole value.

One document edit is one map assignment or one appended character (one Yrs
update); the register is changed by read-modify-write (``get``, change one
item, ``put`` the whole value). Shapes: carts (map root ``items``) of 10, 100
and 1,000 small-int items, and texts of 1,000 and 10,000 characters growing by
one character per edit. Public API only: bytes are those real Nodes send over
the memory transport (``harness.memory_node``). Ratios are document / register.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import anyio
from harness import memory_node, until_all
from report import Options, Row, Variant, case, fmt_bytes, fmt_num, fmt_ratio, progress, race

from crdtkv import KvStore
from transports.memory import MemoryNetwork

STORE = "bench-documents"
KEY = "value"
#: missed edits a document's catch-up delta is still trimmed for (it keeps clock pairs of its 8 latest)
FEW = 7

Op = tuple[str, int] | str


class Shape(NamedTuple):
    num: str
    kind: str
    size: int
    edits: int

    @property
    def label(self) -> str:
        return f"{self.kind}, {self.size:,} {'items' if self.kind == 'cart' else 'chars'}"

    def initial(self) -> dict[str, int] | str:
        if self.kind == "cart":
            return {f"sku-{i:04d}": 1 + i % 9 for i in range(self.size)}
        return ("The quick brown fox jumps over the lazy dog. " * (self.size // 45 + 1))[: self.size]

    def ops(self, n: int) -> list[Op]:
        if self.kind == "cart":  # items spread over the whole cart
            return [(f"sku-{j * 37 % self.size:04d}", 10 + j % 90) for j in range(n)]
        return ["abcdefghijklmnopqrstuvwxyz "[j % 27] for j in range(n)]

    def final(self, ops: list[Op]) -> Any:
        value = self.initial()
        if isinstance(value, dict):
            return value | dict(op for op in ops if isinstance(op, tuple))
        return value + "".join(op for op in ops if isinstance(op, str))


SHAPES = (
    Shape("a", "cart", 10, 500),
    Shape("b", "cart", 100, 500),
    Shape("c", "cart", 1_000, 100),
    Shape("d", "text", 1_000, 500),
    Shape("e", "text", 10_000, 500),
)


def read(store: KvStore) -> Any:
    """The data at KEY: a register's value, or a document's one root."""
    value = store.get(KEY)
    return next(iter(value.values())) if isinstance(value, dict) and len(value) == 1 else value


def opened(shape: Shape, document: bool, replica: str) -> tuple[KvStore, Callable[[Op], None]]:
    """A store holding the shape's data at KEY, and the function making one edit of it."""
    store = KvStore.open(STORE, replica_id=replica)
    initial = shape.initial()
    if not document:
        store.put(KEY, initial)

        def rewrite(op: Op) -> None:
            value = store.get(KEY)
            if isinstance(op, tuple):
                value[op[0]] = op[1]
            else:
                value += op
            store.put(KEY, value)

        return store, rewrite
    doc = store.doc(KEY)
    if isinstance(initial, dict):
        items = doc.map("items")
        with doc.transaction():
            for k, v in initial.items():
                items[k] = v

        def assign(op: Op) -> None:
            items[op[0]] = op[1]

        return store, assign
    text = doc.text("body")
    text += initial

    def append(op: Op) -> None:
        nonlocal text
        text += str(op)

    return store, append


async def wire(shape: Shape, document: bool, ops: list[Op]) -> tuple[list[int], int, int]:
    """Bytes of the Deltas a Node sent an up-to-date peer per edit; then to peers that missed FEW / all."""
    a, edit = opened(shape, document, "a")
    b = KvStore.open(STORE, replica_id="b")
    b.merge(a)
    stale = KvStore.from_snapshot(a.snapshot(), replica_id="c")
    recent = stale
    sizes = []
    network = MemoryNetwork()
    async with memory_node(a, network, "a", window=0) as (node, transport):
        async with memory_node(b, network, "b", peer="memory://a", window=0):
            await node.wait_for_peers(1)  # the handshake is over, and b lacks nothing
            link = transport.connections[-1]
            for i, op in enumerate(ops):
                if i == len(ops) - FEW:
                    recent = KvStore.from_snapshot(a.snapshot(), replica_id="d")
                mark = len(link.sent)
                edit(op)
                await until_all(b, {KEY: a.get(KEY)}, 60)
                sizes.append(link.bytes_sent(since=mark))
        caught = []
        for peer, name in ((recent, "d"), (stale, "c")):
            async with memory_node(peer, network, name, peer="memory://a", window=0):
                await until_all(peer, {KEY: a.get(KEY)}, 60)
            caught.append(transport.connections[-1].bytes_sent())
    if not read(a) == read(b) == read(stale) == shape.final(ops):
        raise RuntimeError("UNEXPECTED: a peer's value differs from the sender's")
    return sizes, caught[0], caught[1]


def merges(shape: Shape, document: bool, bound: bool, ops: list[Op]) -> Variant:
    """Seconds a receiver spends merging what a Node sends it after each edit (self-timed).

    A Node sends the whole entry of a changed key (rows 2), which is what the
    snapshot of the sender, holding only that key, carries: the receiver's
    ``merge(snapshot)`` is the strict decode and apply its Node does.
    """

    def setup() -> tuple[KvStore, KvStore, Callable[[Op], None]]:
        a, edit = opened(shape, document, "a")
        b = KvStore.from_snapshot(a.snapshot(), replica_id="b")
        if bound:
            b.doc(KEY)  # the receiver keeps its bound pycrdt document up to date
        return a, b, edit

    def run(ctx: tuple[KvStore, KvStore, Callable[[Op], None]]) -> float:
        a, b, edit = ctx
        spent = 0.0
        for op in ops:
            edit(op)
            sent = a.snapshot()
            start = time.perf_counter()
            b.merge(sent)
            spent += time.perf_counter() - start
        return spent

    name = "open document" if bound else "document" if document else "register"
    return Variant(name, run, setup, lambda ctx, _: read(ctx[1]) == shape.final(ops), self_timed=True)


def compare(num: str, what: str, doc: float, reg: float, fmt: Callable[[float], str], notes: str = "") -> Row:
    return Row(num, what, fmt(doc), "register key (whole value)", fmt(reg), fmt_ratio(doc / reg), notes=notes)


@case("documents", "document keys against register keys: local edits, bytes per edit, merges, catch-up")
def documents(o: Options) -> list[Row]:
    rows = []
    reps = o.reps(5)
    for shape in SHAPES:
        n = o.size(shape.edits, 50)
        ops = shape.ops(n)
        progress(f"{shape.label}: {n} edits, median of {reps}")

        def edits(document: bool, shape: Shape = shape, ops: list[Op] = ops) -> Variant:
            def check(ctx: Any, _: object) -> bool:
                return bool(read(ctx[0]) == shape.final(ops))

            setup = lambda: opened(shape, document, "a")  # noqa: E731
            return Variant(str(document), lambda c: [c[1](op) for op in ops], setup, check)

        local = race([edits(True), edits(False)], reps)
        merged = race([merges(shape, True, False, ops), merges(shape, False, False, ops),
                       merges(shape, True, True, ops)], reps)  # fmt: skip
        wires = [anyio.run(wire, shape, document, ops) for document in (True, False)]
        failed = [v for v in [*local.values(), *merged.values()] if v.error or False in v.summaries]
        if failed:
            errors = "; ".join(f"{v.name}: {v.error or 'UNEXPECTED value'}" for v in failed)
            rows.append(Row(f"{shape.num}", shape.label, "ERROR", notes=errors))
            continue

        def per_s(rate: float) -> str:
            return f"{fmt_num(rate)}/s ({1e6 / rate:.1f} us)"

        (doc_sizes, doc_few, doc_all), (reg_sizes, reg_few, reg_all) = wires
        label, doc, reg = shape.label, merged["document"], merged["register"]
        opened_there = f"with the document open there: {per_s(merged['open document'].rate(n))}"
        num = shape.num
        rows += [
            compare(f"1{num}", f"local edits, {label}", local["True"].rate(n), local["False"].rate(n), per_s),
            compare(f"2{num}", f"bytes per edit sent to an up-to-date peer, {label}",
                    statistics.fmean(doc_sizes), statistics.fmean(reg_sizes), fmt_bytes),
            compare(f"3{num}", f"edits/s merged at a receiver, {label}", doc.rate(n), reg.rate(n), per_s,
                    opened_there),
            compare(f"4{num}", f"catch-up bytes, {FEW} edits missed, {label}", doc_few, reg_few, fmt_bytes),
            compare(f"5{num}", f"catch-up bytes, all {n} edits missed, {label}", doc_all, reg_all, fmt_bytes),
        ]  # fmt: skip
    return sorted(rows, key=lambda r: r.num)

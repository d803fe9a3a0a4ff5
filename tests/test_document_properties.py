"""Property tests of document values: convergence under any delivery, and fuzzed update bytes.

Programs of random edits to maps, arrays and text in one document run at three
replicas (with puts, deletes and increments on the same key mixed in), while
deltas are captured and later delivered in a random order, with duplicates.
After a final exchange every replica must hold the same digest and the same
plain snapshot, and, where nothing removed them, every edit must be there.
"""

from __future__ import annotations

import random
from typing import Any

import cbor2
import pycrdt
import pytest
from hypothesis import event, given, note, settings
from hypothesis import strategies as st

from crdtkv import KvStore, Limits
from crdtkv.core.document import DocState
from crdtkv.core.entry import TOMBSTONE, Entry
from crdtkv.core.wire import Delta, encode_snapshot
from crdtkv.core.yrs import client_id
from crdtkv.document import Document
from crdtkv.errors import DecodeError, WrongType

from .helpers import FakeClock, assert_logs_cover_dots
from .sim import Faults, Simulation

#: one drawn operation: (kind, replica index, arguments...), as drawn below
Op = tuple[Any, ...]

KEY = "doc"
replica = st.integers(min_value=0, max_value=2)
position = st.integers(min_value=0, max_value=50)
map_set = st.tuples(st.just("map_set"), replica, st.sampled_from("abcd"), st.integers(-1000, 1000))
map_del = st.tuples(st.just("map_del"), replica, st.sampled_from("abcd"))
array_insert = st.tuples(st.just("array_insert"), replica, position, st.text(max_size=3))
array_del = st.tuples(st.just("array_del"), replica, position)
# pycrdt's Text positions count UTF-8 bytes, so positional text edits use ASCII
ascii_text = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789 ", min_size=1, max_size=4)
text_insert = st.tuples(st.just("text_insert"), replica, position, ascii_text)
text_del = st.tuples(st.just("text_del"), replica, position, st.integers(1, 3))
nested = st.tuples(st.just("nested"), replica, st.sampled_from("xy"), st.integers(0, 9))
# one root name declared under different kinds at different replicas
any_kind = st.tuples(st.just("any_kind"), replica, st.sampled_from(["map", "array", "text"]))
edits = st.one_of(map_set, map_del, array_insert, array_del, text_insert, text_del, nested, any_kind)
# other kinds of write to the same key, and unrelated keys
put = st.tuples(st.just("put"), replica, st.integers(0, 9))
delete = st.tuples(st.just("delete"), replica)
incr = st.tuples(st.just("incr"), replica, st.integers(-3, 3))
# delivery: capture a delta for a replica now, deliver captured ones later (any order, repeats)
capture = st.tuples(st.just("capture"), replica, replica)
deliver = st.tuples(st.just("deliver"), st.integers(0, 1000))
merge = st.tuples(st.just("merge"), replica, replica)
tick = st.tuples(st.just("tick"), st.floats(0, 3))


def open_replicas(clock: FakeClock) -> list[KvStore]:
    return [KvStore.open("t", replica_id=name, clock=clock) for name in ("london", "sydney", "tokyo")]


def document_of(store: KvStore) -> Document | None:
    try:
        return store.doc(KEY)
    except WrongType:
        bound = store._documents.get(KEY)
        return bound  # still bound from before the key became a register or counter


def apply_edit(store: KvStore, op: Op) -> None:
    doc = document_of(store)
    if doc is None:
        return
    kind = op[0]
    if kind == "map_set":
        doc.map("m")[op[2]] = op[3]
    elif kind == "map_del":
        items = doc.map("m")
        if op[2] in items:
            del items[op[2]]
    elif kind == "array_insert":
        array = doc.array("a")
        array.insert(op[2] % (len(array) + 1), op[3])
    elif kind == "array_del":
        array = doc.array("a")
        if len(array):
            del array[op[2] % len(array)]
    elif kind == "text_insert":
        text = doc.text("t")
        text.insert(op[2] % (len(text) + 1), op[3])
    elif kind == "text_del":
        text = doc.text("t")
        if len(text):
            start = op[2] % len(text)
            del text[start : min(len(text), start + op[3])]
    elif kind == "any_kind":
        try:
            if op[2] == "map":
                doc.map("x")["k"] = 1
            elif op[2] == "array":
                doc.array("x").append(1)
            else:
                doc.text("x").insert(0, "x")
        except WrongType:
            pass  # already declared here under another kind
    elif kind == "nested":
        with doc.transaction():
            items = doc.map("m")
            inner = items.get("inner")
            if not isinstance(inner, pycrdt.Map):
                items["inner"] = pycrdt.Map({op[2]: op[3]})
            else:
                inner[op[2]] = op[3]


def settle(stores: list[KvStore]) -> None:
    for _ in range(2):
        for store in stores:
            for other in stores:
                if other is not store:
                    store.merge(other)


def check_converged(stores: list[KvStore]) -> None:
    digests = {store.digest() for store in stores}
    assert len(digests) == 1
    values = [store.get(KEY) for store in stores]
    assert all(value == values[0] for value in values), values
    for store in stores:
        bound = store._documents.get(KEY)
        if bound is not None and isinstance(values[0], dict):
            assert bound.to_py() == {name: values[0].get(name, bound.to_py()[name]) for name in bound.roots}
        assert_logs_cover_dots(store)


@given(st.lists(st.one_of(edits, put, delete, incr, capture, deliver, merge, tick), max_size=40))
@settings(max_examples=3 * settings.default.max_examples)  # type: ignore[union-attr]
def test_any_delivery_order_with_duplicates_converges(program: list[Op]) -> None:
    clock = FakeClock()
    stores = open_replicas(clock)
    captured: list[tuple[int, bytes]] = []
    for op in program:
        kind = op[0]
        if kind == "put":
            stores[op[1]].put(KEY, op[2])
        elif kind == "delete":
            stores[op[1]].delete(KEY)
        elif kind == "incr":
            try:
                stores[op[1]].incr(KEY, op[2])
            except WrongType:
                pass  # a live register or document: refused, as documented
        elif kind == "capture":
            source, target = stores[op[1]], stores[op[2]]
            captured.append((op[2], encode_snapshot(source._state.delta_since(target._state.vv))))
        elif kind == "deliver":
            if captured:
                target, data = captured[op[1] % len(captured)]
                stores[target].merge(data)
        elif kind == "merge":
            if op[1] != op[2]:
                stores[op[1]].merge(stores[op[2]])
        elif kind == "tick":
            clock.advance(op[1])
        else:
            apply_edit(stores[op[1]], op)
    rnd = random.Random(len(program))
    rnd.shuffle(captured)
    for target, data in captured + captured[: len(captured) // 2]:  # type: ignore[assignment]  # late, out of order, repeated
        stores[target].merge(data)  # type: ignore[call-overload]
    settle(stores)
    note(repr([store.get(KEY) for store in stores]))
    check_converged(stores)
    event(f"the key ends as {type(stores[0].get(KEY)).__name__}")


additions = st.lists(
    st.one_of(
        st.tuples(st.just("map"), replica),
        st.tuples(st.just("array"), replica, position),
        st.tuples(st.just("text"), replica, position),
        merge,
    ),
    max_size=40,
)


@given(additions, st.randoms(use_true_random=False))
@settings(max_examples=2 * settings.default.max_examples)  # type: ignore[union-attr]
def test_no_concurrent_addition_is_lost(program: list[Op], rnd: random.Random) -> None:
    """Only additions: the final document holds every one, wherever and whenever it was made."""
    stores = open_replicas(FakeClock())
    added: dict[str, Any] = {"map": set(), "array": [], "text": []}
    for serial, op in enumerate(program):
        if op[0] == "merge":
            if op[1] != op[2]:
                stores[op[1]].merge(stores[op[2]])
            continue
        doc = stores[op[1]].doc(KEY)
        name = f"e{serial}"
        if op[0] == "map":
            doc.map("m")[name] = serial
            added["map"].add(name)
        elif op[0] == "array":
            array = doc.array("a")
            array.insert(op[2] % (len(array) + 1), name)
            added["array"].append(name)
        else:
            text = doc.text("t")
            text.insert(op[2] % (len(text) + 1), "x")
            added["text"].append("x")
    order = stores[:]
    rnd.shuffle(order)
    settle(order)
    check_converged(stores)
    value = stores[0].get(KEY) or {}
    assert set(value.get("m", {})) == added["map"]
    assert sorted(value.get("a", [])) == sorted(added["array"])
    assert len(value.get("t", "")) == len(added["text"])


# -- fuzzed update bytes -------------------------------------------------------------


def _valid_update() -> bytes:
    doc: pycrdt.Doc[Any] = pycrdt.Doc(client_id=client_id("mallory"))
    items = doc.get("m", type=pycrdt.Map)
    text = doc.get("t", type=pycrdt.Text)
    for i in range(12):
        items[f"k{i}"] = i
        text += "ab"
    del items["k3"]
    del text[2:6]
    return bytes(doc.get_update())


VALID_UPDATE = _valid_update()


def _mutations() -> st.SearchStrategy[bytes]:
    flips = st.lists(
        st.tuples(st.integers(0, len(VALID_UPDATE) - 1), st.integers(0, 255)), min_size=1, max_size=6
    ).map(lambda changes: _flip(VALID_UPDATE, changes))
    cuts = st.integers(2, len(VALID_UPDATE) - 1).map(lambda n: VALID_UPDATE[:n])
    inserts = st.tuples(st.integers(0, len(VALID_UPDATE)), st.binary(min_size=1, max_size=12)).map(
        lambda pair: VALID_UPDATE[: pair[0]] + pair[1] + VALID_UPDATE[pair[0] :]
    )
    return st.one_of(flips, cuts, inserts, st.binary(min_size=2, max_size=80))


def _flip(data: bytes, changes: list[tuple[int, int]]) -> bytes:
    buffer = bytearray(data)
    for index, value in changes:
        buffer[index] = value
    return bytes(buffer)


@given(_mutations(), st.booleans())
@settings(max_examples=3 * settings.default.max_examples)  # type: ignore[union-attr]
def test_fuzzed_update_bytes_never_crash_or_change_state(update: bytes, same_generation: bool) -> None:
    store = KvStore.open("t", replica_id="victim", clock=FakeClock())
    doc = store.doc(KEY)
    doc.map("m")["mine"] = 1
    doc.text("t").insert(0, "text")
    before_digest, before_value = store.digest(), store.get(KEY)
    state = store._state.entries[KEY].doc
    assert state is not None
    stamp = store._state.clock.tick()
    gen = state.gen if same_generation else (stamp, "mallory")
    remote = DocState(gen, update, {"mallory": stamp}, {}, {"m": "map", "t": "text"}, {})
    data = encode_snapshot(Delta("t", {"mallory": stamp}, [(KEY, Entry(0, "", TOMBSTONE, doc=remote))]))
    try:
        store.merge(data)
    except DecodeError:
        assert store.digest() == before_digest
        assert store.get(KEY) == before_value
        assert doc.to_py() == before_value
        return
    # some mutations still decode to a valid update: then the result must be a sound document
    # (compared as CBOR: a flipped byte can make a float NaN, which is not equal to itself)
    value = store.get(KEY)
    assert isinstance(value, dict)
    assert canonical(doc.to_py()) == canonical(value)
    copy = KvStore.from_snapshot(store.snapshot(), replica_id="copy")
    assert copy.digest() == store.digest() and canonical(copy.get(KEY)) == canonical(value)


def canonical(value: object) -> bytes:
    return cbor2.dumps(value, canonical=True)


# -- through the replication protocol --------------------------------------------------


@pytest.mark.parametrize(("seed", "topology"), [(1, "mesh"), (2, "mesh"), (3, "chain"), (4, "star")])
def test_document_edits_converge_through_a_faulty_network(seed: int, topology: str) -> None:
    """Sessions over links that drop, repeat and reorder messages, with a partition and clock skew."""
    rnd = random.Random(seed)
    sim = Simulation(
        4,
        seed,
        faults=Faults(drop=0.05, duplicate=0.05, reorder=0.1, delay=(0.001, 0.02)),
        skews=[rnd.uniform(-20, 20) for _ in range(4)],
        topology=topology,
    )
    added: set[str] = set()
    characters = 0

    def edit_some(count: int) -> None:
        nonlocal characters
        for serial in range(count):
            store = rnd.choice(sim.stores)
            doc = store.doc("cart")
            name = f"{store.replica_id}-{len(added)}-{serial}"
            if rnd.random() < 0.6:
                doc.map("items")[name] = serial
                added.add(name)
            else:
                text = doc.text("note")
                text.insert(rnd.randrange(len(text) + 1), "x")
                characters += 1
            if rnd.random() < 0.3:
                sim.run(rnd.uniform(0.001, 0.01))

    edit_some(150)
    sim.cut = {0, 1}
    edit_some(150)
    sim.run(0.3)
    sim.cut = set()
    sim.settle()
    values = [store.get("cart") for store in sim.stores]
    assert all(value == values[0] for value in values)
    assert set(values[0]["items"]) == added
    assert values[0]["note"] == "x" * characters
    for store in sim.stores:
        assert store.doc("cart").to_py() == values[0]


GRACE = 50.0
collect = st.tuples(st.just("collect"), st.lists(replica, max_size=3, unique=True))


@given(st.lists(st.one_of(edits, put, delete, incr, merge, collect), max_size=40))
@settings(max_examples=2 * settings.default.max_examples)  # type: ignore[union-attr]
def test_documents_and_counters_converge_across_garbage_collection(program: list[Op]) -> None:
    """Under the grace rule (every replica syncs within gc_grace), collecting never splits replicas.

    At each ``collect`` step all replicas sync, time passes beyond the grace
    period, and only some replicas collect: the rest keep their old copies
    while the key is deleted, re-created, incremented and edited again.
    """
    clock = FakeClock()
    limits = Limits(gc_grace=GRACE, max_clock_skew=10**6)
    stores = [KvStore.open("t", replica_id=name, clock=clock, limits=limits) for name in ("a", "b", "c")]
    expected_views: int | None = 0
    for op in program:
        kind = op[0]
        if kind == "collect":
            settle(stores)
            clock.advance(GRACE * 1.5)
            for index in op[1]:
                stores[index].collect_garbage()
        elif kind == "put":
            stores[op[1]].put(KEY, op[2])
        elif kind == "delete":
            stores[op[1]].delete(KEY)
            stores[op[1]].delete("views")
            expected_views = None  # a delete removes what it saw: the total is no longer simple
        elif kind == "incr":
            try:
                stores[op[1]].incr(KEY, op[2])
            except WrongType:
                pass
            stores[op[1]].incr("views", 1)
            if expected_views is not None:
                expected_views += 1
        elif kind == "merge":
            if op[1] != op[2]:
                stores[op[1]].merge(stores[op[2]])
        else:
            apply_edit(stores[op[1]], op)
    settle(stores)
    clock.advance(GRACE * 1.5)
    for store in stores:  # tombstones are kept for different times; once all have collected:
        store.collect_garbage()
    settle(stores)
    check_converged(stores)
    views = {store.get("views") for store in stores}
    assert len(views) == 1
    if expected_views is not None:
        assert views == {expected_views or None}
    for store in stores:
        assert store.get("views") is None or store.get("views") >= 0 or expected_views is None


# -- the wire form of a document --------------------------------------------------------

wire_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.text(max_size=6),
    st.binary(max_size=12),
    st.sampled_from(["map", "array", "text", b"\x00\x00", VALID_UPDATE]),
)
wire_tree = st.recursive(wire_leaf, lambda inner: st.lists(inner, max_size=4), max_leaves=20)


@given(st.lists(wire_tree, min_size=0, max_size=8), st.integers(0, 7), wire_tree)
@settings(max_examples=3 * settings.default.max_examples)  # type: ignore[union-attr]
def test_any_wire_form_of_a_document_decodes_or_raises_decode_error(
    fields: list[Any], position: int, replacement: Any
) -> None:
    """A document field of any shape from a peer: a DecodeError, or a document that merges cleanly."""
    from crdtkv.core.limits import DEFAULT_LIMITS
    from crdtkv.core.wire import decode_delta, encode_delta

    stamp = FakeClock().ns // 1_000_000 << 16
    valid = [stamp, 0, VALID_UPDATE, [[0, stamp]], [], [["m", "map"], ["t", "text"]], [[0, stamp, 3]]]
    document = (fields + valid[len(fields) :])[:7] if len(fields) < 7 else fields
    document = list(document)
    if document:
        document[position % len(document)] = replacement
    delta = cbor2.loads(encode_delta(Delta("t", {"mallory": stamp}, [])))
    delta[2] = ["mallory"]
    delta[5] = [["k", [], None, document]]
    data = cbor2.dumps(delta)
    store = KvStore.open("t", replica_id="victim", clock=FakeClock())
    store.doc(KEY).map("m")["mine"] = 1
    before = store.digest()
    try:
        decoded = decode_delta(data, DEFAULT_LIMITS)
        store._state.apply(decoded)
    except DecodeError:
        assert store.digest() == before
        return
    assert store.get(KEY) == {"m": {"mine": 1}}
    copy = KvStore.from_snapshot(store.snapshot(), replica_id="copy")
    assert copy.digest() == store.digest()

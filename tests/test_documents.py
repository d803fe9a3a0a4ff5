"""Document values: collaborative pycrdt documents as the value of a key."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pycrdt
import pytest

from crdtkv import Document, KvStore, Limits
from crdtkv.core.document import DocState
from crdtkv.core.entry import TOMBSTONE, Entry
from crdtkv.core.wire import Delta, encode_delta, encode_snapshot
from crdtkv.core.yrs import MAX_SAFE_INTEGER, client_id
from crdtkv.errors import (
    DecodeError,
    InvalidArgument,
    InvalidArgumentType,
    InvalidValue,
    InvalidValueType,
    StaleDocument,
    WrongType,
)

from .helpers import FakeClock, open_store

#: three PoPs of one store on one clock: london, sydney, tokyo
Pops = tuple[KvStore, KvStore, KvStore]


def sync(*stores: KvStore) -> None:
    for store in stores:
        for other in stores:
            if other is not store:
                store.merge(other)


@pytest.fixture
def pops() -> Pops:
    clock = FakeClock()
    return open_store("london", clock), open_store("sydney", clock), open_store("tokyo", clock)


def test_an_edit_is_readable_at_once_as_plain_data() -> None:
    store = open_store("london")
    cart = store.doc("cart:1")
    cart.map("items")["apple"] = 2
    cart.array("log").append("added apple")
    cart.text("note").insert(0, "deliver before noon")
    assert store.get("cart:1") == {
        "items": {"apple": 2},
        "log": ["added apple"],
        "note": "deliver before noon",
    }
    assert cart.to_py() == store.get("cart:1")
    record = store.get_with_metadata("cart:1")
    assert record is not None and record.kind == "document" and record.replica == "london"
    assert "cart:1" in store and list(store.keys()) == ["cart:1"]


def test_a_store_hands_out_one_document_per_key() -> None:
    store = open_store("london")
    assert store.doc("cart:1") is store.doc("cart:1")
    assert store.doc("cart:1") is not store.doc("cart:2")


def test_an_opened_document_that_was_never_edited_is_missing() -> None:
    store = open_store("london")
    store.doc("cart:1").map("items")
    assert store.get("cart:1") is None and "cart:1" not in store


def test_concurrent_edits_to_maps_arrays_and_text_all_survive(pops: Pops) -> None:
    london, sydney, tokyo = pops
    london.doc("c").map("items")["seed"] = 1
    sync(*pops)
    london.doc("c").map("items")["apple"] = 2
    sydney.doc("c").map("items")["pear"] = 5
    del tokyo.doc("c").map("items")["seed"]
    london.doc("c").array("log").append("london")
    sydney.doc("c").array("log").append("sydney")
    tokyo.doc("c").text("note").insert(0, "tokyo")
    london.doc("c").text("note").insert(0, "london ")
    sync(*pops)
    sync(*pops)
    expected = london.get("c")
    assert expected["items"] == {"apple": 2, "pear": 5}
    assert sorted(expected["log"]) == ["london", "sydney"]
    assert expected["note"] in ("london tokyo", "tokyolondon ")
    for store in pops:
        assert store.get("c") == expected
        assert store.doc("c").to_py() == expected
    assert len({store.digest() for store in pops}) == 1


def test_a_register_holding_the_whole_value_loses_concurrent_edits(
    pops: Pops,
) -> None:
    """The contrast: read-modify-write of a whole value keeps one PoP's edit."""
    london, sydney, _ = pops
    london.put("cart", {"seed": 1})
    london.doc("doc").map("items")["seed"] = 1
    sync(london, sydney)
    for store, item in ((london, "apple"), (sydney, "pear")):
        whole = store.get("cart")
        whole[item] = 1
        store.put("cart", whole)
        store.doc("doc").map("items")[item] = 1
    sync(london, sydney)
    assert len(london.get("cart")) == 2  # one of the two additions is lost
    assert london.get("doc") == {"items": {"apple": 1, "pear": 1, "seed": 1}}


def test_remote_changes_reach_a_bound_document_and_its_roots(pops: Pops) -> None:
    london, sydney, _ = pops
    items = sydney.doc("c").map("items")
    london.doc("c").map("items")["apple"] = 2
    sync(london, sydney)
    # the first remote edit starts the generation sydney's empty document did not have
    items = sydney.doc("c").map("items")
    assert items.to_py() == {"apple": 2}
    london.doc("c").map("items")["apple"] = 3
    sydney.merge(london)
    assert items["apple"] == 3  # same generation: the root object follows


def test_watchers_see_document_edits() -> None:
    store = open_store("london")
    changes: list[str] = []
    store._state.feed.subscribe(lambda keys, cause: changes.extend(keys))
    store.doc("c").map("items")["apple"] = 1
    assert changes == ["c"]


# -- kinds ------------------------------------------------------------------------


def test_doc_on_a_register_or_counter_is_a_wrong_type() -> None:
    store = open_store("london")
    store.put("r", 1)
    store.incr("n")
    for key in ("r", "n"):
        with pytest.raises(WrongType, match="doc needs a document"):
            store.doc(key)


def test_incr_on_a_document_is_a_wrong_type() -> None:
    store = open_store("london")
    store.doc("c").map("items")["apple"] = 1
    with pytest.raises(WrongType, match="holds a document"):
        store.incr("c")


def test_put_over_a_document_wins_and_resets_the_bound_document() -> None:
    store = open_store("london")
    cart = store.doc("c")
    cart.map("items")["apple"] = 1
    store.put("c", "plain")
    assert store.get("c") == "plain"
    assert cart.to_py() == {} and cart.generation is None


def test_an_edit_after_a_put_makes_the_key_a_document_again() -> None:
    store = open_store("london")
    cart = store.doc("c")
    cart.map("items")["apple"] = 1
    store.put("c", "plain")
    cart.map("items")["pear"] = 2  # a later write: the document wins again, as a new generation
    assert store.get("c") == {"items": {"pear": 2}}


def test_delete_then_recreate_starts_an_empty_document() -> None:
    store = open_store("london")
    cart = store.doc("c")
    cart.map("items")["apple"] = 1
    first = cart.generation
    assert store.delete("c") is True
    assert store.get("c") is None and cart.to_py() == {}
    cart.map("items")["pear"] = 2
    assert store.get("c") == {"items": {"pear": 2}}
    assert cart.generation is not None and cart.generation > first  # type: ignore[operator]


def test_an_edit_the_delete_did_not_see_keeps_the_document(pops: Pops) -> None:
    london, sydney, _ = pops
    london.doc("c").map("items")["apple"] = 1
    sync(london, sydney)
    london.delete("c")
    sydney.doc("c").map("items")["pear"] = 2  # concurrent with the delete
    sync(london, sydney)
    for store in (london, sydney):
        assert store.get("c") == {"items": {"apple": 1, "pear": 2}}
    assert london.digest() == sydney.digest()


def test_a_newer_generation_wins_whole(pops: Pops) -> None:
    london, sydney, _ = pops
    london.doc("c").map("items")["apple"] = 1
    sync(london, sydney)
    london.delete("c")
    london.doc("c").map("items")["fresh"] = 1  # a new generation
    sydney.doc("c").map("items")["old"] = 1  # an edit to the old one, made before it saw the delete
    sync(london, sydney)
    for store in (london, sydney):
        assert store.get("c") == {"items": {"fresh": 1}}
        assert store.doc("c").to_py() == {"items": {"fresh": 1}}
    assert london.digest() == sydney.digest()


def test_roots_declared_with_two_kinds_resolve_alike(pops: Pops) -> None:
    london, sydney, _ = pops
    london.doc("c").map("x")["k"] = 1
    sync(london, sydney)
    with pytest.raises(WrongType, match="is a map"):
        sydney.doc("c").array("x")


# -- values and limits --------------------------------------------------------------


@pytest.mark.parametrize(
    "write",
    [
        lambda doc: doc.map("m").__setitem__("n", 2**53 + 1),
        lambda doc: doc.map("m").update({"n": -(2**60)}),
        lambda doc: doc.array("a").append(2**63),
        lambda doc: doc.array("a").insert(0, [1, {"deep": 2**70}]),
        lambda doc: doc.array("a").extend([1, 2**54]),
        lambda doc: doc.map("m").__setitem__("nested", pycrdt.Map({"n": 2**64})),
        lambda doc: doc.text("t").insert(0, "x", {"size": 2**55}),
    ],
)
def test_integers_beyond_2_53_are_refused_before_they_reach_the_document(
    write: Callable[[Document], object],
) -> None:
    store = open_store("london")
    doc = store.doc("c")
    doc.map("m")["ok"] = MAX_SAFE_INTEGER
    before = store.digest()
    with pytest.raises(InvalidValue, match=r"outside \+-2\*\*53"):
        write(doc)
    assert store.digest() == before
    assert store.get("c") == {"m": {"ok": MAX_SAFE_INTEGER}}


def test_nested_roots_read_back_checked() -> None:
    store = open_store("london")
    doc = store.doc("c")
    doc.map("m")["inner"] = pycrdt.Map({"a": 1})
    inner = doc.map("m")["inner"]
    with pytest.raises(InvalidValue):
        inner["b"] = 2**60
    inner["b"] = 2.5
    assert store.get("c") == {"m": {"inner": {"a": 1, "b": 2.5}}}


def test_a_document_over_the_size_limit_is_refused_and_undone() -> None:
    store = KvStore.open(replica_id="london", limits=Limits(max_value_bytes=2048))
    doc = store.doc("c")
    doc.text("t").insert(0, "small")
    with pytest.raises(ExceptionGroup) as raised:
        doc.text("t").insert(0, "x" * 4096)
    assert raised.group_contains(InvalidValue, match="max_value_bytes")
    assert store.get("c") == {"t": "small"}
    assert doc.to_py() == {"t": "small"}  # the pycrdt document was reloaded


def test_an_edit_to_a_stale_root_raises_and_is_not_recorded() -> None:
    store = open_store("london")
    doc = store.doc("c")
    stale = doc.map("m")
    stale["a"] = 1
    store.delete("c")
    with pytest.raises(StaleDocument, match="fetch the root again"):
        stale["b"] = 2
    with pytest.raises(StaleDocument):
        del stale["a"]
    assert store.get("c") is None
    doc.map("m")["b"] = 2  # fetched again: recorded
    assert store.get("c") == {"m": {"b": 2}}


def test_a_closed_document_refuses_use_and_the_store_hands_out_a_new_one() -> None:
    store = open_store("london")
    doc = store.doc("c")
    root = doc.map("m")
    root["a"] = 1
    doc.close()
    with pytest.raises(StaleDocument):
        root["b"] = 2
    with pytest.raises(InvalidArgument, match="closed"):
        doc.map("m")
    again = store.doc("c")
    assert again is not doc and again.to_py() == {"m": {"a": 1}}


# -- snapshots, storage, catch-up ------------------------------------------------------


def test_snapshots_carry_documents() -> None:
    store = open_store("london")
    store.doc("c").map("items")["apple"] = 1
    store.doc("c").text("note").insert(0, "hi")
    copy = KvStore.from_snapshot(store.snapshot(), replica_id="copy")
    assert copy.get("c") == store.get("c") and copy.digest() == store.digest()
    copy.doc("c").map("items")["pear"] = 2
    store.merge(copy)
    assert store.get("c") == {"items": {"apple": 1, "pear": 2}, "note": "hi"}


def test_documents_survive_a_restart_of_a_durable_replica(tmp_path: Path) -> None:
    path = tmp_path / "london.db"
    with KvStore.open(path=path, replica_id="london", durability="sync") as store:
        store.doc("c").map("items")["apple"] = 1
        store.doc("c").array("log").append("one")
        digest = store.digest()
    with KvStore.open(path=path, replica_id="london") as store:
        assert store.get("c") == {"items": {"apple": 1}, "log": ["one"]}
        assert store.digest() == digest
        store.doc("c").array("log").append("two")  # keeps editing the same Yrs document
        assert store.get("c") == {"items": {"apple": 1}, "log": ["one", "two"]}


def test_catch_up_sends_only_the_structs_the_peer_lacks(pops: Pops) -> None:
    london, sydney, _ = pops
    items = london.doc("c").map("items")
    with london.doc("c").transaction():
        for i in range(500):
            items[f"sku-{i}"] = f"product number {i}"
    sync(london, sydney)
    items["sku-new"] = "one more"
    delta = london._state.delta_since(sydney._state.vv)
    trimmed = len(encode_delta(delta))
    whole = len(encode_delta(london._state.delta_since({})))
    assert trimmed * 20 < whole
    sydney._state.apply(delta)
    assert sydney.get("c") == london.get("c") and sydney.digest() == london.digest()


def test_a_peer_further_behind_than_the_clock_history_still_converges(
    pops: Pops,
) -> None:
    london, sydney, _ = pops
    items = london.doc("c").map("items")
    items["first"] = 0
    sync(london, sydney)
    for i in range(40):  # more edits than the per-origin clock pairs kept
        items[f"k{i}"] = i
    sydney.merge(london)
    assert sydney.get("c") == london.get("c") and sydney.digest() == london.digest()


def test_a_relay_forwards_document_edits(pops: Pops) -> None:
    london, sydney, tokyo = pops
    london.doc("c").map("items")["apple"] = 1
    sydney.merge(london)
    tokyo.merge(sydney)
    london.doc("c").map("items")["pear"] = 2
    sydney.merge(london)
    tokyo.merge(sydney)
    assert tokyo.get("c") == london.get("c") and tokyo.digest() == london.digest()


# -- remote input -------------------------------------------------------------------


def _delta_with_document(
    update: bytes, origin: str = "mallory", schema: dict[str, str] | None = None
) -> bytes:
    stamp = FakeClock().ns // 1_000_000 << 16
    doc = DocState((stamp, origin), update, {origin: stamp}, {}, schema or {"m": "map"}, {})
    return encode_snapshot(Delta("default", {origin: stamp}, [("c", Entry(0, "", TOMBSTONE, doc=doc))]))


def _update_of(edit: Callable[[pycrdt.Doc[Any]], None]) -> bytes:
    doc: pycrdt.Doc[Any] = pycrdt.Doc(client_id=client_id("mallory"))
    edit(doc)
    return bytes(doc.get_update())


@pytest.mark.parametrize(
    "update",
    [b"\x05\x99garbage", b"\x01\x02", b"\xff" * 40, b"\x01\x01\x05\x00"],
)
def test_malformed_update_bytes_are_a_decode_error_and_change_nothing(update: bytes) -> None:
    store = open_store("london")
    store.doc("c").map("m")["mine"] = 1
    before = store.digest()
    with pytest.raises(DecodeError):
        store.merge(_delta_with_document(update))
    assert store.digest() == before and store.get("c") == {"m": {"mine": 1}}


def test_a_remote_number_beyond_2_53_is_refused() -> None:
    def big(doc: pycrdt.Doc[Any]) -> None:
        # a raw pycrdt document has no check; pycrdt keeps an int no float holds as a 64-bit int
        doc.get("m", type=pycrdt.Map)["n"] = 2**53 + 1

    store = open_store("london")
    before = store.digest()
    with pytest.raises(DecodeError, match=r"outside \+-2\*\*53"):
        store.merge(_delta_with_document(_update_of(big)))
    assert store.digest() == before and store.get("c") is None


def test_a_valid_remote_document_merges() -> None:
    def edit(doc: pycrdt.Doc[Any]) -> None:
        doc.get("m", type=pycrdt.Map)["n"] = 7

    store = open_store("london")
    store.merge(_delta_with_document(_update_of(edit)))
    assert store.get("c") == {"m": {"n": 7}}
    assert store.doc("c").map("m")["n"] == 7


@pytest.mark.parametrize(
    ("value", "error"),
    [
        (float("nan"), InvalidValue),
        (float("inf"), InvalidValue),
        (b"bytes", InvalidValueType),
        ({1: "int key"}, InvalidValueType),
        ([object()], InvalidValueType),
    ],
)
def test_document_values_are_json_values(value: object, error: type[Exception]) -> None:
    store = open_store("london")
    doc = store.doc("c")
    with pytest.raises(error):
        doc.map("m")["v"] = value
    assert store.get("c") is None


def test_numbers_read_back_as_json_numbers() -> None:
    store = open_store("london")
    items = store.doc("c").map("m")
    items.update({"int": 3, "whole float": 4.0, "float": 0.5, "big float": 2.0**60, "edge": -(2**53)})
    assert store.get("c") == {
        "m": {"int": 3, "whole float": 4, "float": 0.5, "big float": 2.0**60, "edge": -(2**53)}
    }
    assert type(store.get("c")["m"]["big float"]) is float


def test_the_pycrdt_doc_interface_for_roots_works_on_a_document() -> None:
    store = open_store("london")
    doc = store.doc("c")
    doc["items"] = pycrdt.Map({"apple": 2})  # as on a pycrdt Doc
    note = doc.get("note", type=pycrdt.Text)
    note += "hi"
    doc["items"]["pear"] = 1
    assert "items" in doc and "other" not in doc and doc.keys() == ["items", "note"]
    assert store.get("c") == {"items": {"apple": 2, "pear": 1}, "note": "hi"}
    with pytest.raises(KeyError):
        doc["other"]
    with pytest.raises(InvalidValue):
        doc["big"] = pycrdt.Array([2**60])
    with pytest.raises(InvalidArgumentType):
        doc.get("x", type=dict)
    assert "big" not in doc and store.get("c") == {"items": {"apple": 2, "pear": 1}, "note": "hi"}


def test_released_documents_and_their_pycrdt_documents_are_freed() -> None:
    """pycrdt keeps an observed document alive from Rust; a Document lets go of what it retires."""
    import gc
    import weakref

    store = open_store("london")
    doc = store.doc("c")
    doc.map("m")["a"] = 1
    first = weakref.ref(doc.ydoc)
    store.delete("c")  # the Document reloads: the first pycrdt document is retired
    gc.collect()
    assert first() is None
    released = weakref.ref(doc)
    current = weakref.ref(doc.ydoc)
    doc.close()
    del doc
    gc.collect()
    assert released() is None and current() is None


def test_a_root_declared_with_two_kinds_concurrently_reads_as_one_kind_everywhere(
    pops: Pops,
) -> None:
    london, sydney, _ = pops
    london.doc("c").map("x")["k"] = 1
    sydney.doc("c").array("x").append("v")  # concurrently, another kind under the same name
    sync(london, sydney)
    sync(london, sydney)
    assert london.get("c") == sydney.get("c")
    assert isinstance(london.get("c")["x"], list)  # "array" < "map"
    for store in (london, sydney):
        assert store.doc("c").roots == {"x": "array"}
        assert store.doc("c").to_py() == store.get("c")
    assert london.digest() == sydney.digest()

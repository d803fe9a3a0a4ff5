"""Bounds on everything that can enter a delta, checked where it is written and where it is decoded."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from typing import Any

import anyio
import cbor2
import pytest
from pycrdt import Array, Map, Text

from crdtkv import KvStore, Limits
from crdtkv.core.entry import TOMBSTONE, CounterState, Entry
from crdtkv.core.limits import DEFAULT_LIMITS, ENTRY_OVERHEAD, FRAME_RESERVE, KIB, MIB
from crdtkv.core.messages import Deltas, decode_message, encode_message
from crdtkv.core.sync import SyncSettings
from crdtkv.core.wire import (
    CHECKSUM_BYTES,
    SNAPSHOT_MAGIC,
    Delta,
    decode_delta,
    encode_delta,
    encode_snapshot,
)
from crdtkv.errors import DecodeError, InvalidArgument, InvalidValue
from crdtkv.node import Node, NodeSettings
from crdtkv.storage.rows import decode_rows, encode_row

STAMP = 116_000_000_000_000_000
FAST = NodeSettings(
    sync=SyncSettings(keepalive_interval=0.2, keepalive_timeout=1.0, resync_after=0.3, handshake_timeout=2.0),
    reconnect_initial=0.02,
    reconnect_max=0.2,
)

# -- counters -------------------------------------------------------------------


@pytest.mark.parametrize(
    "by",
    [1 << 9_000_000, -(1 << 9_000_000), 1 << 128, -(1 << 128)],
    ids=["huge", "-huge", "2**128", "-2**128"],
)
def test_incr_by_a_huge_amount_is_refused_and_changes_nothing(by: int) -> None:
    store = KvStore.open("t", replica_id="a")
    store.incr("views", 5)
    before = store.digest()
    for key in ("views", "fresh"):
        with pytest.raises(InvalidValue, match="max_counter_bytes"):
            store.incr(key, by)
    assert store.digest() == before
    assert store.get("views") == 5 and store.get("fresh") is None


def test_incr_beyond_the_per_origin_total_is_refused() -> None:
    store = KvStore.open("t", replica_id="a", limits=Limits(max_counter_bytes=1))  # totals below 256
    assert store.incr("c", 200) == 200
    before = store.digest()
    with pytest.raises(InvalidValue, match="max_counter_bytes"):
        store.incr("c", 56)
    assert store.incr("c", 55) == 255
    assert store.incr("c", -255) == 0  # decrements have their own total
    with pytest.raises(InvalidValue):
        store.incr("c", -1)
    store.delete("c")  # a delete keeps the totals it removed: they still bound later increments
    with pytest.raises(InvalidValue):
        store.incr("c", 1)
    assert store.digest() != before and store.get("c") is None


def test_a_rate_limit_cost_beyond_the_counter_bound_is_refused() -> None:
    store = KvStore.open("t")
    with pytest.raises(InvalidValue):
        store.rate_limit("api", 1 << 200, 60.0, cost=1 << 150)


def test_counter_totals_beyond_the_bound_are_refused_from_remote() -> None:
    big = CounterState({"o": (1 << 128, 0, STAMP)})  # type: ignore[dict-item]
    data = encode_delta(Delta("t", {}, [("c", Entry(0, "", TOMBSTONE, counter=big))]))
    with pytest.raises(DecodeError, match="counter totals"):
        decode_delta(data, DEFAULT_LIMITS)
    ok = CounterState({"o": ((1 << 128) - 1, 0, STAMP)})  # type: ignore[dict-item]
    decode_delta(encode_delta(Delta("t", {}, [("c", Entry(0, "", TOMBSTONE, counter=ok))])), DEFAULT_LIMITS)


# -- the largest entry fits one message -------------------------------------------


def test_limits_refuse_entries_that_would_not_fit_one_message() -> None:
    with pytest.raises(InvalidArgument, match="max_message_bytes"):
        Limits(max_value_bytes=600 * KIB)
    with pytest.raises(InvalidArgument, match="max_message_bytes"):
        Limits(max_message_bytes=DEFAULT_LIMITS.max_entry_bytes + FRAME_RESERVE - 1)
    Limits(max_value_bytes=1000 * KIB, max_message_bytes=3 * MIB)
    assert DEFAULT_LIMITS.max_entry_bytes + FRAME_RESERVE <= DEFAULT_LIMITS.max_message_bytes


def test_limits_refuse_settings_of_the_wrong_type() -> None:
    with pytest.raises(InvalidArgument):
        Limits(max_key_bytes="1024")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument):
        Limits(gc_grace=float("nan"))
    with pytest.raises(InvalidArgument):
        Limits(max_counter_bytes=65)


def test_the_largest_entry_a_replica_can_write_fits_one_message_a_peer_accepts() -> None:
    value_bytes = 16 * KIB
    probe = Limits(
        max_key_bytes=256, max_value_bytes=value_bytes, max_metadata_bytes=512, max_counter_bytes=64
    )
    # the smallest message these limits allow: the bound is tight
    limits = Limits(
        max_key_bytes=256,
        max_value_bytes=value_bytes,
        max_metadata_bytes=512,
        max_counter_bytes=64,
        max_message_bytes=probe.max_entry_bytes + FRAME_RESERVE,
    )
    store = KvStore.open("t", replica_id="a" * 64, limits=limits)
    key = "\u00e9" * 128  # 256 UTF-8 bytes
    top = limits.max_counter_total - 1
    store.incr(key, top)
    store.incr(key, -top)
    store.delete(key)
    size = value_bytes
    while True:  # the largest text the document bound admits
        text = store.doc(key).text("t")  # a refused edit reloads the document: fetch the root again
        try:
            text += "x" * size
            break
        except (InvalidValue, ExceptionGroup):  # pycrdt wraps errors of its observers
            size -= 256
    assert size > value_bytes - 2 * KIB
    metadata = {"m": "y" * 400}
    store.put(key, b"v" * value_bytes, ttl=3600, metadata=metadata)
    entry = store._state.entries[key]
    assert entry.doc is not None and entry.counter is not None and entry.meta is not None
    payload = encode_delta(store._state.delta_since({}))
    message = encode_message(Deltas(1, 0, 0, True, payload))
    assert len(message) <= limits.max_message_bytes
    assert len(payload) - value_bytes - len(entry.doc.update) < ENTRY_OVERHEAD + 1024  # key + meta + rows
    peer = KvStore.open("t", replica_id="b", limits=limits)
    received = decode_message(message, limits)
    assert isinstance(received, Deltas)
    peer._state.apply(decode_delta(received.payload, limits))
    assert peer.digest() == store.digest()
    assert peer.get_with_metadata(key).metadata == metadata  # type: ignore[union-attr]


def test_remote_values_and_metadata_over_their_limits_are_refused() -> None:
    limits = Limits(max_value_bytes=1024, max_metadata_bytes=64)
    big_int = Entry(STAMP, "o", 1 << (8 * 1024 + 8))
    with pytest.raises(DecodeError, match="limit"):
        decode_delta(encode_delta(Delta("t", {}, [("k", big_int)])), limits)
    meta = cbor2.dumps({"m": "x" * 100}, canonical=True)
    from crdtkv.core.values import Packed

    big_meta = Entry(STAMP, "o", 1, None, Packed(meta))
    with pytest.raises(DecodeError, match="max_metadata_bytes"):
        decode_delta(encode_delta(Delta("t", {}, [("k", big_meta)])), limits)
    not_a_map = Entry(STAMP, "o", 1, None, Packed(cbor2.dumps([1], canonical=True)))
    with pytest.raises(DecodeError, match="metadata"):
        decode_delta(encode_delta(Delta("t", {}, [("k", not_a_map)])), limits)


@pytest.mark.anyio
async def test_a_refused_incr_leaves_the_link_usable_over_websockets() -> None:
    a = KvStore.open("t", replica_id="a")
    b = KvStore.open("t", replica_id="b")
    async with (
        Node(b, listen="ws://127.0.0.1:0", settings=FAST) as nb,
        Node(a, listen="ws://127.0.0.1:0", peers=[nb.url], settings=FAST) as na,  # type: ignore[list-item]
    ):
        await na.wait_for_peers(1)
        a.incr("views", 1)
        with pytest.raises(InvalidValue):
            a.incr("views", 1 << 9_000_000)
        a.put("after", "still replicating")
        with anyio.fail_after(30):  # a hang guard only
            while b.get("after") is None:
                await anyio.sleep(0.01)
        assert b.get("views") == 1
        b.put("back", 1)
        with anyio.fail_after(30):
            while a.get("back") is None:
                await anyio.sleep(0.01)


# -- surrogates -------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        {"\ud800": 1},
        {"a": {"b": [{"\udfff": None}]}},
        ["ok", ["\ud800"]],
        {"a": "\udc00"},
    ],
)
def test_values_and_metadata_with_surrogates_are_refused(value: Any) -> None:
    store = KvStore.open("t")
    before = store.digest()
    with pytest.raises(InvalidValue, match="UTF-8"):
        store.put("k", value)
    with pytest.raises(InvalidValue, match="UTF-8"):
        store.put("k", 1, metadata=value if isinstance(value, dict) else {"m": value})
    assert store.digest() == before


def test_document_values_with_surrogates_are_refused() -> None:
    store = KvStore.open("t")
    doc = store.doc("d")
    edits: list[Callable[[], object]] = [
        lambda: doc.get("m", type=Map).__setitem__("\ud800", 1),
        lambda: doc.get("m", type=Map).__setitem__("a", {"\ud800": 1}),
        lambda: doc.get("m", type=Map).update({"a": ["\udfff"]}),
        lambda: doc.get("a", type=Array).append("\ud800"),
        lambda: doc.get("t", type=Text).insert(0, "\ud800"),
        lambda: doc.get("t", type=Text).__iadd__("\ud800"),
        lambda: doc.get("\ud800", type=Text),
        lambda: doc.__setitem__("r", Map({"\ud800": 1})),
    ]
    for edit in edits:
        with pytest.raises(InvalidValue, match="UTF-8"):
            edit()
    assert store.get("d") in (None, {"a": [], "m": {}, "t": ""})


# -- stamps and expiries from outside ----------------------------------------------------


def snapshot_of(entries: list[tuple[str, Entry]], name: str = "t") -> bytes:
    """A snapshot with a valid checksum, whatever its entries hold."""
    return encode_snapshot(Delta(name, {}, entries))


@pytest.mark.parametrize(
    "entry",
    [
        Entry(STAMP, "o", "v", 10**400),
        Entry(STAMP, "o", "v", 1 << 48),
        Entry(0, "", TOMBSTONE, counter=CounterState({"o": (1, 0, STAMP)}, expiry=(0, 10**400))),  # type: ignore[dict-item]
        Entry(0, "", TOMBSTONE, counter=CounterState({"o": (1, 0, STAMP)}, expiry=(1 << 64, STAMP >> 16))),  # type: ignore[dict-item]
    ],
    ids=["register 10**400", "register 2**48", "counter 10**400", "counter epoch 2**64"],
)
def test_snapshots_with_expiries_out_of_range_are_refused(entry: Entry) -> None:
    data = snapshot_of([("k", entry)])
    body = data[len(SNAPSHOT_MAGIC) : -CHECKSUM_BYTES]
    assert hashlib.blake2b(body, digest_size=CHECKSUM_BYTES).digest() == data[-CHECKSUM_BYTES:]
    with pytest.raises(DecodeError):
        KvStore.from_snapshot(data)
    store = KvStore.open("t")
    with pytest.raises(DecodeError):
        store.merge(data)
    assert store.get_with_metadata("k") is None


def test_an_expiry_within_range_still_reads() -> None:
    now_ms = time.time_ns() // 1_000_000
    expires = now_ms + 3_600_000
    store = KvStore.from_snapshot(snapshot_of([("k", Entry(now_ms << 16, "o", "v", expires))]))
    record = store.get_with_metadata("k")
    assert record is not None and record.expires_at == expires / 1000


def test_storage_rows_with_expiries_out_of_range_are_refused() -> None:
    row = encode_row("k", Entry(STAMP, "o", "v", 10**400))
    with pytest.raises(DecodeError):
        decode_rows([("k", row)], DEFAULT_LIMITS)

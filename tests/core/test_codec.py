"""Strict decoding: damaged or hostile bytes give DecodeError and change nothing."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from crdtkv import KvStore, Limits
from crdtkv.core.limits import DEFAULT_LIMITS
from crdtkv.core.wire import (
    FORMAT,
    SNAPSHOT_MAGIC,
    decode_delta,
    decode_snapshot,
    encode_delta,
    encode_snapshot,
)
from crdtkv.errors import ClockSkewError, DecodeError, StoreMismatch, TooLarge

from ..helpers import FakeClock


def sample_store(name: str = "default") -> KvStore:
    store = KvStore.open(name, replica_id="src", clock=FakeClock())
    store.put("s", "text")
    store.put("b", b"\x00\x01")
    store.put("big", 2**100)
    store.put("f", 1.5)
    store.put("doc", {"items": [1, 2, {"x": None}], "ok": True})
    store.incr("n", 7)
    store.incr("n", -2)
    store.put("gone", 1)
    store.delete("gone")
    store.put("ttl", "v", ttl=30)
    store.put("ключ", "значение ✓")
    store.put("neg", -(2**70))
    return store


def target() -> KvStore:
    store = KvStore.open("default", replica_id="dst", clock=FakeClock())
    store.put("mine", "untouched")
    return store


def test_snapshot_round_trip_preserves_every_kind() -> None:
    src = sample_store()
    dst = KvStore.open("default", replica_id="dst", clock=FakeClock())
    dst.merge(src.snapshot())
    assert dst.digest() == src.digest()
    for key in ("s", "b", "big", "f", "doc", "n", "gone", "ttl", "ключ", "neg"):
        assert dst.get(key) == src.get(key)
    assert dst.get("n") == 5
    assert dst.get("gone") is None


def test_delta_round_trip_is_lossless() -> None:
    src = sample_store()
    delta = src._state.full_state()
    again = decode_delta(encode_delta(delta), DEFAULT_LIMITS)
    assert again.vv == delta.vv
    assert dict(again.entries) == dict(delta.entries)


def test_truncated_snapshots_are_refused_and_change_nothing() -> None:
    data = sample_store().snapshot()
    dst = target()
    before = dst.digest()
    for cut in (0, 1, 7, 8, 9, len(data) // 2, len(data) - 1):
        with pytest.raises(DecodeError):
            dst.merge(data[:cut])
    assert dst.digest() == before
    assert dst.get("mine") == "untouched"


def test_every_single_bit_flip_is_detected() -> None:
    data = bytearray(sample_store().snapshot())
    dst = target()
    before = dst.digest()
    for position in range(len(data)):
        flipped = bytearray(data)
        flipped[position] ^= 1 << (position % 8)
        with pytest.raises(DecodeError):
            dst.merge(bytes(flipped))
    assert dst.digest() == before


def test_snapshot_of_another_store_is_refused() -> None:
    dst = target()
    with pytest.raises(StoreMismatch, match="'other'"):
        dst.merge(sample_store("other").snapshot())
    with pytest.raises(StoreMismatch):
        dst.merge(sample_store("other"))


def test_snapshot_size_limit_is_checked_before_decoding() -> None:
    data = sample_store().snapshot()
    dst = KvStore.open(replica_id="dst", limits=Limits(max_snapshot_bytes=len(data) - 1))
    with pytest.raises(TooLarge, match="max_snapshot_bytes"):
        dst.merge(data)


def test_non_snapshot_bytes_are_refused() -> None:
    dst = target()
    with pytest.raises(DecodeError, match="not a crdtkv snapshot"):
        dst.merge(b"hello world, not a snapshot")
    with pytest.raises(DecodeError):
        dst.merge(cbor2.dumps([1, 2, 3]))


def test_stamps_from_a_clock_far_ahead_are_refused_whole() -> None:
    ahead = KvStore.open("default", replica_id="ahead", clock=FakeClock(+3600))
    ahead.put("x", 1)
    ahead.put("mine", "clobbered")
    dst = target()
    before = dst.digest()
    with pytest.raises(ClockSkewError):
        dst.merge(ahead.snapshot())
    assert dst.digest() == before


def delta_bytes(
    entries: list[Any], origins: list[str] | None = None, vv: list[Any] | None = None, **kw: Any
) -> bytes:
    registers = kw.get("registers", [[], [], [], []])
    fields = [
        kw.get("version", FORMAT),
        kw.get("name", "default"),
        origins or ["o"],
        vv or [],
        registers,
        entries,
    ]
    return cbor2.dumps(fields)


def columns(keys: list[Any], stamps: list[Any], refs: list[Any], values: list[Any]) -> bytes:
    return delta_bytes([], registers=[keys, stamps, refs, values])


STAMP = 116_000_000_000_000_000


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "malformed"),
        (b"\xff\xfe\xfd", "malformed"),
        (delta_bytes([]) + b"\x00", "trailing"),
        (b"\x81" * 100_000 + b"\x00", "malformed"),  # nested far beyond max_depth
        (b"\x9f\xff", "malformed"),  # indefinite-length array
        (cbor2.dumps(cbor2.CBORTag(1, 0)), "malformed"),  # a datetime tag
        (cbor2.dumps(cbor2.CBORTag(9999, 0)), "malformed"),  # an unknown tag
        (b"\xa2\x61a\x01\x61a\x02", "malformed"),  # duplicate map keys
        (cbor2.dumps({"a": 1}), "array"),
        (delta_bytes([], version=99), "format version"),
        (cbor2.dumps([FORMAT, "default", ["o"], [], []]), "6 fields"),
        (delta_bytes([], registers=[[], [], []]), "4 columns"),
        (columns(["k", "j"], [STAMP], [0], ["v"]), "differ in length"),
        (columns(["k"], [0], [0], ["v"]), "stamps"),
        (columns(["k"], [True], [0], ["v"]), "stamps"),
        (columns(["k"], [STAMP], [1], ["v"]), "origin reference"),
        (columns(["k"], [STAMP], [-1], ["v"]), "origin reference"),
        (columns([""], [STAMP], [0], ["v"]), "bad key"),
        (columns([b"k"], [STAMP], [0], ["v"]), "bad key"),
        (columns(["k" * 1025], [STAMP], [0], ["v"]), "bad key"),
        (columns(["k"], [STAMP], [0], [{"a": 1}]), "CBOR type"),
        (columns(["k"], [STAMP], [0], [[b"\xff"]]), "malformed"),
        (columns(["k", "k"], [STAMP, STAMP], [0, 0], ["v", "w"]), "twice"),
        (delta_bytes([["k", [STAMP, 0, "v"]]], registers=[["k"], [STAMP], [0], ["v"]]), "twice"),
        (delta_bytes([["k", [STAMP, 5, "v"]]]), "origin reference"),
        (delta_bytes([["k", [-1, 0, "v"]]]), "stamp"),
        (delta_bytes([["k", [2**64, 0, "v"]]]), "stamp"),
        (delta_bytes([["k", [STAMP, 0, {"a": 1}]]]), "CBOR type"),
        (delta_bytes([["k", [STAMP, 0, [b"\xff"]]]]), "malformed"),
        (delta_bytes([["k", [STAMP, 0, [cbor2.dumps({"b": 1, "a": 2})]]]]), "canonical"),
        (delta_bytes([["", [STAMP, 0, "v"]]]), "bad key"),
        (delta_bytes([[7, [STAMP, 0, "v"]]]), "bad key"),
        (delta_bytes([["k", [STAMP, 0, "v"]], ["k", [STAMP, 0, "v"]]]), "twice"),
        (delta_bytes([["k", [STAMP, 0, "v", 1]]]), "fields"),
        (delta_bytes([["k", []]]), "register write, a counter or a document"),
        (delta_bytes([["k", [], [[[0, 1, 0, STAMP]], [], []]]]), "context is behind"),
        (delta_bytes([["k", [], [[[0, 1, 0, STAMP]], [[0, 2, 0, STAMP]], [[0, STAMP]]]]]), "baseline"),
        (delta_bytes([["k", [], [[[0, -1, 0, STAMP]], [], [[0, STAMP]]]]]), "non-negative"),
        (delta_bytes([], origins=["o", "o"]), "twice"),
        (delta_bytes([], origins=[""]), "origins"),
        (delta_bytes([], vv=[[0]]), "version vector"),
    ],
)
def test_malformed_deltas_raise_decode_error(data: bytes, reason: str) -> None:
    with pytest.raises(DecodeError, match=reason):
        decode_delta(data, DEFAULT_LIMITS)


def test_messages_over_the_size_limit_are_not_decoded() -> None:
    # Limits refuse a max_message_bytes too small for their largest entry, so
    # the cap is given to the decoder directly
    with pytest.raises(TooLarge):
        decode_delta(delta_bytes([["k", [STAMP, 0, "x" * 100]]]), DEFAULT_LIMITS, max_bytes=64)


def test_values_over_the_size_limit_are_refused_from_remote() -> None:
    limits = Limits(max_value_bytes=10)
    with pytest.raises(DecodeError, match="limit"):
        decode_delta(delta_bytes([["k", [STAMP, 0, "x" * 11]]]), limits)


@given(st.binary(max_size=300))
def test_random_bytes_only_ever_raise_decode_error(data: bytes) -> None:
    try:
        decode_delta(data, DEFAULT_LIMITS)
    except DecodeError:
        pass
    try:
        decode_snapshot(SNAPSHOT_MAGIC + data, DEFAULT_LIMITS)
    except DecodeError:
        pass


def test_mutated_valid_deltas_only_ever_raise_decode_error() -> None:
    valid = encode_delta(sample_store()._state.full_state())
    rnd = random.Random(1234)
    for _ in range(3000):
        data = bytearray(valid)
        for _ in range(rnd.randint(1, 4)):
            data[rnd.randrange(len(data))] = rnd.randrange(256)
        try:
            decode_delta(bytes(data), DEFAULT_LIMITS)
        except DecodeError:
            pass


def test_snapshot_file_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "a.snapshot"
    path.write_bytes(encode_snapshot(sample_store()._state.full_state()))
    delta = decode_snapshot(path.read_bytes(), DEFAULT_LIMITS)
    assert delta.name == "default"

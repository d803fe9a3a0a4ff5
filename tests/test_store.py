"""KvStore's public API: semantics of each call and its errors."""

from __future__ import annotations

import math
from typing import Any

import pytest

from crdtkv import KvStore, Limits
from crdtkv.errors import (
    CrdtKvError,
    InvalidArgument,
    InvalidKey,
    InvalidKeyType,
    InvalidValue,
    InvalidValueType,
    StoreClosed,
    ValueTooLarge,
    WrongType,
)

from .helpers import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(clock: FakeClock) -> KvStore:
    return KvStore.open(replica_id="london", clock=clock)


def test_put_get_and_read_your_writes(store: KvStore) -> None:
    store.put("greeting", "hello")
    assert store.get("greeting") == "hello"
    store.put("greeting", "hi")
    assert store.get("greeting") == "hi"
    assert store.get("nope") is None
    assert store.get("nope", default=0) == 0


@pytest.mark.parametrize(
    "value",
    [
        "",
        "héllo ✓",
        b"\x00\xff",
        0,
        -1,
        2**200,
        -(2**200),
        1.5,
        math.inf,
        True,
        False,
        None,
        [],
        {},
        [1, "a", None, [2.5]],
        {"nested": {"list": [1, 2], "b": b"x"}},
    ],
)
def test_every_cbor_value_kind_round_trips(store: KvStore, value: object) -> None:
    store.put("k", value)
    assert store.get("k") == value
    assert type(store.get("k")) is type(value)


def test_none_is_a_value_distinct_from_missing(store: KvStore) -> None:
    store.put("k", None)
    assert store.get("k", default="missing") is None
    assert "k" in store
    assert list(store.keys()) == ["k"]


def test_containers_are_copied_in_and_out(store: KvStore) -> None:
    value = {"items": [1, 2]}
    store.put("cart", value)
    value["items"].append(3)
    assert store.get("cart") == {"items": [1, 2]}
    out = store.get("cart")
    out["items"].clear()
    assert store.get("cart") == {"items": [1, 2]}


def test_tuples_are_stored_as_lists(store: KvStore) -> None:
    store.put("t", (1, 2))
    assert store.get("t") == [1, 2]


def test_delete(store: KvStore) -> None:
    store.put("k", "v")
    assert store.delete("k") is True
    assert store.get("k") is None
    assert store.delete("k") is False
    assert store.delete("never") is False
    store.put("k", "again")
    assert store.get("k") == "again"


def test_incr(store: KvStore) -> None:
    assert store.incr("views") == 1
    assert store.incr("views", 10) == 11
    assert store.incr("views", -20) == -9
    assert store.incr("views", 0) == -9
    assert store.get("views") == -9
    assert store.incr("huge", 2**100) == 2**100
    assert store.incr("zero", 0) == 0
    assert store.get("zero") == 0


def test_incr_on_a_register_is_wrong_type(store: KvStore) -> None:
    store.put("name", "ana")
    with pytest.raises(WrongType, match="'name'"):
        store.incr("name")
    assert store.get("name") == "ana"


def test_put_over_a_counter_makes_it_a_register_and_delete_clears_either(store: KvStore) -> None:
    store.incr("k", 5)
    store.put("k", "text")
    assert store.get("k") == "text"
    store.delete("k")
    assert store.get("k") is None
    assert store.incr("k") == 1  # the old 5 do not come back
    store.delete("k")
    assert store.get("k") is None


def test_incr_after_a_register_expired_starts_a_counter(store: KvStore, clock: FakeClock) -> None:
    store.put("k", "short-lived", ttl=1)
    with pytest.raises(WrongType):
        store.incr("k")
    clock.advance(1.001)
    assert store.get("k") is None
    assert store.incr("k") == 1


def test_ttl_expiry_reads_missing(store: KvStore, clock: FakeClock) -> None:
    store.put("session", {"user": 1}, ttl=0.5)
    clock.advance(0.499)
    assert store.get("session") == {"user": 1}
    clock.advance(0.001)
    assert store.get("session") is None
    assert list(store.keys()) == []


@pytest.mark.parametrize("ttl", [0, -1, math.nan, math.inf])
def test_bad_ttls_are_refused(store: KvStore, ttl: float) -> None:
    with pytest.raises(InvalidArgument, match="ttl"):
        store.put("k", "v", ttl=ttl)
    with pytest.raises(InvalidArgument):
        store.put("k", "v", ttl="10")  # type: ignore[arg-type]


def test_keys_are_sorted_live_and_prefixed(store: KvStore) -> None:
    for key in ["session:2", "session:1", "user:1", "session:3"]:
        store.put(key, 1)
    store.incr("session:0")
    store.delete("session:3")
    assert list(store.keys("session:")) == ["session:0", "session:1", "session:2"]
    assert list(store.keys()) == ["session:0", "session:1", "session:2", "user:1"]
    assert list(store.keys("zzz")) == []


@pytest.mark.parametrize("key", [1, b"bytes", None, ("a",)])
def test_non_str_keys_are_type_errors(store: KvStore, key: Any) -> None:
    with pytest.raises(InvalidKeyType, match="keys must be str"):
        store.put(key, 1)
    with pytest.raises(TypeError):
        store.get(key)


def test_key_limits(store: KvStore) -> None:
    with pytest.raises(InvalidKey, match="empty"):
        store.put("", 1)
    store.put("k" * 1024, 1)
    with pytest.raises(InvalidKey, match="max_key_bytes"):
        store.put("k" * 1025, 1)
    with pytest.raises(InvalidKey, match="max_key_bytes"):
        store.put("é" * 513, 1)  # 1026 bytes in UTF-8
    with pytest.raises(InvalidKey, match="UTF-8"):
        store.put("\ud800", 1)


class Custom:
    pass


@pytest.mark.parametrize("value", [Custom(), {1, 2}, {1: "int key"}, [Custom()], {"a": {"b": object()}}, 1j])
def test_values_cbor_cannot_carry_are_type_errors(store: KvStore, value: Any) -> None:
    with pytest.raises(InvalidValueType):
        store.put("k", value)
    assert store.get("k") is None


def test_value_limits() -> None:
    small = KvStore.open(limits=Limits(max_value_bytes=16, max_value_depth=3))
    small.put("k", "x" * 16)
    with pytest.raises(ValueTooLarge, match="max_value_bytes"):
        small.put("k", "x" * 17)
    with pytest.raises(ValueTooLarge, match="max_value_bytes"):
        small.put("k", b"x" * 17)
    with pytest.raises(ValueTooLarge, match="max_value_bytes"):
        small.put("k", ["x" * 10, "y" * 10])
    with pytest.raises(InvalidValue, match="max_value_depth"):
        small.put("k", [[[[1]]]])
    with pytest.raises(InvalidValue, match="UTF-8"):
        small.put("k", "\udc80")
    assert small.get("k") == "x" * 16


def test_self_referencing_values_are_refused(store: KvStore) -> None:
    loop: list[object] = []
    loop.append(loop)
    with pytest.raises(InvalidValue, match="max_value_depth"):
        store.put("k", loop)


def test_incr_amount_must_be_an_int(store: KvStore) -> None:
    for by in (1.5, "1", True, None):
        with pytest.raises(InvalidArgument, match="int"):
            store.incr("n", by)  # type: ignore[arg-type]
    assert store.get("n") is None


def test_every_error_is_a_crdtkv_error(store: KvStore) -> None:
    store.put("r", 1)
    for call in (
        lambda: store.put(1, 1),  # type: ignore[arg-type]
        lambda: store.incr("r"),
        lambda: store.merge(b"junk"),
        lambda: store.merge(42),  # type: ignore[arg-type]
    ):
        with pytest.raises(CrdtKvError):
            call()


def test_close_and_context_manager() -> None:
    with KvStore.open() as store:
        store.put("k", "v")
    assert store.closed
    for call in (
        lambda: store.get("k"),
        lambda: store.put("k", 1),
        lambda: store.snapshot(),
        lambda: store.digest(),
        lambda: store.incr("n"),
    ):
        with pytest.raises(StoreClosed):
            call()
    store.close()  # closing twice is fine


def test_open_validates_its_arguments() -> None:
    with pytest.raises(InvalidArgument):
        KvStore.open("")
    with pytest.raises(InvalidArgument):
        KvStore.open(replica_id="has space")
    with pytest.raises(InvalidArgument):
        KvStore.open(replica_id="x~y")
    with pytest.raises(InvalidArgument):
        KvStore.open(replica_id="")
    with pytest.raises(InvalidArgument, match="durability"):
        KvStore.open(durability="eventually")
    assert KvStore.open().replica_id.startswith("r-")
    assert KvStore.open("other", replica_id="sydney").replica_id == "sydney"


def test_merge_returns_the_number_of_keys_changed(store: KvStore) -> None:
    other = KvStore.open(replica_id="sydney")
    other.put("a", 1)
    other.put("b", 2)
    assert store.merge(other) == 2
    assert store.merge(other) == 0
    assert store.merge(other.snapshot()) == 0


def test_digest_changes_with_state_and_matches_after_merge(store: KvStore) -> None:
    empty = store.digest()
    store.put("k", 1)
    assert store.digest() != empty
    other = KvStore.open(replica_id="sydney")
    other.merge(store)
    assert other.digest() == store.digest()

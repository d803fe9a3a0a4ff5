"""Version vectors (core/vv.py) and the named results of the entry module."""

from __future__ import annotations

import cbor2
import pytest

from crdtkv.core.entry import TOMBSTONE, CounterState, Entry, Kind, Totals, resolve
from crdtkv.core.vv import dominates, join_into, joined, read_map, read_rows, write_map, write_rows
from crdtkv.errors import DecodeError

STAMP = 116_000_000_000_000_000


def test_join_and_dominance() -> None:
    mine = {"a": 3, "b": 1}
    assert join_into(mine, {"b": 2, "c": 1}) is True
    assert mine == {"a": 3, "b": 2, "c": 1}
    assert join_into(mine, {"a": 1}) is False
    assert joined({"a": 1}, {"a": 2, "b": 1}) == {"a": 2, "b": 1}
    assert dominates(mine, {"a": 3, "c": 1}) and not dominates({"a": 3}, mine)


def test_rows_round_trip_in_order_or_sorted() -> None:
    vv = {"b": 2, "a": 1}
    assert write_rows(vv) == [["b", 2], ["a", 1]]
    assert write_rows(vv, {"a": 0, "b": 1}.__getitem__, sort=True) == [[0, 1], [1, 2]]
    assert read_rows(write_rows(vv), "a version vector") == vv


@pytest.mark.parametrize(
    ("rows", "reason"),
    [
        ({"a": 1}, "must be an array"),
        ([["a"]], r"rows must be \[origin, stamp\]"),
        ([["a", 1], ["a", 2]], "names an origin twice"),
        ([["", 1]], "origins must be"),
        ([["a", 0]], "stamp"),
        ([["a", 2**64]], "stamp"),
    ],
)
def test_rows_are_checked(rows: object, reason: str) -> None:
    with pytest.raises(DecodeError, match=reason):
        read_rows(rows, "a version vector")


def test_messages_accept_a_zero_stamp_as_they_always_did() -> None:
    assert read_rows([["a", 0]], "a version vector", zero=True) == {"a": 0}
    with pytest.raises(DecodeError):
        read_rows([["a", -1]], "a version vector", zero=True)


def test_the_stored_map_form() -> None:
    assert write_map({"a": 5}) == cbor2.dumps({"a": 5})
    assert read_map(write_map({"a": 5})) == {"a": 5}
    assert read_map(None) == {}
    for bad in ("text", cbor2.dumps({"a": 0}), cbor2.dumps([["a", 1]])):
        with pytest.raises(DecodeError, match="stored version vector"):
            read_map(bad)


def test_resolve_names_its_result_and_totals_name_their_stamp() -> None:
    counter = CounterState({"o": Totals(5, 1, STAMP)})
    entry = Entry(0, "", TOMBSTONE, counter=counter)
    kind = resolve(entry, 0)
    assert kind is Kind.COUNTER and int(kind) == 2
    assert counter.totals["o"].stamp == STAMP and counter.value() == 4
    assert resolve(Entry(STAMP, "o", "v"), 0) is Kind.REGISTER
    assert resolve(Entry(STAMP, "o", TOMBSTONE), 0) is Kind.MISSING

"""The join of per-key entries is a semilattice join: registers, counters, both.

Entries are generated so that one dot always means one operation (as in real
replicas): the value of a register write and the totals of a counter operation
are functions of their ``(stamp, origin)``.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from crdtkv.core.entry import (
    TOMBSTONE,
    CounterState,
    Entry,
    Kind,
    dots,
    join_into,
    resolve,
)

ORIGINS = ["a", "b", "c"]
NOW_MS = 50


def register_value(stamp: int, origin: str) -> object:
    return TOMBSTONE if (stamp + len(origin)) % 4 == 0 else f"{origin}{stamp}"


def totals_at(stamp: int, origin: str) -> tuple[int, int, int]:
    # cumulative and monotone in the stamp, as real totals are
    return (stamp * 3 + ord(origin[0]), stamp, stamp)


@st.composite
def entries(draw: st.DrawFn, with_counter: bool | None = None) -> Entry:
    stamp = draw(st.integers(0, 20))
    writer = draw(st.sampled_from(ORIGINS)) if stamp else ""
    value = register_value(stamp, writer) if stamp else TOMBSTONE
    expires = (None, 40, 60)[stamp % 3] if stamp and value is not TOMBSTONE else None
    entry = Entry(stamp, writer, value, expires)
    has_counter = draw(st.booleans()) if with_counter is None else with_counter
    if has_counter or not stamp:
        totals = {}
        removed = {}
        context = {}
        for origin in ORIGINS:
            if draw(st.booleans()):
                top = draw(st.integers(1, 20))
                totals[origin] = totals_at(top, origin)
                context[origin] = top + draw(st.integers(0, 3))
                if draw(st.booleans()):
                    removed[origin] = totals_at(draw(st.integers(1, top)), origin)
        if not totals and not stamp:
            totals["a"] = totals_at(1, "a")
            context["a"] = 1
        expiry = draw(st.sampled_from([None, (0, 40), (0, 60), (stamp, 45), (stamp, 70)]))
        entry.counter = CounterState(totals, removed, context, expiry)  # type: ignore[arg-type]
    return entry


def joined(*parts: Entry) -> Entry:
    result = Entry(0, "", TOMBSTONE)
    for part in parts:
        join_into(result, part)
    return result


any_entry = entries()


@given(any_entry, any_entry)
def test_join_is_commutative(x: Entry, y: Entry) -> None:
    assert joined(x, y) == joined(y, x)


@given(any_entry, any_entry, any_entry)
def test_join_is_associative(x: Entry, y: Entry, z: Entry) -> None:
    assert joined(joined(x, y), z) == joined(x, joined(y, z))


@given(any_entry)
def test_join_is_idempotent(x: Entry) -> None:
    once = joined(x)
    assert not join_into(once, x)  # reports no change
    assert once == joined(x, x)


@given(any_entry, any_entry)
def test_join_only_grows_dots(x: Entry, y: Entry) -> None:
    result = joined(x, y)
    for origin, stamp in dots(result).items():
        assert stamp >= dots(x).get(origin, 0) or stamp >= dots(y).get(origin, 0)
    if x.counter is not None:
        for origin, stamp in x.counter.full_context().items():
            assert result.counter is not None and result.counter.full_context()[origin] >= stamp


@given(any_entry, any_entry)
def test_reads_agree_whatever_the_join_order(x: Entry, y: Entry) -> None:
    a, b = joined(x, y), joined(y, x)
    assert resolve(a, NOW_MS) == resolve(b, NOW_MS)
    if a.counter is not None:
        assert a.counter.value() == b.counter.value()  # type: ignore[union-attr]


@given(entries(with_counter=False), entries(with_counter=False))
def test_register_join_keeps_the_larger_stamp_and_origin(x: Entry, y: Entry) -> None:
    result = joined(x, y)
    assert (result.stamp, result.writer) == max((x.stamp, x.writer), (y.stamp, y.writer))


@given(entries(with_counter=True), entries(with_counter=True))
def test_counter_join_takes_per_origin_latest_totals(x: Entry, y: Entry) -> None:
    result = joined(x, y)
    assert result.counter is not None and x.counter is not None and y.counter is not None
    for origin in ORIGINS:
        candidates = [c.totals[origin] for c in (x.counter, y.counter) if origin in c.totals]
        if candidates:
            assert result.counter.totals[origin] == max(candidates, key=lambda t: t[2])


def test_expired_register_reads_missing() -> None:
    entry = Entry(5, "a", "v", expires=NOW_MS)
    assert resolve(entry, NOW_MS - 1) != Kind.MISSING
    assert resolve(entry, NOW_MS) == Kind.MISSING

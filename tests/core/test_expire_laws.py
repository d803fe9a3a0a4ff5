"""The entry join stays a semilattice join with ``expire`` and ``persist`` in the mix.

Counter expiries here carry the stamp of the ``expire``/``persist`` that set them
(or that an ``incr(..., ttl=...)`` built on), and persisted ones (expiry 0), as
well as the old unstamped form; the join must still be commutative,
associative and idempotent, and reads must agree whatever the order.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from crdtkv.core.entry import (
    TOMBSTONE,
    CounterState,
    Entry,
    Totals,
    counter_expires,
    expiry_rank,
    join_into,
    resolve,
)
from crdtkv.core.limits import DEFAULT_LIMITS
from crdtkv.core.wire import Delta, decode_delta, encode_delta

from .test_entry_laws import ORIGINS, entries, joined

NOW_MS = 50


@st.composite
def expiring_entries(draw: st.DrawFn) -> Entry:
    """An entry whose counter (if any) has an expiry of any form: plain, stamped or persisted."""
    entry = draw(entries())
    counter = entry.counter
    if counter is not None and draw(st.booleans()):
        epoch = draw(st.sampled_from([0, entry.stamp]))
        stamp = draw(st.integers(0, 25))
        expires = draw(st.sampled_from([0, 30, 45, 70])) if stamp else draw(st.sampled_from([40, 60]))
        counter.expiry = (epoch, expires)
        counter.expiry_stamp = stamp
    return entry


any_entry = expiring_entries()


@given(any_entry, any_entry)
def test_join_is_commutative(x: Entry, y: Entry) -> None:
    assert joined(x, y) == joined(y, x)


@given(any_entry, any_entry, any_entry)
def test_join_is_associative(x: Entry, y: Entry, z: Entry) -> None:
    assert joined(joined(x, y), z) == joined(x, joined(y, z))


@given(any_entry)
def test_join_is_idempotent(x: Entry) -> None:
    once = joined(x)
    assert not join_into(once, x)
    assert once == joined(x, x)


@given(any_entry, any_entry)
def test_reads_and_expiry_agree_whatever_the_join_order(x: Entry, y: Entry) -> None:
    a, b = joined(x, y), joined(y, x)
    assert resolve(a, NOW_MS) == resolve(b, NOW_MS)
    assert counter_expires(a) == counter_expires(b)


@given(any_entry, any_entry)
def test_the_expiry_with_the_largest_rank_wins(x: Entry, y: Entry) -> None:
    result = joined(x, y)
    ranks = [expiry_rank(e.counter) for e in (x, y) if e.counter is not None and e.counter.expiry is not None]
    if ranks:
        assert result.counter is not None
        assert expiry_rank(result.counter) == max(r for r in ranks if r is not None)


@given(any_entry, any_entry)
def test_totals_never_depend_on_expiries(x: Entry, y: Entry) -> None:
    """The expiry is joined beside the totals: stripping it changes no count."""
    bare = [e.copy() for e in (x, y)]
    for e in bare:
        if e.counter is not None:
            e.counter.expiry, e.counter.expiry_stamp = None, 0
    result, plain = joined(x, y), joined(*bare)
    if result.counter is not None:
        assert plain.counter is not None
        assert result.counter.totals == plain.counter.totals
        assert result.counter.removed == plain.counter.removed
        assert result.counter.value() == plain.counter.value()


@given(st.lists(any_entry, min_size=1, max_size=4))
def test_every_expiry_form_survives_the_wire(items: list[Entry]) -> None:
    delta = Delta("t", {origin: 100 for origin in ORIGINS}, [(f"k{i}", e) for i, e in enumerate(items)])
    back = decode_delta(encode_delta(delta), DEFAULT_LIMITS)
    assert dict(back.entries) == dict(delta.entries)


def test_a_later_explicit_expiry_replaces_a_longer_one_and_a_persist_replaces_any() -> None:
    def counter(expiry: tuple[int, int], stamp: int) -> Entry:
        state = CounterState({"a": Totals(1, 0, 1)}, expiry=expiry, expiry_stamp=stamp)
        return Entry(0, "", TOMBSTONE, counter=state)

    long_ttl = counter((0, 90), 0)  # an incr with a ttl
    shortened = counter((0, 40), 5)  # an expire stamped 5 that saw it
    persisted = counter((0, 0), 7)  # a persist stamped 7
    lengthened = counter((0, 80), 7)  # an incr with a ttl after that persist
    assert counter_expires(joined(long_ttl, shortened)) == 40
    assert counter_expires(joined(long_ttl, shortened, persisted)) is None
    assert counter_expires(joined(persisted, lengthened)) == 80
    assert counter_expires(joined(lengthened, long_ttl, shortened)) == 80

"""The per-key CRDT: a last-writer-wins register beside a PN-counter and a document.

One :class:`Entry` holds everything replicated about a key:

* a **register**: the winning ``put``/``delete`` by ``(stamp, writer)``, where a
  delete is a tombstone write;
* optionally a **counter** (:class:`CounterState`): per-origin increment and
  decrement totals, plus a *removed* baseline recording which totals a delete
  (or an overwriting ``put``) observed. The counter's value is the totals minus
  the baseline, so an increment the delete did not see survives it, and two
  concurrent deletes, each joining the baseline by maximum, never subtract twice.
  Its expiry is a register of its own, ordered by :func:`expiry_rank`: an
  ``expire`` or ``persist`` replaces the expiry it saw (last writer wins), an
  ``incr(..., ttl=...)`` only lengthens it, and a reset voids it; the totals
  are never touched by any of them;
* optionally a **document** (:class:`~.document.DocState`): a Yrs document
  with its own observed-remove baseline. It is joined by the replica, which
  must check remote Yrs bytes before anything changes (:func:`join_into`
  leaves it alone).

All parts are join-semilattices, so the entry is one too: the join is
commutative, associative and idempotent. Reading (:func:`resolve`) is a pure
function of the joined state, so every replica reads the same thing.

Kinds rule for one key: the register is *live* when its winning write is not a
tombstone and has not expired; the counter is *live* when some origin has
increments the baseline does not cover; the document likewise with edits. If
more than one is live (a ``put``, an ``incr`` and a document edit that did not
see each other), the part whose latest live write has the largest
``(stamp, origin)`` wins. Tombstones never compete: a delete only hides what it
observed.

Pruning (see :mod:`.prune`): the totals of retired origins are folded into
the counter's :class:`Base`, so a retired origin leaves no row behind.

Change tracking: each entry knows its *dots*, the latest stamp per origin of the
operations reflected in it. For a plain register that is just its writer's
stamp; a key that ever held a counter or document also keeps the dots of
register writes made where it was known (``context``).
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import IntEnum
from typing import Final, NamedTuple

from .document import DocState, max_doc_stamp
from .vv import join_into as join_vv

#: The name standing for every retired origin: in a counter's live stamp when a
#: folded increment is the latest, and for the change log of retired origins'
#: keys (a replica id never starts with ``~``, so no replica writes as it).
RETIRED: Final = "~retired"

#: Marks a deleted register (and a key that has no register write at all).
TOMBSTONE: Final = type("Tombstone", (), {"__repr__": lambda self: "TOMBSTONE", "__slots__": ()})()


class Totals(NamedTuple):
    """One origin's counter totals on a key."""

    inc: int
    dec: int
    #: stamp of the origin's latest operation reflected in the totals
    stamp: int


class Base(NamedTuple):
    """The folded totals of a counter's retired origins (see :meth:`CounterState.fold`).

    Every origin whose last operation (anywhere) is below ``cut`` and that had a
    row here is folded: its totals minus what deletes removed of them. A
    register write (a delete or a put over the counter) stamped ``zero_at`` or
    later observed every folded operation, so it removes the whole base
    (:func:`settle_base`); earlier ones are already reflected in it.
    """

    #: one above the largest last stamp of the folded origins
    cut: int
    #: register writes from this stamp on remove the base
    zero_at: int
    #: net increments and decrements of the folded origins
    inc: int
    dec: int
    #: stamp of the latest folded increment a delete has not removed (0: none)
    top: int


class CounterState:
    """The counter half of an entry (a PN-counter with observed-remove)."""

    __slots__ = ("base", "context", "expiry", "expiry_stamp", "net", "removed", "totals")

    def __init__(
        self,
        totals: dict[str, Totals] | None = None,
        removed: dict[str, Totals] | None = None,
        context: dict[str, int] | None = None,
        expiry: tuple[int, int] | None = None,
        base: Base | None = None,
        expiry_stamp: int = 0,
    ) -> None:
        #: origin -> its cumulative totals on this key
        self.totals: dict[str, Totals] = totals if totals is not None else {}
        #: origin -> the totals a delete observed (never above ``totals``)
        self.removed: dict[str, Totals] = removed if removed is not None else {}
        #: origin -> stamp of its latest operation on this key where ``totals``
        #: does not already say it (a register write at a replica holding the
        #: counter); see :meth:`full_context`
        self.context: dict[str, int] = context if context is not None else {}
        #: ``(epoch, expires_ms)`` set by ``incr(..., ttl=...)``, ``expire`` or
        #: ``persist``: ``epoch`` is the register stamp (the last delete or reset)
        #: the expiry was set under, so an expiry never outlives a reset;
        #: ``expires_ms`` 0 means none (a ``persist``). See :func:`expiry_rank`.
        self.expiry = expiry
        #: stamp of the ``expire`` or ``persist`` the expiry was set by or built on
        #: (0: none): a later explicit expiry replaces an earlier one whole
        self.expiry_stamp = expiry_stamp
        #: the folded totals of retired origins, or None
        self.base = base
        #: the counter's value, kept up to date by every change of ``totals``,
        #: ``removed`` and ``base`` (an increment adds to it; joins, deletes and
        #: folds count it again), so reading it costs nothing
        self.net = 0 if totals is None and removed is None and base is None else self.tally()

    def full_context(self) -> dict[str, int]:
        """origin -> stamp of its latest operation of any kind on this key."""
        result = {origin: stamp for origin, (_, _, stamp) in self.totals.items()}
        join_vv(result, self.context)
        return result

    def value(self) -> int:
        """The counter's value: everything added minus everything removed."""
        return self.net

    def tally(self) -> int:
        """The value counted from the rows: what ``net`` holds after every change."""
        total = 0
        for inc, dec, _ in self.totals.values():
            total += inc - dec
        for inc, dec, _ in self.removed.values():
            total -= inc - dec
        base = self.base
        if base is not None:
            total += base.inc - base.dec
        return total

    def live_stamp(self) -> tuple[int, str] | None:
        """``(stamp, origin)`` of the latest increment not covered by a delete, or None."""
        best: tuple[int, str] | None = None
        removed = self.removed
        for origin, (_, _, stamp) in self.totals.items():
            gone = removed.get(origin)
            if (gone is None or stamp > gone[2]) and (best is None or (stamp, origin) > best):
                best = (stamp, origin)
        base = self.base
        if base is not None and base.top and (best is None or (base.top, RETIRED) > best):
            best = (base.top, RETIRED)
        return best

    def remove_observed(self) -> None:
        """Record a delete: everything currently counted is removed."""
        self.removed = dict(self.totals)
        self.net = self.tally()

    def fold(self, last: Mapping[str, int], zero_after: int) -> bool:
        """Fold the rows of retired origins into the base; True if any was folded.

        ``last`` maps each retired origin to its last stamp; ``zero_after``
        is the grace period in stamp units (``zero_at = cut + zero_after``).
        """
        gone = [origin for origin in (*self.totals, *self.context) if origin in last]
        if not gone:
            return False
        cut, _, inc, dec, top = self.base or (0, 0, 0, 0, 0)
        totals, removed, context = self.totals, self.removed, self.context
        for origin in gone:
            # (a replica may hold an operation above its vector's entry: the cut covers it too)
            cut = max(cut, last[origin] + 1, context.pop(origin, 0) + 1)
            row = totals.pop(origin, None)
            if row is None:
                continue
            cut = max(cut, row[2] + 1)
            seen = removed.pop(origin, None)
            gone_inc, gone_dec, gone_stamp = seen if seen is not None else (0, 0, 0)
            inc += row[0] - gone_inc
            dec += row[1] - gone_dec
            if row[2] > gone_stamp:
                top = max(top, row[2])
        self.base = Base(cut, cut + zero_after, inc, dec, top)
        self.net = self.tally()
        return True

    def copy(self) -> CounterState:
        """An independent copy (the rows' tuples are immutable and shared)."""
        return CounterState(
            dict(self.totals),
            dict(self.removed),
            dict(self.context),
            self.expiry,
            self.base,
            self.expiry_stamp,
        )

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, CounterState)
            and self.totals == other.totals
            and self.removed == other.removed
            and self.full_context() == other.full_context()
            and self.expiry == other.expiry
            and self.expiry_stamp == other.expiry_stamp
            and self.base == other.base
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (
            f"CounterState(totals={self.totals!r}, removed={self.removed!r}, "
            f"context={self.context!r}, expiry={self.expiry!r}, base={self.base!r}, "
            f"expiry_stamp={self.expiry_stamp!r})"
        )


class Entry:
    """Everything replicated about one key."""

    __slots__ = ("counter", "doc", "expires", "meta", "stamp", "value", "writer")

    def __init__(
        self,
        stamp: int,
        writer: str,
        value: object,
        expires: int | None = None,
        meta: object = None,
        counter: CounterState | None = None,
        doc: DocState | None = None,
    ) -> None:
        #: stamp of the winning register write (0: no register write yet)
        self.stamp = stamp
        #: origin of the winning register write ("" when ``stamp`` is 0)
        self.writer = writer
        #: the stored value (see :mod:`.values`) or :data:`TOMBSTONE`
        self.value = value
        #: expiry in epoch milliseconds, or None
        self.expires = expires
        #: metadata attached to the write (stored form), or None
        self.meta = meta
        self.counter = counter
        #: the document half (immutable, so copies share it), or None
        self.doc = doc

    def copy(self) -> Entry:
        return Entry(
            self.stamp,
            self.writer,
            self.value,
            self.expires,
            self.meta,
            self.counter.copy() if self.counter is not None else None,
            self.doc,
        )

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Entry)
            and self.stamp == other.stamp
            and self.writer == other.writer
            and self.value == other.value
            and self.expires == other.expires
            and self.meta == other.meta
            and self.counter == other.counter
            and self.doc == other.doc
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (
            f"Entry(stamp={self.stamp}, writer={self.writer!r}, value={self.value!r}, "
            f"expires={self.expires!r}, meta={self.meta!r}, counter={self.counter!r}, doc={self.doc!r})"
        )


# -- reading --------------------------------------------------------------------


class Kind(IntEnum):
    """What :func:`resolve` says a key holds."""

    MISSING = 0
    REGISTER = 1
    COUNTER = 2
    DOCUMENT = 3


# Module-level names: a global lookup is cheaper than ``Kind.X`` on the read path.
_MISSING: Final = Kind.MISSING
_REGISTER: Final = Kind.REGISTER
_COUNTER: Final = Kind.COUNTER
_DOCUMENT: Final = Kind.DOCUMENT


def register_live(entry: Entry, now_ms: int) -> bool:
    """True if the register half holds a value that has not expired."""
    if entry.value is TOMBSTONE:
        return False
    expires = entry.expires
    return expires is None or expires > now_ms


def counter_expires(entry: Entry) -> int | None:
    """When the counter half expires (ms), or None; an expiry set before the
    latest reset of the key does not apply, and a ``persist`` leaves none."""
    counter = entry.counter
    if counter is None or counter.expiry is None:
        return None
    epoch, expires = counter.expiry
    return expires if epoch == entry.stamp and expires else None


def expiry_rank(counter: CounterState) -> tuple[int, int, int] | None:
    """The order in which counter expiries replace each other: ``(epoch, expiry_stamp, expires_ms)``.

    The largest wins, so the join is a maximum. A reset (a later epoch)
    voids every older expiry; an ``expire`` or ``persist`` stamped later
    replaces whatever it saw, shorter or longer (last writer wins); among
    expiries set on top of the same explicit one (``incr(..., ttl=...)``),
    the longest wins, and any expiry beats a ``persist`` (0) it observed.
    """
    expiry = counter.expiry
    return None if expiry is None else (expiry[0], counter.expiry_stamp, expiry[1])


def resolve(entry: Entry, now_ms: int) -> Kind:
    """Which part of the entry a read sees: a :class:`Kind`.

    The latest live write decides: the register value, the counter's latest
    increment, or the document's latest edit, compared by ``(stamp, origin)``.
    If the winner has expired, the key reads as missing (the older ones stay hidden).
    """
    counter = entry.counter
    doc = entry.doc
    if counter is None and doc is None:
        return _REGISTER if register_live(entry, now_ms) else _MISSING
    live = counter.live_stamp() if counter is not None else None
    kind = _COUNTER
    if doc is not None:
        edited = doc.live_stamp()
        if edited is not None and (live is None or edited > live):
            live, kind = edited, _DOCUMENT
    has_value = entry.value is not TOMBSTONE and entry.stamp > 0
    if live is None or (has_value and (entry.stamp, entry.writer) > live):
        return _REGISTER if register_live(entry, now_ms) else _MISSING
    if kind is _DOCUMENT:
        return _DOCUMENT
    assert counter is not None  # (the live write is the counter's)
    expiry = counter.expiry  # (counter_expires inlined: a rate limiter resolves on every decision)
    if expiry is not None and expiry[1] and expiry[0] == entry.stamp and expiry[1] <= now_ms:
        return _MISSING
    return _COUNTER


# -- dots -----------------------------------------------------------------------


def dots(entry: Entry) -> dict[str, int]:
    """Latest stamp per origin of the operations this entry reflects.

    That is the counter's context (operations at replicas that held a counter
    for the key, including their deletes) plus the winning register write. A
    register write that lost to another and never touched a counter is
    dominated by the winner, so it needs no dot.
    """
    counter = entry.counter
    stamp = entry.stamp
    doc = entry.doc
    if counter is None and doc is None:
        return {entry.writer: stamp} if stamp else {}
    result = counter.full_context() if counter is not None else {}
    if doc is not None:
        join_vv(result, doc.context)
    if stamp and result.get(entry.writer, 0) < stamp:
        result[entry.writer] = stamp
    return result


def max_stamp(entry: Entry) -> int:
    """The largest stamp anywhere in the entry (for clock checks)."""
    counter = entry.counter
    top = entry.stamp
    if counter is not None:
        # the largest of full_context()'s stamps, without building it
        for row in counter.totals.values():
            top = max(top, row[2])
        for stamp in counter.context.values():
            top = max(top, stamp)
        base = counter.base
        if base is not None and base.top > top:
            top = base.top
        top = max(top, counter.expiry_stamp)
    if entry.doc is not None:
        top = max(top, max_doc_stamp(entry.doc))
    return top


# -- joining --------------------------------------------------------------------


def _join_totals(mine: dict[str, Totals], theirs: dict[str, Totals]) -> bool:
    """Per origin, keep the totals of the later operation (totals only grow)."""
    changed = False
    for origin, item in theirs.items():
        have = mine.get(origin)
        if have is None or item[2] > have[2]:
            mine[origin] = item
            changed = True
    return changed


def join_into(local: Entry, remote: Entry) -> bool:
    """Join the register and counter of ``remote`` into ``local``; return True if ``local`` changed.

    ``remote`` is not modified and no mutable part of it is shared afterwards.
    The document part is joined by the caller (:func:`~.document.join_docs`).
    """
    changed = False
    if (remote.stamp, remote.writer) > (local.stamp, local.writer):
        local.stamp = remote.stamp
        local.writer = remote.writer
        local.value = remote.value
        local.expires = remote.expires
        local.meta = remote.meta
        changed = True
    rc = remote.counter
    if rc is None:
        return changed
    lc = local.counter
    if lc is None:
        lc = local.counter = CounterState()
        changed = True
    totals, removed, context = rc.totals, rc.removed, rc.context
    if lc.base is not None or rc.base is not None:
        totals, removed, context, moved = _join_bases(lc, rc)
        changed = moved or changed
    changed = _join_totals(lc.totals, totals) or changed
    changed = _join_totals(lc.removed, removed) or changed
    rank = expiry_rank(rc)
    if rank is not None:
        have = expiry_rank(lc)
        if have is None or rank > have:
            lc.expiry = rc.expiry
            lc.expiry_stamp = rc.expiry_stamp
            changed = True
    changed = join_vv(lc.context, context) or changed
    changed = settle_base(local) or changed
    if changed:
        lc.net = lc.tally()
    return changed


def _join_bases(
    lc: CounterState, rc: CounterState
) -> tuple[dict[str, Totals], dict[str, Totals], dict[str, int], bool]:
    """Join the bases; return the remote rows still to join, and whether ``lc`` changed.

    The base with the larger cut wins. The other side's rows it folded are
    dropped: a row below the cut of an origin the winning side has no row of
    at all (a replica following the grace rule held every operation below the
    cut when it folded, so an origin missing there was folded, not unseen).
    """
    lcut = lc.base.cut if lc.base is not None else 0
    rcut = rc.base.cut if rc.base is not None else 0
    if rcut > lcut:
        theirs = rc.full_context()
        for origin in [o for o, s in lc.full_context().items() if s < rcut and o not in theirs]:
            lc.totals.pop(origin, None)
            lc.removed.pop(origin, None)
            lc.context.pop(origin, None)
        lc.base = rc.base
        return rc.totals, rc.removed, rc.context, True
    if lcut > rcut:
        mine = lc.full_context()
        keep = {o for o, s in rc.full_context().items() if s >= lcut or o in mine}
        return (
            {o: row for o, row in rc.totals.items() if o in keep},
            {o: row for o, row in rc.removed.items() if o in keep},
            {o: s for o, s in rc.context.items() if o in keep},
            False,
        )
    if rc.base is not None and lc.base is not None and rc.base > lc.base:
        lc.base = rc.base
        return rc.totals, rc.removed, rc.context, True
    return rc.totals, rc.removed, rc.context, False


def settle_base(entry: Entry) -> bool:
    """Clear the counter's base if a register write stamped at or after its ``zero_at`` removed it.

    Return True if it did.
    """
    counter = entry.counter
    if counter is None:
        return False
    base = counter.base
    if base is not None and entry.stamp >= base.zero_at and (base.inc or base.dec or base.top):
        counter.base = Base(base.cut, base.zero_at, 0, 0, 0)
        counter.net = counter.tally()
        return True
    return False


# -- garbage collection -----------------------------------------------------------


def collectable(entry: Entry, horizon: int, now_ms: int) -> bool:
    """True if the entry reads as missing and every operation in it is older than ``horizon``.

    Such an entry can be dropped: nothing live depends on it, and every replica
    that follows the grace rule has long seen it.
    """
    if max_stamp(entry) >= horizon:
        return False
    expires = entry.expires
    if entry.value is not TOMBSTONE and (expires is None or expires > (horizon >> 16)):
        return False  # a live value, or one that expired within the grace period
    if entry.doc is not None and entry.doc.live_stamp() is not None:
        return False
    counter = entry.counter
    if counter is None or counter.live_stamp() is None:
        return True
    expires = counter_expires(entry)
    return expires is not None and expires <= (horizon >> 16)  # expired before the grace period

"""Connects a replica's state to a storage backend: changes are staged cheaply and encoded at commit.

Every change appends items to the journal's log, on the thread that made it:
each changed key with a snapshot of its entry at that moment (a register's
fields, which are immutable values; a copy of an entry with a counter or a
document; None for a collected key) and, for a local write, the origin and
stamp it set in the version vector (a :data:`~crdtkv.core.feed.Cause.WRITE`
moves that origin's entry only, to the write's stamp, which is also the
clock's). A merge or a collection, which may move any origin, the clock and
the collection marks, appends a copy of all three.

The backend drains the log when it commits, on whichever thread commits:
it takes the items logged so far (the log is only appended to, and only
its drained head is removed, both single operations under the interpreter
lock), keeps the last snapshot of each key and encodes those rows once, so
overwrites between two commits cost one row. The vector it commits is the
one the replica had right after the last drained item (the last copy, plus
the local writes after it): a commit never claims a change its rows lack.
No item holds a reference into live state, so draining on another thread
never reads an entry while it is being changed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Final

from ..core.entry import Entry
from ..core.feed import Cause, Stage
from ..core.replica import ReplicaState
from .base import Batch, Storage
from .rows import Register, encode_register_row, encode_row

_WRITE: Final = Cause.WRITE
#: The backend hears of every this many logged items too, to commit a window that is over
#: from the writing thread (which reads the clock only then).
CHECK_EVERY: Final = 256


class Vector:
    """The version vector, clock and marks copied when a merge or a collection changed them."""

    __slots__ = ("clock_last", "marks", "vv")

    def __init__(self, vv: dict[str, int], clock_last: int, marks: dict[str, int]) -> None:
        self.vv = vv
        self.clock_last = clock_last
        self.marks = marks


#: What a change logs for a key: a register's fields, a copy of a richer entry, None if collected.
Snapshot = Register | Entry | None
#: One log item: (key, snapshot, origin, stamp) for a local write; origin "" for a key a merge or
#: collection changed; key "" with a Vector for the vector after a merge or collection.
Item = tuple[str, "Snapshot | Vector", str, int]


def snapshot(entry: Entry | None) -> Snapshot:
    """What a row of ``entry`` needs, detached from the live entry (which later writes change in place)."""
    if entry is None:
        return None
    if entry.counter is None and entry.doc is None:
        return (entry.stamp, entry.writer, entry.value, entry.expires, entry.meta)
    return entry.copy()


class Journal:
    """The changes of one replica not yet committed, in the order they were made.

    The writing thread appends; the backend calls :meth:`drain` (under its
    own commit lock) from any thread. :attr:`waiting` tells the writing
    thread to call the backend's :meth:`~.base.Storage.staged` after a change.
    """

    def __init__(self, state: ReplicaState) -> None:
        #: items not yet drained (appended to and drained from the head only)
        self.log: list[Item] = []
        #: True while the backend wants to hear of the next change (set before each drain)
        self.waiting = True
        self._vv = dict(state.vv)
        self._clock_last = state.clock.last
        self._marks = state.marks()
        #: origin -> its encoded name, for the rows' fast path
        self._names: dict[str, bytes] = {}

    def drain(self) -> Batch | None:
        """Take everything logged so far as one batch of rows, or None if nothing was.

        Call it with the backend's commit lock held (one drain at a time).
        """
        self.waiting = True  # before reading the log: a change logged after the read is heard of
        log = self.log
        count = len(log)
        if not count:
            return None
        items = log[:count]
        del log[:count]
        latest: dict[str, Snapshot] = {}
        vv = self._vv
        clock_last = self._clock_last
        written = 0  # the last local write's stamp (they only grow)
        for key, snap, origin, stamp in items:
            if isinstance(snap, Vector):
                vv = self._vv = snap.vv
                clock_last = max(clock_last, snap.clock_last)
                self._marks = snap.marks
                continue
            latest[key] = snap
            if origin:  # a local write: the vector moved this origin only
                vv[origin] = written = stamp
        clock_last = self._clock_last = max(clock_last, written)
        names = self._names
        if len(names) > 4096:  # origins accumulate incarnations over a long life: keep the cache small
            names.clear()
        rows: dict[str, bytes | None] = {}
        gone = 0
        for key, snap in latest.items():
            if snap is None:
                rows[key] = None
                gone += 1
            elif isinstance(snap, Entry):
                rows[key] = encode_row(key, snap)
            else:
                rows[key] = encode_register_row(key, snap, names)
        return Batch(rows, dict(vv), clock_last, dict(self._marks), gone)


def attach(state: ReplicaState, storage: Storage) -> Callable[[], None]:
    """Make every change to ``state`` reach ``storage``: the first subscriber of its change feed.

    Every cause is logged: a collected key's row is deleted, and a merge that
    only grew the version vector (no keys) still logs the new vector.
    Returns the function that detaches ``storage`` again (before it closes).
    """
    journal = Journal(state)
    storage.track(journal)
    log = journal.log
    append = log.append
    staged = storage.staged
    entries = state.entries
    vv = state.vv
    clock = state.clock

    def on_change(keys: Sequence[str], cause: Cause) -> None:
        if cause is _WRITE:
            origin = state.origin
            stamp = vv[origin]
            for key in keys:
                entry = entries.get(key)
                if entry is not None and entry.counter is None and entry.doc is None:  # snapshot() inline
                    register = (entry.stamp, entry.writer, entry.value, entry.expires, entry.meta)
                    append((key, register, origin, stamp))
                else:
                    append((key, snapshot(entry), origin, stamp))
        else:
            for key in keys:
                append((key, snapshot(entries.get(key)), "", 0))
            append(("", Vector(dict(vv), clock.last, state.marks()), "", 0))
        if journal.waiting or not len(log) % CHECK_EVERY:
            staged()

    def detach() -> None:
        state.feed.unsubscribe(on_change)

    state.feed.subscribe(on_change, Stage.STORAGE)
    return detach

"""The storage interface: a small contract every backend implements."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final, Protocol

from ..core.entry import Entry

#: ``batch``: group commit within a short window (the default); ``sync``: each
#: write is committed durably before the call returns.
DURABILITY_MODES: Final = ("batch", "sync")


#: Turns a batch of stored ``(key, row)`` pairs into entries; raises DecodeError for a damaged row.
RowDecoder = Callable[[list[tuple[str, bytes]]], list[tuple[str, Entry]]]


def new_replica_id() -> str:
    """A random replica id, for replicas opened without one."""
    return "r-" + secrets.token_hex(6)


@dataclass
class Recovered:
    """What a backend found when opened."""

    #: the origin id the replica used last time (None for a new store)
    origin: str | None = None
    #: False if the last run did not close the store (a crash)
    clean: bool = True
    entries: list[tuple[str, Entry]] = field(default_factory=list)
    vv: dict[str, int] = field(default_factory=dict)
    #: the largest hybrid-clock stamp the replica had handed out or seen
    clock_last: int = 0
    #: the replica id the storage belongs to
    replica_id: str = ""
    #: origin -> largest stamp of its operations garbage-collected
    collected: dict[str, int] = field(default_factory=dict)


class Batch:
    """One commit's worth of changes: encoded rows (None: delete the row), the vector, clock and marks."""

    __slots__ = ("clock_last", "collected", "gone", "rows", "vv")

    def __init__(
        self,
        rows: dict[str, bytes | None],
        vv: dict[str, int],
        clock_last: int,
        collected: dict[str, int],
        gone: int,
    ) -> None:
        self.rows = rows
        self.vv = vv
        self.clock_last = clock_last
        self.collected = collected
        #: how many of ``rows`` are None (none: the rows go to the backend as they are)
        self.gone = gone

    def after(self, older: Batch) -> Batch:
        """This batch on top of ``older`` (one that failed to commit): its rows, then these."""
        rows = dict(older.rows)
        rows.update(self.rows)
        gone = sum(1 for row in rows.values() if row is None)
        return Batch(rows, self.vv, max(self.clock_last, older.clock_last), self.collected, gone)


class Source(Protocol):
    """Where a backend takes the changes to commit from (a :class:`~.journal.Journal`)."""

    #: True while the backend wants :meth:`Storage.staged` called after the next change;
    #: the backend clears it, and every drain sets it again
    waiting: bool

    def drain(self) -> Batch | None:
        """Everything changed since the last drain, encoded; None if nothing. One drain at a time."""
        ...


class Storage(Protocol):
    """A place for one replica's entries, version vector and clock.

    Call order: :meth:`read` (through :func:`crdtkv.storage.recover`),
    :meth:`begin`, :meth:`track`, then any number of :meth:`staged` and
    :meth:`flush`, then :meth:`close`. Rows are opaque bytes (see
    :mod:`crdtkv.storage.rows`): backends store them and hand them back, and
    never interpret them.
    """

    def read(self, name: str, replica_id: str | None, decode: RowDecoder) -> Recovered:
        """Open (creating if needed) and read everything back; raises StorageError subclasses.

        The stored rows are handed to ``decode`` in batches as they are read,
        and what it returns becomes :attr:`Recovered.entries`; a
        :class:`~crdtkv.errors.DecodeError` from it is a
        :class:`~crdtkv.errors.CorruptionError` naming the backing, raised
        before anything is written. With ``replica_id`` None, an existing store
        keeps its replica id and a new one gets a random id.
        """
        ...

    def begin(self, origin: str) -> None:
        """Record the origin this run writes as, and that a run is in progress."""
        ...

    def track(self, source: Source) -> None:
        """Commit what ``source`` stages from now on (drained at each commit, on the committing thread)."""
        ...

    def staged(self) -> None:
        """Hear that ``source`` holds a change, on the writing thread, while ``source.waiting`` is True.

        A backend starts its commit window here, commits a window that is
        due, or (``sync`` durability) commits before returning, raising
        StorageError if that commit fails.
        """
        ...

    def flush(self) -> None:
        """Commit everything staged so far, durably; raises StorageError on failure."""
        ...

    def close(self) -> None:
        """Flush, record a clean shutdown and release the backend (idempotent)."""
        ...

    @property
    def error(self) -> Exception | None:
        """The last commit failure not yet cleared by a successful commit."""
        ...

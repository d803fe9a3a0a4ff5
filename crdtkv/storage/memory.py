"""The in-memory backend: state lives as long as this object does.

It keeps committed rows in a dict, so tests (and users' tests) can "restart"
a replica by opening a new store on the same ``MemoryStorage`` object.
"""

from __future__ import annotations

from ..errors import CorruptionError, DecodeError, IncompatibleFile, StoreMismatch
from .base import Recovered, RowDecoder, Source, new_replica_id


class MemoryStorage:
    """Keeps rows in memory; every commit is instant and complete."""

    def __init__(self) -> None:
        self.rows: dict[str, bytes] = {}
        self.vv: dict[str, int] = {}
        self.clock_last = 0
        self.name: str | None = None
        self.replica_id: str | None = None
        self.origin: str | None = None
        self.clean = True
        self.commits = 0
        self.collected: dict[str, int] = {}
        #: the journal this storage commits from (set by :meth:`track`)
        self.source: Source | None = None

    def read(self, name: str, replica_id: str | None, decode: RowDecoder) -> Recovered:
        if self.name is not None and self.name != name:
            raise StoreMismatch(f"this storage holds store {self.name!r}, not {name!r}")
        if replica_id is not None and self.replica_id not in (None, replica_id):
            raise IncompatibleFile(f"this storage belongs to replica {self.replica_id!r}, not {replica_id!r}")
        self.name = name
        self.replica_id = self.replica_id or replica_id or new_replica_id()
        try:
            entries = decode(list(self.rows.items()))
        except DecodeError as exc:
            raise CorruptionError(f"this memory storage holds damaged data: {exc}") from exc
        return Recovered(
            self.origin,
            self.clean,
            entries,
            dict(self.vv),
            self.clock_last,
            self.replica_id,
            dict(self.collected),
        )

    def begin(self, origin: str) -> None:
        self.origin = origin
        self.clean = False

    def track(self, source: Source) -> None:
        self.source = source

    def staged(self) -> None:
        """Commit at once: a memory commit cannot fail, and costs what the change does."""
        self.flush()

    def flush(self) -> None:
        batch = self.source.drain() if self.source is not None else None
        if batch is None:
            return
        self.collected = batch.collected
        rows = self.rows
        for key, row in batch.rows.items():
            if row is None:
                rows.pop(key, None)
            else:
                rows[key] = row
        self.vv = batch.vv
        self.clock_last = max(self.clock_last, batch.clock_last)
        self.commits += 1

    def close(self) -> None:
        self.flush()
        self.clean = True

    @property
    def error(self) -> Exception | None:
        return None

"""The in-memory backend: state lives as long as this object does.

It keeps committed rows in a dict, so tests (and users' tests) can "restart"
a replica by opening a new store on the same ``MemoryStorage`` object.
"""

from __future__ import annotations

from collections.abc import Mapping

from ..errors import CorruptionError, DecodeError, IncompatibleFile, StoreMismatch
from .base import Recovered, RowDecoder, new_replica_id


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

    def stage(
        self, rows: Mapping[str, bytes | None], vv: dict[str, int], clock_last: int, collected: dict[str, int]
    ) -> None:
        self.collected = collected
        for key, row in rows.items():
            if row is None:
                self.rows.pop(key, None)
            else:
                self.rows[key] = row
        self.vv = vv
        self.clock_last = max(self.clock_last, clock_last)
        self.commits += 1

    def flush(self) -> None:
        return None

    def close(self) -> None:
        self.clean = True

    @property
    def error(self) -> Exception | None:
        return None

"""Where a replica's state lives between runs: in memory or in a SQLite file.

The SQLite backend (:mod:`crdtkv.storage.sqlite`) is imported on first use, so
an in-memory store loads neither sqlite3 nor threads.
"""

from .base import DURABILITY_MODES, Recovered, RowDecoder, Storage, new_replica_id
from .journal import attach
from .memory import MemoryStorage
from .recovery import recover

__all__ = [
    "DURABILITY_MODES",
    "MemoryStorage",
    "Recovered",
    "RowDecoder",
    "Storage",
    "attach",
    "new_replica_id",
    "recover",
]

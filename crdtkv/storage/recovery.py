"""Opening a backend: read what it stored and decode the rows into entries.

The row format belongs to :mod:`.rows`, not to the backends: a backend reads
its bytes and hands them, batch by batch, to the decoder given here.
"""

from __future__ import annotations

from functools import partial

from ..core.limits import Limits
from .base import Recovered, Storage
from .rows import decode_rows


def recover(storage: Storage, name: str, replica_id: str | None, limits: Limits) -> Recovered:
    """Open ``storage`` for store ``name`` and read it back, rows decoded under ``limits``.

    Raises :class:`~crdtkv.errors.StorageError` subclasses (a damaged row is
    :class:`~crdtkv.errors.CorruptionError`).
    """
    return storage.read(name, replica_id, partial(decode_rows, limits=limits))


__all__ = ["recover"]

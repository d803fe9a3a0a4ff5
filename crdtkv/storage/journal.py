"""Connects a replica's state to a storage backend.

Rows are encoded on the thread that changed the state, at the moment of the
change, so a backend committing on another thread never reads an entry while
it is being modified, and each commit holds a version vector that matches
its rows.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..core.codec import encode_row
from ..core.replica import ReplicaState
from .base import Storage


def attach(state: ReplicaState, storage: Storage) -> None:
    """Make every change to ``state`` reach ``storage``."""
    entries = state.entries
    clock = state.clock
    vv = state.vv
    collected = state.collected
    stage = storage.stage

    def journal(keys: Sequence[str]) -> None:
        # a key no longer in the state was garbage-collected: its row goes (None)
        rows = {
            key: (encode_row(key, entry) if (entry := entries.get(key)) is not None else None) for key in keys
        }
        stage(rows, dict(vv), clock.last, dict(collected))

    state.journal = journal

"""Connects a replica's state to a storage backend.

Rows are encoded on the thread that changed the state, at the moment of the
change, so a backend committing on another thread never reads an entry while
it is being modified, and each commit holds a version vector that matches
its rows.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ..core.feed import Cause, Stage
from ..core.replica import ReplicaState
from .base import Storage
from .rows import encode_row


def attach(state: ReplicaState, storage: Storage) -> Callable[[], None]:
    """Make every change to ``state`` reach ``storage``: the first subscriber of its change feed.

    Every cause is staged: a collected key's row is deleted, and a merge that
    only grew the version vector (no keys) still stages the new vector.
    Returns the function that detaches ``storage`` again (before it closes).
    """
    entries = state.entries
    clock = state.clock
    vv = state.vv
    marks = state.marks
    stage = storage.stage

    def journal(keys: Sequence[str], cause: Cause) -> None:
        # a key no longer in the state was garbage-collected: its row goes (None)
        rows = {
            key: (encode_row(key, entry) if (entry := entries.get(key)) is not None else None) for key in keys
        }
        stage(rows, dict(vv), clock.last, marks())

    def detach() -> None:
        state.feed.unsubscribe(journal)

    state.feed.subscribe(journal, Stage.STORAGE)
    return detach

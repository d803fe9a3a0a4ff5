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


class Journal:
    """The change-feed subscriber that stages every change of a replica in its storage.

    ``storage`` is public so operators' tools find the backend of a replica
    (and its commit statistics) from the replica alone: see :func:`storage_of`.
    """

    __slots__ = ("clock", "entries", "marks", "stage", "storage", "vv")

    def __init__(self, state: ReplicaState, storage: Storage) -> None:
        self.storage = storage
        self.entries = state.entries
        self.clock = state.clock
        self.vv = state.vv
        self.marks = state.marks
        self.stage = storage.stage

    def __call__(self, keys: Sequence[str], cause: Cause) -> None:
        entries = self.entries
        # a key no longer in the state was garbage-collected: its row goes (None)
        rows = {
            key: (encode_row(key, entry) if (entry := entries.get(key)) is not None else None) for key in keys
        }
        self.stage(rows, dict(self.vv), self.clock.last, self.marks())


def attach(state: ReplicaState, storage: Storage) -> Callable[[], None]:
    """Make every change to ``state`` reach ``storage``: the first subscriber of its change feed.

    Every cause is staged: a collected key's row is deleted, and a merge that
    only grew the version vector (no keys) still stages the new vector.
    Returns the function that detaches ``storage`` again (before it closes).
    """
    journal = Journal(state, storage)

    def detach() -> None:
        state.feed.unsubscribe(journal)

    state.feed.subscribe(journal, Stage.STORAGE)
    return detach


def storage_of(state: ReplicaState) -> Storage | None:
    """The storage ``state``'s changes are staged in (None for a replica that lives in memory only)."""
    for subscriber in state.feed.subscribed(Stage.STORAGE):
        if isinstance(subscriber, Journal):
            return subscriber.storage
    return None

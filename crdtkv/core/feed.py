"""The change feed: how a replica tells everyone else which keys changed, and why.

A :class:`~.replica.ReplicaState` publishes every change on its one
:class:`ChangeFeed`: the keys whose entries changed and the :class:`Cause`.
Storage, watchers, documents and the node's send loops subscribe to it; each
subscriber is called synchronously, in :class:`Stage` order, so storage has
staged a change before any watcher or peer hears of it.

A subscriber that raises does not keep the others from hearing of the
change: once all have been called, the first error propagates (a storage
failure reaches the writer, and the change is still replicated and watched).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from enum import IntEnum


class Cause(IntEnum):
    """Why keys changed."""

    #: a local operation: put, delete, incr or a document edit
    WRITE = 1
    #: a delta or snapshot joined in (the keys may be empty: only the version vector grew)
    MERGE = 2
    #: garbage collection dropped the keys' entries (nothing a reader sees changes)
    COLLECTION = 3


class Stage(IntEnum):
    """When a subscriber hears of a change, relative to the others (in order, then by subscription)."""

    #: durable storage: staged before anyone else hears
    STORAGE = 0
    #: watchers and bound documents
    OBSERVERS = 1
    #: replication (a node's send loops), once everything local is up to date
    REPLICATION = 2


#: Called with the keys that changed (in the order they changed) and why.
Subscriber = Callable[[Sequence[str], Cause], None]


class ChangeFeed:
    """The subscribers of one replica's changes, called in stage order."""

    __slots__ = ("_staged", "subscribers")

    def __init__(self) -> None:
        #: every subscriber, in the order they are called (a new tuple on each change of it,
        #: so a subscriber may subscribe or unsubscribe while a change is being published)
        self.subscribers: tuple[Subscriber, ...] = ()
        self._staged: list[tuple[Stage, Subscriber]] = []

    def subscribe(self, subscriber: Subscriber, stage: Stage = Stage.OBSERVERS) -> None:
        """Call ``subscriber`` on every change from now on, after those of earlier stages."""
        staged = self._staged
        position = len(staged)
        while position and staged[position - 1][0] > stage:
            position -= 1
        staged.insert(position, (stage, subscriber))
        self.subscribers = tuple(each for _, each in staged)

    def unsubscribe(self, subscriber: Subscriber) -> bool:
        """Stop calling ``subscriber``; False if it was not subscribed (idempotent)."""
        for position, (_, each) in enumerate(self._staged):
            if each == subscriber:
                del self._staged[position]
                self.subscribers = tuple(each for _, each in self._staged)
                return True
        return False

    def subscribed(self, stage: Stage) -> list[Subscriber]:
        """The subscribers of one stage, in the order they are called."""
        return [each for at, each in self._staged if at == stage]

    def publish(self, keys: Sequence[str], cause: Cause) -> None:
        """Tell every subscriber; then raise the first error one of them raised, if any."""
        error: BaseException | None = None
        for subscriber in self.subscribers:
            try:
                subscriber(keys, cause)
            except BaseException as exc:  # the others still hear of the change
                if error is None:
                    error = exc
        if error is not None:
            raise error


__all__ = ["Cause", "ChangeFeed", "Stage", "Subscriber"]

"""The bounded change feed for watchers: ``async for change in store.watch(prefix)``.

Three watchers use it: a local :meth:`KvStore.watch <crdtkv.KvStore.watch>`,
a node serving a client's ``watch`` request, and :meth:`Client.watch
<crdtkv.Client.watch>`. Each follows one rule, written once in
:class:`ChangeQueue`: what waits for a watcher is bounded (in changes, in
bytes, or both). A watcher that falls behind loses the changes that do not
fit, and every change after them, until it has taken what was queued; then it
receives one overflow notice (a ``Change`` with ``overflow=True``) before the
next change, and must resync (``store.list`` and ``store.get``). Nothing is
skipped silently.

:class:`Follower` turns a replica's change feed into :class:`Change` objects
for the keys under a prefix (local and merged changes, in the order this
replica applied them; never crdtkv's reserved keys, never collections).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import anyio

from .checks import count
from .core.feed import Cause, Stage
from .core.keyindex import INTERNAL_PREFIX
from .core.replica import ReplicaState
from .core.values import Packed, unpack_value
from .errors import InvalidArgumentType

#: Default byte budget of one watcher's backlog (see :meth:`KvStore.watch`).
DEFAULT_WATCH_BYTES = 4 * 1024 * 1024
#: Bytes counted per queued change besides its key and value (the Change
#: object, its origin id and the queue slot).
CHANGE_OVERHEAD = 200

T = TypeVar("T")


def stored_size(stored: object) -> int:
    """A cheap estimate of the memory a stored value costs a queued change.

    Uses what the store already holds: the encoded bytes of a list, dict or
    document (no re-encoding) and the length of a string or bytes.
    """
    if isinstance(stored, Packed):
        return len(stored.data)
    if isinstance(stored, (str, bytes)):
        return len(stored)
    if isinstance(stored, int):
        return stored.bit_length() >> 3
    return 0


@dataclass(frozen=True)
class Change:
    """One change of one key, as this replica applied it."""

    #: the key (None for an overflow notice)
    key: str | None
    #: the new value; None when the key was deleted. Expiry is not an operation:
    #: a value that expires produces no change.
    value: Any
    #: the origin id of the write that produced it (None for an overflow notice)
    origin: str | None
    #: True: changes were lost because this watcher fell behind; resync
    overflow: bool = False
    #: True when the key was deleted (``value`` is then None; a stored None is not a delete)
    deleted: bool = False


#: What a key that reads as missing is looked up as, to tell a delete from a stored None.
_DELETED = object()

#: The notice a watcher gets in place of the changes it lost.
OVERFLOW = Change(None, None, None, overflow=True)


class ChangeQueue(Generic[T]):
    """What waits for one watcher: bounded, with an overflow notice (the rule above).

    ``max_items`` bounds the items queued, ``max_bytes`` their sizes; one item
    alone always fits. ``waiting`` counts bytes that already wait for the same
    consumer elsewhere (a link's unsent messages) against ``max_bytes``. After a
    loss every item is dropped until the queue has been drained; then
    :meth:`take_nowait` returns ``notice`` once.
    """

    def __init__(
        self,
        notice: T,
        *,
        max_items: int | None = None,
        max_bytes: int | None = None,
        waiting: Callable[[], int] | None = None,
    ) -> None:
        self.notice = notice
        self.max_items = max_items
        self.max_bytes = max_bytes
        self._waiting = waiting
        self._items: deque[tuple[T, int]] = deque()
        #: estimated bytes of the items queued and not yet taken
        self.queued_bytes = 0
        #: True from a loss until the notice is taken
        self.lost = False
        self._ended = False
        self._arrived: anyio.Event | None = None

    def admit(self, size: int) -> bool:
        """True if an item of ``size`` bytes fits now; otherwise note the loss (it is dropped)."""
        if self.lost or self._ended:
            return False
        if self.max_items is not None and len(self._items) >= self.max_items:
            self.lost = True
            return False
        if self.max_bytes is not None:
            held = self.queued_bytes + (self._waiting() if self._waiting is not None else 0)
            if held and held + size > self.max_bytes:
                self.lost = True
                return False
        return True

    def put(self, item: T, size: int = 0) -> None:
        """Queue an item :meth:`admit` let in."""
        self._items.append((item, size))
        self.queued_bytes += size
        if self._arrived is not None:
            self._arrived.set()

    def offer(self, item: T, size: int = 0) -> bool:
        """Queue ``item`` if it fits; otherwise drop it and note the loss."""
        if not self.admit(size):
            return False
        self.put(item, size)
        return True

    def take_nowait(self) -> T | None:
        """The next item, the notice once drained after a loss, or None if nothing waits."""
        if self._items:
            item, size = self._items.popleft()
            self.queued_bytes -= size
            return item
        if self.lost:
            self.lost = False
            return self.notice
        return None

    async def take(self) -> T | None:
        """The next item or notice, waiting for one; None once the queue has ended."""
        while True:
            item = self.take_nowait()
            if item is not None or self._ended:
                return item
            self._arrived = anyio.Event()
            await self._arrived.wait()

    def finish(self) -> None:
        """No more items come: takers get what is queued (and a due notice), then None."""
        self._ended = True
        if self._arrived is not None:
            self._arrived.set()

    def close(self) -> None:
        """The consumer is gone: drop what is queued; takers get None."""
        self._items.clear()
        self.queued_bytes = 0
        self.lost = False
        self.finish()


class Follower:
    """Puts the changes of keys under ``prefix`` in ``replica`` into ``queue``, from now on.

    ``forward`` (if given) runs after each batch of changed keys: a shell that
    moves what was queued onward (a node's client watch) calls it also
    whenever its consumer may take more.
    """

    def __init__(
        self,
        replica: ReplicaState,
        prefix: str,
        queue: ChangeQueue[Change],
        forward: Callable[[], None] | None = None,
    ) -> None:
        self.replica = replica
        self.prefix = prefix
        self.queue = queue
        self.forward = forward
        replica.feed.subscribe(self.changed, Stage.OBSERVERS)

    def changed(self, keys: Sequence[str], cause: Cause) -> None:
        """The change-feed subscriber."""
        if cause is Cause.COLLECTION:  # expiry and collection are not operations
            return
        prefix, queue, replica = self.prefix, self.queue, self.replica
        for key in keys:
            if not key.startswith(prefix) or key.startswith(INTERNAL_PREFIX) or queue.lost:
                continue  # after a loss, drop until the watcher has drained and been told
            stored = replica.lookup(key, _DELETED)
            deleted = stored is _DELETED
            size = CHANGE_OVERHEAD + len(key) + (0 if deleted else stored_size(stored))
            if queue.admit(size):
                value = None if deleted else unpack_value(stored)
                queue.put(Change(key, value, replica.origin_of(key), deleted=deleted), size)
        if self.forward is not None:
            self.forward()

    def close(self) -> None:
        """Stop following (idempotent)."""
        self.replica.feed.unsubscribe(self.changed)


class Watch:
    """An ``async for`` iterator over changes; registered from the moment it is created.

    Iterate it, or use it as ``async with store.watch(...) as changes``; it stops
    watching when closed, when the context ends, or when it is dropped.
    """

    def __init__(self, replica: ReplicaState, prefix: str, buffer: int, buffer_bytes: int) -> None:
        if not isinstance(prefix, str):
            raise InvalidArgumentType(f"prefix must be str, not {type(prefix).__name__}")
        buffer = count(buffer, "buffer")
        buffer_bytes = count(buffer_bytes, "buffer_bytes")
        self._queue = ChangeQueue(OVERFLOW, max_items=buffer, max_bytes=buffer_bytes)
        self._follower = Follower(replica, prefix, self._queue)

    def __aiter__(self) -> Watch:
        return self

    @property
    def queued_bytes(self) -> int:
        """Estimated bytes of the changes waiting to be read (bounded by ``buffer_bytes``)."""
        return self._queue.queued_bytes

    async def __anext__(self) -> Change:
        change = await self._queue.take()
        if change is None:
            raise StopAsyncIteration
        return change

    def close(self) -> None:
        """Stop watching (idempotent)."""
        self._follower.close()
        self._queue.close()

    async def aclose(self) -> None:
        self.close()

    async def __aenter__(self) -> Watch:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        # dropped without closing (e.g. a loop left with break): unregister
        if hasattr(self, "_follower"):  # not if __init__ refused its arguments
            self.close()


__all__ = ["OVERFLOW", "Change", "ChangeQueue", "Follower", "Watch"]

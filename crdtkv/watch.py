"""The change feed: ``async for change in store.watch(prefix)``.

Each watcher has a buffer bounded both in changes and in bytes. Changes are
queued in the order this replica applies them, local or merged. A watcher
that falls behind by more than its buffer loses the changes that did not fit
and then receives one ``Change`` with ``overflow=True`` before the next
change: it must resync (``store.list`` and ``store.get``). Nothing is skipped
silently.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import anyio

from .core.feed import Cause
from .core.replica import ReplicaState
from .core.values import Packed, unpack_value
from .errors import InvalidArgument, InvalidArgumentType

#: Default byte budget of one watcher's backlog (see :meth:`KvStore.watch`).
DEFAULT_WATCH_BYTES = 4 * 1024 * 1024
#: Bytes counted per queued change besides its key and value (the Change
#: object, its origin id and the queue slot).
CHANGE_OVERHEAD = 200


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


class Watch:
    """An ``async for`` iterator over changes; registered from the moment it is created.

    Iterate it, or use it as ``async with store.watch(...) as changes``; it stops
    watching when closed, when the context ends, or when it is dropped.
    """

    def __init__(self, replica: ReplicaState, prefix: str, buffer: int, buffer_bytes: int) -> None:
        if not isinstance(prefix, str):
            raise InvalidArgumentType(f"prefix must be str, not {type(prefix).__name__}")
        if type(buffer) is not int or buffer < 1:
            raise InvalidArgument(f"buffer must be a positive int, not {buffer!r}")
        if type(buffer_bytes) is not int or buffer_bytes < 1:
            raise InvalidArgument(f"buffer_bytes must be a positive int, not {buffer_bytes!r}")
        state = replica
        send, self._receive = anyio.create_memory_object_stream[tuple[Change, int]](buffer)
        self._lost = [False]
        lost = self._lost
        #: estimated bytes of the changes queued and not yet taken (see stored_size)
        self._queued = [0]
        queued = self._queued
        lookup = state.lookup

        def on_change(keys: Sequence[str], cause: Cause) -> None:
            if cause is Cause.COLLECTION:  # expiry and collection are not operations
                return
            for key in keys:
                if not key.startswith(prefix) or key.startswith("\x00") or lost[0]:
                    continue  # after a loss, drop until the watcher has drained and been told
                stored = lookup(key, None)
                size = CHANGE_OVERHEAD + len(key) + stored_size(stored)
                if queued[0] and queued[0] + size > buffer_bytes:
                    lost[0] = True  # over the byte budget (one change alone always fits)
                    continue
                try:
                    send.send_nowait((Change(key, unpack_value(stored), state.origin_of(key)), size))
                except anyio.WouldBlock:
                    lost[0] = True
                else:
                    queued[0] += size

        self._feed = state.feed
        self._on_change = on_change
        self._send = send
        state.feed.subscribe(on_change)

    def __aiter__(self) -> Watch:
        return self

    @property
    def queued_bytes(self) -> int:
        """Estimated bytes of the changes waiting to be read (bounded by ``buffer_bytes``)."""
        return self._queued[0]

    async def __anext__(self) -> Change:
        try:
            change, size = self._receive.receive_nowait()
        except anyio.WouldBlock:
            if self._lost[0]:
                self._lost[0] = False
                return Change(None, None, None, overflow=True)
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            raise StopAsyncIteration from None
        else:
            self._queued[0] -= size
            return change
        try:
            change, size = await self._receive.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            raise StopAsyncIteration from None
        self._queued[0] -= size
        return change

    def close(self) -> None:
        """Stop watching (idempotent)."""
        self._feed.unsubscribe(self._on_change)
        self._send.close()
        self._receive.close()

    async def aclose(self) -> None:
        self.close()

    async def __aenter__(self) -> Watch:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        # dropped without closing (e.g. a loop left with break): unregister
        if hasattr(self, "_send"):  # not if __init__ refused its arguments
            self.close()

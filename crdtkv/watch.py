"""The change feed: ``async for change in store.watch(prefix)``.

Each watcher has a bounded buffer. Changes are queued in the order this
replica applies them, local or merged. A watcher that falls behind by more
than its buffer loses the changes that did not fit and then receives one
``Change`` with ``overflow=True`` before the next change: it must resync
(``store.list`` and ``store.get``). Nothing is skipped silently.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio

from .errors import InvalidArgument, InvalidArgumentType

if TYPE_CHECKING:
    from .store import KvStore

#: Changes a watcher buffers by default before it overflows.
DEFAULT_BUFFER = 1000


@dataclass(frozen=True)
class Change:
    """One change of one key, as this replica applied it."""

    #: the key (None for an overflow notice)
    key: str | None
    #: the new value; None when the key was deleted (or its value expired)
    value: Any
    #: the origin id of the write that produced it (None for an overflow notice)
    origin: str | None
    #: True: changes were lost because this watcher fell behind; resync
    overflow: bool = False


async def watch(store: KvStore, prefix: str, buffer: int) -> AsyncIterator[Change]:
    """Yield the changes of keys starting with ``prefix``; see the module docstring."""
    if not isinstance(prefix, str):
        raise InvalidArgumentType(f"prefix must be str, not {type(prefix).__name__}")
    if type(buffer) is not int or buffer < 1:
        raise InvalidArgument(f"buffer must be a positive int, not {buffer!r}")
    state = store._state
    send, receive = anyio.create_memory_object_stream[Change](buffer)
    lost = False

    def on_change(keys: Sequence[str]) -> None:
        nonlocal lost
        for key in keys:
            if not key.startswith(prefix) or key.startswith("\x00"):
                continue
            if lost:
                continue  # dropping until the watcher has drained and been told
            try:
                send.send_nowait(Change(key, store.get(key), state.origin_of(key)))
            except anyio.WouldBlock:
                lost = True

    state.watchers.append(on_change)
    try:
        async with receive:
            while True:
                try:
                    change = receive.receive_nowait()
                except anyio.WouldBlock:
                    if lost:
                        lost = False
                        yield Change(None, None, None, overflow=True)
                        continue
                    change = await receive.receive()
                yield change
    finally:
        if on_change in state.watchers:
            state.watchers.remove(on_change)
        send.close()

"""``GET /v1/watch``: a store's changes as Server-Sent Events.

One ``data:`` event per change, ``{"key", "value", "origin", "deleted"}`` (a
value is JSON as everywhere on the HTTP face: bytes as base64 text). What waits
for a slow reader is the watch's own bounded backlog
(``HttpSettings.max_watch_backlog_bytes``): a reader that falls further behind
loses changes and then gets one ``overflow`` event, after which it should
list and read again. A comment line goes out when nothing changed for
``HttpSettings.watch_heartbeat`` seconds, so proxies keep the stream open and
a client that went away is noticed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import anyio

from ..watch import Change, Watch
from .jsonvalues import json_bytes

EVENT_STREAM = b"text/event-stream"
#: The first bytes of every stream (a comment): the client knows the watch is registered.
OPENED = b": watching\n\n"
HEARTBEAT = b": heartbeat\n\n"
OVERFLOW_EVENT = b'event: overflow\ndata: {"overflow":true}\n\n'


def event_bytes(change: Change) -> bytes:
    """One change as an SSE event."""
    if change.overflow:
        return OVERFLOW_EVENT
    body = {
        "key": change.key,
        "value": change.value,
        "origin": change.origin,
        "deleted": change.deleted,
    }
    return b"data: " + json_bytes(body) + b"\n\n"


async def stream_changes(watch: Watch, send: Callable[[bytes], Awaitable[None]], heartbeat: float) -> None:
    """Send ``watch``'s changes as events until the watch ends (the caller cancels when the client leaves)."""
    await send(OPENED)
    while True:
        change: Change | None = None
        with anyio.move_on_after(heartbeat):
            try:
                change = await watch.__anext__()
            except StopAsyncIteration:
                return
        await send(HEARTBEAT if change is None else event_bytes(change))


__all__ = ["EVENT_STREAM", "event_bytes", "stream_changes"]

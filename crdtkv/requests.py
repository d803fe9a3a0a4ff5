"""Client requests against a node's store: one table from op name to call.

Every reply must fit in one message, so requests that could return a lot
are paged: ``list`` returns keys up to a byte budget with a cursor, and a
snapshot is encoded once by ``snapshot_begin`` and handed out in chunks by
``snapshot_read``. The encoded snapshots waiting to be read are held in a
:class:`SnapshotTransfers` with a byte budget.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from itertools import islice
from typing import Any

from .checks import count
from .cursor import MAX_PAGE
from .errors import CrdtKvError, InvalidArgument, InvalidArgumentType
from .store import KvStore

#: Most keys one ``keys`` request returns (a response must fit in one message).
MAX_KEYS_PER_RESPONSE = 10_000

#: Key bytes one ``keys`` or ``list`` response may carry (well inside one message).
MAX_KEY_BYTES_PER_RESPONSE = 256 * 1024

#: Encoded snapshots held for clients still reading them, in bytes, all transfers
#: of the process together; a ``snapshot_begin`` beyond it is refused (retry later).
MAX_SNAPSHOT_TRANSFER_BYTES = 256 * 1024 * 1024

#: A transfer nobody read from for this long (seconds) is dropped, so a client
#: that went away mid-transfer holds no memory for long.
SNAPSHOT_TRANSFER_IDLE = 60.0

#: Room kept in a message for the framing around a snapshot chunk.
_CHUNK_OVERHEAD = 4096

# CBOR head of a text string up to 65,535 bytes, plus rounding: bytes counted per key.
_KEY_OVERHEAD = 3

_MISSING = object()


def _get(store: KvStore, key: Any) -> Any:
    value = store.get(key, _MISSING)
    return [False, None] if value is _MISSING else [True, value]


def _put(store: KvStore, key: Any, value: Any, ttl: Any = None, metadata: Any = None) -> None:
    store.put(key, value, ttl=ttl, metadata=metadata)


def _keys(store: KvStore, prefix: Any = "") -> list[str]:
    """One page of keys without a cursor (kept for older clients; ``list`` pages)."""
    keys: list[str] = []
    size = 0
    for key in islice(store.keys(prefix), MAX_KEYS_PER_RESPONSE):
        size += len(key.encode("utf-8")) + _KEY_OVERHEAD
        if size > MAX_KEY_BYTES_PER_RESPONSE:
            break
        keys.append(key)
    return keys


def _list(store: KvStore, prefix: Any = "", limit: Any = 1000, cursor: Any = None) -> list[Any]:
    """``[keys, cursor]``: up to ``limit`` keys after ``cursor``, within the reply's byte budget.

    The page is gathered from smaller pages of :meth:`KvStore.list`, each
    small enough that even keys of the longest allowed size cannot take it over
    what is left of the budget, so it always ends on a cursor the store made.
    """
    if type(limit) is not int or not 0 < limit <= MAX_PAGE:
        raise InvalidArgument(f"limit must be an int in 1..{MAX_PAGE}, not {limit!r}")
    if cursor is not None and not isinstance(cursor, str):
        raise InvalidArgumentType(f"cursor must be a str or None, not {type(cursor).__name__}")
    widest = store.limits.max_key_bytes + _KEY_OVERHEAD
    room = MAX_KEY_BYTES_PER_RESPONSE
    keys: list[str] = []
    while True:
        take = min(limit - len(keys), room // widest)
        if take <= 0:
            return [keys, cursor]
        page = store.list(prefix, limit=take, cursor=cursor)
        keys.extend(page.keys)
        room -= sum(len(key.encode("utf-8")) + _KEY_OVERHEAD for key in page.keys)
        cursor = page.cursor
        if cursor is None:
            return [keys, None]


@dataclass
class _Transfer:
    data: bytes
    owner: object
    used: float


class SnapshotTransfers:
    """Encoded snapshots being read by clients, bounded in bytes.

    A transfer is freed when its last byte has been read, when its client ends
    it, when :meth:`release` is called for its owner (its link closed), or after
    ``idle`` seconds without a read. While ``budget`` bytes are held, a new
    transfer is refused with InvalidArgument naming the budget.
    """

    def __init__(
        self,
        budget: int = MAX_SNAPSHOT_TRANSFER_BYTES,
        idle: float = SNAPSHOT_TRANSFER_IDLE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.budget = budget
        self.idle = idle
        self._clock = clock
        self._transfers: dict[str, _Transfer] = {}

    @property
    def held(self) -> int:
        """Bytes of snapshots held right now."""
        return sum(len(transfer.data) for transfer in self._transfers.values())

    def __len__(self) -> int:
        return len(self._transfers)

    def _expire(self) -> None:
        now = self._clock()
        for token, transfer in list(self._transfers.items()):
            if now - transfer.used >= self.idle:
                del self._transfers[token]

    def begin(self, store: KvStore, owner: object = None) -> list[Any]:
        """Encode ``store``'s snapshot once; ``[token, size]`` for reading it."""
        self._expire()
        held = self.held
        if held >= self.budget:
            raise InvalidArgument(
                f"{held} bytes of snapshots are being transferred (the budget, "
                f"NodeSettings.max_snapshot_transfer_bytes, is {self.budget}); try again later"
            )
        data = store.snapshot()
        if held + len(data) > self.budget:
            raise InvalidArgument(
                f"the snapshot is {len(data)} bytes and {held} are held for other transfers; the budget "
                f"(NodeSettings.max_snapshot_transfer_bytes) is {self.budget}"
            )
        token = secrets.token_hex(16)
        self._transfers[token] = _Transfer(data, owner, self._clock())
        return [token, len(data)]

    def read(self, store: KvStore, token: Any, offset: Any, max_bytes: Any) -> bytes:
        """The bytes of transfer ``token`` from ``offset``: at most ``max_bytes``, and fitting one message."""
        self._expire()
        transfer = self._transfers.get(token) if isinstance(token, str) else None
        if transfer is None:
            raise InvalidArgument("no such snapshot transfer (it ended, expired or its link closed)")
        size = len(transfer.data)
        if type(offset) is not int or not 0 <= offset < size:
            raise InvalidArgument(f"offset must be an int in 0..{size - 1}, not {offset!r}")
        wanted = min(count(max_bytes, "max_bytes"), store.limits.max_message_bytes - _CHUNK_OVERHEAD)
        chunk = transfer.data[offset : offset + wanted]
        if offset + len(chunk) >= size:
            del self._transfers[token]  # all read: free it now
        else:
            transfer.used = self._clock()
        return chunk

    def end(self, token: Any) -> bool:
        """Free transfer ``token``; True if it was still held."""
        return isinstance(token, str) and self._transfers.pop(token, None) is not None

    def release(self, owner: object) -> int:
        """Free every transfer begun for ``owner`` (call it when that link closes); how many."""
        if owner is None:  # transfers begun without an owner end by reading, ending or expiring
            return 0
        tokens = [token for token, transfer in self._transfers.items() if transfer.owner is owner]
        for token in tokens:
            del self._transfers[token]
        return len(tokens)


_Call = Callable[..., Any]

OPERATIONS: dict[str, _Call] = {
    "get": _get,
    "put": _put,
    "incr": lambda store, key, by=1, ttl=None: store.incr(key, by, ttl=ttl),
    "del": lambda store, key: store.delete(key),
    "keys": _keys,
    "list": _list,
    "digest": lambda store: store.digest(),
}

#: Operations that need the node's snapshot transfers and the link they came on
#: (to free what they hold when it closes).
_TRANSFER_OPERATIONS: dict[str, Callable[..., Any]] = {
    "snapshot_begin": lambda transfers, store, owner: transfers.begin(store, owner),
    "snapshot_read": lambda transfers, store, owner, token, offset, max_bytes: transfers.read(
        store, token, offset, max_bytes
    ),
    "snapshot_end": lambda transfers, store, owner, token: transfers.end(token),
}

_ARITY = {
    "get": (1, 1),
    "put": (2, 4),
    "incr": (1, 3),
    "del": (1, 1),
    "keys": (0, 1),
    "list": (0, 3),
    "digest": (0, 0),
    "snapshot_begin": (0, 0),
    "snapshot_read": (3, 3),
    "snapshot_end": (1, 1),
}


def execute(
    store: KvStore,
    op: str,
    args: list[Any],
    owner: object,
    transfers: SnapshotTransfers,
) -> tuple[bool, Any]:
    """Run one request; return ``(True, result)`` or ``(False, [error type, message])``.

    ``owner`` identifies the link the request came on and ``transfers`` holds
    the snapshots being read (a node passes its own, and releases ``owner`` in
    it when the link closes).
    """
    call = OPERATIONS.get(op)
    owned = _TRANSFER_OPERATIONS.get(op)
    if call is None and owned is None:
        return False, ["InvalidArgument", f"unknown operation {op!r}"]
    low, high = _ARITY[op]
    if not low <= len(args) <= high:
        return False, ["InvalidArgument", f"{op} takes {low} to {high} arguments, got {len(args)}"]
    try:
        if owned is not None:
            return True, owned(transfers, store, owner, *args)
        assert call is not None
        return True, call(store, *args)
    except CrdtKvError as exc:
        return False, [type(exc).__name__, str(exc)]

"""Client requests against a node's store: one table from op name to call.

Every reply must fit in one message, so requests that could return a lot
are paged: ``list`` returns keys (and, detailed, their expiration and
metadata) up to a byte budget with a cursor, ``get_many`` answers the first
keys whose values fit and the client asks again for the rest, and a
snapshot is encoded once by ``snapshot_begin`` and handed out in chunks by
``snapshot_read``. Operations only ever gain optional trailing arguments, so
older clients keep working. The encoded snapshots waiting to be read are held in a
:class:`SnapshotTransfers` with a byte budget.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, fields
from itertools import islice
from typing import Any

import cbor2

from .checks import count
from .cursor import MAX_PAGE
from .errors import CrdtKvError, InvalidArgument, InvalidArgumentType
from .ratelimit import Decision
from .store import KvStore, Record

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

#: Most keys one ``get_many`` reply answers (the client asks again for the rest).
MAX_KEYS_PER_GET_MANY = 1000

# CBOR head of a text string up to 65,535 bytes, plus rounding: bytes counted per key.
_KEY_OVERHEAD = 3
# An expiration (a float) and the array heads around it and the metadata.
_DETAIL_OVERHEAD = 12

_MISSING = object()


def _get(store: KvStore, key: Any) -> Any:
    value = store.get(key, _MISSING)
    return [False, None] if value is _MISSING else [True, value]


def _put(
    store: KvStore, key: Any, value: Any, ttl: Any = None, metadata: Any = None, expiration: Any = None
) -> None:
    store.put(key, value, ttl=ttl, expiration=expiration, metadata=metadata)


def _incr(store: KvStore, key: Any, by: Any = 1, ttl: Any = None, expiration: Any = None) -> int:
    return store.incr(key, by, ttl=ttl, expiration=expiration)


def fields_of(answer: Record | Decision) -> dict[str, Any]:
    """A record or decision as a map of its fields, the form a reply carries (no deep copy)."""
    return {field.name: getattr(answer, field.name) for field in fields(answer)}


def _get_with_metadata(store: KvStore, key: Any) -> dict[str, Any] | None:
    """The :class:`~crdtkv.Record` of ``key`` as a map of its fields, or None if missing."""
    record = store.get_with_metadata(key)
    return None if record is None else fields_of(record)


def _encoded_size(value: Any) -> int:
    """About how many bytes ``value`` takes in a reply (exact for strings and bytes)."""
    kind = type(value)
    if kind is str:
        return len(value.encode("utf-8")) + 9
    if kind is bytes:
        return len(value) + 9
    if kind in (int, float, bool) or value is None:
        return 9 if kind is not int else value.bit_length() // 8 + 9
    return len(cbor2.dumps(value)) + 9


def _get_many(store: KvStore, keys: Any) -> list[list[Any]]:
    """``[found, value]`` for the first keys of ``keys`` whose values fit in one reply.

    At least one key is answered; the client asks again for the rest. At most
    :data:`MAX_KEYS_PER_GET_MANY` keys, and values of ``max_value_bytes`` in
    all beyond the first, go in one reply.
    """
    if not isinstance(keys, list):
        raise InvalidArgumentType(f"get_many takes a list of keys, not {type(keys).__name__}")
    budget = store.limits.max_value_bytes
    answers: list[list[Any]] = []
    for value in store.get_many(keys[:MAX_KEYS_PER_GET_MANY], _MISSING):
        if value is _MISSING:
            answers.append([False, None])
            continue
        budget -= _encoded_size(value)
        if answers and budget < 0:
            break
        answers.append([True, value])
    return answers


def _rate_limit(store: KvStore, key: Any, limit: Any, window: Any, cost: Any = 1) -> dict[str, Any]:
    return fields_of(store.rate_limit(key, limit, window, cost=cost))


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


def _list(
    store: KvStore, prefix: Any = "", limit: Any = 1000, cursor: Any = None, detailed: Any = False
) -> list[Any]:
    """``[keys, cursor]``: up to ``limit`` keys after ``cursor``, within the reply's byte budget.

    With ``detailed``, ``[keys, cursor, details]`` where ``details`` holds
    ``[expiration, metadata]`` per key. The page is gathered from smaller
    pages of :meth:`KvStore.list`, each small enough that even keys (and
    metadata) of the longest allowed size cannot take it over what is left of
    the budget, so it always ends on a cursor the store made.
    """
    if type(limit) is not int or not 0 < limit <= MAX_PAGE:
        raise InvalidArgument(f"limit must be an int in 1..{MAX_PAGE}, not {limit!r}")
    if cursor is not None and not isinstance(cursor, str):
        raise InvalidArgumentType(f"cursor must be a str or None, not {type(cursor).__name__}")
    if type(detailed) is not bool:
        raise InvalidArgumentType(f"detailed must be a bool, not {type(detailed).__name__}")
    widest = store.limits.max_key_bytes + _KEY_OVERHEAD
    if detailed:
        widest += store.limits.max_metadata_bytes + _DETAIL_OVERHEAD
    room = MAX_KEY_BYTES_PER_RESPONSE
    keys: list[str] = []
    details: list[list[Any]] = []
    while True:
        take = min(limit - len(keys), room // widest)
        if take <= 0:
            break
        page = store.list(prefix, limit=take, cursor=cursor, detailed=detailed)
        keys.extend(page.keys)
        room -= sum(len(key.encode("utf-8")) + _KEY_OVERHEAD for key in page.keys)
        for info in page.details or ():
            details.append([info.expiration, info.metadata])
            room -= _DETAIL_OVERHEAD + (0 if info.metadata is None else len(cbor2.dumps(info.metadata)))
        cursor = page.cursor
        if cursor is None:
            break
    return [keys, cursor, details] if detailed else [keys, cursor]


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
    "get_with_metadata": _get_with_metadata,
    "get_many": _get_many,
    "put": _put,
    "incr": _incr,
    "del": lambda store, key: store.delete(key),
    "expire": lambda store, key, ttl=None, expiration=None: store.expire(key, ttl, expiration=expiration),
    "persist": lambda store, key: store.persist(key),
    "ttl": lambda store, key: store.ttl(key),
    "kind": lambda store, key: store.kind(key),
    "rate_limit": _rate_limit,
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
    "get_with_metadata": (1, 1),
    "get_many": (1, 1),
    "put": (2, 5),
    "incr": (1, 4),
    "del": (1, 1),
    "expire": (1, 3),
    "persist": (1, 1),
    "ttl": (1, 1),
    "kind": (1, 1),
    "rate_limit": (3, 4),
    "keys": (0, 1),
    "list": (0, 4),
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

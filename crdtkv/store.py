"""``KvStore``: the public, synchronous face of one replica."""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any

from .checks import (  # noqa: F401 (moved, importable here)
    INCARNATION_SEPARATOR,
    MAX_NAME_CHARS,
    MAX_REPLICA_ID_CHARS,
    MAX_SECONDS,
    check_replica_id,
    check_store_name,
    expires_at,
    expiry_ms,
)
from .core.bulk import collector_paused
from .core.entry import Kind, resolve
from .core.feed import Cause
from .core.hlc import HybridClock, stamp_ms
from .core.limits import DEFAULT_LIMITS, Limits
from .core.replica import ReplicaState
from .core.values import Packed, check_key, pack_value, unpack_value
from .core.wire import decode_snapshot, encode_snapshot
from .cursor import MAX_PAGE, KeyInfo, Page, decode_cursor, encode_cursor
from .errors import (
    InvalidArgument,
    InvalidArgumentType,
    StoreClosed,
    ValueTooLarge,
    WrongType,
)
from .ratelimit import RATE_LIMIT_PREFIX, Decision, RateLimiter  # noqa: F401 (the prefix moved)
from .storage import DURABILITY_MODES, Storage, attach, new_replica_id, recover

if TYPE_CHECKING:
    from .document import Document
    from .watch import Watch

_KIND_NAMES = {Kind.REGISTER: "register", Kind.COUNTER: "counter", Kind.DOCUMENT: "document"}


@dataclass(frozen=True)
class Record:
    """A value with everything known about the write that produced it."""

    value: Any
    #: the metadata given to ``put`` (None for none, and for counters)
    metadata: dict[str, Any] | None
    #: when the value expires, in seconds since the epoch, or None
    expires_at: float | None
    #: the replica id of the winning write (for a counter: its latest increment)
    replica: str
    #: that replica's origin id (replica id and incarnation)
    origin: str
    #: the write's hybrid-clock stamp (orders writes everywhere)
    stamp: int
    #: the wall-clock time in the stamp, in seconds since the epoch
    written_at: float
    #: "register" or "counter"
    kind: str


class KvStore:
    """A replica of a named key-value store whose state is a CRDT.

    Reads and writes are local and synchronous: a write is readable at once
    here and reaches other replicas through :meth:`merge` (or a replication
    node). Not thread-safe: use one store from one thread or event loop.
    """

    def __init__(self, state: ReplicaState, replica_id: str, limits: Limits) -> None:
        """Use :meth:`open`; this constructor is internal."""
        #: the replica, None once the store is closed (every use then raises StoreClosed)
        self._open_state: ReplicaState | None = state
        self._replica_id = replica_id
        self._limits = limits
        # Plain ASCII keys and string values up to these lengths are valid
        # without further checks: the hot paths test only that much.
        self._max_key = limits.max_key_bytes
        self._max_str = limits.max_value_bytes
        self._storage: Storage | None = None
        #: stops the state's changes reaching storage (when the store closes)
        self._detach: Callable[[], None] | None = None
        self._limiter = RateLimiter(state, limits)
        #: key -> the Document bound to it (one per key)
        self._documents: dict[str, Document] = {}

    @classmethod
    def open(
        cls,
        name: str = "default",
        *,
        path: str | os.PathLike[str] | None = None,
        replica_id: str | None = None,
        durability: str = "batch",
        limits: Limits | None = None,
        clock: Callable[[], int] | None = None,
        storage: Storage | None = None,
    ) -> KvStore:
        """Open a replica of store ``name``.

        Without ``path`` the replica lives in memory. With ``path`` it lives in
        a SQLite file and comes back with everything it committed:
        ``durability="batch"`` (default) group-commits every few milliseconds,
        ``durability="sync"`` commits each write before returning (see
        :meth:`flush`). ``storage`` plugs in another backend instead.

        ``replica_id`` names this replica (random if omitted; a durable store
        remembers its own). Writes are stamped with the replica id plus an
        incarnation suffix, renewed for every in-memory start and after every
        crash of a durable one, so no operation id is ever reused and no
        counter restarts from zero under an id peers already know.
        ``clock`` returns nanoseconds since the epoch (default
        :func:`time.time_ns`); tests inject their own.
        """
        name = check_store_name(name)
        limits = DEFAULT_LIMITS if limits is None else limits
        if not isinstance(limits, Limits):
            raise InvalidArgumentType(f"limits must be a crdtkv Limits, not {type(limits).__name__}")
        if replica_id is not None:
            replica_id = check_replica_id(replica_id)
        if durability not in DURABILITY_MODES:
            raise InvalidArgument(f"durability must be one of {DURABILITY_MODES}, not {durability!r}")
        if path is not None and storage is not None:
            raise InvalidArgument("give path or storage, not both")
        if path is not None:
            from .storage.sqlite import SqliteStorage

            storage = SqliteStorage(path, durability=durability)
        hybrid_clock = time.time_ns if clock is None else clock
        if storage is None:
            if replica_id is None:
                replica_id = new_replica_id()
                origin = replica_id
            else:
                origin = replica_id + INCARNATION_SEPARATOR + secrets.token_hex(4)
            hybrid = HybridClock(hybrid_clock, limits.max_clock_skew)
            return cls(ReplicaState(name, origin, hybrid, limits), replica_id, limits)
        recovered = recover(storage, name, replica_id, limits)
        replica_id = recovered.replica_id
        if recovered.origin is not None and recovered.clean:
            origin = recovered.origin
        else:
            # new, or crashed: writes of the lost tail may have reached peers under the old id
            origin = replica_id + INCARNATION_SEPARATOR + secrets.token_hex(4)
        try:
            storage.begin(origin)
            hybrid = HybridClock(hybrid_clock, limits.max_clock_skew)
            state = ReplicaState(name, origin, hybrid, limits)
            with collector_paused(len(recovered.entries)):
                state.restore(recovered.entries, recovered.vv, recovered.clock_last, recovered.collected)
            detach = attach(state, storage)
            state.collect_garbage()
        except BaseException:
            storage.close()
            raise
        store = cls(state, replica_id, limits)
        store._storage = storage
        store._detach = detach
        return store

    @classmethod
    def from_snapshot(
        cls,
        snapshot: bytes,
        *,
        replica_id: str | None = None,
        limits: Limits | None = None,
        clock: Callable[[], int] | None = None,
    ) -> KvStore:
        """Open an in-memory replica holding the state in ``snapshot`` (its store name included)."""
        limits = DEFAULT_LIMITS if limits is None else limits
        delta = decode_snapshot(snapshot, limits)
        store = cls.open(delta.name, replica_id=replica_id, limits=limits, clock=clock)
        store._state.apply(delta)
        return store

    @property
    def _state(self) -> ReplicaState:
        """The replica; :class:`~crdtkv.errors.StoreClosed` once the store is closed.

        A typed property rather than a stand-in object, so the compiled build
        checks the replica's type and calls its methods directly.
        """
        state = self._open_state
        if state is None:
            raise StoreClosed("the store is closed")
        return state

    # -- identity -----------------------------------------------------------------

    @property
    def name(self) -> str:
        """The store's name; only states of the same name merge."""
        return self._state.name

    @property
    def replica_id(self) -> str:
        """This replica's id, as given to :meth:`open` (or generated)."""
        return self._replica_id

    @property
    def origin(self) -> str:
        """The id this replica's operations carry (replica id plus incarnation)."""
        return self._state.origin

    @property
    def limits(self) -> Limits:
        return self._limits

    @property
    def replica(self) -> ReplicaState:
        """The sans-I/O replica behind this store, for the shells that drive it.

        A :class:`~crdtkv.Node` runs its sessions on it and subscribes to its
        change feed; applications use the store's own methods. Once the store
        is closed, every use of it raises :class:`~crdtkv.errors.StoreClosed`.
        """
        return self._state

    # -- local operations ---------------------------------------------------------

    def put(
        self,
        key: str,
        value: Any,
        *,
        ttl: float | None = None,
        expiration: float | None = None,
        metadata: Any = None,
    ) -> None:
        """Set ``key`` to ``value`` (last writer wins).

        ``value`` may be str, bytes, int, float, bool, None, or lists and
        str-keyed dicts of those (tuples are stored as lists). With ``ttl``
        (seconds from now) or ``expiration`` (seconds since the epoch; not
        both), the value reads as missing everywhere once it expires (at once,
        for an expiration in the past).
        ``metadata`` is a small dict (``limits.max_metadata_bytes``) that
        travels with this write; see :meth:`get_with_metadata`. Overwriting a
        counter removes the increments this replica has seen.
        """
        state = self._open_state  # (the _state property inlined: hot path)
        if state is None:
            raise StoreClosed("the store is closed")
        if not (type(key) is str and key.isascii() and 0 < len(key) <= self._max_key):
            key = check_key(key, self._limits)
        if type(value) is str and value.isascii() and len(value) <= self._max_str:
            stored: object = value
        else:
            stored = pack_value(value, self._limits)
        if ttl is None and metadata is None and expiration is None:
            state.write(key, stored)
            return
        expires = expires_at(ttl, expiration, state.clock.now_ms())
        state.write(key, stored, expires, None if metadata is None else self._pack_metadata(metadata))

    def _pack_metadata(self, metadata: object) -> object:
        if not isinstance(metadata, dict):
            raise InvalidArgumentType(f"metadata must be a dict, not {type(metadata).__name__}")
        packed = pack_value(metadata, self._limits)
        assert isinstance(packed, Packed)
        if len(packed.data) > self._limits.max_metadata_bytes:
            raise ValueTooLarge(
                f"metadata is {len(packed.data)} bytes; the limit (max_metadata_bytes) is "
                f"{self._limits.max_metadata_bytes}"
            )
        return packed

    def get_with_metadata(self, key: str) -> Record | None:
        """The value at ``key`` with its metadata, expiry and provenance; None if missing."""
        found = self._state.describe(check_key(key, self._limits))
        if found is None:
            return None
        kind, stored, meta, expires, origin, stamp = found
        return Record(
            value=unpack_value(stored),
            metadata=None if meta is None else unpack_value(meta),
            expires_at=None if expires is None else expires / 1000,
            replica=origin.split(INCARNATION_SEPARATOR, 1)[0],
            origin=origin,
            stamp=stamp,
            written_at=stamp_ms(stamp) / 1000,
            kind=_KIND_NAMES[kind],
        )

    def get(self, key: str, default: Any = None) -> Any:
        """The value at ``key``; ``default`` if missing, deleted or expired.

        Counters read as ``int``. Lists and dicts come back as fresh copies.
        """
        if not (type(key) is str and key.isascii() and 0 < len(key) <= self._max_key):
            key = check_key(key, self._limits)
        state = self._open_state  # (the _state property inlined: hot path)
        if state is None:
            raise StoreClosed("the store is closed")
        stored = state.lookup(key, default)
        if type(stored) is Packed:
            return unpack_value(stored)
        return stored

    def delete(self, key: str) -> bool:
        """Delete ``key``, register or counter; return True if it was present here.

        A delete removes what this replica has seen: increments made elsewhere
        that it had not yet received survive it.
        """
        return self._state.delete(check_key(key, self._limits))

    def incr(
        self, key: str, by: int = 1, *, ttl: float | None = None, expiration: float | None = None
    ) -> int:
        """Add ``by`` (may be negative) to the counter at ``key``; return its local value.

        A missing key becomes a counter starting at 0. Raises
        :class:`~crdtkv.errors.WrongType` if the key holds a register value.
        Concurrent increments at any number of replicas all count. With
        ``ttl`` (seconds from now) or ``expiration`` (seconds since the
        epoch; not both) the counter expires then unless a later expiry was
        set since the last :meth:`expire` or :meth:`persist` of it (the
        longest wins); once expired it reads as missing everywhere, and the
        next ``incr`` starts it again from 0.
        """
        if type(by) is not int:
            raise InvalidArgumentType(f"incr takes an int amount, not {type(by).__name__}")
        if not (type(key) is str and key.isascii() and 0 < len(key) <= self._max_key):
            key = check_key(key, self._limits)
        state = self._open_state  # (the _state property inlined: hot path)
        if state is None:
            raise StoreClosed("the store is closed")
        if ttl is None and expiration is None:
            return state.incr(key, by)
        return state.incr(key, by, expires_at(ttl, expiration, state.clock.now_ms()))

    def expire(self, key: str, ttl: float | None = None, *, expiration: float | None = None) -> bool:
        """Make the live key ``key`` expire ``ttl`` seconds from now, or at ``expiration`` (epoch seconds).

        Return True if the key was live here (its expiry is now that), False
        if it is missing (nothing is written). Give exactly one of ``ttl`` and
        ``expiration``; an expiration at or before now deletes the key (like
        Redis ``EXPIREAT`` in the past). Raises :class:`~crdtkv.errors.WrongType`
        for a document, which does not expire.

        How an expire meets a concurrent write: on a register it is a write of
        the value as this replica sees it, with the new expiry, at a new stamp,
        so last writer wins whole: a concurrent ``put`` stamped later keeps its
        own value and expiry, one stamped earlier is overwritten by the value
        the expire saw. On a counter it replaces only the expiry, at a new
        stamp: increments made anywhere, concurrent or not, all count; an
        ``incr(..., ttl=...)`` that did not see the expire does not undo it.
        """
        key = check_key(key, self._limits)
        state = self._state
        if ttl is None and expiration is None:
            raise InvalidArgument("expire needs ttl or expiration (persist removes an expiry)")
        expires = expires_at(ttl, expiration, state.clock.now_ms())
        return state.expire(key, expires)

    def persist(self, key: str) -> bool:
        """Remove the expiry of the live key ``key``; True if it had one.

        False (nothing written) if the key is missing or never expires. On a
        register it is a write like :meth:`expire`'s; on a counter it replaces
        the expiry at a new stamp, and a later ``incr(..., ttl=...)`` sets one again.
        """
        return self._state.persist(check_key(key, self._limits))

    def ttl(self, key: str) -> float | None:
        """Seconds until ``key`` expires; None when it is missing or never expires.

        Tell the two apart with ``key in store``.
        """
        state = self._state
        found = state.inspect(check_key(key, self._limits))
        if found is None or found[1] is None:
            return None
        return max(0, found[1] - state.clock.now_ms()) / 1000

    def kind(self, key: str) -> str | None:
        """What ``key`` holds: "register", "counter" or "document"; None when missing."""
        found = self._state.inspect(check_key(key, self._limits))
        return None if found is None else _KIND_NAMES[found[0]]

    def get_many(self, keys: Sequence[str], default: Any = None) -> list[Any]:
        """The values of ``keys``, in their order: ``default`` for each one missing here."""
        if isinstance(keys, (str, bytes)) or not isinstance(keys, Sequence):
            raise InvalidArgumentType(f"get_many takes a list of keys, not {type(keys).__name__}")
        get = self.get
        return [get(key, default) for key in keys]

    def doc(self, key: str) -> Document:
        """The collaborative document at ``key``, bound to this store.

        Edits made through it are recorded at once and replicate as deltas of
        ``key``; concurrent edits at several replicas all survive (Yrs merges
        them). ``get(key)`` returns the content as plain data. A missing or
        deleted key gives an empty document, created by its first edit.
        Raises :class:`~crdtkv.errors.WrongType` if the key holds a register
        value or a counter. The same key always gives the same object.
        """
        key = check_key(key, self._limits)
        found = self._documents.get(key)
        if found is not None:
            return found
        state = self._state
        entry = state.entries.get(key)
        kind = Kind.MISSING if entry is None else resolve(entry, state.clock.now_ms())
        if kind in (Kind.REGISTER, Kind.COUNTER):
            what = "a counter" if kind is Kind.COUNTER else "a register value"
            raise WrongType(f"key {key!r} holds {what}; doc needs a document or a missing key")
        from .document import Document

        if not self._documents:
            state.feed.subscribe(self._refresh_documents)
        document = self._documents[key] = Document(state, key, release=lambda: self._documents.pop(key, None))
        return document

    def _refresh_documents(self, keys: Sequence[str], cause: Cause) -> None:
        if cause is Cause.COLLECTION:  # a collected key read as missing already
            return
        documents = self._documents
        for key in keys:
            document = documents.get(key)
            if document is not None:
                document.refresh()

    def keys(self, prefix: str = "") -> Iterator[str]:
        """Iterate, in sorted order, over live keys starting with ``prefix``."""
        if not isinstance(prefix, str):
            raise InvalidArgumentType(f"prefix must be str, not {type(prefix).__name__}")
        return iter(self._state.live_keys(prefix))

    def list(
        self, prefix: str = "", *, limit: int = 1000, cursor: str | None = None, detailed: bool = False
    ) -> Page:
        """One page of live keys with ``prefix``, in order, and a cursor for the next page.

        ``page.cursor`` is None on the last page. A cursor stays valid while
        keys come and go: every key present for the whole listing is returned
        exactly once, in order (keys added or removed meanwhile may or may not
        appear). With ``detailed``, ``page.details`` holds a
        :class:`~crdtkv.KeyInfo` (expiration and metadata) per key.
        """
        if not isinstance(prefix, str):
            raise InvalidArgumentType(f"prefix must be str, not {type(prefix).__name__}")
        if type(limit) is not int or not 0 < limit <= MAX_PAGE:
            raise InvalidArgument(f"limit must be an int in 1..{MAX_PAGE}, not {limit!r}")
        after = None if cursor is None else decode_cursor(cursor)
        state = self._state
        keys, more = state.list_page(prefix, after, limit)
        next_cursor = encode_cursor(keys[-1]) if more and keys else None
        if not detailed:
            return Page(keys, next_cursor)
        shown: list[str] = []
        details: list[KeyInfo] = []
        for key in keys:
            found = state.inspect(key)
            if found is None:  # expired since the page was read
                continue
            _, expires, meta = found
            shown.append(key)
            details.append(
                KeyInfo(
                    key,
                    None if expires is None else expires / 1000,
                    None if meta is None else unpack_value(meta),
                )
            )
        return Page(shown, next_cursor, details)

    def rate_limit(self, key: str, limit: int, window: float, *, cost: int = 1) -> Decision:
        """Admit or refuse one request of ``cost`` against ``limit`` per ``window`` seconds.

        Every replica counts into one convergent counter per key and fixed
        window (an ``incr`` with a TTL under a reserved key, never listed), so
        admissions at every PoP count toward one global limit. A refused
        request is not counted. The limit is exact on one replica; across
        replicas a PoP cannot see admissions made elsewhere during the last
        propagation delay ``d`` (network plus the batch window), so per window at
        most ``(PoPs - 1) x B`` extra requests get in, where ``B`` is the most
        requests reaching one PoP within any ``d`` (about ``rate x d`` for steady
        traffic). While PoPs cannot reach each other at all, each admits up to
        the limit on its own. A PoP never refuses while the count it sees is
        below the limit.
        """
        if self._open_state is None:
            raise StoreClosed("the store is closed")
        return self._limiter.decide(key, limit, window, cost)

    def watch(self, prefix: str = "", *, buffer: int = 1000, buffer_bytes: int | None = None) -> Watch:
        """Iterate (``async for``) over changes of keys with ``prefix``, local and merged.

        Changes come in the order this replica applied them, from the moment
        ``watch`` returns. A watcher more than ``buffer`` changes, or more than
        ``buffer_bytes`` (default 4 MiB) of changed keys and values, behind gets a
        ``Change`` with ``overflow=True`` in place of what it missed, and should
        resync; nothing is skipped silently. Use ``async with`` (or ``close()``)
        to stop watching promptly.
        """
        from .watch import DEFAULT_WATCH_BYTES, Watch

        return Watch(
            self._state, prefix, buffer, DEFAULT_WATCH_BYTES if buffer_bytes is None else buffer_bytes
        )

    def __contains__(self, key: object) -> bool:
        missing = object()
        return self._state.lookup(check_key(key, self._limits), missing) is not missing

    # -- state exchange -------------------------------------------------------------

    def snapshot(self) -> bytes:
        """The whole CRDT state as self-checking CBOR bytes (see :meth:`merge`)."""
        return encode_snapshot(self._state.full_state(copy=False))

    def merge(self, other: KvStore | bytes) -> int:
        """Join another replica's state into this one; return the keys changed.

        ``other`` is a :class:`KvStore` of the same name or bytes from
        :meth:`snapshot`. Merging is idempotent, commutative and associative,
        so replicas that have merged the same states read the same values.
        Raises :class:`~crdtkv.errors.DecodeError` for damaged snapshots,
        :class:`~crdtkv.errors.StoreMismatch` for another store's state and
        :class:`~crdtkv.errors.ClockSkewError` for stamps too far in the future;
        in each case this store is left unchanged.
        """
        state = self._state
        if isinstance(other, KvStore):
            delta = other.replica.delta_since(state.vv)
            delta.owned = True  # fresh copies, seen by nothing else: apply keeps them
        elif isinstance(other, (bytes, bytearray, memoryview)):
            delta = decode_snapshot(bytes(other), self._limits)
        else:
            raise InvalidArgumentType(f"merge takes a KvStore or snapshot bytes, not {type(other).__name__}")
        return state.apply(delta)

    def digest(self) -> str:
        """A hash of the replicated state: equal on two replicas exactly when their states are."""
        return self._state.digest()

    def collect_garbage(self) -> int:
        """Drop tombstones and expired values older than ``limits.gc_grace``; return how many.

        Safe at any time: what it removes reads as missing everywhere, and a
        replica that still holds an older live copy (one offline for longer than
        the grace period) can no longer bring it back. A :class:`~crdtkv.Node`
        runs this periodically; durable stores also run it when they open.
        """
        return self._state.collect_garbage()

    # -- lifecycle ------------------------------------------------------------------

    def flush(self) -> None:
        """Return once every change so far is durable (a no-op in memory).

        Raises :class:`~crdtkv.errors.StorageError` if the commit fails; the
        changes stay staged and the next flush tries again.
        """
        if self._open_state is None:
            raise StoreClosed("the store is closed")
        if self._storage is not None:
            self._storage.flush()

    @property
    def storage_error(self) -> Exception | None:
        """The last failed background commit, until a commit succeeds (None if fine)."""
        return self._storage.error if self._storage is not None else None

    @property
    def durable(self) -> bool:
        return self._storage is not None

    @property
    def storage(self) -> Storage | None:
        """The backend this store's changes are committed to (None in memory), for operators' tools."""
        return self._storage

    def close(self) -> None:
        """Flush and release the store; later calls raise :class:`~crdtkv.errors.StoreClosed`.

        Raises :class:`~crdtkv.errors.StorageError` if the final commit fails.
        """
        if self._open_state is None:
            return
        for document in list(self._documents.values()):
            document.close()
        if self._detach is not None:
            self._detach()
        self._open_state = None
        storage, self._storage = self._storage, None
        if storage is not None:
            storage.close()

    @property
    def closed(self) -> bool:
        return self._open_state is None

    def __enter__(self) -> KvStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        if self.closed:
            return f"<KvStore {self._replica_id!r} closed>"
        return f"<KvStore {self.name!r} replica={self._replica_id!r} keys={len(self._state.entries)}>"


__all__ = ["Decision", "KeyInfo", "KvStore", "Page", "Record"]

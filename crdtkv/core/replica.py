"""One replica's state: entries, version vector, change logs, local operations.

Sans-I/O and synchronous: callers hand in already validated keys and stored
values (see :mod:`.values`) and get results back; nothing here waits, sleeps or
touches a socket. Time comes from the injected :class:`~.hlc.HybridClock`.

Every local operation gets a dot ``(origin, stamp)``; stamps from the hybrid
clock strictly increase per origin, so they double as sequence numbers. The
version vector maps each origin to the highest stamp up to which this replica
holds all of that origin's operations.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple, TypeAlias

from ..errors import InvalidValue, StoreMismatch, TooLarge, WrongType
from .bulk import collector_paused
from .changelog import OriginLog
from .digest import digest_entries
from .document import DocState, Gen, LiveDocs, join_docs
from .entry import (
    RETIRED,
    TOMBSTONE,
    CounterState,
    Entry,
    Kind,
    counter_expires,
    dots,
    join_into,
    max_stamp,
    register_live,
    resolve,
    settle_base,
)
from .feed import Cause, ChangeFeed
from .gc import Collector, outlived
from .hlc import NANOS_PER_MS, HybridClock
from .keyindex import KeyIndex
from .limits import DEFAULT_LIMITS, Limits
from .prune import HEARTBEAT_PREFIX, marks, next_incarnation, retired, split_marks, window_ms
from .values import Packed
from .vv import join_into as join_vv
from .wire import Delta
from .yrs import client_id

# Module-level names: a global lookup is cheaper than ``Kind.X`` on the read path.
_MISSING, _REGISTER, _COUNTER, _DOCUMENT = Kind.MISSING, Kind.REGISTER, Kind.COUNTER, Kind.DOCUMENT
_WRITE = Cause.WRITE
_MERGE = Cause.MERGE

#: Log rows to add after a merge: origin -> [(stamp, key)].
_Pending = dict[str, list[tuple[int, str]]]


def _without_pruned(entry: Entry, pruned: dict[str, int]) -> Entry:
    """``entry`` without the counter rows of origins pruned here (a copy, if it had any).

    This replica held every operation of a pruned origin and folded them into
    its counters' bases (see :mod:`.prune`): such rows are stale copies.
    """
    counter = entry.counter
    assert counter is not None
    if not any(origin in pruned for origin in (*counter.totals, *counter.context)):
        return entry
    entry = entry.copy()
    counter = entry.counter
    assert counter is not None
    for table in (counter.totals, counter.removed, counter.context):
        for origin in [origin for origin in table if origin in pruned]:
            del table[origin]
    counter.net = counter.tally()
    return entry


def entry_generation(entry: Entry | None) -> Gen:
    """The generation a document created now at a key holding ``entry`` starts.

    It is named after the register write (the delete or put) that ended the
    previous generation, so replicas that saw the same end and create the
    document again concurrently share one generation and merge their edits.
    A key with no entry starts at ``(0, "")``: a replica that still holds a
    collected generation drops it when the new one arrives (see
    :meth:`ReplicaState.apply`), so the two never mix.
    """
    if entry is not None:
        return (entry.stamp, entry.writer)
    return (0, "")


#: A stored value or metadata: anything :func:`~.values.pack_value` returns. (An alias,
#: because mypyc cannot build a NamedTuple with a field annotated plain ``object``.)
Stored: TypeAlias = object


class Reading(NamedTuple):
    """What a read of a key sees, with its provenance (see :meth:`ReplicaState.describe`)."""

    kind: Kind
    #: the stored value (a counter's int, a document's plain content packed)
    value: Stored
    #: the stored metadata of the write (None for counters and documents)
    meta: Stored
    #: when it expires, in epoch milliseconds, or None
    expires: int | None
    #: the origin of the winning write (for a counter: its latest live increment)
    origin: str
    #: that write's stamp
    stamp: int


class ReplicaState:
    """The CRDT state of one replica of one named store."""

    def __init__(self, name: str, origin: str, clock: HybridClock, limits: Limits = DEFAULT_LIMITS) -> None:
        self.name = name
        self.limits = limits
        self._max_total = limits.max_counter_total
        self._grace_ms = int(limits.gc_grace * 1000)
        #: the id this replica's operations are stamped with
        self.origin = origin
        self.clock = clock
        self.entries: dict[str, Entry] = {}
        #: origin -> highest stamp up to which all its operations are held
        self.vv: dict[str, int] = {}
        self._logs: dict[str, OriginLog] = {origin: OriginLog()}
        self._own_log = self._logs[origin]
        self._digest: str | None = None
        #: every change is published here: storage, watchers, documents and the node subscribe
        self.feed = ChangeFeed()
        #: what may become garbage, and when (see :mod:`.gc`)
        self._gc = Collector()
        #: origin -> largest stamp of its operations garbage-collected here
        self.collected: dict[str, int] = self._gc.collected
        #: origin -> its last stamp, for every origin pruned here (see :mod:`.prune`)
        self.pruned: dict[str, int] = {}
        window = window_ms(limits.gc_grace, limits.prune_after)
        #: a replica whose own latest stamp is this old writes a heartbeat (see :mod:`.prune`)
        self._heartbeat_after = (window // 4) << 16
        #: and one whose own latest stamp is this old writes as a new incarnation
        self._rotate_after = (window // 2) << 16
        #: sorted keys for listing (see :mod:`.keyindex`)
        self._keys = KeyIndex()
        #: scratch Yrs documents of recently edited documents (see LiveDocs)
        self._live_docs = LiveDocs()
        #: the origins the latest :meth:`apply` brought operations of, or moved in the
        #: version vector (set before it publishes: a replication shell reads it then)
        self.merged_origins: set[str] = set()

    # -- change tracking ---------------------------------------------------------

    def _log(self, origin: str) -> OriginLog:
        """The change log of ``origin`` (the retired one's if it was pruned here)."""
        if origin in self.pruned:
            origin = RETIRED
        log = self._logs.get(origin)
        if log is None:
            log = self._logs[origin] = OriginLog()
        return log

    def _rotate(self, stamp: int) -> None:
        """Write as a new incarnation from now on: the current origin may look retired (see :mod:`.prune`)."""
        origin = next_incarnation(self.origin, stamp)
        while origin in self.vv or origin in self.pruned:  # not expected: a hash collision
            stamp += 1
            origin = next_incarnation(self.origin, stamp)
        self.origin = origin
        self._own_log = self._log(origin)

    def _forget_dot(self, origin: str, key: str) -> None:
        """Note that ``key`` no longer carries a dot of ``origin``."""
        log = self._logs.get(RETIRED if origin in self.pruned else origin)
        if log is not None:
            log.forget(key)

    def _covered(self, entry_dots: dict[str, int]) -> bool:
        """True if every dot was seen here (a pruned origin's, up to its last stamp)."""
        vv, pruned = self.vv, self.pruned
        return all(
            vv.get(origin, 0) >= seen or pruned.get(origin, 0) >= seen for origin, seen in entry_dots.items()
        )

    def _note_dots(self, key: str, before: dict[str, int], entry: Entry, pending: _Pending) -> None:
        """Queue log rows for the dots ``entry`` gained since it had ``before``."""
        after = dots(entry)
        for origin, stamp in after.items():
            if before.get(origin, 0) < stamp:
                pending.setdefault(origin, []).append((stamp, key))
        for origin in before:
            if origin not in after:
                self._forget_dot(origin, key)

    def _current_entry(self, key: str, now_ms: int) -> Entry | None:
        """The entry a local operation on ``key`` at ``now_ms`` builds on.

        An entry that any replica following the grace rule may already have
        garbage-collected is collected first, as if on time (see :meth:`apply`):
        building on it would revive state that replica no longer has.
        """
        entry = self.entries.get(key)
        if entry is None:
            return None
        if not outlived(entry, (now_ms - self._grace_ms) << 16, now_ms):
            return entry
        self._collect_entries([(key, entry)])
        return None

    def _local_change(self, key: str, stamp: int) -> None:
        """Bookkeeping after a local operation on ``key``: vv, digest, then the change feed.

        The change is applied even if storage fails (a StorageError then
        propagates): watchers and replication still hear of it.
        """
        self.vv[self.origin] = stamp
        self._digest = None
        feed = self.feed
        if feed.subscribers:
            feed.publish((key,), _WRITE)

    # -- local operations -----------------------------------------------------------

    def write(self, key: str, value: object, expires: int | None = None, meta: object = None) -> int:
        """Write a register value (or :data:`TOMBSTONE`); return its stamp.

        Overwriting a counter removes every increment this replica has seen.
        """
        clock = self.clock
        now_ms = clock.now_ns() // NANOS_PER_MS  # one clock read: the stamp and the grace test share it
        stamp = clock.tick_at(now_ms)
        vv = self.vv
        if stamp - vv.get(self.origin, stamp) >= self._rotate_after:
            self._rotate(stamp)
        if value is TOMBSTONE:
            self._gc.tombstone(stamp, key)
        elif expires is not None:
            self._gc.expires(expires, key)
        origin = self.origin
        own = self._own_log.latest
        entries = self.entries
        entry = entries.get(key)
        # (_current_entry inlined: only a tombstone, an expiry or a counter can have outlived the
        # grace period, so a plain overwrite skips the test)
        if (
            entry is not None
            and (entry.value is TOMBSTONE or entry.expires is not None or entry.counter is not None)
            and outlived(entry, (now_ms - self._grace_ms) << 16, now_ms)
        ):
            self._collect_entries([(key, entry)])
            entry = None
        if entry is None:
            entries[key] = Entry(stamp, origin, value, expires, meta)
            self._keys.added(key)
        else:
            counter = entry.counter
            if counter is None:
                if entry.writer != origin and entry.stamp and entry.doc is None:
                    # the old write is superseded and never touched a counter or document
                    self._forget_dot(entry.writer, key)
            else:
                counter.remove_observed()
                counter.context[origin] = stamp
            if entry.doc is not None:
                entry.doc = entry.doc.removed_by(origin, stamp)
            entry.stamp = stamp
            entry.writer = origin
            entry.value = value
            entry.expires = expires
            entry.meta = meta
            if counter is not None and counter.base is not None:
                settle_base(entry)
            own.pop(key, None)
        own[key] = stamp
        # (_local_change inlined)
        vv[origin] = stamp
        self._digest = None
        feed = self.feed
        if feed.subscribers:
            feed.publish((key,), _WRITE)
        return stamp

    def delete(self, key: str) -> bool:
        """Delete ``key`` (a tombstone write); return True if it was live here."""
        entry = self.entries.get(key)
        was_live = entry is not None and resolve(entry, self.clock.now_ms()) != _MISSING
        self.write(key, TOMBSTONE)
        return was_live

    def incr(
        self, key: str, by: int, expires: int | None = None, *, now_ms: int = -1, kind: Kind | None = None
    ) -> int:
        """Add ``by`` to the counter at ``key``; return its new value here.

        With ``expires`` (epoch ms) the counter expires then, unless a longer
        expiry was set. An expired counter starts again from zero, without its
        old expiry. Raises :class:`WrongType` if the key holds a live register value,
        and :class:`~crdtkv.errors.InvalidValue` if ``by`` or this replica's
        resulting total reaches ``Limits.max_counter_total`` (so every peer with
        the same limits can take the counter); both change nothing.

        A caller that already read the clock passes the reading as ``now_ms``
        (default: read it now), and one that resolved the key at that time
        passes what :func:`~.entry.resolve` said as ``kind``.
        """
        if now_ms < 0:
            now_ms = self.clock.now_ns() // NANOS_PER_MS
        top = self._max_total
        if not -top < by < top:
            raise InvalidValue(
                f"incr by a {by.bit_length()}-bit amount; the limit (max_counter_bytes) is "
                f"{self.limits.max_counter_bytes} bytes"
            )
        entry = self.entries.get(key)
        have = None  # this origin's totals on the key
        have_origin = self.origin
        if entry is not None:
            if entry.counter is not None:
                have = entry.counter.totals.get(have_origin)
            horizon = (now_ms - self._grace_ms) << 16
            # (_current_entry inlined: only an entry with a tombstone, an expiry or a counter
            # can pass outlived's test, and none with an operation after the horizon)
            if (
                (have is None or have[2] < horizon)
                and (entry.value is TOMBSTONE or entry.expires is not None or entry.counter is not None)
                and outlived(entry, horizon, now_ms)
            ):
                self._collect_entries([(key, entry)])
                entry = None
                have = None
        if have is not None and (have[0] + by if by >= 0 else have[1] - by) >= top:
            raise InvalidValue(
                f"incr would take this replica's total on key {key!r} beyond the limit "
                f"(max_counter_bytes: {self.limits.max_counter_bytes} bytes)"
            )
        # a plain counter (no register value, no expiry) can neither refuse nor need a reset
        if entry is not None and (
            entry.doc is not None
            or (
                entry.counter is not None
                and (entry.value is not TOMBSTONE or entry.counter.expiry is not None)
            )
        ):
            if kind is None:
                kind = resolve(entry, now_ms)
            if kind in (_REGISTER, _DOCUMENT):
                what = "a register value" if kind == _REGISTER else "a document"
                raise WrongType(f"key {key!r} holds {what}; incr needs a counter or a missing key")
            if kind == _MISSING and entry.counter is not None and entry.counter.live_stamp() is not None:
                # expired, or hidden behind a value that expired: start afresh, without
                # the old increments or expiry (a delete that removes what it counted)
                self.write(key, TOMBSTONE)
        stamp = self.clock.tick_at(now_ms)
        vv = self.vv
        if stamp - vv.get(self.origin, stamp) >= self._rotate_after:
            self._rotate(stamp)
        origin = self.origin
        own = self._own_log.latest
        if entry is None:
            counter = CounterState()
            self.entries[key] = Entry(0, "", TOMBSTONE, None, None, counter)
            self._keys.added(key)
            totals = counter.totals
            # A plain tuple with the fields of Totals, in their order: building and unpacking a
            # NamedTuple costs 10-15% of an incr (measured), and no reader takes the fields by name.
            totals[origin] = (by, 0, stamp) if by >= 0 else (0, -by, stamp)  # type: ignore[assignment]
        else:
            counter_or_none = entry.counter
            if counter_or_none is None:
                if entry.value is not TOMBSTONE and register_live(entry, now_ms):
                    raise WrongType(
                        f"key {key!r} holds a register value; incr needs a counter or a missing key"
                    )
                counter = entry.counter = CounterState()
            else:
                counter = counter_or_none
            own.pop(key, None)
            totals = counter.totals
            if origin != have_origin:  # a new incarnation (here, or in the reset's write)
                have = totals.get(origin)
            # (else ``have`` is still this origin's row: a reset removes rows, it does not change them)
            inc, dec, _ = (0, 0, 0) if have is None else have
            if by >= 0:
                totals[origin] = (inc + by, dec, stamp)  # type: ignore[assignment]
            else:
                totals[origin] = (inc, dec - by, stamp)  # type: ignore[assignment]
            context = counter.context
            if context:
                context.pop(origin, None)  # the totals now carry this origin's latest dot
        counter.net += by  # the value moves by exactly what this origin's totals moved
        if expires is not None:
            # the longest of the expiries set on top of the same expire or persist wins
            # (see entry.expiry_rank); an expiry from before the last reset is void
            # (the collector hears of each new expiry once: not of every incr under one
            # expiry, which would grow its heap by one row per incr until the window ends)
            epoch = self.entries[key].stamp
            current = counter.expiry
            if current is None or current[0] < epoch:
                counter.expiry = (epoch, expires)
                counter.expiry_stamp = 0
                self._gc.expires(expires, key)
            elif current[0] == epoch and expires > current[1]:
                counter.expiry = (epoch, expires)
                self._gc.expires(expires, key)
        own[key] = stamp
        # (_local_change inlined)
        vv[origin] = stamp
        self._digest = None
        feed = self.feed
        if feed.subscribers:
            feed.publish((key,), _WRITE)
        return counter.net

    def admit(self, key: str, cost: int, limit: int, expires: int, now_ms: int) -> tuple[bool, int]:
        """Add ``cost`` to the counter at ``key`` if its value stays at most ``limit``.

        Return whether it did and the value: the new one, or the one that
        refused (nothing is written then). One reading of the key at ``now_ms``
        (a reading of the clock) serves the decision and the increment, which is
        :meth:`incr` with ``expires``. A rate limiter's step.
        """
        entry = self.entries.get(key)
        seen = 0
        kind: Kind | None = None
        if entry is not None:
            kind = resolve(entry, now_ms)
            if kind == _COUNTER:
                counter = entry.counter
                assert counter is not None
                seen = counter.net
            # a register or document: incr raises WrongType below
        if kind not in (_REGISTER, _DOCUMENT) and seen + cost > limit:
            return False, seen
        return True, self.incr(key, cost, expires, now_ms=now_ms, kind=kind)

    def expire(self, key: str, expires: int | None) -> bool:
        """Give the live key ``key`` the expiry ``expires`` (epoch ms; None: none); False if missing.

        A register is written again, value and metadata as they are, with the
        new expiry (a write like any other: a concurrent ``put`` stamped later
        wins whole, one stamped earlier loses to it). A counter's expiry is
        replaced at a new stamp (see :func:`~.entry.expiry_rank`); its totals are
        untouched, so no increment is lost or counted twice. An expiry at or
        before now deletes the key (as :meth:`delete`). Raises
        :class:`~crdtkv.errors.WrongType` for a document (documents do not
        expire); a missing key changes nothing.
        """
        now_ms = self.clock.now_ms()
        entry = self._current_entry(key, now_ms)
        if entry is None:
            return False
        kind = resolve(entry, now_ms)
        if kind == _MISSING:
            return False
        if kind == _DOCUMENT:
            raise WrongType(f"key {key!r} holds a document; documents do not expire")
        if expires is not None and expires <= now_ms:
            self.write(key, TOMBSTONE)
            return True
        if kind == _REGISTER:
            self.write(key, entry.value, expires, entry.meta)
            return True
        counter = entry.counter
        assert counter is not None
        stamp = self.clock.tick_at(now_ms)
        if stamp - self.vv.get(self.origin, stamp) >= self._rotate_after:
            self._rotate(stamp)
        origin = self.origin
        counter.expiry = (entry.stamp, 0 if expires is None else expires)
        counter.expiry_stamp = stamp
        counter.context[origin] = stamp  # the operation's dot (the totals keep theirs)
        if expires is not None:
            self._gc.expires(expires, key)
        own = self._own_log.latest
        own.pop(key, None)
        own[key] = stamp
        self._local_change(key, stamp)
        return True

    def persist(self, key: str) -> bool:
        """Remove the expiry of the live key ``key``; True if it had one (else nothing is written)."""
        found = self.inspect(key)
        if found is None or found[1] is None:
            return False
        return self.expire(key, None)

    def document(self, key: str) -> DocState | None:
        """The document at ``key`` if a read sees one (it is the live value), else None."""
        entry = self.entries.get(key)
        if entry is None or entry.doc is None or resolve(entry, self.clock.now_ms()) != _DOCUMENT:
            return None
        return entry.doc

    def edit_document(self, key: str, gen: Gen | None, update: bytes, schema: dict[str, str]) -> Gen:
        """Record a local document edit (a Yrs update); return the document's generation.

        ``gen`` is the generation the editor's copy belongs to, and ``update``
        the edit alone. With ``gen`` None, or a generation that is no longer
        the live one, ``update`` must hold the editor's whole document: it
        starts a generation (see :mod:`.document`). Raises :class:`~crdtkv.errors.InvalidValue`
        (changing nothing) if the result holds a number beyond 2**53 or
        exceeds ``max_value_bytes``.
        """
        now_ms = self.clock.now_ms()
        stamp = self.clock.tick_at(now_ms)
        if stamp - self.vv.get(self.origin, stamp) >= self._rotate_after:
            self._rotate(stamp)
        origin = self.origin
        entry = self._current_entry(key, now_ms)
        current = self.document(key)
        max_bytes = self.limits.max_value_bytes
        try:  # every check comes before anything changes
            if gen is not None and current is not None and current.gen == gen:
                live = self._live_docs.take(key, current)
                checked = None
                if live is not None:
                    checked = current.edited_live(live, update, origin, stamp, schema, max_bytes)
                if checked is None:
                    edited = current.edited(update, origin, stamp, schema)
                    checked = edited.checked(max_bytes, local=True)
            else:
                new_gen = entry_generation(entry)
                old = entry.doc if entry is not None else None
                if old is not None and old.gen >= new_gen:  # not expected: keep generations increasing
                    new_gen = (stamp, origin)
                started = DocState(new_gen, update, {origin: stamp}, {}, dict(schema))
                checked = started.checked(max_bytes, local=True)
        except TooLarge as exc:
            raise InvalidValue(str(exc)) from None
        doc, vector = checked
        doc = doc.with_clock(origin, stamp, vector.get(client_id(origin), 0))
        if entry is None:
            entry = self.entries[key] = Entry(0, "", TOMBSTONE, doc=doc)
            self._keys.added(key)
        else:
            before = dots(entry)
            entry.doc = doc
            after = dots(entry)
            for other in before:
                if other not in after:
                    self._forget_dot(other, key)
        own = self._own_log.latest
        own.pop(key, None)
        own[key] = stamp
        self._live_docs.keep(key, doc)
        self._local_change(key, stamp)
        return doc.gen

    def lookup(self, key: str, default: object) -> object:
        """The stored value a read of ``key`` sees (a counter's int), or ``default``."""
        entry = self.entries.get(key)
        if entry is None:
            return default
        if entry.counter is None and entry.doc is None:
            value = entry.value
            if value is TOMBSTONE:
                return default
            expires = entry.expires
            if expires is not None and expires <= self.clock.now_ms():
                return default
            return value
        kind = resolve(entry, self.clock.now_ms())
        if kind == _REGISTER:
            return entry.value
        if kind == _COUNTER:
            assert entry.counter is not None
            return entry.counter.value()
        if kind == _DOCUMENT:
            assert entry.doc is not None
            return Packed(entry.doc.plain())
        return default

    def describe(self, key: str) -> Reading | None:
        """What a read of ``key`` sees, with its provenance, or None if missing."""
        entry = self.entries.get(key)
        if entry is None:
            return None
        kind = resolve(entry, self.clock.now_ms())
        if kind == _REGISTER:
            return Reading(kind, entry.value, entry.meta, entry.expires, entry.writer, entry.stamp)
        if kind == _COUNTER:
            counter = entry.counter
            assert counter is not None
            live = counter.live_stamp()
            assert live is not None
            return Reading(kind, counter.value(), None, counter_expires(entry), live[1], live[0])
        if kind == _DOCUMENT:
            doc = entry.doc
            assert doc is not None
            edited = doc.live_stamp()
            assert edited is not None
            return Reading(kind, Packed(doc.plain()), None, None, edited[1], edited[0])
        return None

    def inspect(self, key: str) -> tuple[Kind, int | None, object] | None:
        """``(kind, expires_ms, stored metadata)`` of what a read of ``key`` sees, or None if missing.

        Like :meth:`describe` without building the value (a document's content
        is not rendered): for listings, ``ttl`` and type checks.
        """
        entry = self.entries.get(key)
        if entry is None:
            return None
        kind = resolve(entry, self.clock.now_ms())
        if kind == _REGISTER:
            return kind, entry.expires, entry.meta
        if kind == _COUNTER:
            return kind, counter_expires(entry), None
        if kind == _DOCUMENT:
            return kind, None, None
        return None

    def list_page(self, prefix: str, after: str | None, limit: int) -> tuple[list[str], bool]:
        """Up to ``limit`` live keys with ``prefix``, in order, after ``after``; and whether more follow.

        Keys beginning with :data:`.keyindex.INTERNAL_PREFIX` are crdtkv's own: never listed.
        """
        return self._keys.page(self.entries, self.clock.now_ms(), prefix, after, limit)

    def origin_of(self, key: str) -> str | None:
        """The origin of the latest write that decides what ``key`` reads as (a delete included)."""
        found = self.describe(key)
        if found is not None:
            return found.origin
        entry = self.entries.get(key)
        if entry is None:
            return None
        if entry.stamp:
            return entry.writer
        counter = entry.counter
        context = counter.full_context() if counter is not None else {}
        if context:
            return max(context.items(), key=lambda item: (item[1], item[0]))[0]
        return None

    def live_keys(self, prefix: str = "") -> list[str]:
        """Sorted keys that read as present, optionally only those with ``prefix``."""
        keys, _ = self.list_page(prefix, None, len(self.entries) + 1)
        return keys

    # -- replication -----------------------------------------------------------

    def changed_keys_since(self, vv: dict[str, int], origins: Iterable[str] | None = None) -> set[str]:
        """Keys carrying an operation that ``vv`` does not cover.

        With ``origins``, only operations of those origins are looked for (a
        session names the origins that moved: its cost then follows them, not
        the number of origins the replica ever saw).
        """
        changed: set[str] = set()
        logs = self._logs
        if origins is None:
            for origin, log in logs.items():
                changed.update(key for key, _ in log.after(vv.get(origin, 0)))
            return changed
        for origin in origins:
            found = logs.get(origin)
            if found is not None:
                changed.update(key for key, _ in found.after(vv.get(origin, 0)))
        return changed

    def delta_since(self, vv: dict[str, int]) -> Delta:
        """Every entry that has changes ``vv`` lacks, as independent copies."""
        return Delta(self.name, dict(self.vv), self.entries_for(self.changed_keys_since(vv), vv))

    def entries_for(
        self, keys: Iterable[str], vv: dict[str, int], *, copy: bool = True
    ) -> list[tuple[str, Entry]]:
        """The entries of ``keys`` as a replica holding ``vv`` needs them.

        Documents are trimmed to the Yrs structs ``vv`` may lack (the same
        trimming for :meth:`delta_since` and for a session's batches, so what
        a bench measures is what a node sends). Keys without an entry are
        skipped. With ``copy=False`` entries without a document are shared
        with this replica: only for immediate, synchronous encoding.
        """
        entries = self.entries
        items: list[tuple[str, Entry]] = []
        for key in keys:
            entry = entries.get(key)
            if entry is None:
                continue
            if entry.doc is not None:
                entry = entry.copy()
                assert entry.doc is not None
                entry.doc = entry.doc.trimmed(vv)
            elif copy:
                entry = entry.copy()
            items.append((key, entry))
        return items

    def full_state(self, *, copy: bool = True) -> Delta:
        """The whole state (a snapshot's content).

        With ``copy=False`` the delta shares this replica's live entries: only
        for immediate, synchronous encoding.
        """
        if copy:
            with collector_paused(len(self.entries)):
                items = [(key, entry.copy()) for key, entry in self.entries.items()]
        else:
            items = list(self.entries.items())
        return Delta(self.name, dict(self.vv), items)

    def apply(self, delta: Delta) -> int:
        """Join a delta into this state; return how many keys changed.

        All-or-nothing with respect to validation: a store-name mismatch or a
        stamp beyond the clock-skew limit raises before any entry is touched.
        """
        if delta.name != self.name:
            raise StoreMismatch(f"state of store {delta.name!r} cannot merge into store {self.name!r}")
        top = max(delta.vv.values(), default=0)
        entries_top = delta.top  # the decoder found it while checking the entries
        if entries_top < 0:
            for _, remote in delta.entries:
                entries_top = max(entries_top, max_stamp(remote))
        top = max(top, entries_top)
        if top:
            self.clock.check(top)
        entries = self.entries
        # Entries that any replica following the grace rule may already have
        # collected are collected here first, as if on time: a replica that
        # collected a key and used it again starts its counter totals from zero,
        # its document from an empty generation and its register from nothing,
        # which must not meet the old ones. "Now" is the later of this replica's
        # clock and the newest stamp in the delta (at most max_clock_skew ahead),
        # so a replica whose clock lags the collecting one's still agrees.
        # Plain registers need none of this: the later write wins either way.
        now_ms = self.clock.now_ms()
        horizon = (max(now_ms, top >> 16) - int(self.limits.gc_grace * 1000)) << 16
        stale: list[tuple[str, Entry]] = []
        # documents are joined and checked first, so a bad one changes nothing
        documents: dict[str, DocState | None] = {}
        for key, remote in delta.entries:
            if remote.doc is None:
                continue
            local = entries.get(key)
            if local is not None and outlived(local, horizon, now_ms):
                stale.append((key, local))
                local = None
            local_doc = local.doc if local is not None else None
            live = self._live_docs.take(key, local_doc) if local_doc is not None else None
            documents[key] = join_docs(local_doc, remote.doc, self.limits.max_value_bytes, live)
        if stale:
            self._collect_entries(stale)
        feed = self.feed
        published: list[str] | None = [] if feed.subscribers else None
        owned = delta.owned
        delta.owned = False  # its entries may be kept here: a second apply copies them
        with collector_paused(len(delta.entries)):
            changed = self._join_all(delta, published, documents, horizon, now_ms, owned)
        for key, document in documents.items():
            if document is not None:
                self._live_docs.keep(key, document)
        remote_vv = delta.vv
        if self.pruned:  # a pruned origin never comes back (see :mod:`.prune`)
            pruned = self.pruned
            remote_vv = {origin: seen for origin, seen in remote_vv.items() if origin not in pruned}
        grew = join_vv(self.vv, remote_vv)
        self.merged_origins.update(remote_vv)
        self.clock.observe(top)
        if changed:
            self._digest = None
        if (changed or grew) and published is not None:
            feed.publish(published, _MERGE)
        return changed

    def _join_all(
        self,
        delta: Delta,
        published: list[str] | None,
        documents: dict[str, DocState | None],
        horizon: int,
        now_ms: int,
        owned: bool,
    ) -> int:
        """Join every entry of ``delta``; log the new dots in stamp order per origin.

        ``documents`` holds the already joined document of each key whose
        remote entry has one (None: nothing new). A counter entry that
        outlived ``horizon`` is collected before it is joined (see
        :meth:`apply`). Changed keys are appended to ``published`` when it is
        a list. With ``owned``, a new plain register's entry is kept as it is
        (nothing else holds it) instead of copied.
        """
        changed = 0
        entries = self.entries
        pending: _Pending = {}
        collecting = bool(self.collected)
        fresh = self._keys.pending()
        gc = self._gc
        pruned = self.pruned
        for key, remote in delta.entries:
            if pruned and remote.counter is not None:
                remote = _without_pruned(remote, pruned)
            local = entries.get(key)
            if (
                local is not None
                and (local.counter is not None or local.doc is not None or remote.counter is not None)
                and outlived(local, horizon, now_ms)
            ):
                self._collect_entries([(key, local)])
                local = None
                collecting = True
            if local is None and collecting and self._covered(dots(remote)):
                # every operation in it was seen here, yet the key is gone: it was
                # garbage-collected, and a stale copy must not bring it back
                continue
            if local is None and fresh is not None:
                fresh.append(key)
            if remote.value is TOMBSTONE or remote.expires is not None or remote.counter is not None:
                gc.track(key, remote)  # (nothing else can make an entry garbage later)
            if local is None:
                if remote.counter is None and remote.doc is None:  # a new plain register: adopt it
                    entries[key] = (
                        remote
                        if owned
                        else Entry(remote.stamp, remote.writer, remote.value, remote.expires, remote.meta)
                    )
                    rows = pending.get(remote.writer)  # (not setdefault: no empty list per entry)
                    if rows is None:
                        rows = pending[remote.writer] = []
                    rows.append((remote.stamp, key))
                else:
                    local = entries[key] = Entry(0, "", TOMBSTONE)
                    join_into(local, remote)
                    if remote.doc is not None:
                        local.doc = documents[key]
                    self._note_dots(key, {}, local, pending)
                changed += 1
                if published is not None:
                    published.append(key)
            elif local.counter is None is remote.counter and local.doc is None is remote.doc:
                # (chained: both counters and both documents are None)
                # the common case, two plain registers: no dot maps needed
                if (remote.stamp, remote.writer) > (local.stamp, local.writer):
                    if local.stamp:
                        self._forget_dot(local.writer, key)
                    join_into(local, remote)
                    rows = pending.get(local.writer)
                    if rows is None:
                        rows = pending[local.writer] = []
                    rows.append((local.stamp, key))
                    changed += 1
                    if published is not None:
                        published.append(key)
            else:
                before = dict(dots(local))
                joined = join_into(local, remote)
                document = documents.get(key)
                if document is not None:
                    local.doc = document
                    joined = True
                if joined:
                    self._note_dots(key, before, local, pending)
                    changed += 1
                    if published is not None:
                        published.append(key)
        for origin, rows in pending.items():
            rows.sort()
            self._log(origin).record(rows)
        self.merged_origins = set(pending)
        return changed

    def missed_collection(self, vv: dict[str, int]) -> bool:
        """True if a replica with version vector ``vv`` may hold data whose deletion was collected here.

        That is a replica that saw some of an origin's operations but not the
        ones collected here: deltas cannot bring it up to date (the tombstones
        it needs are gone), so it must be rebuilt from a peer (the grace rule).
        A new or rebuilt replica, which saw none of them, holds nothing stale.
        Likewise a replica that names an origin pruned here at another stamp
        than its last one: it lacks some of that origin's operations, or holds
        some written after it retired (see :mod:`.prune`).
        """
        if self._gc.missed(vv):
            return True
        pruned = self.pruned
        return bool(pruned) and any(
            0 < seen != pruned[origin] for origin, seen in vv.items() if origin in pruned
        )

    def collect_garbage(self) -> int:
        """Drop tombstones and expired values older than ``gc_grace``; return how many.

        Run it regularly (a Node does, every ``gc_interval``); each run costs
        what it collects, not the store size.
        """
        removed = self.collect_expired_internal()
        grace_ms = int(self.limits.gc_grace * 1000)
        now_ms = self.clock.now_ms()
        keys = self._gc.collect(self.entries, now_ms, grace_ms, self._forget_collected)
        self._dropped(keys)
        self.prune(now_ms)
        last = self.vv.get(self.origin, 0)
        if last and self._heartbeat_after <= (now_ms << 16) - last < self._rotate_after:
            self.write(HEARTBEAT_PREFIX + self.origin, TOMBSTONE)
        return removed + len(keys)

    def prune(self, now_ms: int | None = None) -> int:
        """Prune the origins retired at ``now_ms`` (default: now); return how many (see :mod:`.prune`).

        :meth:`collect_garbage` runs it. Each retired origin leaves the
        version vector and the change logs, and its counter rows are folded
        into each counter's base, so it costs nothing in any message afterwards.
        """
        if now_ms is None:
            now_ms = self.clock.now_ms()
        last = self.vv.get(self.origin, 0)
        if last and last < (now_ms - int(self.limits.prune_after * 1000)) << 16:
            # silent as long as a retired origin: the base's cut must cover it too, so this
            # origin retires like any other and the replica writes as a new incarnation
            self._rotate(self.clock.tick())
        gone = retired(self.vv, self.origin, now_ms, self.limits.prune_after)
        if not gone:
            return 0
        own = self.origin
        heard = max(
            (
                seen
                for origin, seen in self.vv.items()
                if origin not in gone and origin != own and origin[0] != "~"
            ),
            default=0,
        )
        if heard < (now_ms << 16) - self._rotate_after:
            # no other live origin has reached this replica for longer than one may stay
            # silent: this replica is cut off (stale), rather than everyone else retired
            return 0
        self.pruned.update(gone)
        vv = self.vv
        logs = self._logs
        moved: list[tuple[int, str]] = []
        for origin in gone:
            del vv[origin]
            log = logs.pop(origin, None)
            if log is not None:
                moved.extend((stamp, key) for key, stamp in log.latest.items())
        cut = max(gone.values()) + 1
        if vv.get(RETIRED, 0) < cut:
            vv[RETIRED] = cut
        keys: list[str] = []
        if moved:
            pseudo = self._log(RETIRED)
            have = pseudo.latest
            moved.sort()
            pseudo.record([(stamp, key) for stamp, key in moved if have.get(key, 0) < stamp])
            grace = int(self.limits.gc_grace * 1000) << 16
            entries = self.entries
            pruned = self.pruned
            for key in dict.fromkeys(key for _, key in moved):
                entry = entries.get(key)
                if entry is not None and entry.counter is not None and entry.counter.fold(pruned, grace):
                    settle_base(entry)
                    keys.append(key)
        if keys:
            self._digest = None
        if self.feed.subscribers:  # storage stages the new vector and marks even without keys
            self.feed.publish(keys, Cause.COLLECTION)
        return len(gone)

    def collect_expired_internal(self) -> int:
        """Drop crdtkv's own expired entries (rate-limit windows) at once, without a grace period.

        Safe without one: such a counter expires on every increment's own
        expiry, so a late or stale copy that comes back still reads as missing.
        These collections set no grace marks, so they never make a peer stale.
        """
        keys = self._gc.collect_internal(self.entries, self.clock.now_ms(), self._forget_internal)
        self._dropped(keys)
        return len(keys)

    def _forget_collected(self, key: str, entry: Entry) -> None:
        """Drop a collectable entry and its dots, and mark them as collected (the grace rule)."""
        self._gc.remember(self._forget_internal(key, entry))

    def _forget_internal(self, key: str, entry: Entry) -> dict[str, int]:
        """Drop a collectable entry and its dots; return the dots."""
        del self.entries[key]  # stays in the sorted index until its next rebuild
        self._live_docs.forget(key)
        entry_dots = dots(entry)
        for origin in entry_dots:
            self._forget_dot(origin, key)
        return entry_dots

    def _collect_entries(self, items: list[tuple[str, Entry]]) -> None:
        for key, entry in items:
            self._forget_collected(key, entry)
        self._dropped([key for key, _ in items])

    def _dropped(self, keys: list[str]) -> None:
        if keys:
            self._digest = None
            if self.feed.subscribers:
                self.feed.publish(keys, Cause.COLLECTION)

    def restore(
        self,
        entries: Iterable[tuple[str, Entry]],
        vv: dict[str, int],
        clock_last: int,
        collected: dict[str, int] | None = None,
    ) -> None:
        """Load state read back from storage into this (empty) replica.

        ``collected`` is what :meth:`marks` returned: collection and pruning marks.
        """
        collected, pruned = split_marks(collected or {})
        self.collected.update(collected)
        self.pruned.update(pruned)
        pending: _Pending = {}
        table = self.entries
        for key, entry in entries:
            table[key] = entry
            for origin, stamp in dots(entry).items():
                pending.setdefault(origin, []).append((stamp, key))
        self._gc.restore(table.items())
        for origin, rows in pending.items():
            rows.sort()
            self._log(origin).record(rows)
        self.vv.update(vv)
        self.clock.observe(max(clock_last, max(vv.values(), default=0)))
        self._digest = None
        if self.origin in self.pruned:  # an incarnation that retired while another one wrote
            old = self.origin
            self._rotate(self.clock.tick())
            if not self._logs.get(old, True):
                del self._logs[old]

    def marks(self) -> dict[str, int]:
        """The collection and pruning marks, in one map: what storage keeps for :meth:`restore`."""
        if not self.pruned:
            return dict(self.collected)
        return marks(self.collected, self.pruned)

    def digest(self) -> str:
        """Hash of the replicated entries; equal exactly when the entries are equal."""
        if self._digest is None:
            self._digest = digest_entries(self.entries.items())
        return self._digest

    def gc_rows(self) -> int:
        """Rows held by the garbage collector's schedule: for memory checks."""
        return self._gc.rows()

    def log_rows(self) -> int:
        """Rows held across all change logs: for memory checks."""
        return sum(len(log) for log in self._logs.values())

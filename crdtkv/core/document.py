"""The document half of an entry: a collaborative Yrs document as a value.

A :class:`DocState` is immutable: every change makes a new one, so entries
and deltas share them freely. It holds

* ``gen``: the generation, ``(stamp, origin)`` of the register write (a
  ``delete`` or ``put``) that ended the previous one; ``(0, "")`` for a key's
  first document (see :func:`~.replica.entry_generation`). Creating a
  document again after it was deleted starts a new generation, a separate
  Yrs document. Replicas that saw the same end and re-create it concurrently
  share the generation and merge their edits; when two generations meet, the
  later one wins whole (edits made to the older one after the newer one
  started are dropped, as a register would).
* ``update``: one Yrs update holding the document (in a delta: only the part
  the receiver lacks; merging adds it).
* ``context`` / ``removed``: per origin, the stamp of its latest operation on
  the key while it held this document, and the stamps a ``delete`` or
  ``put`` observed. The document is *live* while some origin has operations
  beyond ``removed`` (observed-remove, as for counters): a delete removes the
  document as it was seen, and an edit made elsewhere that it did not see
  keeps the document alive.
* ``schema``: root name -> kind; a name declared with two kinds takes the
  first in alphabetical order (``array`` < ``map`` < ``text``).
* ``clocks``: per origin, some ``(stamp, Yrs clock)`` pairs (see
  :func:`retained`). A peer whose version vector covers ``stamp`` holds that
  origin's structs up to ``clock``, so a delta can carry only the structs
  the peer lacks (:meth:`DocState.trimmed`).

Every part joins as a semilattice, so documents merge in any order.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Final

import cbor2

from ..errors import DecodeError, InvalidValue, TooLarge
from . import yrs
from .vv import joined

#: A generation: ``(stamp, origin)`` of the write that ended the previous one.
Gen = tuple[int, str]
#: A document keeps, per origin, the ``(stamp, clock)`` pairs of its latest
#: CLOCK_PAIRS edits, and the first pair in each of its last CLOCK_BUCKETS
#: spans of CLOCK_BUCKET Yrs clock units: a peer that missed up to about
#: CLOCK_BUCKETS * CLOCK_BUCKET units of an origin's edits still gets only
#: the structs it lacks (give or take one span).
CLOCK_PAIRS: Final = 8
CLOCK_BUCKET: Final = 64
CLOCK_BUCKETS: Final = 32
MAX_CLOCK_PAIRS: Final = CLOCK_PAIRS + CLOCK_BUCKETS


def _join_schema(mine: dict[str, str], theirs: dict[str, str]) -> dict[str, str]:
    result = dict(mine)
    for name, kind in theirs.items():
        have = result.get(name)
        if have is None or kind < have:
            result[name] = kind
    return result


def retained(pairs: set[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    """The clock pairs of one origin a document keeps (see CLOCK_PAIRS).

    A function of the set alone, and ``retained(retained(a) | retained(b))
    == retained(a | b)``, so joining clock histories is a semilattice.
    """
    ordered = sorted(pairs)
    first_in_bucket: dict[int, tuple[int, int]] = {}
    for pair in ordered:  # an origin's clocks grow with its stamps
        first_in_bucket.setdefault(pair[1] // CLOCK_BUCKET, pair)
    top = max(first_in_bucket, default=0)
    kept = set(ordered[-CLOCK_PAIRS:])
    kept.update(pair for bucket, pair in first_in_bucket.items() if bucket > top - CLOCK_BUCKETS)
    return tuple(sorted(kept))


def _join_clocks(
    mine: dict[str, tuple[tuple[int, int], ...]], theirs: dict[str, tuple[tuple[int, int], ...]]
) -> dict[str, tuple[tuple[int, int], ...]]:
    result = dict(mine)
    for origin, pairs in theirs.items():
        have = result.get(origin)
        if have != pairs:
            result[origin] = retained(set(have or ()) | set(pairs))
    return result


class DocState:
    """The replicated state of one document value (immutable)."""

    __slots__ = (
        "_identity",
        "_json",
        "_plain",
        "_scratch",
        "clocks",
        "context",
        "gen",
        "removed",
        "schema",
        "update",
    )

    def __init__(
        self,
        gen: Gen,
        update: bytes,
        context: dict[str, int],
        removed: dict[str, int] | None = None,
        schema: dict[str, str] | None = None,
        clocks: dict[str, tuple[tuple[int, int], ...]] | None = None,
        content: str | None = None,
        identity: bytes | None = None,
    ) -> None:
        self.gen = gen
        self.update = update
        self.context = context
        self.removed: dict[str, int] = removed if removed is not None else {}
        self.schema: dict[str, str] = schema if schema is not None else {}
        self.clocks: dict[str, tuple[tuple[int, int], ...]] = clocks if clocks is not None else {}
        #: cached results of :func:`yrs.load`
        self._json = content
        self._plain: bytes | None = None
        self._identity = identity
        #: the scratch Yrs document :meth:`checked` loaded, until a replica takes it
        self._scratch: Any = None

    # -- reading -----------------------------------------------------------------

    def live_stamp(self) -> tuple[int, str] | None:
        """``(stamp, origin)`` of the latest edit no delete observed, or None."""
        best: tuple[int, str] | None = None
        removed = self.removed
        for origin, stamp in self.context.items():
            if stamp > removed.get(origin, 0) and (best is None or (stamp, origin) > best):
                best = (stamp, origin)
        return best

    def _load(self) -> None:
        loaded = yrs.load(self.update, self.schema)
        self._json, self._identity = loaded.json, loaded.identity

    def checked(
        self, max_bytes: int, *, local: bool = False, identity: bool = False
    ) -> tuple[DocState, dict[int, int]]:
        """This document loaded, checked and compacted, with its Yrs state vector.

        Compacting drops the content of deleted items (Yrs garbage
        collection). Raises :class:`~crdtkv.errors.DecodeError` if the update
        does not load, :class:`~crdtkv.errors.InvalidValue` for a number
        beyond 2**53, and :class:`~crdtkv.errors.TooLarge` if it exceeds
        ``max_bytes``. ``local`` marks an update made by a bound pycrdt
        document from this state: complete by construction. The identity is
        computed now only with ``identity``, else when a digest needs it.
        """
        loaded = yrs.load(self.update, self.schema, identity=identity, verify=not local)
        return self._loaded_as(loaded, max_bytes), loaded.vector

    def _loaded_as(self, loaded: yrs.Loaded, max_bytes: int) -> DocState:
        """This document's metadata with the content ``loaded`` read (checked against ``max_bytes``)."""
        if len(loaded.compact) > max_bytes:
            raise TooLarge(
                f"document is {len(loaded.compact)} bytes; the limit (max_value_bytes) is {max_bytes}"
            )
        result = DocState(
            self.gen,
            loaded.compact,
            self.context,
            self.removed,
            self.schema,
            self.clocks,
            loaded.json,
            loaded.identity,
        )
        result._scratch = loaded.doc
        return result

    def take_scratch(self) -> Any:
        """The scratch Yrs document :meth:`checked` loaded this from (once), or None."""
        scratch, self._scratch = self._scratch, None
        return scratch

    def plain(self) -> bytes:
        """The document's content as CBOR of plain data (map keys in order); built on first read."""
        if self._plain is None:
            if self._json is None:
                self._load()
            assert self._json is not None
            self._plain = cbor2.dumps(yrs.parse_content(self._json))
        return self._plain

    def identity(self) -> bytes:
        """What makes the document itself (see :func:`yrs.load`); equal on replicas holding the same."""
        if self._identity is None:
            self._load()
        assert self._identity is not None
        return self._identity

    # -- changing ------------------------------------------------------------------

    def edited_live(
        self, live: LiveDoc, update: bytes, origin: str, stamp: int, schema: dict[str, str], max_bytes: int
    ) -> tuple[DocState, dict[int, int]] | None:
        """Like :meth:`edited` then :meth:`checked`, applying ``update`` to ``live``'s scratch document.

        None if the edit did not integrate there; ``live`` is spent either way.
        """
        joined_schema = _join_schema(self.schema, schema)
        loaded = yrs.apply_edit(live.doc, update, joined_schema, live.typed)
        if loaded is None:
            return None
        context = joined(self.context, {origin: stamp})
        edited = DocState(self.gen, self.update, context, self.removed, joined_schema, self.clocks)
        return edited._loaded_as(loaded, max_bytes), loaded.vector

    def edited(self, update: bytes, origin: str, stamp: int, schema: dict[str, str]) -> DocState:
        """This document with a local edit ``update`` by ``origin`` at ``stamp`` merged in, unchecked.

        Its clock pair is added by :meth:`with_clock` once the result is checked.
        """
        return DocState(
            self.gen,
            yrs.merge(self.update, update),
            joined(self.context, {origin: stamp}),
            self.removed,
            _join_schema(self.schema, schema),
            self.clocks,
        )

    def with_clock(self, origin: str, stamp: int, clock: int) -> DocState:
        """This document noting that ``origin`` reached Yrs ``clock`` at ``stamp``."""
        clocks = _join_clocks(self.clocks, {origin: ((stamp, clock),)})
        result = DocState(
            self.gen,
            self.update,
            self.context,
            self.removed,
            self.schema,
            clocks,
            self._json,
            self._identity,
        )
        result._scratch = self.take_scratch()  # the same content: the scratch document moves along
        return result

    def removed_by(self, origin: str, stamp: int) -> DocState:
        """This document after a ``delete`` or ``put`` by ``origin`` at ``stamp``: no longer live."""
        context = joined(self.context, {origin: stamp})
        return DocState(
            self.gen,
            self.update,
            context,
            dict(context),
            self.schema,
            self.clocks,
            self._json,
            self._identity,
        )

    def trimmed(self, vv: dict[str, int]) -> DocState:
        """A copy carrying only what a replica with version vector ``vv`` may lack.

        That replica holds every operation ``vv`` covers, so it holds each
        origin's Yrs structs up to the clock paired with the latest covered
        stamp, and those clock pairs too: both are left out.
        """
        vector: dict[int, int] = {}
        clocks: dict[str, tuple[tuple[int, int], ...]] = {}
        for origin, pairs in self.clocks.items():
            seen = vv.get(origin, 0)
            clock = 0
            for stamp, reached in pairs:
                if stamp <= seen:
                    clock = reached
            if clock:
                vector[yrs.client_id(origin)] = clock
            newer = tuple(pair for pair in pairs if pair[0] > seen)
            if newer:
                clocks[origin] = newer
        update = yrs.diff(self.update, vector) if vector else self.update
        return DocState(self.gen, update, self.context, self.removed, self.schema, clocks)

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, DocState)
            and self.gen == other.gen
            and self.context == other.context
            and self.removed == other.removed
            and self.schema == other.schema
            and self.clocks == other.clocks
            and self.identity() == other.identity()
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (
            f"DocState(gen={self.gen!r}, {len(self.update)} update bytes, context={self.context!r}, "
            f"removed={self.removed!r}, schema={self.schema!r})"
        )


class LiveDoc:
    """A scratch Yrs document holding one DocState, kept for the next local edit."""

    __slots__ = ("doc", "state", "typed")

    def __init__(self, state: DocState, doc: Any) -> None:
        self.state = state
        self.doc = doc
        #: roots already typed in ``doc``, and their kinds
        self.typed: dict[str, str] = dict(state.schema)


class LiveDocs:
    """Scratch Yrs documents of the documents edited last here (least recently used dropped).

    A local edit then applies its update to a document already holding the
    state instead of merging it into the stored update and loading that
    afresh, which costs the whole document. An entry serves only the exact
    DocState it holds: any other change to the key makes it stale.
    """

    def __init__(self, size: int = 32) -> None:
        self.size = size
        self._docs: dict[str, LiveDoc] = {}

    def take(self, key: str, state: DocState) -> LiveDoc | None:
        live = self._docs.pop(key, None)
        return live if live is not None and live.state is state else None

    def keep(self, key: str, state: DocState) -> None:
        """Keep the scratch document ``state`` was checked with, if it has one."""
        scratch = state.take_scratch()
        if scratch is None:
            return
        self._docs.pop(key, None)
        self._docs[key] = LiveDoc(state, scratch)
        if len(self._docs) > self.size:
            del self._docs[next(iter(self._docs))]

    def forget(self, key: str) -> None:
        self._docs.pop(key, None)


def max_doc_stamp(doc: DocState) -> int:
    return max(doc.gen[0], max(doc.context.values(), default=0))


def join_docs(
    local: DocState | None, remote: DocState, max_bytes: int, live: LiveDoc | None = None
) -> DocState | None:
    """The join of two documents, checked; None if ``local`` already holds everything.

    Loads the result into a scratch Yrs document before returning it, so a
    remote update that does not load, holds a number Yrs cannot keep exact
    or grows the document past ``max_bytes`` raises
    :class:`~crdtkv.errors.DecodeError` and changes nothing. With ``live``
    (a scratch document holding ``local``, spent either way) the remote part
    is applied to it instead of loading the merged update afresh.
    """
    if local is None or remote.gen > local.gen:
        return _checked_remote(remote, max_bytes)
    if remote.gen < local.gen:
        return None
    context = joined(local.context, remote.context)
    removed = joined(local.removed, remote.removed)
    schema = _join_schema(local.schema, remote.schema)
    clocks = _join_clocks(local.clocks, remote.clocks)
    same_meta = (
        context == local.context
        and removed == local.removed
        and schema == local.schema
        and clocks == local.clocks
    )
    if same_meta and remote.update == yrs.EMPTY_UPDATE:
        return None
    result: DocState | None = None
    with _refused_as_remote():
        if live is not None:  # apply the remote part to a scratch document already holding ``local``
            loaded = yrs.apply_edit(live.doc, remote.update, schema, live.typed)
            if loaded is not None:
                state = DocState(local.gen, local.update, context, removed, schema, clocks)
                result = state._loaded_as(loaded, max_bytes)
        if result is None:
            merged = yrs.merge(local.update, remote.update)
            state = DocState(local.gen, merged, context, removed, schema, clocks)
            result = state.checked(max_bytes, identity=same_meta)[0]
    return None if same_meta and result.identity() == local.identity() else result


def _checked_remote(doc: DocState, max_bytes: int) -> DocState:
    with _refused_as_remote():
        return doc.checked(max_bytes)[0]


@contextmanager
def _refused_as_remote() -> Iterator[None]:
    """A remote document the checks refuse is bad input: InvalidValue becomes DecodeError."""
    try:
        yield
    except InvalidValue as exc:  # a number beyond 2**53
        raise DecodeError(f"remote document rejected: {exc}") from exc

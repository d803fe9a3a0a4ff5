"""Pruning retired origins: the membership rule, and the helpers the replica uses.

Every in-memory start of a replica writes as a new origin
(``<replica id>~<incarnation>``), and a PoP removed from a deployment stops
writing; without pruning, each such origin would stay in every version vector,
change log and counter for good. The rule (``G`` is ``Limits.gc_grace``, ``P``
is ``Limits.prune_after``, at least ``2 G``; ``W = P - G``):

* **Retired.** An origin whose latest stamp in this replica's version vector
  is older than ``now - P`` is retired; a replica never retires its own.
* **Live replicas never look retired.** A replica whose own latest stamp is
  older than ``W / 4`` writes a heartbeat (a tombstone under an internal key)
  when garbage collection runs; and a replica never writes again as an origin
  whose latest stamp is ``W / 2`` old or more (or that it pruned itself): it
  moves to a new incarnation first (:func:`next_incarnation`). So an origin's
  operations are never more than ``W / 2`` apart, and by the grace rule (every
  replica holds every operation older than ``G``) a replica that has seen
  nothing of an origin for ``P`` has seen all of it.
* **Pruning** (inside ``collect_garbage``): each retired origin goes from the
  version vector and its change log; its log rows move to the log of
  :data:`~.entry.RETIRED`, whose vector entry (one, however many retire) lets a
  new replica still receive those keys; its counter rows are folded into each
  counter's :class:`~.entry.Base`, which keeps ``value()`` exact; and its last
  stamp is remembered (``pruned``) so that late copies of its operations are
  dropped and it never comes back.
* **Folding is safe to merge** with replicas that have not pruned yet: a base's
  cut is one above the last stamp of the origins folded in it, the larger cut
  wins, and the rows it folded are recognised on the other side as rows below
  the cut of origins the winning side has no row of (see
  :func:`~.entry.join_into`). Deletes are exact too: a register write stamped
  ``cut + G`` or later observed every folded increment, so it removes the
  base; earlier ones had reached the folding replica (``cut + G <= now - G``)
  and are already reflected in it.
* **Stale peers.** A peer whose version vector names a pruned origin at
  another stamp than the one pruned here either lacks some of its operations
  or holds some written after it retired: it broke the grace rule and is
  refused like a peer that missed a collection (``missed_collection``).

Document contexts keep the names of the origins that edited them (Yrs needs
their client ids); their change-log rows move to the retired log like others.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Final

#: Marks a pruned origin in the grace marks a backend stores beside the collection marks.
PRUNED_MARK: Final = "~pruned/"
#: The separator between replica id and incarnation in an origin.
SEPARATOR: Final = "~"
#: Key prefix of the heartbeats (under the internal prefix: never listed or watched).
HEARTBEAT_PREFIX: Final = "\x00alive/"


def window_ms(gc_grace: float, prune_after: float) -> int:
    """``prune_after - gc_grace`` in ms: the longest silence an origin may keep and still write."""
    return int((prune_after - gc_grace) * 1000)


def retired(vv: Mapping[str, int], own: str, now_ms: int, prune_after: float) -> dict[str, int]:
    """The origins of ``vv`` retired at ``now_ms`` (never ``own``), with their last stamps."""
    cut = (now_ms - int(prune_after * 1000)) << 16
    return {origin: seen for origin, seen in vv.items() if seen < cut and origin != own and origin[0] != "~"}


def next_incarnation(origin: str, stamp: int) -> str:
    """A new origin for the replica writing as ``origin``, derived from it and ``stamp``.

    Deterministic (the core takes no randomness), and unique as long as
    origins are: the replica id stays, the incarnation is a hash of both.
    """
    replica = origin.split(SEPARATOR, 1)[0]
    token = hashlib.blake2b(f"{origin}\x00{stamp}".encode(), digest_size=4).hexdigest()
    return replica + SEPARATOR + token


def marks(collected: Mapping[str, int], pruned: Mapping[str, int]) -> dict[str, int]:
    """Collection and pruning marks in one map, as a backend stores them."""
    result = dict(collected)
    result.update((PRUNED_MARK + origin, seen) for origin, seen in pruned.items())
    return result


def split_marks(stored: Mapping[str, int]) -> tuple[dict[str, int], dict[str, int]]:
    """The collection marks and the pruning marks of a stored map (see :func:`marks`)."""
    collected: dict[str, int] = {}
    pruned: dict[str, int] = {}
    for name, seen in stored.items():
        if name.startswith(PRUNED_MARK):
            pruned[name[len(PRUNED_MARK) :]] = seen
        else:
            collected[name] = seen
    return collected, pruned


__all__ = [
    "HEARTBEAT_PREFIX",
    "PRUNED_MARK",
    "SEPARATOR",
    "marks",
    "next_incarnation",
    "retired",
    "split_marks",
    "window_ms",
]

"""Garbage-collection bookkeeping: which entries may become garbage, when, and what went.

The grace rule: a tombstone, or a value or counter that expired, is dropped
once it is older than ``Limits.gc_grace``; a replica that may still hold data
older than what was collected (it saw some of an origin's operations but not
the collected ones) must be rebuilt, since deltas can no longer bring it up to
date. :class:`Collector` keeps the candidates in three heaps ordered by time,
so each run costs what it collects, not the store size; the replica drops the
entries it names (:mod:`.replica`).
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable

from .entry import TOMBSTONE, Entry, collectable
from .keyindex import INTERNAL_PREFIX
from .vv import join_into

#: Drops one collectable entry from the replica (what it returns is not used).
Forget = Callable[[str, Entry], object]


def outlived(entry: Entry, horizon: int, now_ms: int) -> bool:
    """True if any replica following the grace rule may already have collected ``entry``.

    Only a delete, a put over a counter or document, or an expiry can make an
    entry collectable: the cheap test comes first.
    """
    return bool(
        (
            (entry.value is TOMBSTONE and entry.stamp)
            or entry.expires is not None
            or (entry.counter is not None and entry.counter.expiry is not None)
        )
        and collectable(entry, horizon, now_ms)
    )


class Collector:
    """The entries that may become garbage, by time, and the marks of what was collected."""

    def __init__(self) -> None:
        #: (stamp or expiry in ms, key) of entries that may become garbage, smallest first
        self._graves: list[tuple[int, str]] = []
        self._expiring: list[tuple[int, str]] = []
        #: expiring keys reserved for crdtkv (rate-limit windows): collected at once
        self._expiring_internal: list[tuple[int, str]] = []
        #: the horizon of the last garbage collection (each run moves it forward)
        self.horizon = 0
        #: origin -> largest stamp of its operations garbage-collected here
        self.collected: dict[str, int] = {}

    def tombstone(self, stamp: int, key: str) -> None:
        """``key`` was deleted at ``stamp``: collectable once that is older than the grace period."""
        heapq.heappush(self._graves, (stamp, key))

    def expires(self, expires: int, key: str) -> None:
        """``key`` (a value or a counter) expires at ``expires`` (epoch ms)."""
        heap = self._expiring_internal if key.startswith(INTERNAL_PREFIX) else self._expiring
        heapq.heappush(heap, (expires, key))

    def track(self, key: str, entry: Entry) -> None:
        """Note whatever in ``entry`` (a remote one being joined) may make it garbage later."""
        if entry.value is TOMBSTONE:
            self.tombstone(entry.stamp, key)
        elif entry.expires is not None:
            self.expires(entry.expires, key)
        if entry.counter is not None and entry.counter.expiry is not None and entry.counter.expiry[1]:
            self.expires(entry.counter.expiry[1], key)

    def restore(self, items: Iterable[tuple[str, Entry]]) -> None:
        """Track every entry read back from storage (one heap build, not one push each)."""
        for key, entry in items:
            if entry.value is TOMBSTONE:
                self._graves.append((entry.stamp, key))
            elif entry.expires is not None:
                self._unordered(entry.expires, key)
            if entry.counter is not None and entry.counter.expiry is not None and entry.counter.expiry[1]:
                self._unordered(entry.counter.expiry[1], key)
        for heap in (self._graves, self._expiring, self._expiring_internal):
            heapq.heapify(heap)

    def _unordered(self, expires: int, key: str) -> None:
        heap = self._expiring_internal if key.startswith(INTERNAL_PREFIX) else self._expiring
        heap.append((expires, key))

    def rows(self) -> int:
        """How many (time, key) rows wait in the schedule."""
        return len(self._graves) + len(self._expiring) + len(self._expiring_internal)

    def remember(self, dots: dict[str, int]) -> None:
        """Mark the operations ``dots`` of a collected entry as collected (the grace rule's marks)."""
        join_into(self.collected, dots)

    def missed(self, vv: dict[str, int]) -> bool:
        """True if a replica with version vector ``vv`` may hold data whose deletion was collected here."""
        return any(0 < vv.get(origin, 0) < stamp for origin, stamp in self.collected.items())

    def collect(self, entries: dict[str, Entry], now_ms: int, grace_ms: int, forget: Forget) -> list[str]:
        """Drop, through ``forget``, every entry older than the grace period; return their keys.

        A run that does not move the horizon forward drops nothing.
        """
        horizon = (now_ms - grace_ms) << 16
        if horizon <= self.horizon:
            return []
        self.horizon = horizon
        keys = self._drop(self._graves, horizon, entries, horizon, now_ms, forget)
        keys += self._drop(self._expiring, now_ms - grace_ms, entries, horizon, now_ms, forget)
        return keys

    def collect_internal(self, entries: dict[str, Entry], now_ms: int, forget: Forget) -> list[str]:
        """Drop crdtkv's own expired entries at once (no grace period); return their keys."""
        return self._drop(self._expiring_internal, now_ms, entries, (now_ms + 1) << 16, now_ms, forget)

    @staticmethod
    def _drop(
        heap: list[tuple[int, str]],
        bound: int,
        entries: dict[str, Entry],
        horizon: int,
        now_ms: int,
        forget: Forget,
    ) -> list[str]:
        removed: list[str] = []
        while heap and heap[0][0] < bound:
            _, key = heapq.heappop(heap)
            entry = entries.get(key)
            if entry is None or not collectable(entry, horizon, now_ms):
                continue
            forget(key, entry)
            removed.append(key)
        return removed


__all__ = ["Collector", "Forget", "outlived"]

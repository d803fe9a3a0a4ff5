"""The sorted key index of a replica, and listing pages from it.

The index is built on first use (a replica that is never listed never pays
for it) and then kept up to date incrementally: keys added since the last
listing wait in a short list and are inserted in place, or the index is
rebuilt when many arrived. Keys of collected entries stay in it until the next
rebuild; listing skips them.
"""

from __future__ import annotations

import bisect

from .entry import Entry, Kind, resolve

#: Keys starting with this are reserved for crdtkv itself (never listed, never watched).
INTERNAL_PREFIX = "\x00"


class KeyIndex:
    """Every key of a replica (live or not) in sorted order, for listing."""

    __slots__ = ("_fresh", "_sorted")

    def __init__(self) -> None:
        self._sorted: list[str] | None = None
        #: keys added since the index was last brought up to date
        self._fresh: list[str] = []

    def added(self, key: str) -> None:
        """``key`` is new in the replica."""
        if self._sorted is not None:
            self._fresh.append(key)

    def pending(self) -> list[str] | None:
        """The list new keys may be appended to directly (a bulk join), or None while unbuilt."""
        return self._fresh if self._sorted is not None else None

    def keys(self, entries: dict[str, Entry]) -> list[str]:
        """Every key in order (a live view: do not change it)."""
        index = self._sorted
        fresh = self._fresh
        if index is None or len(fresh) > len(index) // 8 + 64:
            index = self._sorted = sorted(entries)
        else:
            for key in fresh:
                position = bisect.bisect_left(index, key)
                if position == len(index) or index[position] != key:
                    index.insert(position, key)
        fresh.clear()
        return index

    def page(
        self, entries: dict[str, Entry], now_ms: int, prefix: str, after: str | None, limit: int
    ) -> tuple[list[str], bool]:
        """Up to ``limit`` live keys with ``prefix``, in order, after ``after``; and whether more follow.

        Keys beginning with :data:`INTERNAL_PREFIX` are never listed.
        """
        index = self.keys(entries)
        start = bisect.bisect_left(index, prefix)
        if after is not None and after >= prefix:
            start = bisect.bisect_right(index, after)
        keys: list[str] = []
        for position in range(start, len(index)):
            key = index[position]
            if not key.startswith(prefix):
                break
            entry = entries.get(key)
            if entry is None or key.startswith(INTERNAL_PREFIX) or resolve(entry, now_ms) is Kind.MISSING:
                continue
            if len(keys) == limit:
                return keys, True
            keys.append(key)
        return keys, False


__all__ = ["INTERNAL_PREFIX", "KeyIndex"]

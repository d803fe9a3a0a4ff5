"""Per-origin change logs: which keys changed after a given stamp.

For every origin a replica keeps two parallel lists, stamps and keys, in stamp
order. When a key's dot for that origin moves on, the old row is left in place
and counted as dead; a row is live only while the entry still carries that
exact dot. Dead rows are dropped once they outnumber the live ones, so memory
stays proportional to the number of keys and appends stay O(1) amortised.

"Keys changed by this origin after stamp s" is a binary search plus a walk over
the rows after it: its cost follows the number of changes, not the store size.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable, Iterator

#: Compact a log once it holds more dead rows than this and than live rows.
MIN_COMPACT_ROWS = 1024


class OriginLog:
    """Rows ``(stamp, key)`` of one origin's changes."""

    __slots__ = ("compact_at", "dead", "keys", "ordered", "stamps", "top")

    def __init__(self) -> None:
        self.stamps: list[int] = []
        self.keys: list[str] = []
        self.dead = 0
        #: False after an out-of-order append; sorted again before a search
        self.ordered = True
        #: the largest stamp ever appended
        self.top = 0
        self.compact_at = MIN_COMPACT_ROWS

    def __len__(self) -> int:
        return len(self.stamps)

    def append(self, stamp: int, key: str) -> None:
        if stamp < self.top:
            self.ordered = False
        else:
            self.top = stamp
        self.stamps.append(stamp)
        self.keys.append(key)

    def sort(self) -> None:
        """Restore stamp order after out-of-order appends (merges)."""
        if not self.ordered:
            rows = sorted(zip(self.stamps, self.keys, strict=True))
            self.stamps = [stamp for stamp, _ in rows]
            self.keys = [key for _, key in rows]
            self.ordered = True

    def after(self, stamp: int) -> Iterator[tuple[int, str]]:
        """Rows (live or dead) with a stamp above ``stamp``, in order."""
        self.sort()
        stamps = self.stamps
        keys = self.keys
        for index in range(bisect_right(stamps, stamp), len(stamps)):
            yield stamps[index], keys[index]

    def compact(self, is_live: Callable[[int, str], bool]) -> None:
        """Drop dead rows; ``is_live(stamp, key)`` decides which."""
        pairs = zip(self.stamps, self.keys, strict=True)
        rows = [(stamp, key) for stamp, key in pairs if is_live(stamp, key)]
        self.stamps = [stamp for stamp, _ in rows]
        self.keys = [key for _, key in rows]
        self.dead = 0
        self.compact_at = max(MIN_COMPACT_ROWS, len(rows))

"""Per-origin change logs: which keys changed after a given stamp.

For every origin a replica keeps a dict ``key -> stamp`` of that origin's
latest dot on each key. A key whose dot moves is popped and re-inserted, so
the dict's insertion order is stamp order (operations of one origin are
stamped in increasing order). Dots learned from peers can arrive out of
order; the log then notes it and re-sorts itself once, before the next search.

"Keys changed by this origin after stamp s" walks the dict backwards from the
newest entry and stops at the first stamp not above s: its cost follows the
number of changes, not the store size. Memory is one dict slot per key and
origin, with nothing left behind by overwrites.
"""

from __future__ import annotations

from collections.abc import Iterator
from operator import itemgetter

_BY_STAMP = itemgetter(1)


class OriginLog:
    """Latest dot per key of one origin, in stamp order."""

    __slots__ = ("latest", "ordered")

    def __init__(self) -> None:
        #: key -> stamp of this origin's latest operation reflected in the key
        self.latest: dict[str, int] = {}
        #: False after an out-of-order record; sorted again before a search
        self.ordered = True

    def __len__(self) -> int:
        return len(self.latest)

    def record(self, rows: list[tuple[int, str]]) -> None:
        """Record many ``(stamp, key)`` rows, given in stamp order.

        Rows newer than everything logged keep the log in order, so a bulk
        merge into a replica that is behind costs no re-sort later.
        """
        latest = self.latest
        for _, key in rows:
            latest.pop(key, None)
        if self.ordered and rows and latest and rows[0][0] < next(reversed(latest.values())):
            self.ordered = False
        for stamp, key in rows:
            latest[key] = stamp

    def forget(self, key: str) -> None:
        """Note that ``key`` no longer carries a dot of this origin."""
        self.latest.pop(key, None)

    def top(self) -> int:
        """The largest stamp recorded (0 if none)."""
        self._sort()
        latest = self.latest
        return next(reversed(latest.values())) if latest else 0

    def _sort(self) -> None:
        if not self.ordered:
            self.latest = dict(sorted(self.latest.items(), key=_BY_STAMP))
            self.ordered = True

    def after(self, stamp: int) -> Iterator[tuple[str, int]]:
        """``(key, stamp)`` of every dot above ``stamp``, newest first."""
        self._sort()
        for key, seen in reversed(self.latest.items()):
            if seen <= stamp:
                return
            yield key, seen

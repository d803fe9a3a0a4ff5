"""Plain counters for operators: cheap to update on hot paths, read at scrape time.

The node, its sessions and the storage backends count in plain ints and in
:class:`Buckets` (a histogram without locks or labels); :mod:`crdtkv.metrics`
turns them into Prometheus metrics only when someone scrapes. Updating one
costs an addition or a bisection, never a call into ``prometheus_client``.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence
from typing import Final

#: Seconds: from a millisecond (one hop inside a region) to minutes (catch-up after a partition).
DELAY_BUCKETS: Final = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)
#: Seconds a storage commit takes: from tens of microseconds (WAL, no sync) to a slow disk's fsync.
LATENCY_BUCKETS: Final = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
#: Rows one storage commit writes.
SIZE_BUCKETS: Final = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 5000, 20000, 100000)


class Buckets:
    """A histogram kept as plain counts: ``counts[i]`` observations at most ``bounds[i]``.

    ``counts[-1]`` holds those above every bound. Not cumulative (the
    exporter sums them); one observation costs a bisection and two additions.
    """

    __slots__ = ("bounds", "count", "counts", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.count = 0
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.count += 1
        self.sum += value

    def cumulative(self) -> list[tuple[float, int]]:
        """``(upper bound, observations at most that)`` pairs, the last bound infinite."""
        pairs = []
        total = 0
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            total += count
            pairs.append((bound, total))
        return pairs


__all__ = ["DELAY_BUCKETS", "LATENCY_BUCKETS", "SIZE_BUCKETS", "Buckets"]

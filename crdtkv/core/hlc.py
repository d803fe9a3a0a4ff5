"""Hybrid logical clock (Kulkarni et al., 2014) packed into one integer.

A stamp is ``physical_ms << 16 | logical``: it sorts like wall-clock time while
clocks agree, and still grows when the local clock lags behind a stamp this
replica has observed. Every local event gets a stamp strictly larger than any
earlier local stamp and any stamp observed from elsewhere, so a write that saw
another write always wins against it.

Time is injected (a ``now_ns`` callable, like :func:`time.time_ns`), which keeps
this module pure and makes tests deterministic.
"""

from __future__ import annotations

from collections.abc import Callable

from ..errors import ClockSkewError

LOGICAL_BITS = 16
#: The largest stamp: 48 bits of milliseconds (until the year 10889).
MAX_STAMP = (1 << 64) - 1

NANOS_PER_MS = 1_000_000


def stamp_ms(stamp: int) -> int:
    """The physical part of a stamp, in milliseconds since the epoch."""
    return stamp >> LOGICAL_BITS


class HybridClock:
    """Hands out strictly increasing stamps and absorbs remote ones."""

    __slots__ = ("_last", "_max_skew_ms", "now_ns")

    def __init__(self, now_ns: Callable[[], int], max_skew: float, last: int = 0) -> None:
        #: the injected wall clock (nanoseconds since the epoch): a hot path that needs
        #: the time calls it directly, ``now_ns() // NANOS_PER_MS`` being :meth:`now_ms`
        self.now_ns = now_ns
        self._last = last
        self._max_skew_ms = int(max_skew * 1000)

    @property
    def last(self) -> int:
        """The largest stamp handed out or observed so far."""
        return self._last

    def now_ms(self) -> int:
        """The injected wall clock, in milliseconds."""
        return self.now_ns() // NANOS_PER_MS

    def tick(self) -> int:
        """Return a stamp for a new local event."""
        physical = (self.now_ns() // NANOS_PER_MS) << LOGICAL_BITS
        last = self._last
        stamp = physical if physical > last else last + 1
        self._last = stamp
        return stamp

    def tick_at(self, now_ms: int) -> int:
        """Return a stamp for a new local event at ``now_ms``, a reading of :meth:`now_ms`.

        For an operation that also needs the time itself: one clock read serves both.
        """
        physical = now_ms << LOGICAL_BITS
        last = self._last
        stamp = physical if physical > last else last + 1
        self._last = stamp
        return stamp

    def check(self, stamp: int) -> None:
        """Raise :class:`ClockSkewError` if ``stamp`` is too far in the future."""
        limit_ms = self.now_ns() // NANOS_PER_MS + self._max_skew_ms
        if stamp >> LOGICAL_BITS > limit_ms:
            ahead = (stamp >> LOGICAL_BITS) - (limit_ms - self._max_skew_ms)
            raise ClockSkewError(
                f"remote stamp is {ahead / 1000:.3f} s ahead of the local clock "
                f"(max_clock_skew is {self._max_skew_ms / 1000:g} s)"
            )

    def observe(self, stamp: int) -> None:
        """Absorb a stamp seen elsewhere so later local stamps exceed it.

        Call :meth:`check` first for stamps from untrusted sources.
        """
        self._last = max(self._last, stamp)

"""Rate limiting over convergent counters (:meth:`KvStore.rate_limit <crdtkv.KvStore.rate_limit>`).

Every replica counts into one counter per key and fixed window: an ``incr``
with a TTL under a reserved key (never listed), so admissions at every PoP
count toward one global limit, and a refused request is not counted. Window
counters are dropped as soon as they expire, without a grace period (see
:meth:`~crdtkv.core.replica.ReplicaState.collect_expired_internal`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .checks import count, seconds
from .core.hlc import NANOS_PER_MS
from .core.keyindex import INTERNAL_PREFIX
from .core.limits import Limits
from .core.replica import ReplicaState
from .core.values import check_key
from .errors import InvalidKeyType

#: Rate-limit window counters live under this reserved (never listed) prefix.
RATE_LIMIT_PREFIX = INTERNAL_PREFIX + "rl\x00"


@dataclass(frozen=True)
class Decision:
    """The answer of :meth:`KvStore.rate_limit`."""

    #: whether this request is admitted (and counted)
    allowed: bool
    #: requests counted in this window, as this replica sees them (this one included if admitted)
    count: int
    #: how many more this replica would admit in this window
    remaining: int
    #: seconds until the window ends and a new one starts
    reset_after: float
    #: the limit asked for
    limit: int
    #: when the counted window started, in seconds since the epoch
    window_start: float


class RateLimiter:
    """Admits or refuses requests against per-key fixed windows counted in ``replica``."""

    def __init__(self, replica: ReplicaState, limits: Limits) -> None:
        self._replica = replica
        self._limits = limits
        self._max_key = limits.max_key_bytes
        #: start (epoch ms) of the window of the last decision
        self._last_window = -1
        #: the window length (seconds) of the last decision, and it in milliseconds
        self._window = 0.0
        self._window_ms = 1

    def decide(self, key: str, limit: int, window: float, cost: int) -> Decision:
        """Admit (and count) or refuse one request of ``cost``; typed errors for bad arguments.

        One clock reading serves the whole decision: the window, the counter's
        expiry and liveness, and the increment.
        """
        if not isinstance(key, str):
            raise InvalidKeyType(f"keys must be str, not {type(key).__name__}")
        limit = count(limit, "limit", zero=True)
        cost = count(cost, "cost")
        window = seconds(window, "window")
        replica = self._replica
        now_ms = replica.clock.now_ns() // NANOS_PER_MS  # (the one clock reading of the decision)
        if window != self._window:
            self._window = window
            self._window_ms = max(1, math.ceil(window * 1000))
        window_ms = self._window_ms
        start = now_ms - now_ms % window_ms
        counter_key = f"{RATE_LIMIT_PREFIX}{key}\x00{start}"
        if not (counter_key.isascii() and len(counter_key) <= self._max_key):
            counter_key = check_key(counter_key, self._limits)
        if start != self._last_window:  # a window ended somewhere: drop expired window counters
            self._last_window = start
            replica.collect_expired_internal()
        # keep the window one extra window, so late increments still merge into it
        allowed, seen = replica.admit(counter_key, cost, limit, start + 2 * window_ms, now_ms)
        reset_after = (start + window_ms - now_ms) / 1000
        remaining = limit - seen if seen < limit else 0
        return Decision(allowed, seen, remaining, reset_after, limit, start / 1000)


__all__ = ["RATE_LIMIT_PREFIX", "Decision", "RateLimiter"]

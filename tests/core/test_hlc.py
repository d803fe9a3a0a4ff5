import pytest

from crdtkv.core.hlc import LOGICAL_BITS, HybridClock, stamp_ms
from crdtkv.errors import ClockSkewError

from ..helpers import FakeClock


def test_stamps_strictly_increase_when_the_clock_stands_still() -> None:
    clock = FakeClock()
    hlc = HybridClock(clock, max_skew=60)
    stamps = [hlc.tick() for _ in range(1000)]
    assert stamps == sorted(set(stamps))
    assert stamp_ms(stamps[0]) == clock() // 1_000_000


def test_stamps_increase_when_the_clock_goes_backwards() -> None:
    clock = FakeClock()
    hlc = HybridClock(clock, max_skew=60)
    first = hlc.tick()
    clock.advance(-10)
    assert hlc.tick() > first


def test_logical_overflow_carries_into_the_physical_part() -> None:
    clock = FakeClock()
    hlc = HybridClock(clock, max_skew=60)
    stamps = [hlc.tick() for _ in range((1 << LOGICAL_BITS) + 5)]
    assert stamps == sorted(set(stamps))
    assert stamp_ms(stamps[-1]) == stamp_ms(stamps[0]) + 1


def test_observed_stamps_push_later_local_stamps_beyond_them() -> None:
    behind = HybridClock(FakeClock(-30), max_skew=60)
    ahead = HybridClock(FakeClock(+20), max_skew=60)
    remote = ahead.tick()
    behind.check(remote)
    behind.observe(remote)
    assert behind.tick() > remote


def test_stamps_too_far_ahead_are_refused() -> None:
    local = HybridClock(FakeClock(), max_skew=60)
    far = HybridClock(FakeClock(+61), max_skew=60).tick()
    with pytest.raises(ClockSkewError, match="ahead of the local clock"):
        local.check(far)
    near = HybridClock(FakeClock(+59), max_skew=60).tick()
    local.check(near)

"""The test tools themselves: fake clocks stay within the clock-skew guard of the real clock.

Tests mix replicas on a FakeClock with replicas on the real clock. Fake time
used to start when tests/helpers.py was imported, so once the suite had run for
longer than ``max_clock_skew`` (60 s) such a merge raised ClockSkewError: the
outcome depended on how long the tests before it took.
"""

from __future__ import annotations

import time

import pytest

from crdtkv import KvStore, Limits

from . import helpers
from .helpers import FakeClock, open_store

#: when this module was imported, during collection: after tests/helpers.py was, before any test runs
IMPORTED_AT_NS = time.time_ns()


def test_fake_time_starts_when_the_test_starts() -> None:
    assert FakeClock().ns > IMPORTED_AT_NS
    assert FakeClock().ns == FakeClock().ns  # clocks of one test start at one instant


def test_fake_and_real_clocks_merge_however_long_the_suite_has_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """As if the tests before this one had taken ten times the clock-skew limit (no sleeping)."""
    later = time.time_ns() + int(10 * Limits().max_clock_skew * 1e9)
    monkeypatch.setattr(time, "time_ns", lambda: later)
    helpers.start_fake_time()  # what conftest does before every test
    real = KvStore.open(replica_id="real")  # the default clock: time.time_ns
    fake = open_store("fake")
    real.put("a", 1)
    fake.put("b", 2)
    assert fake.merge(real) == 1
    assert real.merge(fake.snapshot()) == 1
    assert real.digest() == fake.digest()

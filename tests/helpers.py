"""Shared test tools: a controllable clock and store factories."""

from __future__ import annotations

import sys
import time

from crdtkv import KvStore, Limits

# Fake time starts at the real time when each test starts (conftest calls
# start_fake_time before every test), so stores on fake and real clocks can merge
# without tripping the clock-skew guard however long the suite has run, and every
# FakeClock of one test starts at the same instant.


def start_fake_time() -> None:
    """Make fake clocks created from now on start at the real time now (before every test)."""
    FakeClock.epoch_ns = time.time_ns()


#: Limits for test-side observer replicas that must accept any test clock.
TRUSTING = Limits(max_clock_skew=10**7)


def observer_clock() -> FakeClock:
    """A clock stopped at one instant, the same for every observer replica: reads agree on expiry."""
    return FakeClock(+1000)


class FakeClock:
    """A wall clock tests move by hand (nanoseconds since the epoch)."""

    #: where new fake clocks start (plus their offset): the real time the current test started
    epoch_ns = time.time_ns()

    def __init__(self, offset_s: float = 0.0) -> None:
        self.ns = FakeClock.epoch_ns + int(offset_s * 1e9)

    def __call__(self) -> int:
        return self.ns

    def advance(self, seconds: float) -> None:
        self.ns += int(seconds * 1e9)


def open_store(replica_id: str, clock: FakeClock | None = None, name: str = "default") -> KvStore:
    return KvStore.open(name, replica_id=replica_id, clock=clock or FakeClock())


def copy_of(store: KvStore, replica_id: str = "copy") -> KvStore:
    """An independent replica holding exactly ``store``'s state."""
    other = KvStore.open(store.name, replica_id=replica_id, limits=TRUSTING, clock=observer_clock())
    other.merge(store.snapshot())
    return other


def assert_logs_cover_dots(store: KvStore) -> None:
    """Every dot an entry carries is findable in its origin's change log."""
    from crdtkv.core.entry import dots

    state = store._state
    for key, entry in state.entries.items():
        for origin, stamp in dots(entry).items():
            assert state._logs[origin].latest.get(key, 0) >= stamp, (key, origin)
    for log in state._logs.values():
        stamps = list(log.latest.values())
        assert log.ordered is False or stamps == sorted(stamps)


def serve_command(replica: str, listen: str, *options: str) -> list[str]:
    """The command line of a real `crdtkv serve` child, run by this interpreter."""
    return [sys.executable, "-m", "crdtkv.cli", "serve", "--id", replica, "--listen", listen, *options]

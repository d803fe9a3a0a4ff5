"""Shared test tools: a controllable clock and store factories."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable

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


class ServeProcess:
    """A real `crdtkv serve` child on loopback, with the addresses it printed.

    Start it with ``with ServeProcess(...) as node:``; ``ws_url``, ``http_url``
    (``http://127.0.0.1:PORT``, or None) and ``resp_port`` (or None) are what the
    child itself reported, so port 0 works for every face. Leaving the block
    stops the child with SIGTERM (SIGKILL if it does not exit) and keeps its
    exit code in ``returncode``.
    """

    def __init__(
        self, replica: str, *options: str, listen: str = "ws://127.0.0.1:0", log: str | None = None
    ) -> None:
        self.args = serve_command(replica, listen, *options)
        self.log = log
        self.process: subprocess.Popen[str] | None = None
        self.ws_url = ""
        self.http_url: str | None = None
        self.resp_port: int | None = None
        self.returncode: int | None = None

    def __enter__(self) -> ServeProcess:
        stderr = open(self.log, "a") if self.log else subprocess.DEVNULL
        try:
            self.process = subprocess.Popen(self.args, stdout=subprocess.PIPE, stderr=stderr, text=True)
        finally:
            if self.log:
                stderr.close()  # type: ignore[union-attr]
        assert self.process.stdout is not None
        try:
            while True:
                line = self.process.stdout.readline()
                if not line:
                    raise AssertionError(f"crdtkv serve exited before serving: {self.args}")
                if line.startswith("http on "):
                    self.http_url = line.split()[-1]
                elif line.startswith("resp on "):
                    self.resp_port = int(line.split()[-1].rsplit(":", 1)[1])
                elif line.startswith("serving store "):
                    self.ws_url = line.split()[-1]
                    return self
        except BaseException:
            self.kill()
            raise

    def kill(self) -> None:
        """SIGKILL the child (no flush, no goodbye)."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.kill()
        self.returncode = self.process.wait(timeout=30)

    def stop(self) -> int:
        """SIGTERM, then SIGKILL after a generous wait; the exit code."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.returncode = self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()
        else:
            self.returncode = self.process.returncode
        if self.process.stdout is not None:
            self.process.stdout.close()
        assert self.returncode is not None
        return self.returncode

    def __exit__(self, *exc: object) -> None:
        self.stop()


def wait_for(check: Callable[[], object], what: str, timeout: float = 60.0) -> None:
    """Poll ``check()`` until it is true, from synchronous test code (a hang guard, not a speed check)."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)

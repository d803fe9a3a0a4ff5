"""``crdtkv demo`` runs each PoP in a process of its own; none outlives the demo.

The demo runs as a real subprocess. Its PoP processes are found by a marker
in their environment (inherited from the demo), read from /proc.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs /proc")

MARK = "CRDTKV_DEMO_TEST_MARK"
#: Hang guard only: how long a step may take on a busy machine.
PATIENCE = 60.0


def marked(mark: str) -> set[int]:
    """Processes (other than zombies) whose environment holds ``MARK=mark``."""
    found = set()
    needle = f"{MARK}={mark}".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if needle in (entry / "environ").read_bytes().split(b"\0"):
                state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
                if state != "Z":
                    found.add(int(entry.name))
        except OSError:
            continue  # gone, or not ours
    return found


def until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + PATIENCE
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.02)


class Demo:
    """A running ``crdtkv demo`` with a long traffic phase."""

    def __init__(self) -> None:
        self.mark = uuid.uuid4().hex
        self.process = subprocess.Popen(
            [sys.executable, "-m", "crdtkv.cli", "demo", "--views", "100000", "--seconds", "300"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, MARK: self.mark},
        )
        self.output: list[str] = []

    def until_line(self, text: str) -> None:
        """Read the demo's output until a line holds ``text``."""
        assert self.process.stdout is not None
        deadline = time.monotonic() + PATIENCE
        while not any(text in line for line in self.output):
            assert time.monotonic() < deadline, f"no line with {text!r} in {self.output}"
            if select.select([self.process.stdout], [], [], 0.5)[0]:
                line = self.process.stdout.readline()
                assert line, f"the demo ended before {text!r}: {self.output}"
                self.output.append(line)

    def pops(self) -> set[int]:
        return marked(self.mark) - {self.process.pid}

    def finish(self) -> tuple[int, str]:
        """Wait for the demo to exit; its exit code and stderr."""
        _, stderr = self.process.communicate(timeout=PATIENCE)
        return self.process.returncode, stderr

    def kill_all(self) -> None:
        for pid in self.pops() | ({self.process.pid} if self.process.poll() is None else set()):
            os.kill(pid, signal.SIGKILL)
        self.process.communicate(timeout=PATIENCE)  # closes the pipes


@pytest.fixture
def demo() -> Iterator[Demo]:
    running = Demo()
    yield running
    running.kill_all()


def test_each_pop_runs_in_a_process_of_its_own(demo: Demo) -> None:
    demo.until_line("read+write / incr")  # every PoP linked to the others, traffic starting
    children = demo.pops()
    assert len(children) == 3
    for pid in children:
        assert b"crdtkv.demo_pop" in Path(f"/proc/{pid}/cmdline").read_bytes()


def test_ctrl_c_at_the_demo_ends_every_pop_process(demo: Demo) -> None:
    demo.until_line("read+write / incr")
    assert len(demo.pops()) == 3
    demo.process.send_signal(signal.SIGINT)  # the demo only, not its process group
    code, stderr = demo.finish()
    assert code == 2
    assert "interrupted" in stderr
    assert demo.pops() == set()  # reaped before the demo exited


def test_a_pop_process_that_dies_ends_the_demo_and_the_other_pops(demo: Demo) -> None:
    demo.until_line("read+write / incr")
    sydney = next(pid for pid in demo.pops() if b'"sydney"' in Path(f"/proc/{pid}/cmdline").read_bytes())
    os.kill(sydney, signal.SIGKILL)
    code, stderr = demo.finish()
    assert code == 2
    assert "the sydney PoP's process exited early" in stderr
    assert demo.pops() == set()


def test_pop_processes_stop_when_the_demo_is_killed(demo: Demo) -> None:
    demo.until_line("read+write / incr")
    assert len(demo.pops()) == 3
    demo.process.kill()  # no chance to clean up: each PoP sees its stdin close
    demo.process.communicate(timeout=PATIENCE)
    until(lambda: not demo.pops(), "every PoP process exited")


def test_the_report_gives_each_pop_process_event_loop_lag() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "crdtkv.cli", "demo", "--views", "600", "--seconds", "0.5"],
        capture_output=True,
        text=True,
        timeout=PATIENCE,
    )
    assert result.returncode == 0, result.stderr
    line = next(line for line in result.stdout.splitlines() if "event-loop lag p99" in line)
    lags = dict(part.strip().rsplit(" ", 2)[:2] for part in line.split(":", 1)[1].split(","))
    assert set(lags) == {"london", "sydney", "new-york"}
    assert all(float(value) >= 0 for value in lags.values())
    assert "600  (0 increments lost)" in result.stdout

"""Crash recovery with real processes killed by SIGKILL at seeded random moments."""

from __future__ import annotations

import queue
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from crdtkv import KvStore
from crdtkv.storage.sqlite import SqliteStorage

ROOT = Path(__file__).resolve().parents[2]
KILLS = 20
HANG_GUARD = 60.0  # seconds; only a guard against a hung child, never a timing assertion
ChildProcess = subprocess.Popen[str]


def run_and_kill(
    path: Path, mode: str, start: int, acks_first: int, delay: float
) -> tuple[str, list[tuple[int, int]]]:
    """Start a writer, SIGKILL it ``delay`` s after its ``acks_first``-th ack; return its origin and acks.

    Waiting for acknowledgements (not for a time) makes every kill land among
    acknowledged writes however slow the machine is; the short seeded
    ``delay`` moves the kill to an arbitrary point of the write loop.
    """
    with child_lines("tests.storage.crash_child", str(path), mode, str(start)) as (child, lines):
        ready = lines.get(timeout=HANG_GUARD)
        assert ready is not None and ready.startswith("ready "), (ready, stderr_of(child))
        acks: list[tuple[int, int]] = []
        while len(acks) < acks_first:
            line = lines.get(timeout=HANG_GUARD)
            assert line is not None, f"the writer exited: {stderr_of(child)}"
            acks.append(parse_ack(line))
        time.sleep(delay)
        child.send_signal(signal.SIGKILL)
        assert child.wait(timeout=HANG_GUARD) == -signal.SIGKILL  # killed while writing, not exited
        while (line := lines.get(timeout=HANG_GUARD)) is not None:
            if line.endswith("\n"):  # a line cut by the kill is not an ack
                acks.append(parse_ack(line))
    return ready.split()[1], acks


@contextmanager
def child_lines(module: str, *args: str) -> Iterator[tuple[ChildProcess, queue.Queue[str | None]]]:
    """Run ``python -m module args`` with its stdout lines fed to a queue (None at its end); reap it after."""
    child = subprocess.Popen(
        [sys.executable, "-m", module, *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None and child.stderr is not None
    lines: queue.Queue[str | None] = queue.Queue()
    reader = threading.Thread(target=pump, args=(child.stdout, lines), daemon=True)
    reader.start()
    try:
        yield child, lines
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        reader.join(timeout=HANG_GUARD)
        child.stdout.close()
        child.stderr.close()


def stderr_of(child: ChildProcess) -> str:
    """What the child wrote to stderr (read once it has exited)."""
    assert child.stderr is not None
    return child.stderr.read()


def pump(stream: Iterable[str], lines: queue.Queue[str | None]) -> None:
    for line in stream:
        lines.put(line)
    lines.put(None)


def parse_ack(line: str) -> tuple[int, int]:
    word, index, stamp = line.split()
    assert word == "ack", line
    return int(index), int(stamp)


@pytest.mark.parametrize("mode", ["sync", "batch"])
def test_every_acknowledged_write_survives_sigkill(tmp_path: Path, mode: str) -> None:
    rnd = random.Random(20261126)
    path = tmp_path / "crash.db"
    acked: dict[int, int] = {}
    origins = []
    max_stamp = 0
    next_index = 0
    for _ in range(KILLS):
        acks_first = rnd.randint(1, 30)
        origin, acks = run_and_kill(path, mode, next_index, acks_first, rnd.uniform(0, 0.02))
        assert len(acks) >= acks_first  # this kill came after acknowledged writes
        origins.append(origin)
        for index, stamp in acks:
            acked[index] = stamp
            max_stamp = max(max_stamp, stamp)
        next_index = max([next_index, *(index + 1 for index, _ in acks)]) + 1
        # opening runs SQLite's full integrity check and crdtkv's row checks
        store = KvStore.open("crash", storage=SqliteStorage(path, verify="full"), replica_id="london")
        try:
            items = store.get("cart", {}).get("items", {})
            for index in acked:
                assert store.get(f"k{index}") == index, f"acknowledged write k{index} lost"
                assert items.get(f"i{index}") == index, f"acknowledged document edit i{index} lost"
            # every loop did put, incr, edit, ack: the counter holds every acknowledged incr
            assert len(acked) <= store.get("n", 0) <= len(acked) + len(origins)
            assert store._state.clock.last >= max_stamp
            assert store.origin not in origins  # after a crash, a fresh incarnation
            store.put("probe", 1)
            assert store._state.vv[store.origin] > max_stamp  # never reuses a stamp
            store.delete("probe")
        finally:
            store.close()
    assert len(acked) >= KILLS  # the children really wrote between kills (at least one ack per kill)
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    db.close()

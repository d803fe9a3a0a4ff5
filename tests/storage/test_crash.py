"""Crash recovery with real processes killed by SIGKILL at seeded random moments."""

from __future__ import annotations

import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from crdtkv import KvStore
from crdtkv.storage.sqlite import SqliteStorage

ROOT = Path(__file__).resolve().parents[2]
KILLS = 20


def run_and_kill(path: Path, mode: str, start: int, wait: float) -> tuple[str, list[tuple[int, int]]]:
    """Start a writer, let it run ``wait`` seconds after it is ready, SIGKILL it; return its acks."""
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.storage.crash_child", str(path), mode, str(start)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    ready = child.stdout.readline()
    assert ready.startswith("ready "), child.stderr.read() if child.stderr else ready
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(child.stdout), daemon=True)  # type: ignore[arg-type]
    reader.start()
    time.sleep(wait)
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=10)
    reader.join(timeout=10)
    child.stdout.close()
    if child.stderr:
        child.stderr.close()
    acks = []
    for line in lines:
        parts = line.split()
        if len(parts) == 3 and parts[0] == "ack":  # a line cut by the kill is not an ack
            acks.append((int(parts[1]), int(parts[2])))
    return ready.split()[1], acks


@pytest.mark.parametrize("mode", ["sync", "batch"])
def test_every_acknowledged_write_survives_sigkill(tmp_path, mode):
    rnd = random.Random(20261126)
    path = tmp_path / "crash.db"
    acked: dict[int, int] = {}
    origins = []
    max_stamp = 0
    next_index = 0
    for _ in range(KILLS):
        origin, acks = run_and_kill(path, mode, next_index, rnd.uniform(0.02, 0.25))
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
    assert len(acked) > KILLS  # the children really wrote between kills
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    db.close()

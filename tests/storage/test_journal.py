"""The journal: changes staged cheaply, rows encoded at commit time, and every commit consistent.

Real SQLite files, read back by a second connection or by a reopened store;
crashes are real SIGKILLs of a child process.
"""

from __future__ import annotations

import random
import signal
import sqlite3
import threading
from pathlib import Path

from crdtkv import KvStore
from crdtkv.core.entry import Entry
from crdtkv.core.limits import DEFAULT_LIMITS, Limits
from crdtkv.core.vv import read_map
from crdtkv.storage import MemoryStorage
from crdtkv.storage.rows import decode_rows
from crdtkv.storage.sqlite import SqliteStorage

from .test_crash import HANG_GUARD, child_lines, stderr_of

NEVER = 3600.0  # a commit window that does not end during a test: only flush() commits


def file_state(path: Path) -> tuple[dict[str, Entry], dict[str, int]]:
    """The entries and version vector committed to ``path``, read by another connection."""
    db = sqlite3.connect(path)
    try:
        rows = db.execute("SELECT key, row FROM entries").fetchall()
        vv = db.execute("SELECT value FROM meta WHERE name = 'vv'").fetchone()
    finally:
        db.close()
    return dict(decode_rows(rows, DEFAULT_LIMITS)), read_map(vv[0]) if vv else {}


def test_overwrites_between_two_commits_write_one_row(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    storage = SqliteStorage(path, commit_window=NEVER)
    store = KvStore.open("o", storage=storage, replica_id="a")
    store.flush()
    written = storage.rows_written
    for index in range(100):
        store.put("hot", index)
    store.incr("n")
    store.incr("n", 5)
    store.flush()
    assert storage.rows_written - written == 2  # one row for "hot", one for "n"
    entries, vv = file_state(path)
    assert entries["hot"].value == 99
    assert vv == store.replica.vv  # the vector of the last write, not of the first
    store.close()
    reopened = KvStore.open("o", path=path, replica_id="a")
    assert reopened.get("hot") == 99
    assert reopened.get("n") == 6
    reopened.close()


def test_close_commits_at_once_while_the_commit_thread_waits_out_a_long_window(tmp_path: Path) -> None:
    path = tmp_path / "w.db"
    store = KvStore.open("w", storage=SqliteStorage(path, commit_window=NEVER), replica_id="a")
    store.put("k", "v")
    threading.Event().wait(0.1)  # lets the commit thread start waiting for the window (not a timing check)
    closer = threading.Thread(target=store.close, daemon=True)
    closer.start()
    closer.join(timeout=HANG_GUARD)  # a hang guard
    assert not closer.is_alive(), "close() waited for the commit window to end"
    assert file_state(path)[0]["k"].value == "v"


def test_a_sync_write_is_in_the_file_when_it_returns(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    store = KvStore.open("s", path=path, replica_id="a", durability="sync")
    for index in range(5):
        store.put("k", f"v{index}")
        entries, vv = file_state(path)
        assert entries["k"].value == f"v{index}"
        assert vv == store.replica.vv
    store.incr("n", 3)
    assert file_state(path)[0]["n"] == store.replica.entries["n"]
    store.delete("k")
    assert file_state(path)[0]["k"] == store.replica.entries["k"]  # the tombstone
    store.close()


def test_a_batch_write_reaches_the_file_without_a_flush(tmp_path: Path) -> None:
    path = tmp_path / "b.db"
    store = KvStore.open("b", storage=SqliteStorage(path, commit_window=0.001), replica_id="a")
    store.put("k", "first")
    store.put("k", "last")
    for _ in range(500):  # a hang guard, not a timing assertion
        entries, _vv = file_state(path)
        if "k" in entries:
            break
        threading.Event().wait(0.01)
    assert entries["k"].value == "last"  # the one row of the window holds its last write
    store.close()


def test_memory_storage_holds_the_state_after_every_change() -> None:
    """Every commit's rows, vector and marks are the replica's at that moment, whatever the cause."""
    rnd = random.Random(14)
    memory = MemoryStorage()
    now = [1_800_000_000_000_000_000]

    def clock() -> int:
        now[0] += 1_000_000
        return now[0]

    limits = Limits(gc_grace=10.0)
    store = KvStore.open("m", storage=memory, replica_id="a", clock=clock, limits=limits)
    peer = KvStore.open("m", replica_id="b", clock=clock, limits=limits)
    state = store.replica
    collections = 0
    for step in range(400):
        key = f"k{rnd.randrange(8)}"
        action = rnd.randrange(6)
        if action == 0:
            store.put(key, rnd.choice(["x", 1, b"b", [1, 2], {"m": 1}, 2.5, None]))
        elif action == 1:
            store.incr(f"n{key}", rnd.randrange(-5, 6))
        elif action == 2:
            store.delete(key)
        elif action == 3:
            peer.put(key, f"peer{step}")
            peer.incr(f"n{key}")
            store.merge(peer)
        elif action == 4:
            store.put(key, "short", ttl=0.5)
        else:
            now[0] += 30_000_000_000  # past the grace period: tombstones and expired values go
            collections += state.collect_garbage()
        decoded = dict(decode_rows(list(memory.rows.items()), DEFAULT_LIMITS))
        assert decoded == state.entries, step
        assert memory.vv == state.vv, step
        assert memory.collected == state.marks(), step
        assert memory.clock_last == state.clock.last, step
    assert collections > 0  # collections were among the changes
    store.close()


def test_collected_keys_leave_the_file_in_the_commit_that_writes_others(tmp_path: Path) -> None:
    path = tmp_path / "g.db"
    now = [1_800_000_000_000_000_000]
    storage = SqliteStorage(path, commit_window=NEVER)
    store = KvStore.open(
        "g", storage=storage, replica_id="a", clock=lambda: now[0], limits=Limits(gc_grace=10.0)
    )
    store.put("old", 1)
    store.delete("old")
    store.put("kept", 1)
    store.flush()
    assert set(file_state(path)[0]) == {"old", "kept"}  # a tombstone, until the grace period is over
    now[0] += 30_000_000_000
    assert store.replica.collect_garbage() == 1
    store.put("new", 2)
    store.put("kept", 3)
    store.flush()
    entries, vv = file_state(path)
    assert entries == store.replica.entries
    assert set(entries) == {"kept", "new"}
    assert vv == store.replica.vv
    store.close()


def test_commits_racing_the_writer_keep_every_change(tmp_path: Path) -> None:
    """The commit thread drains while the writer overwrites registers and counters: nothing is torn."""
    path = tmp_path / "r.db"
    store = KvStore.open("r", storage=SqliteStorage(path, commit_window=0.0002), replica_id="a")
    rnd = random.Random(7)
    for index in range(20_000):
        key = f"k{rnd.randrange(50)}"
        if index % 3:
            store.put(key, f"{key}={index}")
        else:
            store.incr(f"n{key}", index)
    store.flush()
    entries, vv = file_state(path)
    assert entries == store.replica.entries
    assert vv == store.replica.vv
    digest = store.digest()
    store.close()
    reopened = KvStore.open("r", path=path, replica_id="a")
    assert reopened.digest() == digest
    reopened.close()


def run_child(path: Path, mode: str, until: str | None, acks: int = 0) -> list[str]:
    """Run the journal child until it prints ``until`` (or ``acks`` acks), SIGKILL it; return its lines."""
    seen: list[str] = []
    with child_lines("tests.storage.journal_child", str(path), mode) as (child, lines):
        while True:
            line = lines.get(timeout=HANG_GUARD)
            assert line is not None, f"the child exited: {stderr_of(child)}"
            seen.append(line)
            if line.strip() == until or (acks and sum(each.startswith("ack") for each in seen) >= acks):
                break
        child.send_signal(signal.SIGKILL)
        assert child.wait(timeout=HANG_GUARD) == -signal.SIGKILL
    return seen


def test_a_kill_between_stage_and_commit_loses_only_unflushed_writes(tmp_path: Path) -> None:
    path = tmp_path / "k.db"
    run_child(path, "flushed", "staged")
    store = KvStore.open("journal", path=path, replica_id="london")
    try:
        assert [store.get(f"a{index}") for index in range(50)] == list(range(50))  # flushed: all there
        assert [store.get(f"b{index}") for index in range(50)] == [None] * 50  # staged only: gone
    finally:
        store.close()


def test_every_commit_a_kill_leaves_is_a_prefix_with_its_own_vector(tmp_path: Path) -> None:
    """Killed at seeded moments, the file holds the first N puts and exactly the vector of put N."""
    rnd = random.Random(2026)
    for round_ in range(4):
        path = tmp_path / f"p{round_}.db"
        lines = run_child(path, "stream", None, acks=rnd.randint(200, 3000))
        origin = lines[0].split()[1]
        entries, vv = file_state(path)
        count = len(entries)
        assert sorted(entries) == sorted(f"k{index}" for index in range(count))  # a prefix of the puts
        if count:
            last = entries[f"k{count - 1}"]
            assert last.writer == origin
            assert vv[origin] == last.stamp  # the vector claims the last committed put, no more, no less

"""Durable (SQLite) replicas: batch and sync puts, open of a large file, file size, against raw sqlite3.

Public API only (``KvStore.open`` with a path, ``put``, ``flush``, ``close``);
the baselines are raw ``sqlite3`` tables of the same keys and values on the
same disk (the runner's ``--dir``), in the same run. File timings run with
the page cache warm (the files were just written).
"""

from __future__ import annotations

import itertools
import sqlite3
from collections.abc import Callable, Sequence
from contextlib import closing
from pathlib import Path

from report import Options, Row, Variant, case, fmt_bytes, fmt_ratio, fmt_time, progress, race, rate_row

from crdtkv import KvStore

RAW_SCHEMA = "CREATE TABLE IF NOT EXISTS t (key TEXT PRIMARY KEY, value BLOB) WITHOUT ROWID"
RAW_UPSERT = "INSERT OR REPLACE INTO t VALUES (?, ?)"
RAW_BATCH = 100
_paths = itertools.count()


def new_path(o: Options, label: str) -> Path:
    return o.directory / f"{label}-{next(_paths)}.db"


def remove(path: Path) -> None:
    for suffix in ("", "-wal", "-shm", "-journal", ".lock"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def file_bytes(path: Path) -> int:
    """Bytes of the database and its WAL."""
    return sum(p.stat().st_size for p in (path, Path(f"{path}-wal")) if p.exists())


def raw_db(path: Path, synchronous: str) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute(f"PRAGMA synchronous={synchronous}")
    db.execute(RAW_SCHEMA)
    return db


def raw_close(db: sqlite3.Connection) -> None:
    """Checkpoint and truncate the WAL, as ``KvStore.close`` does, then close."""
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()


def put_all(store: KvStore, pairs: Sequence[tuple[str, str]]) -> None:
    put = store.put
    for k, v in pairs:
        put(k, v)


def write_both(path: Path, raw_path: Path, pairs: Sequence[tuple[str, str]], per_commit: int) -> None:
    """Write ``pairs`` into a store file at ``path`` and, ``per_commit`` rows a commit, a raw one."""
    store = KvStore.open("bench", path=path)
    put_all(store, pairs)
    store.close()
    db = raw_db(raw_path, "NORMAL")
    raw_commits(db, pairs, per_commit)
    raw_close(db)


def raw_commits(db: sqlite3.Connection, pairs: Sequence[tuple[str, str]], per_commit: int) -> None:
    for i in range(0, len(pairs), per_commit):
        db.execute("BEGIN")
        db.executemany(RAW_UPSERT, pairs[i : i + per_commit])
        db.execute("COMMIT")


def pairs_of(n: int, round_: int = 0) -> list[tuple[str, str]]:
    """Keys and values; later rounds overwrite with values of the same length."""
    return [(f"user:{i:07d}", f"{'vwxyz'[round_]}{i}") for i in range(n)]


def store_variant(o: Options, durability: str, pairs: Sequence[tuple[str, str]]) -> Variant:
    """Puts into a fresh durable store through ``flush()``; the file is removed after each run."""

    def setup() -> tuple[KvStore, Path]:
        path = new_path(o, durability)
        return KvStore.open("bench", path=path, durability=durability), path

    def run(ctx: tuple[KvStore, Path]) -> None:
        put_all(ctx[0], pairs)
        ctx[0].flush()

    def teardown(ctx: tuple[KvStore, Path], result: object) -> None:
        ctx[0].close()
        remove(ctx[1])

    return Variant(durability, run, setup, teardown)


def raw_variant(o: Options, synchronous: str, run: Callable[[sqlite3.Connection], None]) -> Variant:
    def setup() -> tuple[sqlite3.Connection, Path]:
        path = new_path(o, f"raw-{synchronous}")
        return raw_db(path, synchronous), path

    def teardown(ctx: tuple[sqlite3.Connection, Path], result: object) -> None:
        ctx[0].close()
        remove(ctx[1])

    return Variant(f"raw {synchronous}", lambda ctx: run(ctx[0]), setup, teardown)


@case("durability-writes", "durable puts in batch and sync mode, against raw sqlite3")
def writes(o: Options) -> list[Row]:
    n, m, reps = o.size(200_000, 5_000), o.size(2_000, 100), o.reps(3)
    many, few = pairs_of(n), pairs_of(m)
    progress(f"{n:,} batch-mode puts and {m:,} sync-mode puts against raw sqlite3, median of {reps}")
    batch = race(
        [store_variant(o, "batch", many), raw_variant(o, "NORMAL", lambda db: raw_commits(db, many, 100))],
        reps,
    )
    sync = race(
        [store_variant(o, "sync", few), raw_variant(o, "FULL", lambda db: raw_commits(db, few, 1))], reps
    )
    return [
        rate_row("1", f'`durability="batch"` put, {n:,} new keys, through `flush()`', batch["batch"],
                 batch["raw NORMAL"], f"raw WAL `synchronous=NORMAL`, {RAW_BATCH} rows per commit", ops=n,
                 unit="puts/s", goal=0.5),
        rate_row("2", f'`durability="sync"` put, {m:,} keys (fsync each)', sync["sync"], sync["raw FULL"],
                 "raw WAL `synchronous=FULL`, one row per commit", ops=m, unit="puts/s", goal=0.8),
    ]  # fmt: skip


@case("durability-files", "open (recovery) of 1M keys, file bytes per key, file size under overwrites")
def files(o: Options) -> list[Row]:
    n, m, reps = o.size(1_000_000, 10_000), o.size(200_000, 5_000), o.reps(3)
    pairs = pairs_of(n)
    path, raw_path = new_path(o, "recovery"), new_path(o, "recovery-raw")
    progress(f"writing {n:,} keys, then open against a raw SELECT, median of {reps}")
    write_both(path, raw_path, pairs, n)

    def select(_: None) -> int:
        with closing(sqlite3.connect(raw_path)) as db:
            return len(db.execute("SELECT key, value FROM t").fetchall())

    reopen = Variant("open", lambda _: KvStore.open("bench", path=path), teardown=lambda _, s: s.close())
    opened = race([reopen, Variant("select", select)], reps)
    size, raw_size = file_bytes(path), file_bytes(raw_path)
    remove(path)
    remove(raw_path)
    progress(f"{m:,} keys, then 3 rounds overwriting each, the store reopened every round; raw alike")
    path, raw_path = new_path(o, "overwrite"), new_path(o, "overwrite-raw")
    sizes: list[int] = []
    raw_sizes: list[int] = []
    for round_ in range(4):
        write_both(path, raw_path, pairs_of(m, round_), RAW_BATCH)
        sizes.append(file_bytes(path))
        raw_sizes.append(file_bytes(raw_path))
    remove(path)
    remove(raw_path)
    what = f"open / recovery of {n:,} keys (check, read, decode, rebuild)"
    base = "raw connect + `SELECT` of the same rows"
    row = rate_row("3", what, opened["open"], opened["select"], base, ops=n, unit="keys/s")
    if row.measured != "ERROR":
        row.measured = f"{fmt_time(opened['open'].seconds)} ({row.measured})"
        row.baseline = fmt_time(opened["select"].seconds)

    def rounds(values: list[int]) -> str:
        grown = values[-1] - values[1]
        return f"{fmt_bytes(values[1])} after round 1, " + (
            f"{grown:+,} B by round 3" if grown else "no growth"
        )

    return [
        row,
        Row("4", f"file bytes per key, {n:,} short keys and values", fmt_bytes(size / n), "raw table",
            fmt_bytes(raw_size / n), fmt_ratio(size / raw_size), notes="after close (WAL checkpointed)"),
        Row("5", f"file size, {m:,} keys, after each of three rounds overwriting every key", rounds(sizes),
            "raw table, same rounds", rounds(raw_sizes), fmt_ratio(sizes[-1] / raw_sizes[-1])),
    ]  # fmt: skip

#!/usr/bin/env python3
"""By-hand benchmark of crdtkv's durable SQLite replicas: writes, recovery and file size.

Run it by hand and paste the Markdown table it prints into the README. CI runs
it with ``--quick`` (tests/test_bench.py), which checks that it still runs and
that every measurement succeeds (the exit status is 1 if one failed), not its
figures. Everything runs in one process, on one disk (a temporary directory in
the working directory, or under ``--dir``), and every figure is set against a
baseline measured in the same run, because the machine is assumed shared and
noisy:

* put throughput in the default ``durability="batch"`` mode, timed up to and
  including a final ``flush()``, against raw ``sqlite3`` (WAL,
  ``synchronous=NORMAL``, ``INSERT OR REPLACE`` of 100 rows per commit);
* put throughput in ``durability="sync"`` mode against raw ``sqlite3`` (WAL,
  ``synchronous=FULL``, one row per commit);
* ``KvStore.open`` of a store of ``--keys`` keys against a raw ``SELECT`` of
  the same rows, with the file check (``PRAGMA quick_check``), the row read
  and the row decoding also timed alone;
* file bytes per key against a raw table of the same keys and values;
* overwrite rounds of the same keys (throughput, and file size after each round).

Rules, as in ``bench/local_ops.py`` (see ``bench/report.py``): each timing is the best (minimum) of
``repeats`` runs; the variants of one comparison run round-robin (A B A B ...)
so a slow spell hits them alike; every write timing starts on a fresh file;
the cyclic garbage collector is disabled during timed regions (measured and
baseline alike) except in row 3a, which times ``open`` as an application sees
it; "met" is computed from the measured numbers, never assumed. File timings
run with the page cache warm (the files were just written): recovery from a
cold disk is slower and is not measured here.

Usage::

    .venv/bin/python bench/durability.py              # 1,000,000-key recovery, 200,000 puts
    .venv/bin/python bench/durability.py --quick      # a smoke run in seconds (CI): 10,000 keys, one repeat
    .venv/bin/python bench/durability.py --keys 250000 --repeats 5 --dir /mnt/ssd
"""

from __future__ import annotations

import argparse
import math
import sqlite3
import sys
import tempfile
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cbor2
from report import (  # before crdtkv: it makes crdtkv importable from a checkout without `pip install -e .`
    Row,
    Variant,
    add_repeats_option,
    chosen_repeats,
    command_line,
    crdtkv_revision,
    error_row,
    exit_status,
    fmt_num,
    fmt_rate,
    fmt_ratio,
    fmt_time,
    header,
    print_results,
    progress,
    race,
    rate_row,
    timed_once,
    version_of,
)

from crdtkv import KvStore
from crdtkv.core import DEFAULT_LIMITS
from crdtkv.core.codec import decode_rows
from crdtkv.storage.sqlite import DEFAULT_COMMIT_WINDOW, LOAD_CHUNK

DEFAULT_KEYS = 1_000_000
QUICK_KEYS = 10_000
DEFAULT_PUTS = 200_000
QUICK_PUTS = 5_000
DEFAULT_SYNC_PUTS = 2_000
QUICK_SYNC_PUTS = 100
DEFAULT_REPEATS = 3
QUICK_REPEATS = 1
#: rows per commit in the raw batch baseline
RAW_BATCH = 100
#: overwrite rounds after the initial fill (row 5)
OVERWRITE_ROUNDS = 3
STORE_NAME = "bench"

BATCH_GOAL = 0.5
SYNC_GOAL = 0.8

RAW_SCHEMA = "CREATE TABLE t (key TEXT PRIMARY KEY, value BLOB) WITHOUT ROWID"
RAW_UPSERT = "INSERT OR REPLACE INTO t VALUES (?, ?)"


def key_of(i: int) -> str:
    return f"user:{i:07d}"


def value_of(i: int, round_: int = 0) -> str:
    """Round 0 fills, rounds 1.. overwrite with values of the same length (so files need not grow)."""
    return f"{'vwxyz'[round_ % 5]}{i}"


# -- files ---------------------------------------------------------------------------------


class Files:
    """Fresh database paths in one directory; every file is removed after use."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._count = 0

    def new(self, label: str) -> Path:
        self._count += 1
        path = self.root / f"{label}-{self._count}.db"
        remove_db(path)
        return path


def db_files(path: Path) -> list[Path]:
    return [path, Path(f"{path}-wal"), Path(f"{path}-shm"), Path(f"{path}-journal")]


def remove_db(path: Path) -> None:
    for p in db_files(path):
        p.unlink(missing_ok=True)


def db_bytes(path: Path) -> int:
    """Bytes of the database and its WAL (the shared-memory index is not data)."""
    return sum(p.stat().st_size for p in db_files(path) if p.exists() and not p.name.endswith("-shm"))


def raw_connect(path: Path, synchronous: str) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute(f"PRAGMA synchronous={synchronous}")
    return db


def raw_create(path: Path, synchronous: str) -> sqlite3.Connection:
    db = raw_connect(path, synchronous)
    db.execute(RAW_SCHEMA)
    return db


def raw_close(db: sqlite3.Connection) -> None:
    """Checkpoint and truncate the WAL, as ``KvStore.close`` does, then close."""
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()


def filesystem_of(path: Path) -> str:
    """The mount point and type holding ``path`` (Linux; 'unknown' elsewhere)."""
    try:
        with open("/proc/mounts", encoding="utf-8") as mounts:
            entries = [line.split()[:3] for line in mounts]
    except OSError:
        return "filesystem unknown"
    target = str(path.resolve())
    best = ("", "?", "?")
    for device, mount, fstype in entries:
        inside = target == mount or target.startswith(mount.rstrip("/") + "/")
        if inside and len(mount) > len(best[0]):
            best = (mount, fstype, device)
    return f"{best[1]} on {best[2]} (mounted at {best[0]})" if best[0] else "filesystem unknown"


def fmt_bytes(n: float) -> str:
    if n >= 1 << 20:
        return f"{n / (1 << 20):.1f} MiB"
    if n >= 1 << 10:
        return f"{n / (1 << 10):.1f} KiB"
    return f"{n:.0f} B"


# -- workloads -------------------------------------------------------------------------------


@dataclass
class Config:
    keys: int
    puts: int
    sync_puts: int
    repeats: int
    files: Files


def put_all(store: KvStore, keys: Sequence[str], values: Sequence[str]) -> None:
    put = store.put
    for k, v in zip(keys, values, strict=True):
        put(k, v)


def raw_upsert_batches(db: sqlite3.Connection, batches: Sequence[Sequence[tuple[str, str]]]) -> None:
    """``BEGIN; executemany(INSERT OR REPLACE, 100 rows); COMMIT`` per batch."""
    execute = db.execute
    executemany = db.executemany
    for batch in batches:
        execute("BEGIN")
        executemany(RAW_UPSERT, batch)
        execute("COMMIT")


def batches_of(keys: Sequence[str], values: Sequence[str]) -> list[list[tuple[str, str]]]:
    rows = list(zip(keys, values, strict=True))
    return [rows[i : i + RAW_BATCH] for i in range(0, len(rows), RAW_BATCH)]


SYNCHRONOUS = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}


def storage_stats(store: KvStore) -> dict[str, Any]:
    """The storage's commit count, and the ``synchronous`` level its SQLite connection runs with."""
    storage = store._storage
    db = getattr(storage, "_db", None)
    synchronous = db.execute("PRAGMA synchronous").fetchone()[0] if db is not None else None
    return {
        "commits": float(getattr(storage, "commits", math.nan)),
        "synchronous": SYNCHRONOUS.get(synchronous, "unknown"),
    }


def durable_variant(cfg: Config, name: str, durability: str, keys: list[str], values: list[str]) -> Variant:
    """Puts into a fresh durable store, then ``flush()`` (setup opens it; teardown closes, removes it)."""

    def setup() -> tuple[KvStore, Path]:
        path = cfg.files.new(durability)
        return KvStore.open(STORE_NAME, path=path, durability=durability), path

    def run(ctx: tuple[KvStore, Path]) -> None:
        store = ctx[0]
        put_all(store, keys, values)
        store.flush()

    def teardown(ctx: tuple[KvStore, Path], result: object) -> dict[str, Any]:
        store, path = ctx
        stats = storage_stats(store)
        store.close()
        remove_db(path)
        return stats

    return Variant(name, run, setup, teardown)


def raw_variant(
    cfg: Config, name: str, synchronous: str, run: Callable[[sqlite3.Connection], None]
) -> Variant:
    def setup() -> tuple[sqlite3.Connection, Path]:
        path = cfg.files.new(f"raw-{synchronous.lower()}")
        return raw_create(path, synchronous), path

    def teardown(ctx: tuple[sqlite3.Connection, Path], result: object) -> None:
        db, path = ctx
        db.close()
        remove_db(path)

    return Variant(name, lambda ctx: run(ctx[0]), setup, teardown)


def commit_notes(v: Variant, puts: int) -> str:
    if not v.ok or not v.summary:
        return ""
    commits = v.summary["commits"]
    per_run = sorted(int(s["commits"]) for s in v.summaries)
    spread = "/".join(str(c) for c in per_run)
    windows = v.best / DEFAULT_COMMIT_WINDOW
    return (
        f"{int(commits):,} commit(s) in the fastest run ({puts / commits:,.0f} rows per commit; "
        f"commits per run: {spread}), where one commit per {DEFAULT_COMMIT_WINDOW * 1e3:g} ms window "
        f"would be about {windows:,.0f}; raw: {puts // RAW_BATCH:,} commits of {RAW_BATCH}"
    )


def bench_batch(cfg: Config, rows: list[Row]) -> None:
    n = cfg.puts
    keys = [key_of(i) for i in range(n)]
    values = [value_of(i) for i in range(n)]
    batches = batches_of(keys, values)
    progress(f"1: {n:,} puts in batch mode (+ flush) vs raw sqlite3 NORMAL, {RAW_BATCH} rows/commit")
    memory = Variant("memory", lambda store: put_all(store, keys, values), lambda: KvStore.open(STORE_NAME))
    result = race(
        [
            durable_variant(cfg, "batch", "batch", keys, values),
            raw_variant(cfg, "raw", "NORMAL", lambda db: raw_upsert_batches(db, batches)),
            memory,
        ],
        cfg.repeats,
    )
    rows.append(
        rate_row(
            "1a",
            f'put, `durability="batch"`, {n:,} new keys, timed through `flush()`',
            result["batch"],
            result["raw"],
            f"raw sqlite3 (WAL, synchronous=NORMAL, INSERT OR REPLACE, {RAW_BATCH} rows/commit)",
            ops=n,
            unit="puts/s",
            goal=BATCH_GOAL,
            notes=commit_notes(result["batch"], n),
        )
    )
    rows.append(
        rate_row(
            "1b",
            f'put, `durability="batch"` (as 1a), against crdtkv in memory, {n:,} new keys',
            result["batch"],
            result["memory"],
            "in-memory `KvStore.put` (no storage)",
            ops=n,
            unit="puts/s",
            notes="what durability costs a put; for reference, no goal",
        )
    )


def bench_sync(cfg: Config, rows: list[Row]) -> None:
    m = cfg.sync_puts
    keys = [key_of(i) for i in range(m)]
    values = [value_of(i) for i in range(m)]

    def raw_one_per_commit(db: sqlite3.Connection) -> None:
        execute = db.execute
        for k, v in zip(keys, values, strict=True):
            execute("BEGIN")
            execute(RAW_UPSERT, (k, v))
            execute("COMMIT")

    progress(f"2: {m:,} puts in sync mode vs raw sqlite3 FULL, one row per commit")
    result = race(
        [
            durable_variant(cfg, "sync", "sync", keys, values),
            raw_variant(cfg, "raw", "FULL", raw_one_per_commit),
        ],
        cfg.repeats,
    )
    sync = result["sync"]
    notes = ""
    if sync.ok and sync.summary:
        notes = (
            f"{int(sync.summary['commits']):,} commits for {m:,} puts in the fastest run; the store's "
            f"SQLite connection ran with synchronous={sync.summary['synchronous']}"
        )
    rows.append(
        rate_row(
            "2",
            f'put, `durability="sync"`, {m:,} new keys',
            sync,
            result["raw"],
            "raw sqlite3 (WAL, synchronous=FULL, BEGIN; INSERT OR REPLACE; COMMIT per row)",
            ops=m,
            unit="puts/s",
            goal=SYNC_GOAL,
            notes=notes,
        )
    )


@dataclass
class Recovery:
    """The large crdtkv store and the raw table with the same rows."""

    store_path: Path
    raw_path: Path
    build_seconds: float
    raw_build_seconds: float


def build_recovery_files(cfg: Config) -> Recovery:
    n = cfg.keys
    keys = [key_of(i) for i in range(n)]
    values = [value_of(i) for i in range(n)]
    store_path = cfg.files.new("recovery")
    raw_path = cfg.files.new("recovery-raw")
    progress(f"3: building a {n:,}-key durable store (batch mode, then close)")

    def build() -> None:
        store = KvStore.open(STORE_NAME, path=store_path)
        put_all(store, keys, values)
        store.close()

    build_seconds, _ = timed_once(build)
    progress(f"3: building the raw table of {n:,} rows")

    def build_raw() -> None:
        db = raw_create(raw_path, "NORMAL")
        db.execute("BEGIN")
        db.executemany(RAW_UPSERT, zip(keys, values, strict=True))
        db.execute("COMMIT")
        raw_close(db)

    raw_build_seconds, _ = timed_once(build_raw)
    return Recovery(store_path, raw_path, build_seconds, raw_build_seconds)


def open_variant(path: Path) -> Variant:
    def teardown(ctx: None, store: KvStore | None) -> None:
        if store is not None:
            store.close()

    return Variant("open", lambda _: KvStore.open(STORE_NAME, path=path), teardown=teardown)


def select_all(path: Path) -> list[Any]:
    db = sqlite3.connect(path)
    try:
        return db.execute("SELECT key, value FROM t").fetchall()
    finally:
        db.close()


def quick_check(path: Path) -> list[Any]:
    db = sqlite3.connect(path)
    try:
        result = db.execute("PRAGMA quick_check").fetchall()
    finally:
        db.close()
    if result != [("ok",)]:
        raise RuntimeError(f"quick_check of {path.name}: {result[:3]}")
    return result


def read_rows(path: Path) -> list[tuple[str, bytes]]:
    """The row read of ``SqliteStorage.load`` alone: ``SELECT key, row FROM entries`` in chunks."""
    db = sqlite3.connect(path)
    try:
        out: list[tuple[str, bytes]] = []
        cursor = db.execute("SELECT key, row FROM entries")
        while chunk := cursor.fetchmany(LOAD_CHUNK):
            out.extend(chunk)
        return out
    finally:
        db.close()


def decode_all(pairs: list[tuple[str, bytes]]) -> int:
    """The decoding of ``SqliteStorage.load`` alone: ``decode_rows`` of its ``(key, row)`` chunks."""
    decoded = 0
    for i in range(0, len(pairs), LOAD_CHUNK):
        decoded += len(decode_rows(pairs[i : i + LOAD_CHUNK], DEFAULT_LIMITS))
    return decoded


def bench_recovery(cfg: Config, rec: Recovery, rows: list[Row], notes: list[str]) -> None:
    n = cfg.keys
    raw_name = "raw sqlite3: connect + `SELECT key, value FROM t` + fetchall, same rows"
    open_what = f"`KvStore.open` of a {n:,}-key store (quick_check, read, decode, rebuild)"

    progress(f"3a: open of {n:,} keys vs raw SELECT, cyclic gc enabled")
    with_gc = race(
        [open_variant(rec.store_path), Variant("raw", lambda _: select_all(rec.raw_path))],
        cfg.repeats,
        collector=True,
    )
    progress(f"3b: open of {n:,} keys vs raw SELECT, cyclic gc disabled")
    without_gc = race(
        [open_variant(rec.store_path), Variant("raw", lambda _: select_all(rec.raw_path))], cfg.repeats
    )
    gc_share = ""
    if with_gc["open"].ok and without_gc["open"].ok:
        gc_cost = with_gc["open"].best - without_gc["open"].best
        gc_share = f"the cyclic gc adds {fmt_time(gc_cost)} ({gc_cost / with_gc['open'].best:.0%}) to 3a"
    for num, gc_state, result, notes_text in (
        ("3a", "enabled (as an application sees it)", with_gc, ""),
        ("3b", "disabled", without_gc, gc_share),
    ):
        rows.append(
            rate_row(
                num,
                f"{open_what}, cyclic gc {gc_state}",
                result["open"],
                result["raw"],
                f"{raw_name} (gc {gc_state.split()[0]})",
                ops=n,
                unit="keys/s",
                with_time=True,
                notes=notes_text,
            )
        )

    open_best = without_gc["open"].best

    def share(v: Variant) -> str:
        return f"{v.best / open_best:.0%} of the open time in 3b" if v.ok and without_gc["open"].ok else ""

    check = Variant("check", lambda _: quick_check(rec.store_path))
    read = Variant("read", lambda _: read_rows(rec.store_path))
    for num, what, measured, baseline, baseline_name, unit in (
        (
            "3c",
            "`PRAGMA quick_check` alone (connect + check) on the crdtkv file",
            check,
            Variant("raw", lambda _: quick_check(rec.raw_path)),
            "the same check on the raw table's file",
            "keys/s",
        ),
        (
            "3d",
            f"row read of `open` alone: connect + `SELECT key, row FROM entries` in chunks of {LOAD_CHUNK:,}",
            read,
            Variant("raw", lambda _: select_all(rec.raw_path)),
            raw_name + " (gc disabled)",
            "rows/s",
        ),
    ):
        progress(f"{num}: {what}")
        race([measured, baseline], cfg.repeats)
        rows.append(
            rate_row(
                num,
                what,
                measured,
                baseline,
                baseline_name,
                ops=n,
                unit=unit,
                with_time=True,
                notes=share(measured),
            )
        )

    what = (
        "row decoding of `open` alone: `decode_rows` (checksums + CBOR) of `(key, row)` pairs, "
        f"chunks of {LOAD_CHUNK:,}"
    )
    progress(f"3e: {what}")
    decode = Variant("decode", decode_all, lambda: read_rows(rec.store_path))  # the read is not timed
    race([decode], cfg.repeats)
    failed = error_row("3e", what, "-", [decode])
    if failed is not None:
        rows.append(failed)
    else:
        parts = [check, read, decode]
        rest = open_best - sum(v.best for v in parts) if all(v.ok for v in parts) else math.nan
        rows.append(
            Row(
                "3e",
                what,
                f"{fmt_time(decode.best)} ({fmt_rate(decode.rate(n), 'rows/s')})",
                "-",
                "-",
                "n/a",
                notes=f"{share(decode)}; 3b less 3c, 3d and 3e, the rest of what `open` does: about "
                f"{fmt_time(rest)}",
            )
        )
    notes.append(
        f"Row 3: building the {n:,}-key store took {fmt_time(rec.build_seconds)} "
        f"({fmt_rate(n / rec.build_seconds, 'puts/s')}, batch mode, gc disabled, including close); "
        f"the raw table (one transaction) {fmt_time(rec.raw_build_seconds)}."
    )


def bench_size(cfg: Config, rec: Recovery, rows: list[Row], notes: list[str]) -> None:
    n = cfg.keys
    progress("4: file bytes per key")
    store_bytes = db_bytes(rec.store_path)
    raw_bytes = db_bytes(rec.raw_path)
    rows.append(
        Row(
            "4a",
            f"file bytes per key, {n:,} keys, after close (WAL checkpointed and truncated)",
            f"{store_bytes / n:.1f} B ({fmt_bytes(store_bytes)})",
            "raw sqlite3 table, same keys and values, after `wal_checkpoint(TRUNCATE)`",
            f"{raw_bytes / n:.1f} B ({fmt_bytes(raw_bytes)})",
            fmt_ratio(store_bytes / raw_bytes),
            notes="ratio = crdtkv size / raw size (lower is better)",
        )
    )
    db = sqlite3.connect(rec.store_path)
    try:
        key_len, row_len = db.execute("SELECT sum(length(key)), sum(length(row)) FROM entries").fetchone()
        (meta_len,) = db.execute("SELECT sum(length(name) + length(value)) FROM meta").fetchone()
        pages, page_size, free = (
            db.execute(f"PRAGMA {name}").fetchone()[0]
            for name in ("page_count", "page_size", "freelist_count")
        )
        sample_key, sample_row = db.execute("SELECT key, row FROM entries LIMIT 1").fetchone()
        ((_, entry),) = decode_rows([(sample_key, sample_row)], DEFAULT_LIMITS)
        writer = entry.writer.encode()
        (with_writer,) = db.execute(
            "SELECT count(*) FROM entries WHERE instr(row, ?) > 0", (writer,)
        ).fetchone()
    finally:
        db.close()
    raw = sqlite3.connect(rec.raw_path)
    try:
        (raw_payload,) = raw.execute("SELECT sum(length(key) + length(value)) FROM t").fetchone()
    finally:
        raw.close()
    rows.append(
        Row(
            "4b",
            "payload bytes per key: `length(key) + length(row)` in `entries`",
            f"{(key_len + row_len) / n:.1f} B (row alone {row_len / n:.1f} B)",
            "raw `length(key) + length(value)`",
            f"{raw_payload / n:.1f} B",
            fmt_ratio((key_len + row_len) / raw_payload),
            notes=f"the file is {pages:,} pages of {page_size:,} B, {free:,} of them free; the `meta` table "
            f"holds {meta_len:,} B; the rest of 4a beyond the payload is SQLite's page and b-tree overhead",
        )
    )
    notes.append(
        f"Row 4: a sample row, for key {sample_key!r} ({len(sample_key)} B), is "
        f"{describe_row(sample_key, sample_row)}. The writer's origin id ({len(writer)} B) is in "
        f"{with_writer:,} of the {n:,} rows."
    )


def describe_row(key: str, row: bytes) -> str:
    """What a stored row holds, found in the row itself: its checksum, and its body decoded."""
    body = row[4:]
    if zlib.crc32(body, zlib.crc32(key.encode())).to_bytes(4, "big") == row[:4]:
        checksum = "a 4-byte CRC-32 of key + body"
    elif zlib.crc32(body).to_bytes(4, "big") == row[:4]:
        checksum = "a 4-byte CRC-32 of the body alone"
    else:
        checksum = "4 bytes that are no CRC-32 of the body or of key + body"
    ((_, entry),) = decode_rows([(key, row)], DEFAULT_LIMITS)
    known = (("key", key), ("stamp", entry.stamp), ("writer origin", entry.writer), ("value", entry.value))

    def shape(item: object) -> str:
        if isinstance(item, list):
            return "[" + ", ".join(shape(x) for x in item) + "]"
        return next((name for name, v in known if type(v) is type(item) and v == item), repr(item))

    where = "also in the body" if key.encode() in body else "not in the body, only in the `key` column"
    return (
        f"{len(row)} B: {checksum}, then {len(body)} B of CBOR "
        f"`{shape(cbor2.loads(body))}` = `{body.hex()}`; the key is {where}"
    )


def bench_overwrite(cfg: Config, rows: list[Row], notes: list[str]) -> None:
    n = cfg.puts
    keys = [key_of(i) for i in range(n)]
    rounds = [[value_of(i, r) for i in range(n)] for r in range(OVERWRITE_ROUNDS + 1)]
    store_path = cfg.files.new("overwrite")
    raw_path = cfg.files.new("overwrite-raw")
    progress(f"5: fill {n:,} keys, then {OVERWRITE_ROUNDS} overwrite rounds (crdtkv and raw alternating)")

    def crdtkv_round(values: list[str]) -> None:
        store = KvStore.open(STORE_NAME, path=store_path)
        try:
            seconds, _ = timed_once(lambda: (put_all(store, keys, values), store.flush()))
        finally:
            store.close()
        crdtkv_times.append(seconds)
        crdtkv_sizes.append(db_bytes(store_path))

    def raw_round(values: list[str]) -> None:
        db = raw_connect(raw_path, "NORMAL")
        try:
            db.execute(RAW_SCHEMA.replace("CREATE TABLE", "CREATE TABLE IF NOT EXISTS"))
            batches = batches_of(keys, values)
            seconds, _ = timed_once(lambda: raw_upsert_batches(db, batches))
        finally:
            raw_close(db)
        raw_times.append(seconds)
        raw_sizes.append(db_bytes(raw_path))

    crdtkv_times: list[float] = []
    crdtkv_sizes: list[int] = []
    raw_times: list[float] = []
    raw_sizes: list[int] = []
    error = None
    try:
        for values in rounds:
            crdtkv_round(values)
            raw_round(values)
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"
    finally:
        remove_db(store_path)
        remove_db(raw_path)
    if error is not None or len(crdtkv_times) != len(rounds) or len(raw_times) != len(rounds):
        rows.append(Row("5", "overwrite rounds", "ERROR", "-", "ERROR", "n/a", notes=str(error)[:300]))
        return
    best = min(crdtkv_times[1:])
    raw_best = min(raw_times[1:])
    rates = ", ".join(fmt_num(n / t) for t in crdtkv_times[1:])
    raw_rates = ", ".join(fmt_num(n / t) for t in raw_times[1:])
    rows.append(
        Row(
            "5a",
            f"put overwriting {n:,} existing keys, batch mode, through `flush()`, "
            f"best of {OVERWRITE_ROUNDS} rounds",
            fmt_rate(n / best, "puts/s"),
            f"raw sqlite3 as in 1a, overwriting the same keys ({RAW_BATCH} rows/commit)",
            fmt_rate(n / raw_best, "puts/s"),
            fmt_ratio(raw_best / best),
            notes=f"per round (puts/s): crdtkv {rates}; raw {raw_rates}; store reopened between rounds",
        )
    )

    def sizes(values: list[int]) -> str:
        return " / ".join(f"{v / (1 << 20):.2f}" for v in values) + " MiB"

    def growth(values: list[int]) -> str:
        grown = values[-1] - values[0]
        return "no growth" if grown == 0 else f"{grown:+,} B ({grown / values[0]:+.1%})"

    rows.append(
        Row(
            "5b",
            f"file size after fill / each of {OVERWRITE_ROUNDS} overwrite rounds (after close)",
            sizes(crdtkv_sizes),
            "raw table, same rounds, after `wal_checkpoint(TRUNCATE)`",
            sizes(raw_sizes),
            fmt_ratio(crdtkv_sizes[-1] / raw_sizes[-1]),
            notes=f"crdtkv: {growth(crdtkv_sizes)} from fill to last round; raw: {growth(raw_sizes)}",
        )
    )
    notes.append(
        f"Row 5: the fill itself (round 0) ran at {fmt_rate(n / crdtkv_times[0], 'puts/s')} for crdtkv and "
        f"{fmt_rate(n / raw_times[0], 'puts/s')} for raw; single timings, not best-of."
    )


# -- main ---------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--keys", type=int, default=None, help=f"keys in the recovery store (default {DEFAULT_KEYS:,})"
    )
    parser.add_argument("--puts", type=int, default=None, help=f"batch-mode puts (default {DEFAULT_PUTS:,})")
    parser.add_argument(
        "--sync-puts", type=int, default=None, help=f"sync-mode puts (default {DEFAULT_SYNC_PUTS:,})"
    )
    add_repeats_option(parser, DEFAULT_REPEATS, QUICK_REPEATS)
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"a smoke run: {QUICK_KEYS:,} keys, {QUICK_PUTS:,} puts, {QUICK_SYNC_PUTS:,} sync puts (unless "
        f"given), {QUICK_REPEATS} repeat",
    )
    parser.add_argument(
        "--dir",
        type=Path,
        default=None,
        help="where to put the temporary directory (default: the working directory)",
    )
    args = parser.parse_args(argv)
    args.repeats = chosen_repeats(args, DEFAULT_REPEATS, QUICK_REPEATS)
    keys = args.keys if args.keys is not None else (QUICK_KEYS if args.quick else DEFAULT_KEYS)
    puts = args.puts if args.puts is not None else (QUICK_PUTS if args.quick else DEFAULT_PUTS)
    sync_puts = (
        args.sync_puts
        if args.sync_puts is not None
        else (QUICK_SYNC_PUTS if args.quick else DEFAULT_SYNC_PUTS)
    )
    if keys < 1 or puts < RAW_BATCH or sync_puts < 1 or args.repeats < 1:
        parser.error(f"--keys, --sync-puts and --repeats must be at least 1, --puts at least {RAW_BATCH}")
    parent = args.dir if args.dir is not None else Path.cwd()
    if not parent.is_dir():
        parser.error(f"--dir {parent} is not a directory")

    command = command_line(__file__, argv)
    revision = crdtkv_revision()  # the code was imported just now: record which
    started = time.perf_counter()
    rows: list[Row] = []
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="crdtkv-durability-", dir=parent) as tmp:
        root = Path(tmp)
        where = f"{root} ({filesystem_of(root)})"
        progress(f"files in {where}")
        cfg = Config(keys=keys, puts=puts, sync_puts=sync_puts, repeats=args.repeats, files=Files(root))
        bench_batch(cfg, rows)
        bench_sync(cfg, rows)
        recovery = build_recovery_files(cfg)
        try:
            bench_recovery(cfg, recovery, rows, notes)
            bench_size(cfg, recovery, rows, notes)
        finally:
            remove_db(recovery.store_path)
            remove_db(recovery.raw_path)
        bench_overwrite(cfg, rows, notes)
    elapsed = time.perf_counter() - started

    print(
        f"{header(__file__, revision)}, SQLite {sqlite3.sqlite_version}, cbor2 {version_of('cbor2')}; "
        f"files in {where}"
    )
    print()
    print(f"Command: `{command}`")
    print()
    print(
        f"Rows 1-3 are the best of {args.repeats} repeats, the "
        "variants of each comparison run round-robin; every write timing starts on a fresh file and "
        f"includes making the data durable (1a: final `flush()`). {puts:,} batch-mode puts, "
        f"{sync_puts:,} sync-mode puts, {keys:,}-key recovery store; keys `user:0000000`..., values "
        "`v0`... (short str; the raw baselines bind the same str objects). The cyclic gc is disabled "
        "during every timed region except row 3a. Ratio = crdtkv rate / baseline rate (for sizes: "
        "crdtkv size / baseline size). File timings run with a warm page cache."
    )
    print()
    print_results(rows, notes, elapsed=elapsed)
    return exit_status(rows)


if __name__ == "__main__":
    sys.exit(main())

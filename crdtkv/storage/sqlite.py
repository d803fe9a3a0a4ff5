"""The SQLite backend: one file per replica, WAL mode, group commit.

Layout: ``meta(name, value)`` for the store name, replica, origin, clean-shutdown
flag, version vector and clock; ``entries(key, row)`` with one row per key, so
overwriting keys replaces rows and the file does not grow. The file carries
``PRAGMA application_id`` and ``user_version`` so other files are told apart.

Durability:

* ``batch`` (default): changes wait in the journal (:mod:`.journal`) and are
  committed with ``synchronous=NORMAL`` once the oldest of them is
  ``commit_window`` seconds old: by the writing thread itself when it checks
  (every :data:`~.journal.CHECK_EVERY` changes; it reads no clock between),
  or by a background thread (when writes stop, or it comes first). The
  commit drains the journal and encodes each changed key's row once. A
  process crash loses the writes of about the last window plus however long
  the committing thread took to get there (the writing thread: up to
  ``CHECK_EVERY`` changes; the commit thread: the interpreter lock while the
  writing thread is busy, up to ``sys.getswitchinterval()``; either: a CPU on
  a loaded machine) and the commit took: there is no hard bound in time (the
  README gives measured figures).
  A power loss can also lose commits not yet synced by a WAL checkpoint.
  :meth:`flush` commits with ``synchronous=FULL``: everything before it
  survives a power loss.
* ``sync``: every change is committed with ``synchronous=FULL`` before the
  call that made it returns.

A failed commit (disk full, I/O error) keeps the staged rows for the next
attempt, raises :class:`~crdtkv.errors.StorageError` in ``sync`` mode or from
the next :meth:`flush`, and leaves reads untouched. No ``sqlite3`` or ``OSError``
reaches the caller: every failure is a :mod:`crdtkv.errors` class, chained to
its cause.

One process at a time: :meth:`load` takes an exclusive ``flock`` on the
sidecar file ``<path>.lock`` (which holds the owner's pid) before SQLite opens
the database, and keeps it until :meth:`close`. A second open, from another
process or from this one, fails at once with :class:`~crdtkv.errors.FileLocked`;
the kernel drops the lock when its holder dies, so a crash never blocks a
restart. The lock is a separate file so it never meets SQLite's own POSIX locks
on the database (Linux emulates ``flock`` with POSIX locks on NFS).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Final

from ..core.bulk import collector_paused
from ..core.vv import read_map, write_map
from ..errors import (
    CorruptionError,
    DecodeError,
    FileLocked,
    IncompatibleFile,
    InvalidArgument,
    StorageError,
    StoreMismatch,
)
from ..stats import LATENCY_BUCKETS, SIZE_BUCKETS, Buckets
from .base import DURABILITY_MODES, Batch, Recovered, RowDecoder, Source, new_replica_id

log = logging.getLogger("crdtkv.storage")

APPLICATION_ID: Final = 0x63726B76  # "crkv"
FORMAT_VERSION: Final = 1
LOAD_CHUNK: Final = 20_000
DEFAULT_COMMIT_WINDOW: Final = 0.005

_SCHEMA: Final = (
    "CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value BLOB NOT NULL)",
    "CREATE TABLE IF NOT EXISTS entries (key TEXT PRIMARY KEY, row BLOB NOT NULL) WITHOUT ROWID",
)


class SqliteStorage:
    """A replica's state in one SQLite file."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        durability: str = "batch",
        commit_window: float = DEFAULT_COMMIT_WINDOW,
        verify: str = "quick",
    ) -> None:
        if durability not in DURABILITY_MODES:
            raise InvalidArgument(f"durability must be one of {DURABILITY_MODES}, not {durability!r}")
        if verify not in ("quick", "full", "none"):
            raise InvalidArgument(f"verify must be 'quick', 'full' or 'none', not {verify!r}")
        self.path = Path(path)
        self.durability = durability
        self.commit_window = commit_window
        self.verify = verify
        self._db: sqlite3.Connection | None = None
        self._lock_fd: int | None = None  # the open lock file, holding the flock
        self._commit_lock = threading.Lock()  # one commit at a time, and one drain
        self._source: Source | None = None  # the journal, once tracked
        self._failed: Batch | None = None  # a batch whose commit failed, for the next attempt
        self._committing = False  # a commit is under way (a writer that sees it waits for it)
        self._collected: dict[str, int] = {}  # the marks and clock last committed
        self._staged_at = 0.0
        self._clock_last = 0
        self._error: Exception | None = None
        self._wake = threading.Event()
        self._halt = threading.Event()  # set by close(): ends the commit thread's waits
        self._stop = False
        self._thread: threading.Thread | None = None
        #: statistics: commits done, rows written
        self.commits = 0
        self.rows_written = 0
        #: seconds each commit took (its transaction, sync included) and rows it wrote
        self.commit_seconds = Buckets(LATENCY_BUCKETS)
        self.commit_rows = Buckets(SIZE_BUCKETS)

    # -- opening ---------------------------------------------------------------------

    def read(self, name: str, replica_id: str | None, decode: RowDecoder) -> Recovered:
        self._lock_fd = _lock(self.path)
        try:
            try:
                existed = self.path.exists() and self.path.stat().st_size > 0
                db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            except (OSError, sqlite3.Error) as exc:
                raise StorageError(f"cannot open {self.path}: {exc}") from exc
            self._db = db
            try:
                return self._read(db, existed, name, replica_id, decode)
            except BaseException:
                self._db = None
                db.close()
                raise
        except BaseException:
            self._unlock()
            raise

    def _read(
        self, db: sqlite3.Connection, existed: bool, name: str, replica_id: str | None, decode: RowDecoder
    ) -> Recovered:
        try:
            application_id = db.execute("PRAGMA application_id").fetchone()[0]
            version = db.execute("PRAGMA user_version").fetchone()[0]
        except sqlite3.Error as exc:
            raise self._read_failure(exc, header=True) from exc
        if existed and application_id != APPLICATION_ID:
            raise IncompatibleFile(f"{self.path} is an SQLite database but not a crdtkv store")
        if existed and version != FORMAT_VERSION:
            raise IncompatibleFile(
                f"{self.path} is a crdtkv store of format version {version}; "
                f"this build reads version {FORMAT_VERSION}"
            )
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(f"PRAGMA synchronous={'FULL' if self.durability == 'sync' else 'NORMAL'}")
            if existed and self.verify != "none":
                check = "quick_check" if self.verify == "quick" else "integrity_check"
                result = [row[0] for row in db.execute(f"PRAGMA {check}")]
                if result != ["ok"]:
                    raise CorruptionError(f"{self.path} fails {check}: {'; '.join(result[:5])}")
            if not existed:
                db.execute("BEGIN IMMEDIATE")
                for statement in _SCHEMA:
                    db.execute(statement)
                db.execute(f"PRAGMA application_id={APPLICATION_ID}")
                db.execute(f"PRAGMA user_version={FORMAT_VERSION}")
                db.executemany(
                    "INSERT INTO meta VALUES (?, ?)",
                    [("store", name), ("replica", replica_id or new_replica_id()), ("clean", 1)],
                )
                db.execute("COMMIT")
            meta = dict(db.execute("SELECT name, value FROM meta"))
        except sqlite3.Error as exc:
            raise self._read_failure(exc) from exc
        if meta.get("store") != name:
            raise StoreMismatch(f"{self.path} holds store {meta.get('store')!r}, not {name!r}")
        stored_replica = meta.get("replica")
        if not isinstance(stored_replica, str):
            raise CorruptionError(f"{self.path} has no replica id")
        if replica_id is not None and stored_replica != replica_id:
            raise IncompatibleFile(f"{self.path} belongs to replica {stored_replica!r}, not {replica_id!r}")
        try:
            vv = read_map(meta.get("vv"))
            collected = read_map(meta.get("collected"))
            clock_last = meta.get("clock", 0)
            if type(clock_last) is not int or clock_last < 0:
                raise DecodeError("the stored clock is not a non-negative integer")
            entries = []
            cursor = db.execute("SELECT key, row FROM entries")
            with collector_paused(LOAD_CHUNK):  # entries form no cycles: no collector walks
                while chunk := cursor.fetchmany(LOAD_CHUNK):
                    entries.extend(decode(chunk))
        except DecodeError as exc:
            raise CorruptionError(f"{self.path} holds damaged data: {exc}") from exc
        except sqlite3.Error as exc:
            raise self._read_failure(exc) from exc
        origin = meta.get("origin")
        self._clock_last = clock_last  # what a commit with nothing new writes back
        self._collected = collected
        return Recovered(
            origin if isinstance(origin, str) else None,
            meta.get("clean") == 1,
            entries,
            vv,
            clock_last,
            stored_replica,
            collected,
        )

    def _read_failure(self, exc: sqlite3.Error, *, header: bool = False) -> StorageError:
        """The typed error for an SQLite failure while opening: a foreign or damaged file, or the disk.

        ``header`` is True for the first read, where "not a database" means the
        file is not an SQLite file at all.
        """
        code = (getattr(exc, "sqlite_errorcode", None) or 0) & 0xFF
        if code == sqlite3.SQLITE_NOTADB and header:
            return IncompatibleFile(f"{self.path} is not a crdtkv store (not SQLite: {exc})")
        if code in (sqlite3.SQLITE_NOTADB, sqlite3.SQLITE_CORRUPT):
            return CorruptionError(f"{self.path} cannot be read: {exc}")
        return StorageError(f"cannot open {self.path}: {exc}")  # locked, read-only, I/O error

    def begin(self, origin: str) -> None:
        db = self._require()
        self._execute_meta(db, {"origin": origin, "clean": 0}, full=True)

    # -- writing ---------------------------------------------------------------------

    def track(self, source: Source) -> None:
        self._source = source
        if self.durability == "batch":
            name = f"crdtkv-commit {self.path.name}"
            self._thread = threading.Thread(target=self._run, name=name, daemon=True)
            self._thread.start()

    def staged(self) -> None:
        """The journal logged a change while waiting, or every :data:`~.journal.CHECK_EVERY` items.

        ``sync`` commits now. In ``batch`` mode the first change since the last
        commit began starts a window, which the commit thread commits when it
        ends; a busy writer commits a window that is over itself, when it
        checks (no waiting on the commit thread, which would have to fight this
        thread for the interpreter). If the commit thread is committing right
        now, this waits for it: a writing thread busy in Python would hand it
        the interpreter only every ``sys.getswitchinterval()``, once per row.
        No clock is read and no lock taken for the changes in between.
        """
        if self.durability == "sync":
            self._commit(full=True)
            return
        if self._committing:
            with self._commit_lock:
                pass
        source = self._source
        if source is None:
            return
        if source.waiting:
            source.waiting = False
            self._staged_at = time.monotonic()
            self._wake.set()
        elif self._window_over():
            try:
                self._commit(full=False)
            except StorageError as exc:  # batch mode reports through flush() and .error
                log.error("commit to %s failed (will retry): %s", self.path, exc)

    def flush(self) -> None:
        self._commit(full=True)

    def _run(self) -> None:
        """Background group commit: wait for a change, then commit each window once it is over.

        The wait ends at ``staged_at + commit_window`` however long this thread
        took to wake up (it needs the interpreter lock, which a busy writing
        thread hands over only every ``sys.getswitchinterval()``), so waking late
        does not add a whole window on top. A window the writing thread
        committed meanwhile is not committed again.
        """
        while True:
            self._wake.wait()
            self._wake.clear()  # a change staged from now on sets it again
            while not self._stop and self._pending():
                delay = self._staged_at + self.commit_window - time.monotonic()
                if delay > 0:
                    self._halt.wait(delay)  # close() ends the wait (a window may be long)
                    continue  # the writer may have committed this window and started another
                try:
                    self._commit(full=False, due=True)
                except StorageError as exc:
                    log.error("background commit to %s failed (will retry): %s", self.path, exc)
                    self._halt.wait(max(self.commit_window, 0.1))
            if self._stop:
                return

    def _pending(self) -> bool:
        """True if a change is staged (or a failed commit waits for its retry)."""
        source = self._source
        return self._failed is not None or (source is not None and not source.waiting)

    def _commit(self, *, full: bool, due: bool = False) -> None:
        """Commit what is staged; with ``due``, only if the oldest staged change's window is over."""
        with self._commit_lock:
            if due and self._failed is None and not (self._pending() and self._window_over()):
                return  # the writing thread committed it meanwhile
            self._committing = True  # before the drain: a writer that hears of it waits for this commit
            try:
                self._commit_locked(full=full)
            finally:
                self._committing = False

    def _window_over(self) -> bool:
        return time.monotonic() - self._staged_at >= self.commit_window

    def _commit_locked(self, *, full: bool) -> None:
        """Drain the journal and commit what it held (and any batch that failed before)."""
        db = self._require()
        source = self._source
        batch = source.drain() if source is not None else None
        failed, self._failed = self._failed, None
        if failed is not None:
            batch = failed if batch is None else batch.after(failed)
        if batch is None and not full:
            return
        if batch is not None:
            self._clock_last = max(self._clock_last, batch.clock_last)
            self._collected = batch.collected
        rows = batch.rows if batch is not None else {}
        meta: dict[str, object] = {"clock": self._clock_last, "collected": write_map(self._collected)}
        if batch is not None:
            meta["vv"] = write_map(batch.vv)
        started = time.perf_counter()
        try:
            self._transaction(db, rows, meta, full=full, gone=batch.gone if batch is not None else 0)
        except sqlite3.Error as exc:
            self._failed = batch  # kept for the next attempt, under what is staged meanwhile
            self._error = StorageError(f"commit to {self.path} failed: {exc}")
            raise self._error from exc
        self.commit_seconds.observe(time.perf_counter() - started)
        self.commit_rows.observe(len(rows))
        self._error = None
        self.commits += 1
        self.rows_written += len(rows)

    def _execute_meta(self, db: sqlite3.Connection, values: dict[str, object], *, full: bool) -> None:
        with self._commit_lock:
            try:
                self._transaction(db, {}, values, full=full)
            except sqlite3.Error as exc:
                raise StorageError(f"writing {self.path} failed: {exc}") from exc

    def _transaction(
        self,
        db: sqlite3.Connection,
        rows: Mapping[str, bytes | None],
        meta: dict[str, object],
        *,
        full: bool,
        gone: int = 0,
    ) -> None:
        """Write ``rows`` (``gone`` of them None: delete those) and ``meta`` in one transaction.

        ``full`` commits with ``synchronous=FULL`` in batch mode. On failure no
        transaction is left open, and the first ``sqlite3.Error`` is raised;
        the callers turn it into a StorageError.
        """
        if db.in_transaction:  # left open by a failed ROLLBACK: start clean
            db.execute("ROLLBACK")
        switch = full and self.durability != "sync"
        try:
            if switch:
                db.execute("PRAGMA synchronous=FULL")
            db.execute("BEGIN IMMEDIATE")
            if not gone:
                db.executemany("INSERT OR REPLACE INTO entries VALUES (?, ?)", rows.items())
            else:
                db.executemany(
                    "INSERT OR REPLACE INTO entries VALUES (?, ?)",
                    [(key, row) for key, row in rows.items() if row is not None],
                )
                # garbage-collected entries
                db.executemany(
                    "DELETE FROM entries WHERE key = ?", [(key,) for key, row in rows.items() if row is None]
                )
            db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", meta.items())
            db.execute("COMMIT")
        except sqlite3.Error:
            if db.in_transaction:
                with contextlib.suppress(sqlite3.Error):  # the commit's error is the one to report
                    db.execute("ROLLBACK")
            raise
        finally:
            if switch and not db.in_transaction:
                # not inside a transaction: SQLite refuses to change the level there
                with contextlib.suppress(sqlite3.Error):
                    db.execute("PRAGMA synchronous=NORMAL")

    def close(self) -> None:
        db = self._db
        if db is None:
            return
        self._stop = True
        self._halt.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        try:
            self.flush()
            self._execute_meta(db, {"clean": 1}, full=True)
            try:
                db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error as exc:
                raise StorageError(f"checkpointing {self.path} on close failed: {exc}") from exc
        finally:
            self._db = None
            try:
                db.close()
            except sqlite3.Error as exc:
                raise StorageError(f"closing {self.path} failed: {exc}") from exc
            finally:
                self._unlock()

    def _unlock(self) -> None:
        """Release the file lock (clearing the pid first), if held."""
        fd, self._lock_fd = self._lock_fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            os.close(fd)

    @property
    def error(self) -> Exception | None:
        return self._error

    def _require(self) -> sqlite3.Connection:
        if self._db is None:
            raise StorageError(f"{self.path} is not open")
        return self._db


def lock_path(path: Path) -> Path:
    """The sidecar file whose ``flock`` marks ``path`` as open: ``<path>.lock``."""
    return path.with_name(path.name + ".lock")


def _lock(path: Path) -> int:
    """Take the exclusive lock for ``path`` without waiting and record our pid; return the descriptor.

    Raises FileLocked if a live process (this one included) holds it.
    """
    sidecar = lock_path(path)
    try:
        fd = os.open(sidecar, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise StorageError(f"cannot open {path}: cannot create {sidecar}: {exc.strerror}") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        holder = _read_pid(fd)
        os.close(fd)
        if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
            raise StorageError(f"cannot lock {path} ({sidecar}): {exc.strerror}") from exc
        if holder == os.getpid():
            who = f"this process (pid {holder}) already has it open"
        elif holder is not None:
            who = f"process {holder} has it open"
        else:
            who = "another process has it open"
        message = f"{path} is in use: {who}; stop it first or use another file"
        raise FileLocked(message, str(path), holder) from exc
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    except OSError as exc:
        os.close(fd)
        raise StorageError(f"cannot write the lock file {sidecar}: {exc.strerror}") from exc
    return fd


def _read_pid(fd: int) -> int | None:
    """The pid a lock file holds, or None if it is empty (being written) or unreadable."""
    try:
        text = os.pread(fd, 32, 0).decode("ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return int(text) if text.isdigit() else None

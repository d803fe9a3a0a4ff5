"""SQLite specifics: damaged and foreign files, failing disks, bounded growth, durability modes."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import anyio
import pytest

from crdtkv import KvStore
from crdtkv.errors import CorruptionError, IncompatibleFile, InvalidArgument, StorageError
from crdtkv.node import Node
from crdtkv.storage.sqlite import SqliteStorage


def rows_on_disk(path: Path) -> dict[str, bytes]:
    db = sqlite3.connect(path)
    try:
        return dict(db.execute("SELECT key, row FROM entries"))
    finally:
        db.close()


def test_sync_mode_commits_before_returning(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    store = KvStore.open("s", path=path, replica_id="a", durability="sync")
    store.put("k", "v")
    assert "k" in rows_on_disk(path)  # visible to another connection at once
    store.incr("n")
    assert "n" in rows_on_disk(path)
    store.close()


def test_batch_mode_commits_within_the_window_and_on_flush(tmp_path: Path) -> None:
    path = tmp_path / "b.db"
    store = KvStore.open("s", path=path, replica_id="a")
    store.put("k", "v")
    store.flush()
    assert "k" in rows_on_disk(path)
    store.put("later", 1)
    for _ in range(500):  # a hang guard, not a timing assertion
        if "later" in rows_on_disk(path):
            break
        time.sleep(0.01)
    assert "later" in rows_on_disk(path)  # the background group commit wrote it, unflushed
    store.close()


@pytest.mark.parametrize(
    ("content", "error", "message"),
    [
        (b"this is not a database at all" * 100, IncompatibleFile, "not a crdtkv store"),
        (None, IncompatibleFile, "not a crdtkv store"),  # an SQLite file of another application
    ],
)
def test_files_that_are_not_crdtkv_stores_are_refused(
    tmp_path: Path, content: bytes | None, error: type[Exception], message: str
) -> None:
    path = tmp_path / "x.db"
    if content is None:
        db = sqlite3.connect(path)
        db.execute("CREATE TABLE t (x)")
        db.commit()
        db.close()
    else:
        path.write_bytes(content)
    with pytest.raises(error, match=message):
        KvStore.open("s", path=path, replica_id="a")


def test_another_format_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "v.db"
    KvStore.open("s", path=path, replica_id="a").close()
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version=99")
    db.commit()
    db.close()
    with pytest.raises(IncompatibleFile, match="format version 99"):
        KvStore.open("s", path=path, replica_id="a")


def test_a_damaged_row_is_corruption_not_wrong_data(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    store = KvStore.open("s", path=path, replica_id="a")
    store.put("k", "value")
    store.close()
    db = sqlite3.connect(path)
    row = db.execute("SELECT row FROM entries WHERE key = 'k'").fetchone()[0]
    damaged = row[:-1] + bytes([row[-1] ^ 0x01])  # "valuf": still valid CBOR
    db.execute("UPDATE entries SET row = ? WHERE key = 'k'", (damaged,))
    db.commit()
    db.close()
    with pytest.raises(CorruptionError, match="checksum"):
        KvStore.open("s", path=path, replica_id="a")


def test_a_truncated_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    store = KvStore.open("s", path=path, replica_id="a")
    for i in range(2000):
        store.put(f"k{i}", "x" * 100)
    store.close()
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises((CorruptionError, IncompatibleFile)):
        KvStore.open("s", path=path, replica_id="a")


def fill_the_disk(store: KvStore) -> None:
    """Cap the database at its current size: SQLite then fails writes with SQLITE_FULL."""
    db = store._storage._require()  # type: ignore[union-attr]
    pages = db.execute("PRAGMA page_count").fetchone()[0]
    db.execute(f"PRAGMA max_page_count={pages}")


def free_the_disk(store: KvStore) -> None:
    store._storage._require().execute("PRAGMA max_page_count=1073741823")  # type: ignore[union-attr]


def test_a_failing_commit_in_sync_mode_is_reported_and_nothing_is_lost(tmp_path: Path) -> None:
    path = tmp_path / "full.db"
    store = KvStore.open("s", path=path, replica_id="a", durability="sync")
    store.put("before", 1)
    fill_the_disk(store)
    with pytest.raises(StorageError, match="full"):
        store.put("big", "x" * 200_000)
    assert store.get("before") == 1  # reads keep working
    assert store.get("big") == "x" * 200_000  # applied here, but reported as not durable
    assert "big" not in rows_on_disk(path)
    free_the_disk(store)
    store.flush()  # the staged write is retried
    store.close()
    again = KvStore.open("s", path=path, replica_id="a")
    assert again.get("big") == "x" * 200_000 and again.get("before") == 1
    again.close()


def test_a_failing_background_commit_is_reported_by_flush(tmp_path: Path) -> None:
    path = tmp_path / "fullb.db"
    store = KvStore.open("s", path=path, replica_id="a")
    store.put("before", 1)
    store.flush()
    fill_the_disk(store)
    store.put("big", "y" * 200_000)
    with pytest.raises(StorageError, match="full"):
        store.flush()
    assert store.storage_error is not None
    assert store.get("big") == "y" * 200_000
    free_the_disk(store)
    store.flush()
    assert store.storage_error is None
    store.close()
    with KvStore.open("s", path=path, replica_id="a") as again:
        assert again.get("big") == "y" * 200_000


def test_overwriting_the_same_keys_does_not_grow_the_file(tmp_path: Path) -> None:
    path = tmp_path / "g.db"
    store = KvStore.open("s", path=path, replica_id="a")
    sizes = []
    for round_ in range(30):
        for i in range(1000):
            store.put(f"k{i}", f"value {round_} {i}")
            if i % 10 == 0:
                store.incr(f"c{i}")
        store.flush()
        store._storage._require().execute("PRAGMA wal_checkpoint(TRUNCATE)")  # type: ignore[union-attr]
        sizes.append(path.stat().st_size)
    store.close()
    assert sizes[-1] <= sizes[2] * 1.2, sizes


def test_a_restarted_replica_receives_only_what_it_missed(tmp_path: Path) -> None:
    path = tmp_path / "london.db"

    async def scenario() -> None:
        sydney = KvStore.open("s", replica_id="sydney")
        london = KvStore.open("s", path=path, replica_id="london")
        async with Node(sydney, listen="ws://127.0.0.1:0") as hub:
            async with Node(london, peers=[hub.url]) as node:  # type: ignore[list-item]
                for i in range(2000):
                    sydney.put(f"k{i}", i)
                with anyio.fail_after(20):
                    while london.digest() != sydney.digest():
                        await anyio.sleep(0.01)
            london.close()  # london goes down
            for i in range(0, 2000, 20):
                sydney.put(f"k{i}", "changed")  # 100 changes while it is away
            london = KvStore.open("s", path=path, replica_id="london")
            assert london.get("k0") == 0  # restored from its file, not from sydney
            async with Node(london, peers=[hub.url]) as node:  # type: ignore[list-item]
                with anyio.fail_after(20):
                    while london.digest() != sydney.digest():
                        await anyio.sleep(0.01)
                received = sum(link.session.stats["entries_received"] for link in node._links)
            assert received == 100
            london.close()

    anyio.run(scenario)


# -- every failure a user can see is a crdtkv error ----------------------------------------------


def deny(store: KvStore, *, transactions: tuple[str, ...] = (), pragmas: tuple[str, ...] = ()) -> None:
    """Make SQLite refuse the given statements on the store's connection ("not authorized").

    SQLite's authorizer is the fault injection: the statement fails inside
    SQLite exactly as a failing disk would make it fail, on a real file.
    """

    def authorizer(action: int, arg1: str | None, *_: object) -> int:
        if action == sqlite3.SQLITE_TRANSACTION and arg1 in transactions:
            return sqlite3.SQLITE_DENY
        if action == sqlite3.SQLITE_PRAGMA and arg1 in pragmas:
            return sqlite3.SQLITE_DENY
        return sqlite3.SQLITE_OK

    store._storage._require().set_authorizer(authorizer)  # type: ignore[union-attr]


def allow(store: KvStore) -> None:
    store._storage._require().set_authorizer(None)  # type: ignore[union-attr]


@pytest.mark.parametrize("durability", ["batch", "sync"])
def test_a_commit_whose_rollback_also_fails_raises_storage_error_and_recovers(
    tmp_path: Path, durability: str
) -> None:
    path = tmp_path / "r.db"
    store = KvStore.open("s", path=path, replica_id="a", durability=durability)
    store.put("before", 1)
    store.flush()
    # COMMIT fails and so does the ROLLBACK after it: the transaction stays open,
    # where SQLite also refuses to switch the synchronous level back
    deny(store, transactions=("COMMIT", "ROLLBACK"))
    with pytest.raises(StorageError, match="not authorized") as failed:
        store.put("k", "v")
        store.flush()
    assert isinstance(failed.value.__cause__, sqlite3.Error)
    assert store.get("k") == "v"
    allow(store)
    store.put("k2", "v2")  # the next commit starts from a clean connection
    store.flush()
    assert store.storage_error is None
    store.close()
    with KvStore.open("s", path=path, replica_id="a") as again:
        assert (again.get("before"), again.get("k"), again.get("k2")) == (1, "v", "v2")


def test_a_failing_checkpoint_on_close_raises_storage_error_and_releases_the_file(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    store = KvStore.open("s", path=path, replica_id="a")
    store.put("k", "v")
    deny(store, pragmas=("wal_checkpoint",))
    with pytest.raises(StorageError, match="checkpoint") as failed:
        store.close()
    assert isinstance(failed.value.__cause__, sqlite3.Error)
    assert store.closed
    with KvStore.open("s", path=path, replica_id="a") as again:  # committed, clean, and not left locked
        assert again.get("k") == "v"


def test_a_failing_final_commit_on_close_raises_storage_error_and_releases_the_file(tmp_path: Path) -> None:
    path = tmp_path / "f.db"
    store = KvStore.open("s", path=path, replica_id="a")
    store.put("k", "v")
    store.flush()
    store.put("lost", "x")
    deny(store, transactions=("COMMIT",))
    with pytest.raises(StorageError, match="not authorized"):
        store.close()
    with KvStore.open("s", path=path, replica_id="a") as again:
        assert again.get("k") == "v" and "lost" not in again


@pytest.mark.parametrize(("option", "value"), [("durability", "fsync"), ("verify", "paranoid")])
def test_bad_storage_options_are_invalid_arguments(tmp_path: Path, option: str, value: str) -> None:
    with pytest.raises(InvalidArgument, match=option):
        SqliteStorage(tmp_path / "o.db", **{option: value})  # type: ignore[arg-type]


def test_a_path_that_cannot_be_opened_is_a_storage_error(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="cannot open") as missing_dir:
        KvStore.open("s", path=tmp_path / "no-such-dir" / "x.db", replica_id="a")
    assert isinstance(missing_dir.value.__cause__, OSError)
    (tmp_path / "adir").mkdir()
    with pytest.raises(StorageError, match="cannot open") as directory:
        KvStore.open("s", path=tmp_path / "adir", replica_id="a")
    # the disk refused, so it is not reported as a foreign or damaged file
    assert not isinstance(directory.value, (IncompatibleFile, CorruptionError))
    assert isinstance(directory.value.__cause__, (OSError, sqlite3.Error))

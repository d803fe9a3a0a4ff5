"""One process at a time per data file: a second open fails at once, a dead holder never blocks."""

from __future__ import annotations

import os
from pathlib import Path

import anyio
import pytest

from crdtkv import KvStore
from crdtkv.client import Client
from crdtkv.errors import FileLocked, StoreMismatch
from crdtkv.storage import recover
from crdtkv.storage.sqlite import SqliteStorage, lock_path

from .serve import SECRET, Serve


def test_a_second_open_in_the_same_process_is_refused_until_the_first_closes(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    first = KvStore.open("s", path=path, replica_id="a")
    first.put("k", 1)
    with pytest.raises(FileLocked) as refused:
        KvStore.open("s", path=path, replica_id="a")
    assert refused.value.path == str(path) and refused.value.pid == os.getpid()
    assert str(path) in str(refused.value) and str(os.getpid()) in str(refused.value)
    with pytest.raises(FileLocked):  # through another backend object too, and without a replica id
        recover(SqliteStorage(path), "s", None, first.limits)
    assert first.get("k") == 1  # the refused opens touched nothing
    first.put("k", 2)
    first.close()
    again = KvStore.open("s", path=path, replica_id="a")  # released on close
    assert again.get("k") == 2
    again.close()


def test_the_lock_file_names_its_holder_while_open(tmp_path: Path) -> None:
    path = tmp_path / "p.db"
    store = KvStore.open("s", path=path, replica_id="a")
    assert lock_path(path).read_text() == f"{os.getpid()}\n"
    store.close()
    assert lock_path(path).read_text() == ""  # no stale pid after a clean close


def test_a_failed_open_releases_the_lock(tmp_path: Path) -> None:
    path = tmp_path / "m.db"
    KvStore.open("s", path=path, replica_id="a").close()
    with pytest.raises(StoreMismatch):
        KvStore.open("other", path=path, replica_id="a")
    KvStore.open("s", path=path, replica_id="a").close()  # not left locked by the refused open


@pytest.fixture
def secret_file(tmp_path: Path) -> Path:
    path = tmp_path / "secret"
    path.write_bytes(SECRET + b"\n")
    return path


async def put_and_get(url: str, key: str, value: str) -> object:
    async with Client(url, secret=SECRET) as client:
        await client.put(key, value)
        return await client.get(key)


def test_a_second_serve_on_the_same_file_exits_2_and_the_first_keeps_serving(
    tmp_path: Path, secret_file: Path
) -> None:
    data = tmp_path / "london.db"
    first = Serve(data, secret_file)
    try:
        url = first.wait_serving()
        assert anyio.run(put_and_get, url, "before", "one") == "one"
        second = Serve(data, secret_file)
        try:
            assert second.wait_exit() == 2
            message = second.errors()
            assert message.startswith("crdtkv: ") and "Traceback" not in message
            assert str(data) in message and f"process {first.process.pid} " in message
            assert second.lines.get(timeout=10) is None  # it never printed "serving"
        finally:
            second.close()
        assert first.process.poll() is None
        assert anyio.run(put_and_get, url, "after", "two") == "two"  # untouched by the refused start
        assert first.stop() == 0
    finally:
        first.close()
    with KvStore.open("default", path=data, replica_id="london") as store:
        assert store.get("before") == "one" and store.get("after") == "two"


def test_a_sigkilled_holder_does_not_block_a_restart(tmp_path: Path, secret_file: Path) -> None:
    data = tmp_path / "london.db"
    first = Serve(data, secret_file, durability="sync")  # so "k" is durable when put returns
    try:
        url = first.wait_serving()
        anyio.run(put_and_get, url, "k", "kept")
        assert lock_path(data).read_text() == f"{first.process.pid}\n"
        assert first.kill() == -9
    finally:
        first.close()
    again = Serve(data, secret_file)  # the lock file is still there, with a dead pid in it
    try:
        url = again.wait_serving()
        assert lock_path(data).read_text() == f"{again.process.pid}\n"
        assert anyio.run(put_and_get, url, "k2", "new") == "new"
        with pytest.raises(FileLocked) as refused:
            KvStore.open("default", path=data, replica_id="london")
        assert refused.value.pid == again.process.pid
        assert again.stop() == 0
    finally:
        again.close()
    with KvStore.open("default", path=data, replica_id="london") as store:
        assert store.get("k") == "kept" and store.get("k2") == "new"

"""One storage contract, run against every backend: what comes back after a restart."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol, cast

import pytest

from crdtkv import KvStore
from crdtkv.errors import IncompatibleFile, StoreMismatch
from crdtkv.storage import MemoryStorage


class Reopen(Protocol):
    """The ``reopen`` fixture: opens the store again on the same backing, named by ``backend``."""

    backend: str

    def __call__(self, name: str = ..., replica_id: str | None = ..., **kwargs: Any) -> KvStore: ...


@pytest.fixture(params=["memory", "sqlite"])
def reopen(request: pytest.FixtureRequest, tmp_path: Path) -> Reopen:
    """A function opening a store on the same backing each time (a restart)."""
    memory = MemoryStorage()
    path = tmp_path / "replica.db"

    def open_store(name: str = "site", replica_id: str | None = "london", **kwargs: Any) -> KvStore:
        if request.param == "memory":
            return KvStore.open(name, storage=memory, replica_id=replica_id, **kwargs)
        return KvStore.open(name, path=path, replica_id=replica_id, **kwargs)

    open_store.backend = request.param  # type: ignore[attr-defined]
    return cast(Reopen, open_store)


def fill(store: KvStore) -> None:
    store.put("text", "hello")
    store.put("blob", b"\x00\x01")
    store.put("doc", {"items": [1, 2, {"x": None}]})
    store.put("big", 2**100)
    store.incr("views", 41)
    store.incr("views")
    store.put("gone", 1)
    store.delete("gone")
    store.put("session", "s", ttl=3600)


def test_everything_comes_back_after_a_clean_restart(reopen: Reopen) -> None:
    store = reopen()
    fill(store)
    peer = KvStore.open("site", replica_id="sydney")
    peer.incr("views", 100)
    peer.put("from-peer", True)
    store.merge(peer)
    digest, vv, origin = store.digest(), dict(store._state.vv), store.origin
    last = store._state.clock.last
    store.close()
    again = reopen()
    assert again.digest() == digest
    assert again._state.vv == vv
    assert again.origin == origin  # clean shutdown: the same incarnation continues
    assert again._state.clock.last >= last
    assert again.get("views") == 142 and again.get("doc") == {"items": [1, 2, {"x": None}]}
    assert again.get("gone") is None and again.get("from-peer") is True
    again.put("after", 1)
    assert again._state.vv[again.origin] > last  # never a stamp handed out before
    # catch-up from the restored state sends only what a peer lacks
    assert {key for key, _ in again._state.delta_since(vv).entries} == {"after"}
    again.close()


def test_a_store_opened_without_a_replica_id_keeps_its_own(reopen: Reopen) -> None:
    store = reopen(replica_id=None)
    store.put("k", 1)
    replica = store.replica_id
    store.close()
    again = reopen(replica_id=None)
    assert again.replica_id == replica and again.get("k") == 1
    again.close()


def test_another_store_name_or_replica_is_refused(reopen: Reopen) -> None:
    reopen().close()
    with pytest.raises(StoreMismatch, match="site"):
        reopen(name="other")
    with pytest.raises(IncompatibleFile, match="london"):
        reopen(replica_id="sydney")


def test_a_crashed_run_resumes_under_a_new_incarnation(reopen: Reopen) -> None:
    if reopen.backend == "sqlite":
        pytest.skip("SQLite crashes are real SIGKILLs, in test_crash.py")
    store = reopen()
    store.incr("views", 5)
    store.flush()
    origin = store.origin
    # no close: the run "crashes" and the storage still says a run is in progress
    again = reopen()
    assert again.origin != origin and again.origin.startswith("london~")
    assert again.get("views") == 5
    assert again.incr("views") == 6
    again.close()


def test_flush_and_close_are_idempotent(reopen: Reopen) -> None:
    store = reopen()
    store.put("k", "v")
    store.flush()
    store.flush()
    store.close()
    store.close()

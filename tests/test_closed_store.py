"""A closed store refuses every use with StoreClosed, in both builds (no stand-in object: a typed state)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from crdtkv import KvStore
from crdtkv.errors import StoreClosed

USES: dict[str, Callable[[KvStore], Any]] = {
    "get": lambda s: s.get("k"),
    "get_with_metadata": lambda s: s.get_with_metadata("k"),
    "get_many": lambda s: s.get_many(["k"]),
    "put": lambda s: s.put("k", 1),
    "put with ttl": lambda s: s.put("k", 1, ttl=5),
    "delete": lambda s: s.delete("k"),
    "incr": lambda s: s.incr("n"),
    "incr with ttl": lambda s: s.incr("n", 1, ttl=5),
    "expire": lambda s: s.expire("k", 5),
    "persist": lambda s: s.persist("k"),
    "ttl": lambda s: s.ttl("k"),
    "kind": lambda s: s.kind("k"),
    "contains": lambda s: "k" in s,
    "keys": lambda s: list(s.keys()),
    "list": lambda s: s.list(),
    "doc": lambda s: s.doc("d"),
    "rate_limit": lambda s: s.rate_limit("client", 10, 1.0),
    "watch": lambda s: s.watch(),
    "snapshot": lambda s: s.snapshot(),
    "merge": lambda s: s.merge(KvStore.open(replica_id="other").snapshot()),
    "digest": lambda s: s.digest(),
    "collect_garbage": lambda s: s.collect_garbage(),
    "flush": lambda s: s.flush(),
    "name": lambda s: s.name,
    "origin": lambda s: s.origin,
    "replica": lambda s: s.replica,
}


@pytest.mark.parametrize("use", USES.values(), ids=list(USES))
def test_every_use_of_a_closed_store_raises_store_closed(use: Callable[[KvStore], Any]) -> None:
    store = KvStore.open(replica_id="london")
    store.put("k", "v")
    store.incr("n")
    store.rate_limit("client", 10, 1.0)
    store.close()
    with pytest.raises(StoreClosed):
        use(store)


def test_a_closed_store_says_so_and_closes_twice() -> None:
    store = KvStore.open(replica_id="london")
    assert not store.closed
    store.close()
    store.close()
    assert store.closed and "closed" in repr(store) and store.replica_id == "london"


def test_a_durable_store_closes_and_refuses_writes(tmp_path: Any) -> None:
    store = KvStore.open(path=str(tmp_path / "kv.db"), replica_id="london")
    store.put("k", "v")
    store.close()
    with pytest.raises(StoreClosed):
        store.put("k", "w")
    with KvStore.open(path=str(tmp_path / "kv.db"), replica_id="london") as again:
        assert again.get("k") == "v"

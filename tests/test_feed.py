"""The replica's one change feed: who hears of a change, in which order, and why."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from crdtkv import KvStore
from crdtkv.core.feed import Cause, ChangeFeed, Stage, Subscriber
from crdtkv.errors import StorageError

from .helpers import FakeClock


def test_subscribers_hear_in_stage_order_whatever_order_they_subscribed_in() -> None:
    feed = ChangeFeed()
    heard: list[str] = []

    def hears(name: str) -> Subscriber:
        return lambda keys, cause: heard.append(name)

    for name, stage in (("node", Stage.REPLICATION), ("watch", Stage.OBSERVERS), ("disk", Stage.STORAGE)):
        feed.subscribe(hears(name), stage)
    feed.subscribe(lambda keys, cause: heard.append("document"))  # observers by default
    feed.publish(["k"], Cause.WRITE)
    assert heard == ["disk", "watch", "document", "node"]


def test_unsubscribe_is_idempotent_and_a_subscriber_may_leave_while_hearing() -> None:
    feed = ChangeFeed()
    heard: list[str] = []

    def once(keys: Sequence[str], cause: Cause) -> None:
        heard.append("once")
        feed.unsubscribe(once)

    feed.subscribe(once)
    feed.subscribe(lambda keys, cause: heard.append("always"))
    feed.publish(["a"], Cause.WRITE)
    feed.publish(["b"], Cause.WRITE)
    assert heard == ["once", "always", "always"]
    assert feed.unsubscribe(once) is False


class FailingDisk:
    """A storage subscriber whose commits fail."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, keys: Sequence[str], cause: Cause) -> None:
        self.calls += 1
        raise StorageError("disk full")


@pytest.mark.parametrize("how", ["put", "incr", "merge"])
def test_a_storage_failure_still_lets_watchers_and_replication_hear_then_propagates(how: str) -> None:
    store = KvStore.open("t", replica_id="london")
    peer = KvStore.open("t", replica_id="sydney")
    peer.put("k", "remote")
    heard: list[tuple[str, list[str], Cause]] = []
    disk = FailingDisk()
    store.replica.feed.subscribe(
        lambda keys, cause: heard.append(("node", list(keys), cause)), Stage.REPLICATION
    )
    store.replica.feed.subscribe(lambda keys, cause: heard.append(("watch", list(keys), cause)))
    store.replica.feed.subscribe(disk, Stage.STORAGE)
    with pytest.raises(StorageError, match="disk full"):
        if how == "put":
            store.put("k", "local")
        elif how == "incr":
            store.incr("k")
        else:
            store.merge(peer)
    cause = Cause.MERGE if how == "merge" else Cause.WRITE
    assert disk.calls == 1
    assert heard == [("watch", ["k"], cause), ("node", ["k"], cause)]
    assert store.get("k") is not None  # the change is applied in memory


def test_collections_are_published_as_collections_and_watchers_ignore_them() -> None:
    clock = FakeClock()
    store = KvStore.open("t", clock=clock)
    store.put("gone", 1)
    store.delete("gone")
    heard: list[tuple[list[str], Cause]] = []
    store.replica.feed.subscribe(lambda keys, cause: heard.append((list(keys), cause)))
    watch = store.watch("")
    clock.advance(store.limits.gc_grace + 1)
    assert store.collect_garbage() == 1
    assert heard == [(["gone"], Cause.COLLECTION)]
    assert watch.queued_bytes == 0  # a collection is not a change a watcher hears of
    watch.close()


def test_a_merge_that_only_grows_the_version_vector_is_published_with_no_keys() -> None:
    store = KvStore.open("t", replica_id="london")
    peer = KvStore.open("t", replica_id="sydney")
    peer.put("k", 1)
    store.merge(peer)
    heard: list[tuple[list[str], Cause]] = []
    store.replica.feed.subscribe(lambda keys, cause: heard.append((list(keys), cause)))
    peer.put("k", 1)  # the same value again: a new stamp the store has not seen
    delta = peer.replica.delta_since(store.replica.vv)
    store.replica.apply(type(delta)(delta.name, delta.vv, []))  # its vector alone
    assert heard == [([], Cause.MERGE)]


def test_describe_names_its_fields() -> None:
    store = KvStore.open("t", replica_id="london")
    store.put("k", "v", metadata={"a": 1})
    found = store.replica.describe("k")
    assert found is not None
    assert (found.origin, found.stamp, found.expires) == (store.origin, found[5], None)
    assert found.kind.name == "REGISTER"

"""The change feed: every change, in order, with overflow reported."""

from __future__ import annotations

import anyio
import pytest

from crdtkv import Change, KvStore
from crdtkv.core.feed import Stage
from crdtkv.errors import InvalidArgument

pytestmark = pytest.mark.anyio


async def collect(store: KvStore, prefix: str, count: int, *, buffer: int = 1000) -> list[Change]:
    changes: list[Change] = []
    with anyio.fail_after(5):
        async for change in store.watch(prefix, buffer=buffer):
            changes.append(change)
            if len(changes) == count:
                break
    return changes


async def test_local_and_merged_changes_arrive_in_order() -> None:
    store = KvStore.open("t", replica_id="london")
    peer = KvStore.open("t", replica_id="sydney")
    changes = []

    async def watcher() -> None:
        changes.extend(await collect(store, "flag:", 5))

    async with anyio.create_task_group() as group:
        group.start_soon(watcher)
        await anyio.sleep(0.01)  # the watcher is registered
        store.put("flag:dark", True)
        store.put("other", 1)  # not under the prefix
        store.incr("flag:count")
        peer.put("flag:beta", "on")
        store.merge(peer)  # a remote change
        store.delete("flag:dark")
        store.put("flag:dark", False)
    assert [(c.key, c.value) for c in changes] == [
        ("flag:dark", True),
        ("flag:count", 1),
        ("flag:beta", "on"),
        ("flag:dark", None),  # deleted
        ("flag:dark", False),
    ]
    assert changes[2].origin == peer.origin and changes[0].origin == store.origin
    assert not any(c.overflow for c in changes)
    assert store._state.feed.subscribed(Stage.OBSERVERS) == []  # unregistered when the loop ended


async def test_a_watcher_that_falls_behind_is_told() -> None:
    store = KvStore.open("t")
    iterator = store.watch("k", buffer=3)
    first = anyio.Event()
    received = []

    async def slow_watcher() -> None:
        with anyio.fail_after(5):
            async for change in iterator:
                received.append(change)
                first.set()
                if change.overflow or len(received) > 10:
                    break
            async for change in store.watch("k"):  # after an overflow: resync, then watch again
                received.append(change)
                break

    async with anyio.create_task_group() as group:
        group.start_soon(slow_watcher)
        await anyio.sleep(0.01)
        for i in range(10):  # all at once: more than the buffer holds
            store.put(f"k{i}", i)
        await first.wait()
        await anyio.sleep(0.01)
        store.put("k-after", 1)
    cut = next(index for index, change in enumerate(received) if change.overflow)
    kept = [c.key for c in received[:cut]]
    assert 3 <= len(kept) < 10  # the buffer (and the one change in hand) filled up
    assert kept == [f"k{i}" for i in range(len(kept))]  # in order, none skipped before the notice
    assert received[cut].key is None  # then the notice for what was lost
    assert [c.key for c in received[cut + 1 :]] == ["k-after"]


async def test_bad_arguments() -> None:
    store = KvStore.open("t")
    with pytest.raises(InvalidArgument):
        async for _ in store.watch("", buffer=0):
            pass


async def test_a_watch_sees_changes_from_the_moment_it_is_created() -> None:
    store = KvStore.open("t")
    async with store.watch("k") as changes:
        store.put("k1", 1)  # before the first iteration
        store.put("k2", 2)
        first = await changes.__anext__()
        second = await changes.__anext__()
    assert (first.key, second.key) == ("k1", "k2")
    assert store._state.feed.subscribed(Stage.OBSERVERS) == []  # the context closed it
    dropped = store.watch("x")
    assert len(store._state.feed.subscribed(Stage.OBSERVERS)) == 1
    del dropped  # dropped without closing: unregistered too
    assert store._state.feed.subscribed(Stage.OBSERVERS) == []


async def test_a_watch_backlog_is_bounded_in_bytes() -> None:
    store = KvStore.open("t")
    value = "v" * (100 * 1024)
    async with store.watch("k", buffer=1000, buffer_bytes=1024 * 1024) as changes:
        for i in range(50):  # 5 MB of changes, nobody reading: far fewer than 1000 changes
            store.put(f"k{i}", value)
            assert changes.queued_bytes <= 1024 * 1024
        received = []
        with anyio.fail_after(5):
            async for change in changes:
                received.append(change)
                if change.overflow:
                    break
        assert changes.queued_bytes == 0
        store.put("k-after", [1, 2])
        after = await changes.__anext__()
    assert 5 <= len(received) - 1 <= 10  # about 1 MiB of 100 KiB values was kept
    assert [c.key for c in received[:-1]] == [f"k{i}" for i in range(len(received) - 1)]
    assert all(c.value == value for c in received[:-1])
    assert received[-1].key is None and received[-1].overflow
    assert (after.key, after.value) == ("k-after", [1, 2])


async def test_the_default_byte_budget_bounds_a_watcher_that_stops_reading() -> None:
    store = KvStore.open("t")
    value = b"x" * (400 * 1024)
    async with store.watch("") as changes:
        for i in range(1000):  # 400 MB of changes within the count budget
            store.put(f"k{i}", value)
        assert changes.queued_bytes <= 4 * 1024 * 1024
        kept = 0
        async for change in changes:
            if change.overflow:
                break
            kept += 1
    assert 0 < kept <= 11


async def test_one_change_larger_than_the_byte_budget_is_still_delivered() -> None:
    store = KvStore.open("t")
    async with store.watch("k", buffer_bytes=1000) as changes:
        store.put("k", "v" * 5000)
        store.put("k2", 1)  # the budget is full: lost, and told
        first = await changes.__anext__()
        second = await changes.__anext__()
    assert first.value == "v" * 5000
    assert second.overflow


async def test_a_bad_byte_budget_is_refused() -> None:
    store = KvStore.open("t")
    for bad in (0, -1, 1.5, True):
        with pytest.raises(InvalidArgument):
            store.watch("", buffer_bytes=bad)  # type: ignore[arg-type]


async def test_a_delete_is_flagged_and_a_stored_none_is_not() -> None:
    store = KvStore.open("t")
    async with store.watch("k") as changes:
        store.put("k1", None)
        store.delete("k1")
        stored_none = await changes.__anext__()
        deleted = await changes.__anext__()
    assert (stored_none.value, stored_none.deleted) == (None, False)
    assert (deleted.value, deleted.deleted) == (None, True)
    store.close()

"""The one bounded change feed (crdtkv.watch.ChangeQueue) and the watchers built on it."""

from __future__ import annotations

import os

import anyio
import pytest

from crdtkv import KvStore
from crdtkv.client import Client
from crdtkv.core.messages import Request, Response, decode_message, encode_message
from crdtkv.node import Node, NodeSettings
from crdtkv.transport import Transport
from crdtkv.watch import ChangeQueue
from transports.memory import MemoryNetwork, MemoryTransport

from .test_node import SECRET
from .test_node_budgets import PATIENT, raw_client

pytestmark = pytest.mark.anyio

GUARD = 20.0  # hang guard only
NOTICE = "notice"


def test_a_full_queue_drops_until_drained_then_gives_the_notice_once() -> None:
    queue = ChangeQueue(NOTICE, max_items=2)
    assert [queue.offer(item) for item in "abcd"] == [True, True, False, False]
    assert queue.take_nowait() == "a"
    assert not queue.offer("e")  # room again, but the watcher has not been told yet
    assert [queue.take_nowait(), queue.take_nowait(), queue.take_nowait()] == ["b", NOTICE, None]
    assert queue.offer("f") and queue.take_nowait() == "f"


def test_the_byte_bound_counts_queued_and_waiting_bytes_and_one_item_always_fits() -> None:
    waiting = [0]
    queue = ChangeQueue(NOTICE, max_bytes=100, waiting=lambda: waiting[0])
    assert queue.offer("huge", 500)  # alone: fits
    assert not queue.offer("small", 1)
    assert queue.take_nowait() == "huge" and queue.take_nowait() == NOTICE
    waiting[0] = 60  # bytes already waiting for the same consumer elsewhere
    assert queue.offer("a", 40) and queue.queued_bytes == 40
    assert not queue.offer("b", 1)


async def test_finish_hands_out_what_is_queued_and_close_drops_it() -> None:
    finished = ChangeQueue(NOTICE, max_items=1)
    finished.offer("a")
    finished.offer("b")  # lost
    finished.finish()
    assert [await finished.take(), await finished.take(), await finished.take()] == ["a", NOTICE, None]
    closed = ChangeQueue(NOTICE)
    closed.offer("a")
    closed.close()
    assert await closed.take() is None
    assert not closed.offer("b")


async def test_a_taker_waits_for_the_next_item() -> None:
    queue: ChangeQueue[str] = ChangeQueue(NOTICE)
    got: list[str | None] = []

    async def take() -> None:
        got.append(await queue.take())

    async with anyio.create_task_group() as group:
        group.start_soon(take)
        await anyio.sleep(0.01)
        queue.offer("a")
    assert got == ["a"]


async def test_a_node_tells_a_watching_client_it_lost_changes_once_it_reads_again() -> None:
    """The notice goes out when the link is below its budget again, with no further change."""
    transports: dict[str, Transport] = {"memory": MemoryTransport(MemoryNetwork(seed=1))}
    budget = 256 * 1024
    settings = NodeSettings(sync=PATIENT, max_watch_backlog_bytes=budget)
    store = KvStore.open("t", replica_id="server")
    async with (
        Node(store, listen="memory://queue", secret=SECRET, settings=settings, transports=transports),
        raw_client("memory://queue", transports) as connection,
    ):
        await connection.send(encode_message(Request(1, "watch", ["w:"])))
        value = os.urandom(50 * 1024)
        for i in range(40):  # 2 MB of changes while the client reads nothing
            store.put(f"w:{i}", value)
            await anyio.sleep(0)
        seen: list[object] = []
        with anyio.fail_after(GUARD):
            while "overflow" not in seen:  # no put from here on
                reply = decode_message(await connection.receive(), store.limits)
                if isinstance(reply, Response):
                    seen.append(reply.value[0])
        assert seen[0] == "watching"
        assert 0 < seen.count("change") < 40


async def test_a_client_opens_no_store_of_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    store = KvStore.open("t", replica_id="server")
    async with Node(store, listen="ws://127.0.0.1:0") as node:
        assert node.url is not None

        def refuse(*args: object, **kwargs: object) -> KvStore:
            raise AssertionError("Client opened a KvStore")

        monkeypatch.setattr(KvStore, "open", refuse)
        async with Client(node.url, store="t") as client:
            await client.put("k", "v")
            assert await client.get("k") == "v"

"""Prometheus metrics of real nodes over loopback WebSockets: values move when things happen."""

from __future__ import annotations

import logging
from pathlib import Path

import anyio
import pytest
from prometheus_client.parser import text_string_to_metric_families

from crdtkv import KvStore, Limits
from crdtkv.client import Client
from crdtkv.core.sync import SyncSettings
from crdtkv.errors import RemoteCallError
from crdtkv.metrics import METRICS, node_metrics
from crdtkv.node import Node, NodeSettings

pytestmark = pytest.mark.anyio

FAST = NodeSettings(
    sync=SyncSettings(keepalive_interval=0.2, keepalive_timeout=1.0, resync_after=0.3),
    reconnect_initial=0.02,
    reconnect_max=0.1,
)


def scrape(node: Node) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the node's metrics, by (name, sorted labels)."""
    metrics = node_metrics(node)
    text = metrics.render().decode()
    assert metrics.content_type.startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    """The one sample of ``name`` whose labels include ``labels`` (0.0 if none)."""
    found = [
        v for (n, have), v in samples.items() if n == name and set(labels.items()) <= set(dict(have).items())
    ]
    assert len(found) <= 1, (name, labels, found)
    return found[0] if found else 0.0


async def wait_until(check: object, timeout: float = 30.0) -> None:
    with anyio.fail_after(timeout):
        while not check():  # type: ignore[operator]
            await anyio.sleep(0.01)


async def test_a_replicated_put_moves_the_link_counters_and_the_propagation_histogram() -> None:
    a = KvStore.open("t", replica_id="a")
    b = KvStore.open("t", replica_id="b")
    async with (
        Node(a, listen="ws://127.0.0.1:0", settings=FAST) as na,
        Node(b, peers=[na.url or ""], settings=FAST) as nb,
    ):
        await wait_until(lambda: nb.ready)
        before_a, before_b = scrape(na), scrape(nb)
        assert value(before_b, "crdtkv_peer_up", peer=a.origin, direction="out") == 1
        assert value(before_a, "crdtkv_peer_up", peer=b.origin, direction="in") == 1
        a.put("greeting", "hello" * 100)
        await wait_until(lambda: b.get("greeting") is not None)
        # the ack for the batch reaches a within the ack window
        await wait_until(lambda: value(scrape(na), "crdtkv_peer_last_ack_age_seconds", peer=b.origin) > 0)
        after_a, after_b = scrape(na), scrape(nb)
        for name in ("crdtkv_peer_sent_bytes_total", "crdtkv_peer_sent_entries_total"):
            assert value(after_a, name, peer=b.origin) > value(before_a, name, peer=b.origin), name
        for name in ("crdtkv_peer_received_bytes_total", "crdtkv_peer_received_entries_total"):
            assert value(after_b, name, peer=a.origin) > value(before_b, name, peer=a.origin), name
        assert value(after_b, "crdtkv_peer_received_entries_total", peer=a.origin) >= 1
        count = "crdtkv_propagation_delay_seconds_count"
        assert value(after_b, count) == value(before_b, count) + 1
        assert value(after_b, "crdtkv_propagation_delay_seconds_bucket", le="+Inf") == value(after_b, count)
        await wait_until(lambda: value(scrape(nb), "crdtkv_keys") == 1)
        assert value(after_a, "crdtkv_peer_lacking_entries", peer=b.origin) == 0
        assert value(after_a, "crdtkv_info", id="a", origin=a.origin) == 1
        assert value(after_b, "crdtkv_ready") == 1


async def free_port() -> int:
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    port: int = listener.extra(anyio.abc.SocketAttribute.local_port)
    await listener.aclose()
    return port


async def test_a_link_closed_shows_down_and_counts_its_close_by_reason() -> None:
    a = KvStore.open("t", replica_id="a")
    b = KvStore.open("t", replica_id="b")
    url = f"ws://127.0.0.1:{await free_port()}"
    async with Node(a, peers=[url], settings=FAST) as na:
        async with Node(b, listen=url, settings=FAST):
            await na.wait_for_peers(1)
            samples = scrape(na)
            assert value(samples, "crdtkv_peer_up", url=url) == 1
            assert value(samples, "crdtkv_links", role="peer") == 1
            assert not value(samples, "crdtkv_link_closes_total", reason="shutdown", role="peer")
        # the peer went away, saying goodbye: a counts the close by its reason
        closes = {"reason": "shutdown", "role": "peer"}
        await wait_until(lambda: value(scrape(na), "crdtkv_link_closes_total", **closes) == 1)
        samples = scrape(na)
        # the dialed peer is still listed (redialing, or down), no longer up
        assert ("crdtkv_peer_up", (("direction", "out"), ("peer", b.origin), ("url", url))) in samples
        assert value(samples, "crdtkv_peer_up", url=url) == 0
        assert value(samples, "crdtkv_links", role="peer") == 0
        [peer] = na.status()["peers"]
        assert peer["state"] in ("connecting", "down") and peer["last_error"]


async def test_a_failed_dial_is_counted_and_the_peer_shows_down() -> None:
    url = f"ws://127.0.0.1:{await free_port()}"
    store = KvStore.open("t", replica_id="alone")
    async with Node(store, peers=[url], settings=FAST) as node:
        await wait_until(lambda: value(scrape(node), "crdtkv_dial_failures_total", url=url) >= 2)
        samples = scrape(node)
        assert value(samples, "crdtkv_peer_up", url=url) == 0
        assert value(samples, "crdtkv_ready") == 0


async def test_client_operations_watchers_and_garbage_collection_are_counted() -> None:
    store = KvStore.open("t", replica_id="solo", limits=Limits(gc_grace=0.5))
    settings = NodeSettings(gc_interval=0.05)
    async with Node(store, listen="ws://127.0.0.1:0", settings=settings) as node:
        async with Client(node.url or "", store="t") as client:
            await client.put("a", 1)
            await client.put("b", 2)
            with pytest.raises(RemoteCallError):
                await client.call("incr", "a")  # a register: WrongType
            samples = scrape(node)
            assert value(samples, "crdtkv_operations_total", face="ws", kind="put", result="ok") == 2
            assert value(samples, "crdtkv_operations_total", face="ws", kind="incr", result="WrongType") == 1
            assert value(samples, "crdtkv_links", role="client") == 1
            async with anyio.create_task_group() as group:
                watching = anyio.Event()

                async def watch() -> None:
                    async for _ in client.watch("w:"):
                        watching.set()

                group.start_soon(watch)
                await wait_until(lambda: value(scrape(node), "crdtkv_watchers") == 1)
                store.put("w:1", "x")
                await watching.wait()
                group.cancel_scope.cancel()
        node_metrics(node).operation("http", "get", "ok")
        assert value(scrape(node), "crdtkv_operations_total", face="http", kind="get", result="ok") == 1
        store.delete("a")
        await wait_until(lambda: value(scrape(node), "crdtkv_tombstones") == 1)
        await wait_until(lambda: value(scrape(node), "crdtkv_garbage_collected_total") >= 1)
        assert value(scrape(node), "crdtkv_tombstones") == 0


async def test_a_durable_store_exports_commit_latency_and_batch_size(tmp_path: Path) -> None:
    store = KvStore.open("t", replica_id="disk", path=tmp_path / "disk.db", durability="sync")
    try:
        async with Node(store, listen="ws://127.0.0.1:0") as node:
            before = value(scrape(node), "crdtkv_storage_commit_seconds_count")
            store.put("a", 1)
            store.put("b", 2)
            samples = scrape(node)
            assert value(samples, "crdtkv_storage_commit_seconds_count") == before + 2
            assert value(samples, "crdtkv_storage_commit_rows_count") == before + 2
            assert value(samples, "crdtkv_storage_commit_rows_sum") >= 2
    finally:
        store.close()


def test_every_metric_is_named_with_the_prefix_and_documented() -> None:
    for name, (kind, meaning) in METRICS.items():
        assert name.startswith("crdtkv_") and kind in ("gauge", "counter", "histogram") and meaning
        assert name.endswith("_total") == (kind == "counter"), name


async def test_two_nodes_in_one_process_have_their_own_registries() -> None:
    a = KvStore.open("t", replica_id="one")
    b = KvStore.open("t", replica_id="two")
    async with Node(a, listen="ws://127.0.0.1:0") as na, Node(b, listen="ws://127.0.0.1:0") as nb:
        assert node_metrics(na) is node_metrics(na)
        assert node_metrics(na).registry is not node_metrics(nb).registry
        node_metrics(na).operation("resp", "get", "ok")
        assert value(scrape(na), "crdtkv_operations_total", face="resp") == 1
        assert value(scrape(nb), "crdtkv_operations_total", face="resp") == 0


async def test_failed_dials_are_logged_once_per_change_of_state(caplog: pytest.LogCaptureFixture) -> None:
    url = f"ws://127.0.0.1:{await free_port()}"
    store = KvStore.open("t", replica_id="alone")
    caplog.set_level(logging.DEBUG, logger="crdtkv.node")
    async with Node(store, peers=[url], settings=FAST) as node:
        await wait_until(lambda: node.dial_failures >= 4)
        async with Node(KvStore.open("t", replica_id="back"), listen=url, settings=FAST):
            await node.wait_for_peers(1)
    warnings = [
        r for r in caplog.records if r.levelno == logging.WARNING and "cannot reach peer" in r.message
    ]
    assert len(warnings) == 1 and url in warnings[0].message
    assert any(r.levelno == logging.INFO and "reached peer" in r.message for r in caplog.records)

"""Prometheus metrics of a node, read from its plain counters when scraped.

``node_metrics(node)`` gives the node's one :class:`NodeMetrics`, with a
``CollectorRegistry`` of its own (two nodes in one process never mix). Nothing
here runs per message: the node, its sessions and the storage count in plain
ints (see :mod:`crdtkv.stats`), and a custom collector turns them into metric
families at scrape time. The faces count each request with
:meth:`NodeMetrics.operation`, a dict update.

Every metric is prefixed ``crdtkv_``; :data:`METRICS` lists them with their
meaning (the README's metrics table comes from it).
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Iterator
from typing import Final

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from .build import loaded_build
from .core.feed import Stage
from .node import Node, PeerInfo
from .stats import Buckets
from .version import __version__
from .watch import Follower

#: Every metric exported, with its type and meaning (names as scraped; counters end in ``_total``).
METRICS: Final[dict[str, tuple[str, str]]] = {
    "crdtkv_info": ("gauge", "1, labelled with this node's id, origin, version and runtime (compiled, pure)"),
    "crdtkv_start_time_seconds": ("gauge", "when the node started serving (epoch seconds)"),
    "crdtkv_ready": ("gauge", "1 once the store is open and the first catch-up from a peer completed"),
    "crdtkv_operations_total": (
        "counter",
        "operations served, by face (http, resp, ws), kind (the command) and result (ok or the error class)",
    ),
    "crdtkv_keys": ("gauge", "live keys"),
    "crdtkv_tombstones": ("gauge", "entries kept for deleted or expired keys until garbage collection"),
    "crdtkv_links": ("gauge", "open links, by role: peer, client, handshake (not yet authenticated)"),
    "crdtkv_peer_up": ("gauge", "1 while a replication link to the peer is up, 0 while dialing or down"),
    "crdtkv_peer_sent_bytes_total": ("counter", "bytes sent to the peer on the current link"),
    "crdtkv_peer_received_bytes_total": ("counter", "bytes received from the peer on the current link"),
    "crdtkv_peer_sent_entries_total": ("counter", "entries sent to the peer on the current link"),
    "crdtkv_peer_received_entries_total": ("counter", "entries received from the peer on the current link"),
    "crdtkv_peer_lacking_entries": ("gauge", "entries with changes the peer does not demonstrably hold yet"),
    "crdtkv_peer_lag_seconds": (
        "gauge",
        "seconds the peer has acknowledged nothing while batches wait for its ack (0: none waits)",
    ),
    "crdtkv_peer_last_ack_age_seconds": ("gauge", "seconds since the peer's last acknowledgement"),
    "crdtkv_propagation_delay_seconds": (
        "histogram",
        "apply time here minus the stamp of the newest write of each batch adopted from a peer",
    ),
    "crdtkv_link_closes_total": (
        "counter",
        "link closes, by reason (the close code's name) and role (peer, client, handshake)",
    ),
    "crdtkv_dial_failures_total": ("counter", "failed dials (or handshakes) of each peer URL"),
    "crdtkv_garbage_collected_total": ("counter", "tombstones and expired entries garbage-collected"),
    "crdtkv_watchers": ("gauge", "watches following the store's changes (client, HTTP and local)"),
    "crdtkv_watch_backlog_bytes": ("gauge", "bytes of changes waiting for watchers to take them"),
    "crdtkv_storage_commit_seconds": ("histogram", "seconds each storage commit took (durable stores)"),
    "crdtkv_storage_commit_rows": ("histogram", "rows each storage commit wrote (durable stores)"),
}

_PEER_LABELS: Final = ["peer", "url", "direction"]


def _doc(name: str) -> str:
    return METRICS[name][1]


def _histogram(name: str, buckets: Buckets) -> HistogramMetricFamily:
    """A histogram family from plain bucket counts (read once, so ``+Inf`` equals the count)."""
    pairs = buckets.cumulative()
    return HistogramMetricFamily(
        name,
        _doc(name),
        buckets=[("+Inf" if math.isinf(bound) else repr(float(bound)), total) for bound, total in pairs],
        sum_value=buckets.sum,
    )


def _counter(name: str, labels: list[str] | None = None) -> CounterMetricFamily:
    return CounterMetricFamily(name.removesuffix("_total"), _doc(name), labels=labels)


def _gauge(name: str, labels: list[str] | None = None) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, _doc(name), labels=labels)


class _NodeCollector(Collector):
    """Reads one node's counters at scrape time."""

    def __init__(self, node: Node) -> None:
        self._node = weakref.ref(node)

    def collect(self) -> Iterator[Metric]:
        node = self._node()
        if node is None:
            return
        store = node.store
        info = _gauge("crdtkv_info", ["id", "origin", "version", "runtime"])
        info.add_metric([store.replica_id, store.origin, __version__, loaded_build()], 1)
        yield info
        start = _gauge("crdtkv_start_time_seconds")
        start.add_metric([], node.started_at)
        yield start
        ready = _gauge("crdtkv_ready")
        ready.add_metric([], 1 if node.ready else 0)
        yield ready

        operations = _counter("crdtkv_operations_total", ["face", "kind", "result"])
        for (face, kind, result), count in sorted(node.operations.items()):
            operations.add_metric([face, kind, result], count)
        yield operations

        if not store.closed:
            live, gone = node.count_keys()
            keys = _gauge("crdtkv_keys")
            keys.add_metric([], live)
            yield keys
            tombstones = _gauge("crdtkv_tombstones")
            tombstones.add_metric([], gone)
            yield tombstones

        links = _gauge("crdtkv_links", ["role"])
        roles = {"peer": 0, "client": 0, "handshake": 0}
        for link in node.links:
            session = link.session
            if not session.opened:
                roles["handshake"] += 1
            elif session.replicating:
                roles["peer"] += 1
            else:
                roles["client"] += 1
        for role, count in roles.items():
            links.add_metric([role], count)
        yield links

        yield from self._peers(node.peer_infos())

        delays = node.propagation
        yield _histogram("crdtkv_propagation_delay_seconds", delays)

        closes = _counter("crdtkv_link_closes_total", ["reason", "role"])
        for (reason, role), count in sorted(node.closes.items()):
            closes.add_metric([reason, role], count)
        yield closes

        dials = _counter("crdtkv_dial_failures_total", ["url"])
        for url, count in node.dialers:
            dials.add_metric([url], count)
        yield dials

        collected = _counter("crdtkv_garbage_collected_total")
        collected.add_metric([], node.garbage_collected)
        yield collected

        if not store.closed:
            followers = [
                owner
                for subscriber in store.replica.feed.subscribed(Stage.OBSERVERS)
                if isinstance(owner := getattr(subscriber, "__self__", None), Follower)
            ]
            watchers = _gauge("crdtkv_watchers")
            watchers.add_metric([], len(followers))
            yield watchers
            backlog = _gauge("crdtkv_watch_backlog_bytes")
            backlog.add_metric([], sum(follower.queue.queued_bytes for follower in followers))
            yield backlog

            storage = store.storage
            seconds = getattr(storage, "commit_seconds", None)
            rows = getattr(storage, "commit_rows", None)
            if isinstance(seconds, Buckets) and isinstance(rows, Buckets):
                yield _histogram("crdtkv_storage_commit_seconds", seconds)
                yield _histogram("crdtkv_storage_commit_rows", rows)

    def _peers(self, infos: list[PeerInfo]) -> Iterator[Metric]:
        up = _gauge("crdtkv_peer_up", _PEER_LABELS)
        sent_bytes = _counter("crdtkv_peer_sent_bytes_total", _PEER_LABELS)
        received_bytes = _counter("crdtkv_peer_received_bytes_total", _PEER_LABELS)
        sent_entries = _counter("crdtkv_peer_sent_entries_total", _PEER_LABELS)
        received_entries = _counter("crdtkv_peer_received_entries_total", _PEER_LABELS)
        lacking = _gauge("crdtkv_peer_lacking_entries", _PEER_LABELS)
        lag = _gauge("crdtkv_peer_lag_seconds", _PEER_LABELS)
        ack_age = _gauge("crdtkv_peer_last_ack_age_seconds", _PEER_LABELS)
        for info in infos:
            labels = [info.origin or "", info.url, info.direction]
            up.add_metric(labels, 1 if info.state == "up" else 0)
            sent_bytes.add_metric(labels, info.sent_bytes)
            received_bytes.add_metric(labels, info.received_bytes)
            sent_entries.add_metric(labels, info.sent_entries)
            received_entries.add_metric(labels, info.received_entries)
            lacking.add_metric(labels, info.lacking)
            if info.lag_seconds is not None:
                lag.add_metric(labels, info.lag_seconds)
            if info.last_ack_age is not None:
                ack_age.add_metric(labels, info.last_ack_age)
        yield from (up, sent_bytes, received_bytes, sent_entries, received_entries, lacking, lag, ack_age)


class NodeMetrics:
    """One node's metrics: its own registry, rendered in the Prometheus text format."""

    #: the Content-Type of :meth:`render`'s output
    content_type: str = CONTENT_TYPE_LATEST

    def __init__(self, node: Node) -> None:
        # the node's own dict: counting needs no reference to the node (which owns this)
        self._operations = node.operations
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_NodeCollector(node))

    def operation(self, face: str, kind: str, result: str) -> None:
        """Count one operation a face served (a dict update; exported when scraped).

        Keep ``kind`` and ``result`` to bounded sets (command names, ``ok`` or an
        error class name): each combination is a series.
        """
        key = (face, kind, result)
        operations = self._operations
        operations[key] = operations.get(key, 0) + 1

    def render(self) -> bytes:
        """Every metric now, in the Prometheus text exposition format."""
        return generate_latest(self.registry)


_BY_NODE: weakref.WeakKeyDictionary[Node, NodeMetrics] = weakref.WeakKeyDictionary()


def node_metrics(node: Node) -> NodeMetrics:
    """The node's :class:`NodeMetrics`, created on first use."""
    metrics = _BY_NODE.get(node)
    if metrics is None:
        metrics = _BY_NODE[node] = NodeMetrics(node)
    return metrics


__all__ = ["METRICS", "NodeMetrics", "node_metrics"]

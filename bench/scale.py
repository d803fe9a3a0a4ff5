#!/usr/bin/env python3
"""Replication at scale: N replicas with a Node each in one process, per topology and transport.

Each run builds one cluster (``memory://`` or loopback WebSockets), waits
until every link is up and quiet, then measures three things:

* one 10-byte ``put`` in the quiet cluster: the bytes each link carried (both
  directions, every message) until the put is visible everywhere and every
  link is quiet again;
* steady writes, ``rate`` per second at every replica for ``seconds``: bytes per
  write per link, redundancy (entries received on all links / (writes x (N - 1));
  1.0 means every replica received each change once), the time until each write
  is visible at every replica (p50/p99), the process's CPU time per write and
  the event loop's lag (oversleep of a 1 ms sleep, sampled throughout). The
  writes keep to their schedule (an open loop): a saturated event loop shows
  as delay until visible, it does not slow the writers down;
* counters: every replica increments one shared counter; every replica must
  then read the exact total, and every digest must agree.

Topologies (node ``i`` dials lower-numbered nodes only, so WebSocket URLs are
known before they are dialed): ``mesh`` (every pair once; only N <= 30, a
300-node mesh is 44,850 links), ``star`` (node 0 is the hub), ``tree`` (about
sqrt(N) regional hubs meshed together, every other node dials two of them) and
``ring``. Public API only: ``Node.links`` (their ``session.stats`` and the
connection, a :class:`harness.Recorded` that counts bytes), the replica's
change feed (first time each replica holds each write) and its version vector.

Every wait has a deadline: a cluster that does not converge is reported as
"did not converge in T s" (an UNEXPECTED row), never a hang. Keepalives are
set to 60 s so that pings do not land in the byte counts.

Usage: ``python bench/run.py scale`` (the whole matrix, minutes),
``python bench/run.py --quick scale`` (two small runs), or one run alone:
``python bench/scale.py --n 100 --topology tree [--transport ws] [--seconds 10]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.abc
from harness import SECRET, Recorded, Recording
from report import Options, Row, case, fmt_time, met, percentile, progress, render

import crdtkv
from crdtkv import KvStore, Node, NodeSettings
from crdtkv.core import messages
from crdtkv.node import Link
from crdtkv.transport import Transport
from transports.memory import MemoryNetwork, MemoryTransport
from transports.websocket import WebSocketTransport

STORE = "bench-scale"
TOPOLOGIES = ("mesh", "star", "tree", "ring")
#: a full mesh has N (N - 1) / 2 links: above this N it is not run
MESH_MAX = 30
#: deliveries per second (writes times the replicas each reaches) at most: every node shares this
#: process and one core, so above 100 nodes each writes less than once a second, for the same
#: replication work as 100 nodes writing once a second each (a PoP in production has its own process)
DELIVERIES = 100 * 99
#: the one-put target: bytes on each link, deltas plus acknowledgements
PUT_GOAL = 150
VALUE = "0123456789"  # the 10-byte value of the quiet put
#: how long every link must stay silent for the cluster to count as quiet (seconds): longer
#: than acks and haves gather (a quarter of the 2 s long hold), so none is left out of a count
QUIET = 1.0
#: increments of the shared counter per replica in the counter check
INCRS = 3
#: seconds the idle cluster is watched to learn its CPU cost (taken off the steady phase's)
IDLE = 1.0
Pair = tuple[int, int]


def message_names() -> dict[int, str]:
    """Message type code -> name, from the protocol's registry (codes alone if it has none)."""
    registry: Sequence[Any] = getattr(messages, "REGISTRY", ())
    return {row.code: row.cls.__name__ for row in registry}


# -- topologies ---------------------------------------------------------------------------------------


def hubs(n: int) -> int:
    """Regional hubs of a tree of ``n`` nodes: about sqrt(n), at least 2."""
    return max(2, round(math.sqrt(n)))


def edges(topology: str, n: int) -> list[Pair]:
    """Every link as (dialer, listener), the listener always the lower-numbered node."""
    if topology == "mesh":
        return [(i, j) for i in range(n) for j in range(i)]
    if topology == "star":
        return [(i, 0) for i in range(1, n)]
    if topology == "tree":
        h = hubs(n)
        core = [(i, j) for i in range(h) for j in range(i)]
        return core + [(i, hub) for i in range(h, n) for hub in sorted({i % h, (i + 1) % h})]
    if topology == "ring":
        return [(i, i - 1) for i in range(1, n)] + ([(n - 1, 0)] if n > 2 else [])
    raise ValueError(f"unknown topology {topology!r}")


# -- one run ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Spec:
    n: int
    topology: str
    transport: str = "memory"  # or "ws"
    rate: float = 1.0  # writes per second at every replica
    seconds: float = 10.0  # of steady writes
    timeout: float = 90.0  # for each wait: links up, convergence, counters

    @property
    def label(self) -> str:
        return f"N={self.n} {self.topology} {'WebSocket' if self.transport == 'ws' else 'memory'}"


@dataclass
class Result:
    spec: Spec
    links: int
    failure: str | None = None  # why the run stopped early
    setup: float = math.nan
    put_bytes: dict[Pair, int] = field(default_factory=dict)
    put_kinds: dict[str, int] = field(default_factory=dict)
    put_note: str = ""
    writes: int = 0
    steady_bytes: int = 0
    received: int = 0
    visible: list[float] = field(default_factory=list)  # per write, seconds
    unseen: int = 0  # writes not visible everywhere by the deadline
    cpu: float = math.nan  # seconds of process CPU over the steady phase
    lag: list[float] = field(default_factory=list)
    vv_entries: int = 0
    counters: str = ""
    links_lost: int = 0


class Visibility:
    """When each replica first held each write, through every replica's change feed."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.written: dict[str, float] = {}
        self.last: dict[str, float] = {}
        self.holders: Counter[str] = Counter()
        self.pending = 0
        self.done = anyio.Event()

    def expect(self, key: str) -> None:
        """Call just before writing ``key``: its writer's own feed counts as its first holder."""
        self.written[key] = time.perf_counter()
        self.pending += 1
        self.done = anyio.Event() if self.done.is_set() else self.done

    def subscriber(self) -> Callable[[Sequence[str], Any], None]:
        seen: set[str] = set()

        def changed(keys: Sequence[str], cause: Any) -> None:
            now = time.perf_counter()
            for key in keys:
                if key in self.written and key not in seen:
                    seen.add(key)
                    self.holders[key] += 1
                    self.last[key] = now
                    if self.holders[key] == self.n:
                        self.pending -= 1
                        if not self.pending:
                            self.done.set()

        return changed

    def times(self) -> list[float]:
        """Per write seen everywhere: seconds from the write until the last replica held it."""
        return [self.last[k] - t for k, t in self.written.items() if self.holders[k] == self.n]


class Cluster:
    """N stores with a Node each, and what the bench reads of them."""

    def __init__(self, spec: Spec) -> None:
        self.spec = spec
        self.edges = edges(spec.topology, spec.n)
        self.stores = [KvStore.open(STORE, replica_id=f"p{i:03d}") for i in range(spec.n)]
        self.index = {store.origin: i for i, store in enumerate(self.stores)}
        self.nodes: list[Node] = []
        self.recordings: list[Recording] = []
        #: every replication link seen so far, by id: (node index, link)
        self.seen_links: dict[int, tuple[int, Link]] = {}
        self.visibility = Visibility(spec.n)
        for store in self.stores:
            store.replica.feed.subscribe(self.visibility.subscriber())

    # -- links and bytes

    def note_links(self) -> None:
        for i, node in enumerate(self.nodes):
            for link in node.links:
                if link.peer_origin is not None:
                    self.seen_links.setdefault(id(link), (i, link))

    def connections(self) -> list[Recorded]:
        return [c for recording in self.recordings for c in recording.connections]

    def messages_sent(self) -> int:
        return sum(len(c.sent) for c in self.connections())

    def marks(self) -> dict[int, int]:
        return {id(c): len(c.sent) for c in self.connections()}

    def pair_of(self) -> dict[int, Pair]:
        """Connection id -> the two node indexes it joins."""
        self.note_links()
        pairs: dict[int, Pair] = {}
        for i, link in self.seen_links.values():
            j = self.index.get(link.peer_origin or "")
            if j is not None:
                pairs[id(link.connection)] = (min(i, j), max(i, j))
        return pairs

    def bytes_since(self, marks: dict[int, int]) -> tuple[dict[Pair, int], Counter[int]]:
        """Bytes sent since ``marks`` per link (both directions), and per message type code."""
        pairs = self.pair_of()
        per_link: dict[Pair, int] = {}
        kinds: Counter[int] = Counter()
        for c in self.connections():
            sent = c.sent[marks.get(id(c), 0) :]
            if not sent:
                continue
            pair = pairs.get(id(c), (-1, -1))  # -1: a link that never opened
            per_link[pair] = per_link.get(pair, 0) + sum(size for _, size, _ in sent)
            for _, size, code in sent:
                kinds[code] += size
        return per_link, kinds

    def entries_received(self) -> dict[int, int]:
        self.note_links()
        return {
            key: int(link.session.stats.get("entries_received", 0))
            for key, (_, link) in self.seen_links.items()
        }

    def up(self) -> int:
        """Replication links open now (each counted once)."""
        return sum(len(node.connected) for node in self.nodes) // 2

    # -- waits

    async def until(self, check: Callable[[], bool], timeout: float, every: float = 0.02) -> bool:
        """Poll ``check`` until true; False if ``timeout`` passed first."""
        with anyio.move_on_after(timeout):
            while not check():
                await anyio.sleep(every)
            return True
        return False

    async def until_quiet(self, timeout: float) -> bool:
        """Wait until no link has sent anything for ``QUIET`` seconds."""
        with anyio.move_on_after(timeout):
            count, since = self.messages_sent(), time.perf_counter()
            while time.perf_counter() - since < QUIET:
                await anyio.sleep(0.02)
                if (now := self.messages_sent()) != count:
                    count, since = now, time.perf_counter()
            return True
        return False


def settings() -> NodeSettings:
    """Default settings, keepalives aside: a ping every 60 s cannot land in a byte count."""
    base = NodeSettings()
    return dataclasses.replace(
        base, sync=dataclasses.replace(base.sync, keepalive_interval=60.0, keepalive_timeout=180.0)
    )


@asynccontextmanager
async def running(spec: Spec) -> AsyncIterator[Cluster]:
    """Start a Node for every store (in index order: dialed nodes listen first); stop them all after."""
    cluster = Cluster(spec)
    network = MemoryNetwork()
    stop = anyio.Event()
    peers: list[list[int]] = [[] for _ in range(spec.n)]
    for dialer, listener in cluster.edges:
        peers[dialer].append(listener)

    async def hold(i: int, *, task_status: anyio.abc.TaskStatus[Node]) -> None:
        inner: Transport
        if spec.transport == "ws":
            inner, scheme, listen = WebSocketTransport(), "ws", "ws://127.0.0.1:0"
        else:
            inner, scheme, listen = MemoryTransport(network, f"p{i}"), "memory", f"memory://p{i}"
        recording = Recording(inner)
        cluster.recordings.append(recording)
        urls = [cluster.nodes[j].url or "" for j in peers[i]]
        node = Node(cluster.stores[i], listen=listen, peers=urls, secret=SECRET, settings=settings(),
                    transports={scheme: recording})  # fmt: skip
        async with node:
            task_status.started(node)
            await stop.wait()

    async with anyio.create_task_group() as group:
        for i in range(spec.n):
            cluster.nodes.append(await group.start(hold, i))
        try:
            yield cluster
        finally:
            stop.set()


async def lag_sampler(into: list[float], stop: anyio.Event) -> None:
    """Oversleep of a 1 ms sleep, in seconds, until ``stop``."""
    while not stop.is_set():
        began = time.perf_counter()
        await anyio.sleep(0.001)
        into.append(time.perf_counter() - began - 0.001)


async def link_sampler(cluster: Cluster, stop: anyio.Event) -> None:
    """Note every link while it is open, so entries received on a link that closes still count."""
    while not stop.is_set():
        cluster.note_links()
        await anyio.sleep(0.05)


@asynccontextmanager
async def samplers(cluster: Cluster, lag: list[float]) -> AsyncIterator[None]:
    """Run the loop-lag and link samplers for the body's duration."""
    stop = anyio.Event()
    async with anyio.create_task_group() as group:
        group.start_soon(lag_sampler, lag, stop)
        group.start_soon(link_sampler, cluster, stop)
        try:
            yield
        finally:
            stop.set()


async def steady(cluster: Cluster, result: Result) -> None:
    """Writes at every replica, ``rate`` per second each; CPU net of what the idle cluster costs."""
    spec = cluster.spec
    idle: list[float] = []
    async with samplers(cluster, idle):  # the idle cost, samplers included
        cpu, began = time.process_time(), time.perf_counter()
        await anyio.sleep(IDLE)
        idle_rate = (time.process_time() - cpu) / (time.perf_counter() - began)
    visibility = cluster.visibility
    per_node = max(1, round(spec.rate * spec.seconds))
    schedule = sorted(((k + i / spec.n) / spec.rate, i, k) for i in range(spec.n) for k in range(per_node))
    progress(f"{spec.label}: {len(schedule)} writes over {spec.seconds:g} s")
    received = cluster.entries_received()
    marks = cluster.marks()
    async with samplers(cluster, result.lag):
        cpu, start = time.process_time(), time.perf_counter()
        for at, i, k in schedule:  # open loop: behind schedule, due writes go at once
            if (ahead := start + at - time.perf_counter()) > 0:
                await anyio.sleep(ahead)
            key = f"w/{i}/{k}"
            visibility.expect(key)
            cluster.stores[i].put(key, f"{k:010d}")
        result.writes = len(schedule)
        with anyio.move_on_after(spec.timeout):
            await visibility.done.wait()
        await cluster.until_quiet(spec.timeout)
        result.cpu = time.process_time() - cpu - idle_rate * (time.perf_counter() - start)
    result.visible = visibility.times()
    result.unseen = visibility.pending
    per_link, _ = cluster.bytes_since(marks)
    result.steady_bytes = sum(per_link.values())
    after = cluster.entries_received()
    result.received = sum(count - received.get(key, 0) for key, count in after.items())
    result.links_lost = sum(1 for _, link in cluster.seen_links.values() if link.session.closed)


async def counters(cluster: Cluster, result: Result) -> None:
    """Every replica adds 1 to one counter ``INCRS`` times: each must read the exact total."""
    stores, timeout = cluster.stores, cluster.spec.timeout
    for _ in range(INCRS):
        for store in stores:
            store.incr("c/total")
    total = INCRS * len(stores)
    exact = await cluster.until(lambda: all(s.get("c/total") == total for s in stores), timeout)
    digests = await cluster.until(lambda: len({s.digest() for s in stores}) == 1, timeout)
    if exact and digests:
        result.counters = f"counter exact ({total}) at all {len(stores)}, digests equal"
    else:
        values = sorted({s.get("c/total") for s in stores}, key=str)
        result.counters = (
            f"UNEXPECTED: after {timeout:g} s the counter reads {values[:5]} (expected {total}) "
            f"and digests {'agree' if digests else 'differ'}"
        )


async def one_put(cluster: Cluster, result: Result) -> None:
    """One 10-byte put once the cluster is quiet: bytes per link until it is quiet again."""
    spec, names = cluster.spec, message_names()
    await cluster.until_quiet(spec.timeout)
    cluster.visibility = visibility = Visibility(spec.n)
    for store in cluster.stores:
        store.replica.feed.subscribe(visibility.subscriber())
    marks = cluster.marks()
    visibility.expect("q/one")
    cluster.stores[-1].put("q/one", VALUE)  # the last node: a PoP, not a hub
    if not await cluster.until(lambda: visibility.pending == 0, spec.timeout):
        result.failure = f"the quiet put did not reach every replica in {spec.timeout:g} s"
        return
    quiet = await cluster.until_quiet(spec.timeout)
    per_link, kinds = cluster.bytes_since(marks)
    result.put_bytes = per_link
    result.put_kinds = {names.get(code, f"type {code}"): size for code, size in sorted(kinds.items())}
    result.put_note = "" if quiet else f"; links still busy after {spec.timeout:g} s"


async def measure(spec: Spec) -> Result:
    """One run: links up, steady writes, counters, then one put in the quiet cluster (full vectors)."""
    result = Result(spec, links=len(edges(spec.topology, spec.n)))
    began = time.perf_counter()
    async with running(spec) as cluster:
        if not await cluster.until(lambda: cluster.up() >= result.links, spec.timeout, 0.05):
            result.failure = f"only {cluster.up()} of {result.links} links up after {spec.timeout:g} s"
            return result
        await cluster.until_quiet(spec.timeout)
        result.setup = time.perf_counter() - began
        progress(f"{spec.label}: {result.links} links up in {result.setup:.1f} s")
        await steady(cluster, result)
        if result.unseen:
            result.failure = f"{result.unseen} of {result.writes} writes not visible everywhere"
            return result
        await counters(cluster, result)
        result.vv_entries = max(len(s.replica.vv) for s in cluster.stores)
        await one_put(cluster, result)
    return result


# -- rows ---------------------------------------------------------------------------------------------


def redundancy_goal(spec: Spec) -> float | None:
    if spec.topology == "mesh" and spec.n == 30:
        return 1.2
    return 1.05 if spec.topology == "tree" else None


def rows(num: int, r: Result) -> list[Row]:
    """Three rows per run: the quiet put, steady cost, visibility (with counters and loop lag)."""
    s = r.spec
    head = f"{s.label} ({r.links} links)"
    if not r.writes:
        return [Row(f"{num}", head, f"UNEXPECTED: {r.failure}", goal="links up", met=met(False))]
    if r.put_bytes:
        carried = [size for pair, size in r.put_bytes.items() if pair[0] >= 0]
        top, mean = max(carried, default=0), sum(r.put_bytes.values()) / r.links
        kinds = ", ".join(f"{name} {size:,} B" for name, size in r.put_kinds.items())
        notes = f"{len(carried)} of {r.links} links carried it; all links: {kinds}{r.put_note}"
        put = Row(f"{num}a", f"{head}: one 10-byte put, quiet cluster: bytes per link",
                  f"max {top:,} B, mean {mean:,.1f} B", goal=f"<= {PUT_GOAL} B", met=met(top <= PUT_GOAL),
                  notes=notes)  # fmt: skip
    else:
        put = Row(f"{num}a", f"{head}: one 10-byte put, quiet cluster", f"UNEXPECTED: {r.failure}")
    writes = r.writes
    redundancy = r.received / (writes * (s.n - 1))
    goal = redundancy_goal(s)
    per_link = r.steady_bytes / writes / r.links
    per_replica = r.steady_bytes / writes / (s.n - 1)
    lost = f"; {r.links_lost} links closed during it" if r.links_lost else ""
    cpu = f"CPU {fmt_time(r.cpu / writes)} per write (all {s.n} nodes, idle cost taken off){lost}"
    what = f"{head}: steady writes ({s.rate:.3g}/s at each replica, {s.seconds:g} s): redundancy"
    steady = Row(f"{num}b", what,
                 f"{redundancy:.2f}", goal="-" if goal is None else f"<= {goal:g}",
                 met=met(None if goal is None else redundancy <= goal),
                 notes=f"{writes:,} writes; {per_link:,.1f} B per write per link, "
                 f"{per_replica:,.0f} B per write per replica reached; {cpu}")  # fmt: skip
    lag = r.lag or [math.nan]
    lags = ", ".join(f"p{q * 100:g} {fmt_time(percentile(lag, q))}" for q in (0.5, 0.99))
    lags = f"loop lag {lags}, max {fmt_time(max(lag))}"
    if r.unseen:
        seen = f"UNEXPECTED: did not converge in {s.timeout:g} s ({r.unseen} of {writes} writes missing)"
    else:
        seen = f"p50 {fmt_time(percentile(r.visible, 0.5))}, p99 {fmt_time(percentile(r.visible, 0.99))}"
    timed = s.topology == "tree" and s.n == 100 and s.transport == "memory"
    p99 = percentile(r.visible, 0.99) if r.visible and not r.unseen else math.inf
    vv = f"version vector entries {r.vv_entries}; " if r.vv_entries else ""
    visible = Row(f"{num}c", f"{head}: time until a write is visible at every replica", seen,
                  goal="p99 < 1 s" if timed else "-", met=met(p99 < 1 if timed else None),
                  notes=f"{lags}; {vv}{r.counters or 'counters not checked'}")  # fmt: skip
    return [put, steady, visible]


def steady_rate(n: int) -> float:
    """Writes per second at each of ``n`` replicas: 1, or less above 100 (see ``DELIVERIES``)."""
    return min(1.0, DELIVERIES / (n * (n - 1)))


def specs(o: Options) -> list[Spec]:
    if o.quick:
        return [Spec(10, "mesh", seconds=2, timeout=60), Spec(30, "tree", seconds=2, timeout=60)]
    memory = [
        Spec(n, t, rate=steady_rate(n))
        for n in (10, 30, 100, 300)
        for t in TOPOLOGIES
        if t != "mesh" or n <= MESH_MAX
    ]
    return memory + [Spec(n, t, "ws") for n in (10, 30) for t in TOPOLOGIES]


def run_all(chosen: Sequence[Spec]) -> list[Row]:
    out: list[Row] = []
    for num, spec in enumerate(chosen, 1):
        progress(f"scale run {num}/{len(chosen)}: {spec.label}")
        done = rows(num, anyio.run(measure, spec))
        progress("\n" + render(done))  # each run's rows as soon as they are known (a long matrix)
        out += done
    return out


@case(
    "scale", "N replicas in one process: bytes per link, redundancy, time until visible everywhere, counters"
)
def scale(o: Options) -> list[Row]:
    """The matrix of runs (mesh only up to N = 30: above it a mesh has too many links to run here)."""
    return run_all(specs(o))


def main(argv: Sequence[str] | None = None) -> int:
    """One run (or one N and transport over several topologies), printed as the runner's table."""
    parser = argparse.ArgumentParser(description="one scale run; `bench/run.py scale` runs the matrix")
    parser.add_argument("--n", type=int, required=True, help="replicas")
    parser.add_argument("--topology", choices=TOPOLOGIES, action="append", help="default: every one")
    parser.add_argument("--transport", choices=("memory", "ws"), default="memory")
    parser.add_argument(
        "--rate", type=float, help="writes per second at every replica (default: 1, less above N = 100)"
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="of steady writes")
    parser.add_argument("--timeout", type=float, default=90.0, help="for each wait (seconds)")
    args = parser.parse_args(argv)
    rate = steady_rate(args.n) if args.rate is None else args.rate
    chosen = [Spec(args.n, t, args.transport, rate, args.seconds, args.timeout)
              for t in args.topology or TOPOLOGIES]  # fmt: skip
    print(
        f"crdtkv from {crdtkv.__file__}; `{' '.join(['python', 'bench/scale.py', *(argv or sys.argv[1:])])}`"
    )
    print(render(run_all(chosen)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

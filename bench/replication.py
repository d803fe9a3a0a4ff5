"""Replication between processes over loopback WebSockets: throughput, latency, catch-up.

Process A (the runner) writes to a store served by a Node on ``ws://127.0.0.1:0``;
process B (:func:`peer`, run by ``harness.spawn``) runs a Node dialing A and
reports when it holds what A wrote, woken by a watch. The latency case adds a
process C and links the three in a mesh (B listens and dials A, C dials both),
as three PoPs are deployed; each process samples its event-loop lag
(:class:`LoopLag`) while A writes. The baselines are plain
``websockets`` loops between the same two processes, with crdtkv's size and
queue limits, in the same run: the throughput's carries the same entries,
each message a ``cbor2.dumps`` of its entries that the receiver
``cbor2.loads`` and stores in a dict (:func:`like_for_like`). Public API only: bytes are counted by wrapping
the WebSocket transport through the plug-in interface (``harness.Recording``).

The one internal used, by B only: ``KvStore.replica``'s version vector, in
:func:`until_covered`. Deltas arrive in parts in no key order, so holding the
last key written does not mean holding every key, and no public method tells
that a replica holds every write of an origin up to a stamp (counting keys is
O(n), a watch of every key costs B a few microseconds each).
"""

from __future__ import annotations

import math
import os
import random
import statistics
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import anyio
import cbor2
from harness import (
    SECRET,
    Channel,
    Recorded,
    Recording,
    Remote,
    memory_node,
    node_settings,
    now_ns,
    spawn,
    sync_to_empty,
    until_all,
)
from report import Options, Row, case, fmt_num, fmt_ratio, fmt_time, met, percentile, progress
from websockets.asyncio.client import connect as ws_connect
from websockets.asyncio.server import ServerConnection
from websockets.asyncio.server import serve as ws_serve

from crdtkv import KvStore, Node
from crdtkv.transport import TransportSettings
from transports.memory import MemoryNetwork
from transports.websocket import WebSocketTransport

STORE = "bench-replication"
LIMITS = TransportSettings()  # crdtkv's transport limits, applied to the raw baselines too
WS_LIMITS: dict[str, Any] = {
    "compression": None,
    "max_size": LIMITS.max_message_bytes,
    "max_queue": LIMITS.max_queue,
}
YIELD_EVERY = 1_000
CHANGED = 1_000


def key_of(i: int) -> str:
    return f"k:{i:07d}"


def ws_frame(size: int) -> int:
    """Bytes on the wire for one unmasked WebSocket message of ``size`` bytes (server to client)."""
    return size + 2 + (2 if 126 <= size < 65536 else 8 if size >= 65536 else 0)


class LoopLag:
    """Event-loop lag: the oversleep of a 1 ms sleep, sampled throughout.

    Where Linux tells (``/proc/thread-self/schedstat``), each sample also
    notes how long the thread waited in the run queue, runnable but without a
    CPU: lateness spent there is the machine's (other processes), the rest is
    the loop's own work.
    """

    def __init__(self) -> None:
        self.late: list[float] = []
        self.queued: list[float] = []
        try:
            self.schedstat: int | None = os.open("/proc/thread-self/schedstat", os.O_RDONLY)
        except OSError:
            self.schedstat = None

    def run_queue_wait(self) -> float:
        """Seconds this thread has waited for a CPU so far (0 where unknown)."""
        if self.schedstat is None:
            return 0.0
        return int(os.pread(self.schedstat, 128, 0).split()[1]) / 1e9

    async def run(self) -> None:
        try:
            while True:
                began, queued = time.perf_counter(), self.run_queue_wait()
                await anyio.sleep(0.001)
                self.late.append(time.perf_counter() - began - 0.001)
                self.queued.append(self.run_queue_wait() - queued)
        finally:
            if self.schedstat is not None:
                os.close(self.schedstat)

    def summary(self) -> dict[str, float]:
        """p99 and max oversleep (s), and the share of the worst 1% of oversleep spent waiting for a CPU."""
        if not self.late:
            return {"p99": math.nan, "max": math.nan, "waiting": math.nan}
        worst = sorted(range(len(self.late)), key=self.late.__getitem__)[-max(1, len(self.late) // 100) :]
        late = sum(self.late[i] for i in worst)
        waiting = min(1.0, sum(self.queued[i] for i in worst) / late) if late > 0 else 0.0
        if self.schedstat is None:
            waiting = math.nan
        return {"p99": percentile(self.late, 0.99), "max": max(self.late), "waiting": waiting}


@asynccontextmanager
async def loop_lag() -> AsyncIterator[LoopLag]:
    """Sample the event loop's lag for the body's duration."""
    lag = LoopLag()
    async with anyio.create_task_group() as group:
        group.start_soon(lag.run)
        yield lag
        group.cancel_scope.cancel()


# -- B, in the child process ----------------------------------------------------------------------


async def until_covered(store: KvStore, key: str, value: str, timeout: float) -> int:
    """Monotonic ns once ``store`` holds ``key`` = ``value`` and every earlier write of its origin."""
    await until_all(store, {key: value}, timeout)
    record = store.get_with_metadata(key)
    assert record is not None
    async with store.watch("", buffer=1) as changes:  # wakes on applies, costs B almost nothing
        with anyio.fail_after(timeout):
            while store.replica.vv.get(record.origin, 0) < record.stamp:
                with anyio.move_on_after(0.01):
                    await changes.__anext__()
    return now_ns()


async def peer(channel: Channel, params: dict[str, Any]) -> None:
    """B: per command a Node dialing A (or a raw websockets client), until A sends stop; then quit."""
    store = KvStore.open(STORE, replica_id="b")
    while (cmd := await channel.command())["cmd"] != "quit":
        if cmd["cmd"] == "raw":
            await raw_peer(channel, cmd)
            continue
        if cmd["cmd"] == "latency":
            await latency_peer(channel, cmd)
            continue
        if cmd.get("fresh"):
            store = KvStore.open(STORE, replica_id="b")
        started = now_ns()
        settings = node_settings(cmd.get("window"))
        async with Node(store, peers=[cmd["url"]], secret=SECRET, settings=settings) as node:
            if cmd.get("ready"):
                await node.wait_for_peers(1, timeout=60)
                channel.emit("ready")
            last, expect = cmd["last"], cmd.get("expect", {})  # the key A wrote last, and what to check
            done = await until_covered(store, last[0], last[1], 600)
            held = all(store.get(k) == v for k, v in expect.items())
            channel.emit("done", started=started, done=done, held=held)
            await channel.command()  # stop
        channel.emit("stopped", digest=store.digest())


async def latency_peer(channel: Channel, cmd: dict[str, Any]) -> None:
    """B or C of the latency mesh: a fresh store, a Node dialing ``peers`` (and listening if asked).

    Emits ``listening`` (its URL), ``ready`` once linked to both others, then
    ``done`` with the delay of each of A's writes (arrival, read from a watch
    of ``lat:``, minus the write time in the value) and its event-loop lag.
    """
    store = KvStore.open(STORE, replica_id=cmd["name"])
    listen = "ws://127.0.0.1:0" if cmd.get("listen") else None
    settings = node_settings(cmd.get("window"))
    async with Node(store, listen=listen, peers=cmd["peers"], secret=SECRET, settings=settings) as node:
        channel.emit("listening", url=node.url)
        async with store.watch("lat:") as changes:
            await node.wait_for_peers(2, timeout=60)
            channel.emit("ready")
            async with loop_lag() as lag:
                delays = [-int((await changes.__anext__()).value) + now_ns() for _ in range(cmd["n"])]
        channel.emit("done", delays=delays, lag=lag.summary())
        await channel.command()  # stop
    channel.emit("stopped", digest=store.digest())


async def raw_peer(channel: Channel, cmd: dict[str, Any]) -> None:
    """B over plain websockets: ``rounds`` connections, each receiving ``count`` messages.

    With ``decode``, each message is a CBOR list of entries that B decodes
    (``cbor2.loads``) and stores in a dict, key by key, as a replica would.
    """
    results = []
    held: dict[str, list[Any]] = {}
    for _ in range(cmd["rounds"]):
        started = now_ns()
        delays, total = [], 0
        async with ws_connect(cmd["url"], **WS_LIMITS) as ws:
            for _ in range(cmd["count"]):
                message = await ws.recv()
                if cmd.get("decode"):
                    assert isinstance(message, bytes)
                    for entry in cbor2.loads(message):
                        held[entry[0]] = entry
                arrived = now_ns()
                total += len(message)
                if cmd.get("stamped") and isinstance(message, bytes):
                    delays.append(arrived - int.from_bytes(message[:8], "little"))
        results.append(
            {"started": started, "done": arrived, "bytes": total, "delays": delays, "held": len(held)}
        )
    channel.emit("done", results=results)


async def like_for_like(
    b: Remote, keys: Sequence[str], values: Sequence[str], messages: int
) -> tuple[float, int]:
    """The loop crdtkv competes with: entries encoded, sent, decoded and stored, nothing merged.

    A builds each entry as crdtkv's wire carries a register (key, value,
    stamp, writer), keeps it in a dict, and sends the entries over plain
    websockets in ``messages`` messages (crdtkv's count in the same run), each
    a ``cbor2.dumps`` of its entries; B ``cbor2.loads`` each and stores every
    entry in a dict. Returns the seconds from A's first entry until B stored
    the last, and the bytes sent.
    """
    n = len(keys)
    per = -(-n // max(1, messages))
    began: list[int] = []

    async def send_all(ws: ServerConnection) -> None:
        began.append(now_ns())
        local: dict[str, list[Any]] = {}
        stamp = time.time_ns() << 16
        for start in range(0, n, per):
            batch = []
            for i in range(start, min(start + per, n)):
                stamp += 1
                entry = local[keys[i]] = [keys[i], values[i], stamp, "a"]
                batch.append(entry)
            await ws.send(cbor2.dumps(batch))

    result = (await raw_run(b, send_all, count=-(-n // per), rounds=1, decode=True))[0]
    if result["held"] != n:
        raise AssertionError(f"the like-for-like loop stored {result['held']:,} of {n:,} entries")
    return (result["done"] - began[0]) / 1e9, result["bytes"]


# -- A ------------------------------------------------------------------------------------------------


@asynccontextmanager
async def raw_server(handler: Callable[[ServerConnection], Awaitable[None]]) -> AsyncIterator[str]:
    """A plain websockets server on loopback, with crdtkv's limits; yields its URL."""
    async with ws_serve(handler, "127.0.0.1", 0, **WS_LIMITS) as server:
        yield f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}"


async def raw_run(b: Remote, handler: Callable[[ServerConnection], Awaitable[None]], **cmd: Any) -> list[Any]:
    async with raw_server(handler) as url:
        await b.send(cmd="raw", url=url, **cmd)
        results: list[Any] = (await b.expect("done", 600))["results"]
    return results


async def write_loop(store: KvStore, keys: Sequence[str], values: Sequence[str]) -> None:
    """A's writes as fast as they go, yielding to the event loop every YIELD_EVERY."""
    put = store.put
    for start in range(0, len(keys), YIELD_EVERY):
        for i in range(start, min(start + YIELD_EVERY, len(keys))):
            put(keys[i], values[i])
        await anyio.sleep(0)


@asynccontextmanager
async def served(store: KvStore, window: float | None = None) -> AsyncIterator[tuple[Node, Recording]]:
    transport = Recording(WebSocketTransport())
    settings = node_settings(window)
    async with Node(
        store, listen="ws://127.0.0.1:0", secret=SECRET, settings=settings, transports={"ws": transport}
    ) as node:
        yield node, transport


async def stop(b: Remote, node: Node) -> str:
    """Stop B's Node; wait until A's side of the link is gone; return B's digest."""
    await b.send(cmd="stop")
    digest: str = (await b.expect("stopped"))["digest"]
    with anyio.fail_after(30):
        while node.links:
            await anyio.sleep(0.005)
    return digest


async def one_entry_message() -> int:
    """Bytes of the Deltas message a Node sends a peer in step with it for one new register."""
    a, b = KvStore.open(STORE, replica_id="a"), KvStore.open(STORE, replica_id="b")
    network = MemoryNetwork()
    async with memory_node(a, network, "a") as (node, transport), memory_node(b, network, "b", "memory://a"):
        await node.wait_for_peers(1)
        link = transport.connections[-1]
        for i in range(2):  # the second message is the steady state: its base vector names A
            mark = len(link.sent)
            a.put(key_of(i), "v123456")
            await until_all(b, {key_of(i): "v123456"}, 60)
    return link.bytes_sent(since=mark)


async def throughput(o: Options) -> list[Row]:
    n, reps = o.size(200_000, 10_000), o.reps(5)
    keys, values = [key_of(i) for i in range(n)], [f"v{i}" for i in range(n)]
    one = await one_entry_message()
    runs: list[tuple[float, float, list[int], bool]] = []
    raw: list[float] = []
    small: list[float] = []
    alone: list[float] = []
    async with spawn("replication", "peer") as b:
        for r in range(reps):
            progress(f"write burst {r + 1}/{reps}: {n:,} keys; like-for-like loop; raw one message per entry")
            store = KvStore.open(STORE, replica_id="a")
            async with served(store) as (node, transport):
                await b.send(cmd="link", url=node.url, fresh=True, ready=True, last=(keys[-1], values[-1]))
                await b.expect("ready")
                await node.wait_for_peers(1)
                started = now_ns()
                await write_loop(store, keys, values)
                written = now_ns()
                done = (await b.expect("done", 600))["done"]
                agree = await stop(b, node) == store.digest()
            sizes = [size for t, size, _ in transport.connections[-1].sent if started <= t <= done]
            runs.append(((done - started) / 1e9, (written - started) / 1e9, sizes, agree))
            raw.append((await like_for_like(b, keys, values, len(sizes)))[0])
            began: list[int] = []

            async def send_one_entry_messages(ws: ServerConnection, began: list[int] = began) -> None:
                began.append(now_ns())
                payload = bytes(one)
                for _ in range(n):
                    await ws.send(payload)

            result = (await raw_run(b, send_one_entry_messages, count=n, rounds=1))[0]
            small.append((result["done"] - began[0]) / 1e9)
            started = now_ns()
            await write_loop(KvStore.open(STORE, replica_id="a"), keys, values)
            alone.append((now_ns() - started) / 1e9)
        await b.send(cmd="quit")
    seconds, written_s, sizes, _ = sorted(runs)[(len(runs) - 1) // 2]  # the median run (the lower one of two)
    rate = n / seconds
    raw_s, small_s, alone_s = (statistics.median_low(times) for times in (raw, small, alone))
    agree = all(run[3] for run in runs)
    equal = "yes" if agree else "UNEXPECTED: no"
    shape = f"{len(sizes)} messages, {sum(sizes) / 1e6:.2f} MB"
    rated = f"{fmt_num(rate)} entries/s"
    return [
        Row("1a", f"sustained replication: A puts {n:,} keys until B holds all", rated, goal=">= 100 k/s",
            met=met(rate >= 100_000 and agree),
            notes=f"median of {reps}; {shape}; digests equal {equal}"),
        Row("1b", "same, against raw websockets carrying the same entries", rated,
            f"{len(sizes)} messages: cbor2.dumps, send, cbor2.loads, stored in a dict",
            f"{fmt_num(n / raw_s)} entries/s", fmt_ratio(raw_s / seconds), ">= 0.5x",
            met(raw_s / seconds >= 0.5)),
        Row("1c", "same, against raw websockets sending one message per entry", rated,
            f"{n:,} messages of {one} B (one-entry messages)", f"{fmt_num(n / small_s)} msgs/s",
            fmt_ratio(small_s / seconds), notes="ratio > 1: crdtkv faster (batching)"),
        Row("1d", "A's put loop while replicating", fmt_time(written_s), "the same loop with no Node",
            fmt_time(alone_s), fmt_ratio(alone_s / written_s), notes="speed with a Node / without"),
    ]  # fmt: skip


async def latency(o: Options) -> list[Row]:
    """Three processes in a mesh: A writes one key per ms; B and C note when each arrives."""
    count = o.size(3_000, 300)
    one = await one_entry_message()

    async def paced(action: Callable[[int], Awaitable[None]]) -> None:
        start = anyio.current_time()
        for i in range(count):
            await anyio.sleep(max(0.0, start + i * 0.001 - anyio.current_time()))
            await action(i)

    async def crdtkv(window: float | None) -> tuple[list[float], list[dict[str, float]]]:
        """Delays at B and C (s), and the loop lag of A, B and C."""
        store = KvStore.open(STORE, replica_id="a")
        async with served(store, window) as (node, _):
            await b.send(cmd="latency", name="b", peers=[node.url], listen=True, n=count, window=window)
            url_b = (await b.expect("listening"))["url"]
            await c.send(cmd="latency", name="c", peers=[node.url, url_b], n=count, window=window)
            await c.expect("listening")
            await b.expect("ready")
            await c.expect("ready")
            await node.wait_for_peers(2)

            async def write(i: int) -> None:
                store.put(f"lat:{i:06d}", str(now_ns()))

            async with loop_lag() as lag:
                await paced(write)
                done = [await peer.expect("done") for peer in (b, c)]
            for peer in (b, c):
                await peer.send(cmd="stop")
                await peer.expect("stopped")
        delays = [d / 1e9 for result in done for d in result["delays"]]
        return delays, [lag.summary(), *(result["lag"] for result in done)]

    async def stamped(ws: ServerConnection) -> None:
        async def send(i: int) -> None:
            await ws.send(now_ns().to_bytes(8, "little") + bytes(max(0, one - 8)))

        await paced(send)

    async with spawn("replication", "peer") as b, spawn("replication", "peer") as c:
        progress(f"latency: {count:,} writes at one per ms, A to B and C; default window, raw, window 0")
        default, default_lag = await crdtkv(None)
        raw = [d / 1e9 for d in (await raw_run(b, stamped, count=count, rounds=1, stamped=True))[0]["delays"]]
        zero, zero_lag = await crdtkv(0.0)
        await b.send(cmd="quit")
        await c.send(cmd="quit")

    def spread(values: list[float], *qs: float) -> str:
        text = ", ".join(f"p{q * 100:g} {fmt_time(percentile(values, q))}" for q in qs)
        return f"{text}, max {fmt_time(max(values))}"

    def lags(summaries: list[dict[str, float]]) -> str:
        each = [
            f"{name} {fmt_time(lag['p99'])}"
            + (f" ({lag['waiting']:.0%} waiting for a CPU)" if lag["waiting"] >= 0 else "")
            for name, lag in zip("ABC", summaries, strict=True)
        ]
        return "event-loop lag p99: " + ", ".join(each)

    raw_text, p99 = f"raw one-way A to B: {spread(raw, 0.5, 0.99)}", percentile(default, 0.99)
    return [
        Row("2a", "propagation latency, 3 processes in a mesh, A writes one key per ms, arrival at B and C; "
            "default 2 ms batch window", spread(default, 0.5, 0.99), f"{one} B messages", raw_text, "-",
            "p99 < 5 ms", met(p99 < 0.005), lags(default_lag)),
        Row("2b", "same with `batch_window=0`", spread(zero, 0.5, 0.99), f"{one} B messages", raw_text,
            notes=lags(zero_lag)),
    ]  # fmt: skip


async def catch_up(o: Options) -> list[Row]:
    n, rounds = o.size(1_000_000, 10_000), o.size(10, 1)
    keys = [key_of(i) for i in range(n)]
    store = KvStore.open(STORE, replica_id="a")
    await write_loop(store, keys, [f"v{i}" for i in range(n)])
    rng = random.Random(3)
    times: list[float] = []
    sent: list[tuple[int, int, int, int]] = []  # Deltas bytes and all bytes: crdtkv, then the minimal sync
    async with served(store) as (node, transport), spawn("replication", "peer") as b:
        progress(f"catch-up: B syncs {n:,} keys, then {rounds} rounds of {CHANGED:,} changes")
        await b.send(cmd="link", url=node.url, last=(keys[-1], f"v{n - 1}"))
        done = await b.expect("done", 600)
        initial = (done["done"] - done["started"]) / 1e9
        await stop(b, node)
        agree = held = True
        for r in range(rounds):
            expect = {keys[i]: f"r{r}:{i}" for i in sorted(rng.sample(range(n), CHANGED))}
            for key, value in expect.items():
                store.put(key, value)
            await b.send(cmd="link", url=node.url, last=(key, value), expect=expect)  # the last put
            done = await b.expect("done")
            held = held and done["held"]
            times.append((done["done"] - done["started"]) / 1e9)
            agree = await stop(b, node) == store.digest() and held
            minimal = KvStore.open(STORE, replica_id="a")
            for key, value in expect.items():
                minimal.put(key, value)
            link: Recorded = transport.connections[-1]
            least = await sync_to_empty(minimal, expect)
            framed = [sum(ws_frame(size) for _, size, _ in c.sent) for c in (link, least)]
            sent.append((link.bytes_sent(), framed[0], least.bytes_sent(), framed[1]))
        size = round(statistics.median(s[2] for s in sent))

        async def greet(ws: ServerConnection) -> None:
            await ws.send(bytes(size))

        raw = [(x["done"] - x["started"]) / 1e9 for x in await raw_run(b, greet, count=1, rounds=rounds)]
        await b.send(cmd="quit")
    deltas, wire, least_deltas, least_wire = (statistics.median(s[i] for s in sent) for i in range(4))
    worst = max(max(s[0] / s[2], s[1] / s[3]) for s in sent)
    equal = "yes" if agree else "UNEXPECTED: no"
    took, floor = statistics.median(times), statistics.median(raw)
    return [
        Row("3a", f"catch-up after a partition, {CHANGED:,} keys changed in {n:,}: Deltas bytes sent",
            f"{deltas:,.0f} B", "the same keys synced to an empty replica", f"{least_deltas:,.0f} B",
            fmt_ratio(deltas / least_deltas), "<= 2x", met(worst <= 2),
            f"median of {rounds}; every change held, digests equal: {equal}"),
        Row("3b", "same, every message A sent, with WebSocket framing", f"{wire:,.0f} B",
            "the same for the sync to an empty replica", f"{least_wire:,.0f} B", fmt_ratio(wire / least_wire),
            "<= 2x", met(worst <= 2)),
        Row("3c", f"catch-up time: B starts a Node until it holds the {CHANGED:,} changes",
            f"median {fmt_time(took)}, max {fmt_time(max(times))}", f"raw connect + one {size:,} B message",
            f"median {fmt_time(floor)}", fmt_ratio(took / floor), "< 100 ms", met(max(times) < 0.1)),
        Row("3d", f"initial sync of {n:,} keys to an empty replica", f"{fmt_num(n / initial)} entries/s",
            notes=f"{fmt_time(initial)} from B starting its Node"),
    ]  # fmt: skip


def in_loop(fn: Callable[[Options], Awaitable[list[Row]]]) -> Callable[[Options], list[Row]]:
    return lambda o: anyio.run(fn, o)


case("replication-throughput", "two processes: A puts keys until B holds all, against raw websockets")(
    in_loop(throughput)
)
case("replication-latency", "three processes in a mesh: write-to-arrival latency at one write per ms")(
    in_loop(latency)
)
case("replication-catch-up", "two processes: catch-up after a partition, bytes and time")(in_loop(catch_up))

"""``crdtkv demo``: three PoPs replicate over WebSockets and count page views two ways.

Three replica nodes (London, Sydney, New York) run in this process, each with
its own store and a WebSocket listener on loopback, connected in a full mesh.
Every PoP serves page-view traffic concurrently and counts each view twice:
the classic edge-KV way (read the counter, add one, write it back) and with
``incr``. A live view shows each PoP's values converging; at the end the demo
prints the exact totals, what read-modify-write lost, and the measured
propagation latency of small writes between PoPs.
"""

from __future__ import annotations

import math
import random
import statistics
import time
from collections.abc import Sequence

import anyio

from .core.feed import Cause, Stage, Subscriber
from .errors import InvalidArgument
from .node import Node
from .store import KvStore
from .transport import Transport, transport_factory

POPS = ("london", "sydney", "new-york")
#: Share of the traffic each PoP serves.
SHARES = (0.45, 0.20, 0.35)
RMW_KEY = "views:read-modify-write"
INCR_KEY = "views:incr"
SECRET = b"demo-shared-secret"


class LatencyProbe:
    """Writes timestamped probe keys at one PoP and notes when others see them."""

    def __init__(self, source: KvStore, sinks: list[KvStore]) -> None:
        self.source = source
        self.sent: dict[str, int] = {}
        self.samples: list[float] = []
        self._pending: list[dict[str, int]] = []
        for sink in sinks:
            pending: dict[str, int] = {}
            self._pending.append(pending)
            sink.replica.feed.subscribe(self._watcher(sink, pending), Stage.REPLICATION)

    def _watcher(self, sink: KvStore, pending: dict[str, int]) -> Subscriber:
        def changed(keys: Sequence[str], cause: Cause) -> None:
            now = time.perf_counter_ns()
            for key in [key for key in pending if key in sink]:
                self.samples.append((now - pending.pop(key)) / 1e6)

        return changed

    def send(self, number: int) -> None:
        key = f"probe:{number}"
        now = time.perf_counter_ns()
        for pending in self._pending:
            pending[key] = now
        self.source.put(key, number, ttl=60.0)


def _percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def _traffic(store: KvStore, views: int, seconds: float, rnd: random.Random) -> None:
    """Serve ``views`` page views spread over ``seconds``, in small bursts."""
    deadline = time.monotonic() + seconds
    served = 0
    while served < views:
        burst = min(views - served, rnd.randint(1, 20))
        for _ in range(burst):
            store.put(RMW_KEY, store.get(RMW_KEY, 0) + 1)  # the classic: read, add one, write back
            store.incr(INCR_KEY)
        served += burst
        remaining = max(0.0, deadline - time.monotonic())
        await anyio.sleep(remaining * burst / max(1, views - served + burst) * rnd.uniform(0.5, 1.5))


def _row(label: str, stores: list[KvStore]) -> str:
    cells = [f"{s.get(RMW_KEY, 0):>9,} / {s.get(INCR_KEY, 0):>8,}" for s in stores]
    return f"{label:>7}  " + "  ".join(f"{cell:>20}" for cell in cells)


async def _run(total: int, seconds: float, seed: int, wan_delay: float) -> int:
    rnd = random.Random(seed)
    transports: dict[str, Transport] | None = None
    urls = ["ws://127.0.0.1:0"] * len(POPS)
    if wan_delay > 0:
        # the in-process transport (a plug-in, found by its scheme) on a network of its
        # own that delays each message on its own, like a WAN link
        transports = {"memory": transport_factory("memory")(seed=seed, delay=wan_delay)}
        urls = [f"memory://{pop}" for pop in POPS]
    stores = [KvStore.open("demo", replica_id=pop) for pop in POPS]
    per_pop = [round(total * share) for share in SHARES]
    per_pop[0] += total - sum(per_pop)
    shares = ", ".join(f"{pop} {count:,}" for pop, count in zip(POPS, per_pop, strict=True))
    print(f"crdtkv demo: {total:,} page views at {len(POPS)} PoPs ({shares}) over about {seconds:g} s.")
    if wan_delay > 0:
        print(
            f"Each PoP is a replica node on the in-process transport, {wan_delay * 1000:g} ms one-way"
            " between any two, in a full mesh, with a shared secret.\n"
        )
    else:
        print("Each PoP is a replica node on a loopback WebSocket, in a full mesh, with a shared secret.\n")
    async with (
        Node(stores[2], listen=urls[2], secret=SECRET, transports=transports) as newyork,
        Node(
            stores[1],
            listen=urls[1],
            peers=[newyork.url or ""],
            secret=SECRET,
            transports=transports,
        ) as sydney,
        Node(
            stores[0],
            listen=urls[0],
            peers=[sydney.url or "", newyork.url or ""],
            secret=SECRET,
            transports=transports,
        ) as london,
    ):
        await london.wait_for_peers(2)
        await sydney.wait_for_peers(2)
        await newyork.wait_for_peers(2)
        for pop, node in zip(POPS, (london, sydney, newyork), strict=True):
            print(f"  {pop:<9} {node.url}")
        print("\n   time  " + "  ".join(f"{pop:>20}" for pop in POPS))
        print("         " + "  ".join(f"{'read+write / incr':>20}" for _ in POPS))
        probe = LatencyProbe(stores[0], stores[1:])
        started = time.monotonic()
        async with anyio.create_task_group() as group:
            for store, views in zip(stores, per_pop, strict=True):
                group.start_soon(_traffic, store, views, seconds, random.Random(rnd.random()))

            async def report() -> None:
                number = 0
                while True:
                    for _ in range(10):
                        await anyio.sleep(0.05)
                        number += 1
                        probe.send(number)
                    print(_row(f"{time.monotonic() - started:5.1f}s", stores), flush=True)

            group.start_soon(report)
            await anyio.sleep(seconds)
            while any(s.get(INCR_KEY, 0) < sum(per_pop) for s in stores) and time.monotonic() - started < 60:
                await anyio.sleep(0.05)
            group.cancel_scope.cancel()
        with anyio.fail_after(30):
            while len({store.digest() for store in stores}) > 1:
                await anyio.sleep(0.01)
        print(_row("final", stores))
    elapsed = time.monotonic() - started
    rmw = stores[0].get(RMW_KEY)
    incr = stores[0].get(INCR_KEY)
    samples = probe.samples
    print(f"\nafter {elapsed:.1f} s, all PoPs converged (equal digests: {stores[0].digest()[:16]}...):")
    print(f"  page views served:          {total:>9,}")
    lost = total - rmw
    print(f"  read-modify-write counter:  {rmw:>9,}  ({lost:,} increments lost, {lost / total:.0%})")
    print(f"  incr counter:               {incr:>9,}  ({total - incr:,} increments lost)")
    if samples:
        print(
            f"  propagation London -> Sydney/New York: p50 {statistics.median(samples):.2f} ms, "
            f"p99 {_percentile(samples, 0.99):.2f} ms ({len(samples)} probes, under load)"
        )
    ok = incr == total
    if not ok:
        print("  ERROR: incr lost increments")
    return 0 if ok else 2


def run(total: int = 30_000, seconds: float = 5.0, seed: int = 2026, wan_delay: float = 0.0) -> int:
    """Run the demo; return the process exit code (0, or 2 if incr lost increments).

    ``wan_delay``: seconds added to every message. Raises InvalidArgument for
    no page views, a run time that is not a positive number of seconds, or a
    negative delay.
    """
    if type(total) is not int or total < 1:
        raise InvalidArgument(f"the demo needs at least 1 page view, not {total!r}")
    if not (isinstance(seconds, int | float) and math.isfinite(seconds) and seconds > 0):
        raise InvalidArgument(f"the demo runs for a positive number of seconds, not {seconds!r}")
    if not (isinstance(wan_delay, int | float) and math.isfinite(wan_delay) and wan_delay >= 0):
        raise InvalidArgument(f"the WAN delay must be zero or more, not {wan_delay!r}")
    return anyio.run(_run, total, seconds, seed, wan_delay)

"""``crdtkv demo``: three PoPs replicate over WebSockets and count page views two ways.

Three replica nodes (London, Sydney, New York) each run in a process of their
own (:mod:`crdtkv.demo_pop`), as a deployment runs them, with their own store
and a WebSocket listener on loopback, connected in a full mesh. Every PoP
serves its share of the page-view traffic and counts each view twice: the
classic edge-KV way (read the counter, add one, write it back) and with
``incr``. A live view shows each PoP's values converging; at the end the demo
prints the exact totals, what read-modify-write lost, the propagation latency
of small writes from London to the others (timed across processes with the
machine's monotonic clock) and each process's event-loop lag.

The children are killed on any failure and on Ctrl-C, and stop by themselves
when this process goes away, so no PoP outlives the demo.
"""

from __future__ import annotations

import json
import math
import statistics
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.abc
from anyio.streams.buffered import BufferedByteReceiveStream
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from .demo_pop import POPS, percentile
from .errors import CrdtKvError, InvalidArgument

#: Share of the traffic each PoP serves.
SHARES = (0.45, 0.20, 0.35)
#: How long a PoP's process may take to start, link up, or answer a command.
STEP_TIMEOUT = 30.0
#: How long the demo waits after the traffic for every PoP to count every view.
COUNT_TIMEOUT = 60.0
#: Longest event line a PoP sends (its report carries the probe delays).
MAX_LINE = 1 << 24


class DemoFailed(CrdtKvError):
    """A PoP's process failed or exited early; the message says which and why."""


@dataclass
class Pop:
    """The demo's handle on one PoP's process: JSON-line commands in, events out."""

    name: str
    process: anyio.abc.Process
    stdin: anyio.abc.ByteSendStream
    url: str = ""
    last: dict[str, Any] = field(default_factory=dict)

    async def send(self, command: str, **fields: Any) -> None:
        try:
            await self.stdin.send(json.dumps({"cmd": command, **fields}).encode() + b"\n")
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            raise DemoFailed(f"the {self.name} PoP's process is gone") from None


#: (the PoP, one of its events)
Event = tuple[Pop, dict[str, Any]]


async def read_events(pop: Pop, events: MemoryObjectSendStream[Event]) -> None:
    """Pass on each event line of ``pop``; end with an ``exit`` event when its output closes."""
    assert pop.process.stdout is not None
    lines = BufferedByteReceiveStream(pop.process.stdout)
    try:
        while True:
            event = json.loads(await lines.receive_until(b"\n", MAX_LINE))
            await events.send((pop, event))
    except (anyio.EndOfStream, anyio.IncompleteRead, anyio.DelimiterNotFound, json.JSONDecodeError):
        await events.send((pop, {"event": "exit"}))


class Events:
    """Every PoP's events in one stream, in arrival order."""

    def __init__(self, receive: MemoryObjectReceiveStream[Event]) -> None:
        self.receive = receive

    async def next(self) -> Event:
        pop, event = await self.receive.receive()
        if event["event"] == "error":
            raise DemoFailed(f"the {pop.name} PoP failed: {event['error']}")
        if event["event"] == "exit":
            code = await pop.process.wait()
            raise DemoFailed(f"the {pop.name} PoP's process exited early (exit code {code})")
        return pop, event

    async def gather(self, event: str, pops: list[Pop]) -> None:
        """Wait for ``event`` from each of ``pops``, keeping its fields in ``pop.last``.

        Late news of the traffic (ticks, counted) is skipped.
        """
        waiting = set(map(id, pops))
        with anyio.fail_after(STEP_TIMEOUT):
            while waiting:
                pop, received = await self.next()
                if received["event"] in ("tick", "counted"):
                    continue
                if received["event"] != event or id(pop) not in waiting:
                    raise DemoFailed(f"the {pop.name} PoP sent {received['event']!r}, not {event!r}")
                pop.last = received
                waiting.discard(id(pop))


@asynccontextmanager
async def pop_processes(configs: list[dict[str, Any]]) -> AsyncIterator[tuple[list[Pop], Events]]:
    """Start one process per PoP; on the way out ask them to quit, and kill any still running."""
    send, receive = anyio.create_memory_object_stream[Event](math.inf)
    pops: list[Pop] = []
    try:
        with send, receive:
            async with anyio.create_task_group() as readers:
                for config in configs:
                    process = await anyio.open_process(
                        [sys.executable, "-m", "crdtkv.demo_pop", json.dumps(config)], stderr=None
                    )
                    assert process.stdin is not None
                    pops.append(Pop(config["pop"], process, process.stdin))
                    readers.start_soon(read_events, pops[-1], send)
                try:
                    yield pops, Events(receive)
                    for pop in pops:
                        await pop.send("quit")
                    with anyio.fail_after(STEP_TIMEOUT):
                        for pop in pops:
                            await pop.process.wait()
                finally:
                    readers.cancel_scope.cancel()
    finally:
        with anyio.CancelScope(shield=True):
            for pop in pops:
                if pop.process.returncode is None:
                    pop.process.kill()
            for pop in pops:
                await pop.process.wait()
                await pop.process.aclose()


def _row(label: str, values: list[dict[str, Any]]) -> str:
    cells = [f"{v.get('rmw', 0):>9,} / {v.get('incr', 0):>8,}" for v in values]
    return f"{label:>7}  " + "  ".join(f"{cell:>20}" for cell in cells)


async def _run(total: int, seconds: float, seed: int, wan_delay: float) -> int:
    per_pop = [round(total * share) for share in SHARES]
    per_pop[0] += total - sum(per_pop)
    shares = ", ".join(f"{pop} {count:,}" for pop, count in zip(POPS, per_pop, strict=True))
    print(f"crdtkv demo: {total:,} page views at {len(POPS)} PoPs ({shares}) over about {seconds:g} s.")
    link = "a loopback WebSocket"
    if wan_delay > 0:
        link += f" that holds every message back {wan_delay * 1000:g} ms one-way, like a WAN"
    print(f"Each PoP is a replica node in its own process on {link}, in a full mesh, with a shared secret.\n")
    configs = [
        {"pop": pop, "views": views, "total": total, "seconds": seconds, "seed": seed * 31 + i,
         "wan_delay": wan_delay, "probe": i == 0}
        for i, (pop, views) in enumerate(zip(POPS, per_pop, strict=True))
    ]  # fmt: skip
    async with pop_processes(configs) as (pops, events):
        # the last PoP listens first; each one before it dials every PoP after it: a full mesh
        for i in reversed(range(len(pops))):
            await pops[i].send("start", peers=[pop.url for pop in pops[i + 1 :]])
            await events.gather("listening", [pops[i]])
            pops[i].url = pops[i].last["url"]
        await events.gather("ready", pops)
        for pop in pops:
            print(f"  {pop.name:<9} {pop.url}")
        print("\n   time  " + "  ".join(f"{pop:>20}" for pop in POPS))
        print("         " + "  ".join(f"{'read+write / incr':>20}" for _ in POPS))
        started = time.monotonic()
        for pop in pops:
            await pop.send("go")
        ticks: dict[int, dict[str, dict[str, Any]]] = {}
        counted: set[str] = set()
        with anyio.move_on_after(seconds + COUNT_TIMEOUT):
            while len(counted) < len(pops):
                pop, event = await events.next()
                if event["event"] == "counted":
                    counted.add(pop.name)
                elif event["event"] == "tick":
                    row = ticks.setdefault(event["n"], {})
                    row[pop.name] = event
                    if len(row) == len(pops):
                        label = f"{time.monotonic() - started:5.1f}s"
                        print(_row(label, [row[name] for name in POPS]), flush=True)
                        del ticks[event["n"]]
        for pop in pops:
            await pop.send("stop")
        await events.gather("stopped", pops)
        with anyio.fail_after(STEP_TIMEOUT):
            while True:
                for pop in pops:
                    await pop.send("digest")
                await events.gather("digest", pops)
                if len({pop.last["digest"] for pop in pops}) == 1:
                    break
                await anyio.sleep(0.01)
        elapsed = time.monotonic() - started
        for pop in pops:
            await pop.send("report")
        await events.gather("report", pops)
        reports = [pop.last for pop in pops]
    print(_row("final", reports))
    rmw, incr, digest = reports[0]["rmw"], reports[0]["incr"], reports[0]["digest"]
    samples = [delay for report in reports for delay in report["delays"]]
    print(f"\nafter {elapsed:.1f} s, all PoPs converged (equal digests: {digest[:16]}...):")
    print(f"  page views served:          {total:>9,}")
    lost = total - rmw
    print(f"  read-modify-write counter:  {rmw:>9,}  ({lost:,} increments lost, {lost / total:.0%})")
    print(f"  incr counter:               {incr:>9,}  ({total - incr:,} increments lost)")
    if samples:
        print(
            f"  propagation London -> Sydney/New York: p50 {statistics.median(samples):.2f} ms, "
            f"p99 {percentile(samples, 0.99):.2f} ms ({len(samples)} probes, under load)"
        )
    lags = ", ".join(f"{pop} {report['lag_p99']:.2f} ms" for pop, report in zip(POPS, reports, strict=True))
    print(f"  event-loop lag p99 (each PoP's process): {lags}")
    ok = incr == total
    if not ok:
        print("  ERROR: incr lost increments")
    return 0 if ok else 2


def run(total: int = 30_000, seconds: float = 5.0, seed: int = 2026, wan_delay: float = 0.0) -> int:
    """Run the demo; return the process exit code (0, or 2 if incr lost increments).

    ``wan_delay``: seconds every message is held back on arrival. Raises
    InvalidArgument for no page views, a run time that is not a positive
    number of seconds, or a negative delay, and DemoFailed if a PoP's process
    fails.
    """
    if type(total) is not int or total < 1:
        raise InvalidArgument(f"the demo needs at least 1 page view, not {total!r}")
    if not (isinstance(seconds, int | float) and math.isfinite(seconds) and seconds > 0):
        raise InvalidArgument(f"the demo runs for a positive number of seconds, not {seconds!r}")
    if not (isinstance(wan_delay, int | float) and math.isfinite(wan_delay) and wan_delay >= 0):
        raise InvalidArgument(f"the WAN delay must be zero or more, not {wan_delay!r}")
    try:
        return anyio.run(_run, total, seconds, seed, wan_delay)
    except BaseExceptionGroup as group:  # the task groups' wrapping of one failure
        leaf: BaseException = group
        while isinstance(leaf, BaseExceptionGroup) and len(leaf.exceptions) == 1:
            leaf = leaf.exceptions[0]
        if leaf is group:
            raise
        raise leaf from None

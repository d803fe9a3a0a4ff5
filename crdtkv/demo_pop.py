"""One PoP of ``crdtkv demo`` in a process of its own, as a deployment runs it.

``python -m crdtkv.demo_pop CONFIG`` (CONFIG: a JSON object, see :func:`main`)
runs one replica node on a loopback WebSocket and serves its share of the
page views. The parent (:mod:`crdtkv.demo`) drives it with JSON-line
commands on stdin and reads JSON-line events on stdout:

* ``start`` (``peers``: URLs to dial) -> ``listening`` (``url``), then ``ready``
  once linked to every other PoP;
* ``go`` -> ``tick`` every half second (the PoP's two counters), ``counted``
  once its ``incr`` counter holds every page view of the demo;
* ``stop`` -> ``stopped``; ``digest`` -> ``digest``; ``report`` -> ``report``
  (counters, probe delays seen here, event-loop lag); ``quit`` ends it.

The probe PoP also writes a probe key every 50 ms whose value is
``time.monotonic_ns()`` at the write; the others note, when the change is
applied, how long it took. On Linux (and macOS) the monotonic clock is one
clock for the whole machine, so times taken in two processes subtract.

A child never outlives the demo: it stops when its stdin closes (the parent
is gone) and exits quietly on Ctrl-C.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import sys
import time
from collections.abc import Sequence
from typing import Any

import anyio
import anyio.abc

from .core.feed import Cause, Stage
from .errors import CrdtKvError, LinkClosed
from .node import Node
from .store import KvStore
from .transport import Connection, Handler, Listener, Transport, TransportSettings, transport_factory

POPS = ("london", "sydney", "new-york")
STORE = "demo"
RMW_KEY = "views:read-modify-write"
INCR_KEY = "views:incr"
PROBE_PREFIX = "probe:"
SECRET = b"demo-shared-secret"
#: How often each PoP reports its counters, and how many probes the probe PoP writes in between.
TICK = 0.5
PROBES_PER_TICK = 10
#: Messages a held-back link buffers before it stops reading (and the sender is slowed down).
HELD_MESSAGES = 1024


def emit(event: str, **fields: Any) -> None:
    """One event to the parent, as a JSON line on stdout."""
    sys.stdout.write(json.dumps({"event": event, **fields}) + "\n")
    sys.stdout.flush()


def percentile(samples: Sequence[float], fraction: float) -> float:
    """The ``fraction`` quantile of ``samples`` (nearest rank below); NaN for no samples."""
    if not samples:
        return math.nan
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


class Commands:
    """The parent's commands, read from stdin without a thread; stdin closing cancels ``scope``."""

    def __init__(self, scope: anyio.CancelScope, fd: int = 0) -> None:
        self.scope = scope
        self.fd = fd
        self._send, self._received = anyio.create_memory_object_stream[dict[str, Any]](math.inf)

    async def read(self) -> None:
        """Parse command lines until stdin closes; then cancel the PoP (the parent is gone)."""
        buffer = b""
        while True:
            await anyio.wait_readable(self.fd)
            chunk = os.read(self.fd, 1 << 16)
            if not chunk:
                self.scope.cancel()
                return
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                self._send.send_nowait(json.loads(line))

    def __enter__(self) -> Commands:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._send.close()
        self._received.close()

    async def expect(self, command: str) -> dict[str, Any]:
        """The next command, which must be ``command``."""
        received = await self._received.receive()
        if received.get("cmd") != command:
            raise CrdtKvError(f"expected the command {command!r} from the demo, got {received!r}")
        return received

    async def next(self) -> dict[str, Any]:
        return await self._received.receive()


class LagMeter:
    """How late the event loop runs a task that is due: the oversleep of a 1 ms sleep, in ms."""

    def __init__(self) -> None:
        self.samples: list[float] = []

    async def run(self) -> None:
        while True:
            began = time.perf_counter_ns()
            await anyio.sleep(0.001)
            self.samples.append((time.perf_counter_ns() - began) / 1e6 - 1.0)


class Arrivals:
    """Notes, as each probe key is applied here, how long ago the probe PoP wrote it (ms)."""

    def __init__(self, store: KvStore) -> None:
        self.store = store
        self.delays: list[float] = []
        self._seen: set[str] = set()
        store.replica.feed.subscribe(self.changed, Stage.REPLICATION)

    def changed(self, keys: Sequence[str], cause: Cause) -> None:
        now = time.monotonic_ns()
        for key in keys:
            if key.startswith(PROBE_PREFIX) and key not in self._seen:
                written = self.store.get(key)
                if isinstance(written, int):
                    self._seen.add(key)
                    self.delays.append((now - written) / 1e6)


class HeldBackLink:
    """A connection whose received messages are held back ``delay`` seconds from their arrival.

    A task (:meth:`pump`) reads the inner link as messages come, so each is
    delayed from when it arrived, not from when the node asked for it, and
    several are in flight at once, as on a long link.
    """

    def __init__(self, inner: Connection, delay: float) -> None:
        self.inner = inner
        self.delay = delay
        self.closed = LinkClosed()
        self._send, self._arrived = anyio.create_memory_object_stream[tuple[float, bytes]](HELD_MESSAGES)
        self._scope = anyio.CancelScope()

    @property
    def remote(self) -> str:
        return self.inner.remote

    async def send(self, message: bytes) -> None:
        await self.inner.send(message)

    async def receive(self) -> bytes:
        try:
            arrived, message = await self._arrived.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            raise self.closed from None
        await anyio.sleep_until(arrived + self.delay)
        return message

    async def pump(self) -> None:
        """Take messages off the inner link as they arrive, noting when."""
        with self._scope, self._send:
            try:
                while True:
                    message = await self.inner.receive()
                    await self._send.send((anyio.current_time(), message))
            except LinkClosed as closed:
                self.closed = closed

    async def aclose(self) -> None:
        self._scope.cancel()
        self._arrived.close()
        await self.inner.aclose()


class HeldBack:
    """A transport that holds every message back ``delay`` seconds on arrival, like a WAN link."""

    def __init__(self, inner: Transport, delay: float, tasks: anyio.abc.TaskGroup) -> None:
        self.inner = inner
        self.delay = delay
        self.tasks = tasks

    def held(self, connection: Connection) -> HeldBackLink:
        link = HeldBackLink(connection, self.delay)
        self.tasks.start_soon(link.pump)
        return link

    async def connect(self, url: str, settings: TransportSettings) -> Connection:
        return self.held(await self.inner.connect(url, settings))

    async def listen(self, url: str, handler: Handler, settings: TransportSettings) -> Listener:
        async def serve(connection: Connection) -> None:
            link = self.held(connection)
            try:
                await handler(link)
            finally:
                await link.aclose()

        return await self.inner.listen(url, serve, settings)


async def traffic(store: KvStore, views: int, seconds: float, rnd: random.Random) -> None:
    """Serve ``views`` page views spread over ``seconds``, in small bursts, counting each twice."""
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


def counters(store: KvStore) -> dict[str, int]:
    return {"rmw": store.get(RMW_KEY, 0), "incr": store.get(INCR_KEY, 0)}


async def ticks(store: KvStore, probe: bool) -> None:
    """Report the counters every TICK; the probe PoP writes PROBES_PER_TICK probes in between."""
    number = 0
    tick = 0
    while True:
        for _ in range(PROBES_PER_TICK):
            await anyio.sleep(TICK / PROBES_PER_TICK)
            if probe:
                number += 1
                store.put(f"{PROBE_PREFIX}{number}", time.monotonic_ns(), ttl=60.0)
        tick += 1
        emit("tick", n=tick, **counters(store))


async def until_counted(store: KvStore, total: int) -> None:
    """Tell the parent once this PoP's ``incr`` counter holds every page view of the demo."""
    while store.get(INCR_KEY, 0) < total:
        await anyio.sleep(0.01)
    emit("counted")


async def run_pop(config: dict[str, Any]) -> None:
    """Run one PoP through the demo's commands (see the module docstring)."""
    store = KvStore.open(STORE, replica_id=config["pop"])
    scope = anyio.CancelScope()
    with scope, Commands(scope) as commands:
        await serve_pop(config, store, commands)


async def serve_pop(config: dict[str, Any], store: KvStore, commands: Commands) -> None:
    """Run one PoP's node and traffic through the parent's commands."""
    delay = float(config["wan_delay"])
    arrivals = None if config["probe"] else Arrivals(store)
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(commands.read)
        start = await commands.expect("start")
        transports: dict[str, Transport] | None = None
        if delay > 0:
            transports = {"ws": HeldBack(transport_factory("ws")(), delay, tasks)}
        async with Node(
            store, listen="ws://127.0.0.1:0", peers=start["peers"], secret=SECRET, transports=transports
        ) as node:
            emit("listening", url=node.url)
            await node.wait_for_peers(len(POPS) - 1, timeout=30)
            emit("ready")
            await commands.expect("go")
            lag = LagMeter()
            async with anyio.create_task_group() as group:
                group.start_soon(lag.run)
                rnd = random.Random(config["seed"])
                group.start_soon(traffic, store, config["views"], config["seconds"], rnd)
                group.start_soon(ticks, store, config["probe"])
                group.start_soon(until_counted, store, config["total"])
                await commands.expect("stop")
                group.cancel_scope.cancel()
            emit("stopped", **counters(store))
            while (command := await commands.next()).get("cmd") == "digest":
                emit("digest", digest=store.digest())
            if command.get("cmd") != "report":
                raise CrdtKvError(f"expected the command 'report' from the demo, got {command!r}")
            emit(
                "report",
                digest=store.digest(),
                delays=arrivals.delays if arrivals else [],
                lag_p99=percentile(lag.samples, 0.99),
                **counters(store),
            )
            await commands.expect("quit")
        tasks.cancel_scope.cancel()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the PoP configured by the JSON object in ``argv[0]``.

    Keys: ``pop`` (its name), ``views`` (page views it serves), ``total`` (of
    the whole demo), ``seconds``, ``seed``, ``wan_delay`` (seconds each
    message is held back on arrival) and ``probe`` (whether it writes the
    latency probes). Returns 0, or 1 after telling the parent what failed.
    """
    args = sys.argv[1:] if argv is None else list(argv)
    try:
        anyio.run(run_pop, json.loads(args[0]))
    except KeyboardInterrupt:
        return 130  # Ctrl-C reached the whole process group: the parent reports it
    except BaseException as exc:  # the parent prints it
        while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
            exc = exc.exceptions[0]
        with contextlib.suppress(OSError):  # the parent is gone
            emit("error", error=f"{type(exc).__name__}: {exc}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""By-hand benchmark of crdtkv replication between two processes over loopback WebSockets.

Run it by hand and paste the Markdown table it prints into the README. CI runs
it with ``--quick`` (tests/test_bench.py), which checks that it still runs and
that every measurement succeeds (the exit status is 1 if one failed), not its
figures. Process A (this script) runs a :class:`~crdtkv.node.Node` listening on
``ws://127.0.0.1:0``; process B (the same script started again with ``--role
...`` through ``sys.executable``) runs a Node dialing A, with the same store
name and shared secret. Every figure is measured in the run, and set against a
baseline measured in the same run between the same two processes: a plain
``websockets`` (asyncio API, ``compression=None``, crdtkv's size and queue
limits) send loop.

1. Sustained replication. A puts N new keys as fast as it can, yielding to the
   event loop every 1,000 puts; B notes (in a store listener) when it holds all
   N. Baselines: (a) the same number of messages of the same sizes as crdtkv
   sent, replayed by a raw send loop; (b) one message per entry, each the size
   of a one-entry crdtkv message (no batching). Round-robin, best of R.
2. Propagation latency. A writes one key every 1 ms; the value is the write
   time; B's store listener notes each key's arrival. Baseline: a raw message
   every 1 ms carrying its send time.
3. Catch-up after a partition. B syncs a large store from A, stops its Node
   (keeping the store), A overwrites 1,000 keys, B starts a new Node. Bytes
   A sent on the new link against ``encode_delta`` of exactly those 1,000
   entries, and the time until B holds them all. Baseline: a raw websockets
   connect plus one message of the minimal delta's size.

Both processes time with ``time.monotonic_ns`` (``clock_gettime(CLOCK_MONOTONIC)``,
one clock for the whole machine on Linux), so a time taken in A and one taken
in B can be subtracted. The header line prints the clock's implementation.

Usage::

    .venv/bin/python bench/replication.py              # N = 200,000 keys, 1,000,000-key catch-up store
    .venv/bin/python bench/replication.py --quick      # a smoke run in seconds (CI): N = 10,000, one run each
    .venv/bin/python bench/replication.py --only throughput --profile /tmp/prof   # cProfile both sides
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import itertools
import json
import math
import os
import platform
import random
import statistics
import struct
import sys
import threading
import time
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.abc
import anyio.from_thread
import anyio.lowlevel
from anyio.streams.buffered import BufferedByteReceiveStream
from report import (  # before crdtkv: it makes crdtkv importable from a checkout without `pip install -e .`
    Row,
    command_line,
    crdtkv_revision,
    exit_status,
    fmt_num,
    fmt_ratio,
    header,
    met,
    print_results,
    progress,
    version_of,
)
from websockets.asyncio.client import connect as ws_connect
from websockets.asyncio.server import Server, ServerConnection
from websockets.asyncio.server import serve as ws_serve

from crdtkv import KvStore
from crdtkv.core.codec import Delta, encode_delta
from crdtkv.core.messages import Deltas, encode_message
from crdtkv.core.sync import SyncSettings
from crdtkv.node import Node, NodeSettings
from crdtkv.transport import Connection, Handler, Listener, TransportSettings
from transports.websocket import WebSocketTransport

SCRIPT = os.path.abspath(__file__)
STORE = "bench-replication"
SECRET = b"bench-replication-secret"

DEFAULT_KEYS = 200_000
QUICK_KEYS = 10_000
DEFAULT_REPEATS = 5
QUICK_REPEATS = 1
#: puts between two yields to the event loop in the write burst
YIELD_EVERY = 1_000
#: writes in the latency run, one every LATENCY_INTERVAL seconds
LATENCY_WRITES = 3_000
QUICK_LATENCY_WRITES = 300
LATENCY_INTERVAL = 0.001
DEFAULT_CATCHUP_KEYS = 1_000_000
QUICK_CATCHUP_KEYS = 10_000
CHANGED_KEYS = 1_000
DEFAULT_ROUNDS = 10
QUICK_ROUNDS = 1

THROUGHPUT_GOAL = 100_000.0
RAW_RATIO_GOAL = 0.5
LATENCY_P99_GOAL = 0.005
CATCHUP_BYTES_GOAL = 2.0
CATCHUP_TIME_GOAL = 0.100

#: the transport limits crdtkv uses, applied to the raw baseline too
TRANSPORT = TransportSettings()
READY_TIMEOUT = 30.0
MAX_LINE = 64 * 1024 * 1024
EXIT_ORPHANED = 70

now_ns = time.monotonic_ns


@contextmanager
def profiled(directory: str | None, name: str) -> Iterator[None]:
    """Run the body under cProfile and dump ``directory/name-pid.prof`` (nothing if no directory)."""
    if directory is None:
        yield
        return
    os.makedirs(directory, exist_ok=True)
    profile = cProfile.Profile()
    profile.enable()
    try:
        yield
    finally:
        profile.disable()
        path = os.path.join(directory, f"{name}-{os.getpid()}.prof")
        profile.dump_stats(path)
        print(f"profile written to {path}", file=sys.stderr)


# -- recording transport: sizes and times of every message on a crdtkv link -------------------


def message_code(message: bytes) -> int:
    """The type code of a crdtkv message: a short CBOR array whose first item is a small int."""
    if len(message) > 1 and 0x80 <= message[0] <= 0x97 and message[1] < 24:
        return message[1]
    return -1


CODE_NAMES = {1: "Challenge", 2: "Hello", 3: "Deltas", 4: "Ack", 5: "Ping", 6: "Pong", 7: "Close"}
#: (monotonic ns, bytes, type code)
Record = tuple[int, int, int]


def ws_frame_bytes(size: int, *, masked: bool = False) -> int:
    """Bytes on the wire for one unfragmented WebSocket message of ``size`` bytes."""
    header = 2 + (2 if 126 <= size < 65536 else 8 if size >= 65536 else 0)
    return size + header + (4 if masked else 0)


class RecordingConnection:
    """Wraps a transport connection; notes time, size and type of every message sent or received.

    The cost is one extra coroutine call and a list append per message.
    """

    def __init__(self, inner: Connection, opened_at: int, connect_called_at: int | None = None) -> None:
        self.inner = inner
        self.opened_at = opened_at
        self.connect_called_at = connect_called_at
        self.sent: list[Record] = []
        self.received: list[Record] = []

    @property
    def remote(self) -> str:
        return self.inner.remote

    async def send(self, message: bytes) -> None:
        self.sent.append((now_ns(), len(message), message_code(message)))
        await self.inner.send(message)

    async def receive(self) -> bytes:
        message = await self.inner.receive()
        self.received.append((now_ns(), len(message), message_code(message)))
        return message

    async def aclose(self) -> None:
        await self.inner.aclose()

    def http_response_bytes(self) -> int:
        """Size of the HTTP 101 response this (server-side) WebSocket sent, 0 if unknown."""
        response = getattr(getattr(self.inner, "websocket", None), "response", None)
        return len(response.serialize()) if response is not None else 0


class RecordingTransport:
    """crdtkv's WebSocket transport with every connection wrapped in a :class:`RecordingConnection`."""

    def __init__(self) -> None:
        self.inner = WebSocketTransport()
        self.connections: list[RecordingConnection] = []

    async def connect(self, url: str, settings: TransportSettings) -> Connection:
        called = now_ns()
        inner = await self.inner.connect(url, settings)
        connection = RecordingConnection(inner, now_ns(), called)
        self.connections.append(connection)
        return connection

    async def listen(self, url: str, handler: Handler, settings: TransportSettings) -> Listener:
        async def recorded(inner: Connection) -> None:
            connection = RecordingConnection(inner, now_ns())
            self.connections.append(connection)
            await handler(connection)

        return await self.inner.listen(url, recorded, settings)


def only_link(node: Node) -> Any:
    links = list(node._links)
    if len(links) != 1:
        raise RuntimeError(f"expected exactly one replication link, found {len(links)}")
    return links[0]


async def until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    try:
        with anyio.fail_after(timeout):
            while not predicate():
                await anyio.sleep(0.002)
    except TimeoutError:
        raise TimeoutError(f"timed out after {timeout} s waiting for {what}") from None


class GcWatch:
    """Counts the cyclic collector's runs per generation and how long they stopped the process."""

    def __init__(self) -> None:
        self._began = 0
        self.reset()
        gc.callbacks.append(self._callback)

    def reset(self) -> None:
        self.runs = [0, 0, 0]
        self.total_ns = [0, 0, 0]
        self.longest_ns = [0, 0, 0]

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._began = time.perf_counter_ns()
            return
        took = time.perf_counter_ns() - self._began
        generation = info["generation"]
        self.runs[generation] += 1
        self.total_ns[generation] += took
        self.longest_ns[generation] = max(self.longest_ns[generation], took)

    def summary(self) -> dict[str, list[int]]:
        return {"runs": list(self.runs), "total_ns": list(self.total_ns), "longest_ns": list(self.longest_ns)}


GC = GcWatch()


def gc_sum(side: str, summaries: Sequence[dict[str, list[int]]]) -> str:
    """:func:`gc_note` over several windows: runs and time added up, the longest of all."""
    return gc_note(
        side,
        {
            "runs": [sum(s["runs"][g] for s in summaries) for g in range(3)],
            "total_ns": [sum(s["total_ns"][g] for s in summaries) for g in range(3)],
            "longest_ns": [max(s["longest_ns"][g] for s in summaries) for g in range(3)],
        },
    )


def gc_note(side: str, summary: dict[str, list[int]]) -> str:
    """``A gen2 x1 (longest 170 ms), all gc 190.0 ms``: full collections, and time in all collections."""
    runs, total, longest = summary["runs"], summary["total_ns"], summary["longest_ns"]
    text = f"{side} gen2 x{runs[2]}"
    if runs[2]:
        text += f" (longest {longest[2] / 1e6:.0f} ms)"
    return text + f", all gc {sum(total) / 1e6:.1f} ms"


# -- child processes: JSON lines, commands on stdin and events on stdout ---------------------------


class ChildFailed(RuntimeError):
    pass


class Child:
    """The parent's handle on a child process."""

    def __init__(self, role: str, process: anyio.abc.Process) -> None:
        assert process.stdout is not None and process.stdin is not None
        self.role = role
        self.process = process
        self._stdin = process.stdin
        self._lines = BufferedByteReceiveStream(process.stdout)

    async def send(self, **command: Any) -> None:
        await self._stdin.send(json.dumps(command).encode() + b"\n")

    async def expect(self, event: str, timeout: float) -> dict[str, Any]:
        try:
            with anyio.fail_after(timeout):
                line = await self._lines.receive_until(b"\n", MAX_LINE)
        except (anyio.IncompleteRead, anyio.EndOfStream):
            with anyio.move_on_after(5):
                await self.process.wait()
            raise ChildFailed(
                f"the {self.role} child exited (status {self.process.returncode}) before {event!r}"
            ) from None
        except TimeoutError:
            raise TimeoutError(f"the {self.role} child sent no {event!r} within {timeout} s") from None
        message: dict[str, Any] = json.loads(line)
        if message.get("event") == "error":
            raise ChildFailed(f"the {self.role} child failed:\n{message.get('error')}")
        if message.get("event") != event:
            raise ChildFailed(f"expected {event!r} from the {self.role} child, got {message!r:.300}")
        return message


@asynccontextmanager
async def spawn(role: str, params: dict[str, Any], profile_dir: str | None) -> AsyncIterator[Child]:
    """Run ``role`` in a child process; it must exit by itself once the body is done, else it is killed."""
    args = [sys.executable, SCRIPT, "--role", role, "--params", json.dumps(params)]
    if profile_dir is not None:
        args += ["--profile", profile_dir]
    process = await anyio.open_process(args, stderr=None)  # stdin, stdout piped; stderr inherited
    try:
        yield Child(role, process)
        with anyio.fail_after(30):
            code = await process.wait()
        if code != 0:
            raise ChildFailed(f"the {role} child exited with status {code}")
    finally:
        with anyio.CancelScope(shield=True):
            if process.returncode is None:
                process.kill()
                await process.wait()
            await process.aclose()


class Parent:
    """The child's side: events to stdout, commands from stdin (read by a thread, raw fd)."""

    def __init__(self) -> None:
        self._send, self._commands = anyio.create_memory_object_stream[dict[str, Any]](64)
        token = anyio.lowlevel.current_token()
        threading.Thread(target=self._read, args=(token,), name="commands", daemon=True).start()

    def _read(self, token: Any) -> None:
        buffer = b""
        while True:
            chunk = os.read(0, 65536)
            if not chunk:  # the parent is gone: never linger
                os._exit(EXIT_ORPHANED)
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                try:
                    anyio.from_thread.run_sync(self._send.send_nowait, json.loads(line), token=token)
                except RuntimeError:  # the event loop has finished
                    return

    @staticmethod
    def emit(event: str, **fields: Any) -> None:
        sys.stdout.write(json.dumps({"event": event, **fields}) + "\n")
        sys.stdout.flush()

    async def command(self, *expected: str, timeout: float = 600.0) -> dict[str, Any]:
        with anyio.fail_after(timeout):
            command = await self._commands.receive()
        if command.get("cmd") not in expected:
            raise RuntimeError(f"expected command {' or '.join(expected)}, got {command!r:.200}")
        return command


def b_store() -> KvStore:
    return KvStore.open(STORE, replica_id="b")


async def sink_node(
    parent: Parent,
    store: KvStore,
    p: dict[str, Any],
    on_change: Callable[[], None],
    done: anyio.Event,
    result: Callable[[Node], dict[str, Any]],
) -> None:
    """Run B's Node: emit "ready" once linked and "done" (``result``, gc) once ``done``; await "stop"."""
    store._state.listeners.append(on_change)
    async with Node(store, peers=[p["url"]], secret=SECRET) as node:
        await node.wait_for_peers(1, timeout=READY_TIMEOUT)
        GC.reset()
        parent.emit("ready")
        with anyio.fail_after(p["timeout"]):
            await done.wait()
        parent.emit("done", **result(node), gc=GC.summary())
        await parent.command("stop")


async def role_sink(p: dict[str, Any]) -> None:
    """B for the write burst: dial A, note when all N keys are here."""
    parent = Parent()
    store = b_store()
    entries = store._state.entries
    n = p["n"]
    done = anyio.Event()
    marks: dict[str, int] = {}

    def on_change() -> None:
        if "first" not in marks:
            marks["first"] = now_ns()
        if len(entries) >= n and not done.is_set():
            marks["done"] = now_ns()
            done.set()

    def result(node: Node) -> dict[str, Any]:
        stats = dict(only_link(node).session.stats)
        return {"t_first": marks["first"], "t_done": marks["done"], "entries": len(entries), "stats": stats}

    await sink_node(parent, store, p, on_change, done, result)
    parent.emit("stopped", digest=store.digest())


async def role_latency_sink(p: dict[str, Any]) -> None:
    """B for the latency run: each new key's value is its write time; note arrival - write."""
    parent = Parent()
    store = b_store()
    entries = store._state.entries
    n = p["n"]
    done = anyio.Event()
    delays: list[int] = []
    seen = 0
    applies = 0

    def on_change() -> None:
        nonlocal seen, applies
        arrived = now_ns()
        count = len(entries)
        if count > seen:
            applies += 1
            # new keys are the newest items of the entries dict
            for key in itertools.islice(reversed(entries), count - seen):
                delays.append(arrived - int(entries[key].value))
            seen = count
            if count >= n:
                done.set()

    await sink_node(parent, store, p, on_change, done, lambda _: {"delays": delays, "applies": applies})
    parent.emit("stopped")


async def catchup_session(parent: Parent, store: KvStore, url: str, command: dict[str, Any]) -> None:
    """One B Node for the catch-up: run it until B holds what ``command`` asks for, then until "stop"."""
    state = store._state
    entries = state.entries
    origin, stamp = command["origin"], command["stamp"]
    expected: dict[str, str] = command.get("expect", {})
    remaining = set(expected)
    n = command.get("n", 0)
    done = anyio.Event()
    marks: dict[str, int] = {}

    def finished() -> bool:
        if not expected:
            return len(entries) >= n
        for key in list(remaining):
            entry = entries.get(key)
            if entry is not None and entry.value == expected[key]:
                remaining.discard(key)
        return not remaining

    def on_change() -> None:
        if not done.is_set() and state.vv.get(origin, 0) >= stamp and finished():
            marks["done"] = now_ns()
            done.set()

    transport = RecordingTransport()
    state.listeners.append(on_change)
    try:
        GC.reset()
        started = now_ns()
        async with Node(store, peers=[url], secret=SECRET, transports={"ws": transport}) as node:
            with anyio.fail_after(command["timeout"]):
                await done.wait()
            first = transport.connections[0]
            parent.emit(
                "synced" if command["cmd"] == "sync" else "caught-up",
                t_start=started,
                t_dial=first.connect_called_at,
                t_open=first.opened_at,
                t_done=marks["done"],
                connections=len(transport.connections),
                received=[r for r in first.received if r[0] <= marks["done"]],
                entries=len(entries),
                stats=dict(only_link(node).session.stats),
                gc=GC.summary(),
            )
            stop = await parent.command("stop")
    finally:
        state.listeners.remove(on_change)
    parent.emit("stopped", digest=store.digest() if stop.get("digest") else None)


async def role_catchup(p: dict[str, Any]) -> None:
    """B for the partition: sync, stop, then a new Node per round, keeping the store."""
    parent = Parent()
    store = b_store()
    await catchup_session(parent, store, p["url"], await parent.command("sync"))
    while True:
        command = await parent.command("reconnect", "quit")
        if command["cmd"] == "quit":
            return
        await catchup_session(parent, store, p["url"], command)


async def role_raw_sink(p: dict[str, Any]) -> None:
    """B for the raw burst: count messages and bytes until all have arrived."""
    parent = Parent()
    async with ws_connect(
        p["url"], compression=None, max_size=TRANSPORT.max_message_bytes, max_queue=TRANSPORT.max_queue
    ) as ws:
        parent.emit("ready")
        count = total = 0
        with anyio.fail_after(p["timeout"]):
            while count < p["messages"]:
                message = await ws.recv()
                total += len(message)
                count += 1
        parent.emit("done", t_done=now_ns(), messages=count, bytes=total)


async def role_raw_latency_sink(p: dict[str, Any]) -> None:
    """B for the raw latency run: each message starts with its send time."""
    parent = Parent()
    unpack = struct.Struct("<q").unpack_from
    delays: list[int] = []
    async with ws_connect(
        p["url"], compression=None, max_size=TRANSPORT.max_message_bytes, max_queue=TRANSPORT.max_queue
    ) as ws:
        parent.emit("ready")
        with anyio.fail_after(p["timeout"]):
            for _ in range(p["n"]):
                message = await ws.recv()
                arrived = now_ns()
                assert isinstance(message, bytes)
                delays.append(arrived - unpack(message)[0])
        parent.emit("done", delays=delays)


async def role_raw_reconnect(p: dict[str, Any]) -> None:
    """B for the raw catch-up floor: connect, receive one message, close; once per round."""
    parent = Parent()
    rounds = []
    for _ in range(p["rounds"]):
        started = now_ns()
        async with ws_connect(
            p["url"], compression=None, max_size=TRANSPORT.max_message_bytes, max_queue=TRANSPORT.max_queue
        ) as ws:
            opened = now_ns()
            message = await ws.recv()
            rounds.append({"t_start": started, "t_open": opened, "t_done": now_ns(), "bytes": len(message)})
        await anyio.sleep(0.05)
    parent.emit("done", rounds=rounds)


ROLES: dict[str, Callable[[dict[str, Any]], Awaitable[None]]] = {
    "sink": role_sink,
    "latency-sink": role_latency_sink,
    "catchup": role_catchup,
    "raw-sink": role_raw_sink,
    "raw-latency-sink": role_raw_latency_sink,
    "raw-reconnect": role_raw_reconnect,
}


def child_main(role: str, params: str, profile_dir: str | None) -> int:
    try:
        with profiled(profile_dir, f"B-{role}"):
            anyio.run(ROLES[role], json.loads(params))
    except BaseException:
        Parent.emit("error", error=traceback.format_exc())
        return 1
    return 0


# -- A's side: the raw websockets server ---------------------------------------------------------------


class RawServer:
    """A plain websockets server on loopback with crdtkv's transport limits.

    With ``greeting``, it sends that message to each client as soon as it connects;
    otherwise :meth:`accept` hands each connection to the caller.
    """

    def __init__(self, greeting: bytes | None = None) -> None:
        self.greeting = greeting
        self._send, self._accepted = anyio.create_memory_object_stream[ServerConnection](16)
        self._server: Server | None = None
        self.url = ""

    async def __aenter__(self) -> RawServer:
        self._server = await ws_serve(
            self._handle,
            "127.0.0.1",
            0,
            compression=None,
            max_size=TRANSPORT.max_message_bytes,
            max_queue=TRANSPORT.max_queue,
        )
        self.url = f"ws://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._server is not None
        self._server.close()
        with anyio.CancelScope(shield=True):
            await self._server.wait_closed()

    async def _handle(self, ws: ServerConnection) -> None:
        if self.greeting is not None:
            await ws.send(self.greeting)
        else:
            await self._send.send(ws)
        await ws.wait_closed()

    async def accept(self) -> ServerConnection:
        with anyio.fail_after(READY_TIMEOUT):
            return await self._accepted.receive()


# -- measurement 1: sustained replication ---------------------------------------------------------


def key_of(i: int) -> str:
    return f"k:{i:07d}"


def value_of(i: int) -> str:
    return f"v{i}"


@dataclass
class Burst:
    seconds: float
    #: how long A's puts took (they overlap with sending)
    write_seconds: float
    first_arrival: float
    #: every message A sent on the link between the first put and B holding all keys
    sent: list[Record]
    stats: dict[str, int]
    b_stats: dict[str, int]
    agree: bool
    gc_a: dict[str, list[int]]
    gc_b: dict[str, list[int]]


async def write_burst(put: Callable[[str, str], None], keys: Sequence[str], values: Sequence[str]) -> None:
    """A's write loop: every put as fast as it goes, a yield to the event loop every YIELD_EVERY."""
    n = len(keys)
    for start in range(0, n, YIELD_EVERY):
        for i in range(start, min(start + YIELD_EVERY, n)):
            put(keys[i], values[i])
        await anyio.sleep(0)


async def local_burst(keys: Sequence[str], values: Sequence[str]) -> float:
    """Seconds for the same write loop into a store with no Node: A's put rate alone."""
    store = KvStore.open(STORE, replica_id="a")
    started = now_ns()
    await write_burst(store.put, keys, values)
    return (now_ns() - started) / 1e9


async def crdtkv_burst(keys: Sequence[str], values: Sequence[str], timeout: float, prof: str | None) -> Burst:
    n = len(keys)
    store = KvStore.open(STORE, replica_id="a")
    transport = RecordingTransport()
    async with (
        Node(store, listen="ws://127.0.0.1:0", secret=SECRET, transports={"ws": transport}) as node,
        spawn("sink", {"url": node.url, "n": n, "timeout": timeout}, prof) as b,
    ):
        await b.expect("ready", READY_TIMEOUT)
        await node.wait_for_peers(1)
        link = only_link(node)
        GC.reset()
        started = now_ns()
        await write_burst(store.put, keys, values)
        written = now_ns()
        done = await b.expect("done", timeout)
        gc_a = GC.summary()
        stats = dict(link.session.stats)
        connection = link.connection
        await b.send(cmd="stop")
        stopped = await b.expect("stopped", 60)
        agree = stopped["digest"] == store.digest() and done["entries"] == n
    sent = [r for r in connection.sent if started <= r[0] <= done["t_done"]]
    return Burst(
        seconds=(done["t_done"] - started) / 1e9,
        write_seconds=(written - started) / 1e9,
        first_arrival=(done["t_first"] - started) / 1e9,
        sent=sent,
        stats=stats,
        b_stats=done["stats"],
        agree=agree,
        gc_a=gc_a,
        gc_b=done["gc"],
    )


async def raw_burst(payloads: Sequence[bytes], timeout: float, prof: str | None) -> float:
    """Seconds from A's first send to B holding every byte of ``payloads``."""
    total = sum(map(len, payloads))
    async with RawServer() as server:
        params = {"url": server.url, "messages": len(payloads), "timeout": timeout}
        async with spawn("raw-sink", params, prof) as b:
            ws = await server.accept()
            await b.expect("ready", READY_TIMEOUT)
            started = now_ns()
            for payload in payloads:
                await ws.send(payload)
            done = await b.expect("done", timeout)
            if done["bytes"] != total:
                raise RuntimeError(f"raw sink received {done['bytes']} bytes, expected {total}")
    return (done["t_done"] - started) / 1e9


def one_entry_message() -> bytes:
    """A crdtkv Deltas message carrying one short register, as sent in steady state."""
    store = KvStore.open(STORE, replica_id="a")
    store.put(key_of(0), value_of(123_456))
    state = store._state
    vv = dict(state.vv)
    payload = encode_delta(Delta(state.name, vv, list(state.entries.items())))
    return encode_message(Deltas(1, 0, True, vv, payload))


@dataclass
class Throughput:
    n: int
    crdtkv: list[Burst] = field(default_factory=list)
    raw: list[float] = field(default_factory=list)
    raw_messages: list[int] = field(default_factory=list)
    small: list[float] = field(default_factory=list)
    small_size: int = 0
    local: list[float] = field(default_factory=list)


async def bench_throughput(n: int, repeats: int, prof: str | None) -> Throughput:
    keys = [key_of(i) for i in range(n)]
    values = [value_of(i) for i in range(n)]
    small = one_entry_message()
    result = Throughput(n, small_size=len(small))
    timeout = max(60.0, n / 5_000)
    blob = os.urandom(TRANSPORT.max_message_bytes)
    for r in range(repeats):
        progress(f"1. write burst {r + 1}/{repeats}: crdtkv, {n:,} keys")
        burst = await crdtkv_burst(keys, values, timeout, prof)
        result.crdtkv.append(burst)
        progress(
            f"   {burst.seconds:.3f} s, {len(burst.sent)} messages; "
            f"raw websockets, the same {len(burst.sent)} messages"
        )
        payloads = [blob[:size] for _, size, _ in burst.sent]
        result.raw.append(await raw_burst(payloads, timeout, prof))
        result.raw_messages.append(len(payloads))
        progress(f"   {result.raw[-1]:.3f} s; raw websockets, {n:,} messages of {len(small)} bytes")
        result.small.append(await raw_burst([small] * n, timeout, prof))
        progress(f"   {result.small[-1]:.3f} s; A's write loop alone, no Node")
        result.local.append(await local_burst(keys, values))
    return result


# -- measurement 2: propagation latency ----------------------------------------------------------------


async def paced(count: int, interval: float, action: Callable[[int, int], Awaitable[None]]) -> float:
    """Call ``action(i, now_ns())`` ``count`` times, one every ``interval`` s; return the achieved rate."""
    start = time.monotonic()
    first = last = 0
    for i in range(count):
        delay = start + i * interval - time.monotonic()
        if delay > 0:
            await anyio.sleep(delay)
        else:
            await anyio.lowlevel.checkpoint()
        last = now_ns()
        if i == 0:
            first = last
        await action(i, last)
    return (count - 1) / ((last - first) / 1e9)


@dataclass
class Latency:
    delays: list[int]
    rate: float
    messages: int = 0
    applies: int = 0
    gc: str = ""


async def crdtkv_latency(count: int, batch_window: float, prof: str | None) -> Latency:
    store = KvStore.open(STORE, replica_id="a")
    put = store.put
    settings = NodeSettings(sync=SyncSettings(batch_window=batch_window))
    async with Node(store, listen="ws://127.0.0.1:0", secret=SECRET, settings=settings) as node:
        params = {"url": node.url, "n": count, "timeout": 60 + count * LATENCY_INTERVAL * 4}
        async with spawn("latency-sink", params, prof) as b:
            await b.expect("ready", READY_TIMEOUT)
            await node.wait_for_peers(1)
            link = only_link(node)
            parts_before = link.session.stats["parts_sent"]
            GC.reset()

            async def write(i: int, t: int) -> None:
                put(f"lat:{i:06d}", str(t))

            rate = await paced(count, LATENCY_INTERVAL, write)
            done = await b.expect("done", params["timeout"])
            messages = link.session.stats["parts_sent"] - parts_before
            gc_text = f"{gc_note('A', GC.summary())}; {gc_note('B', done['gc'])}"
            await b.send(cmd="stop")
            await b.expect("stopped", 60)
    return Latency(done["delays"], rate, messages, done["applies"], gc_text)


async def raw_latency(count: int, size: int, prof: str | None) -> Latency:
    pad = bytes(max(0, size - 8))
    pack = struct.Struct("<q").pack
    async with RawServer() as server:
        params = {"url": server.url, "n": count, "timeout": 60 + count * LATENCY_INTERVAL * 4}
        async with spawn("raw-latency-sink", params, prof) as b:
            ws = await server.accept()
            await b.expect("ready", READY_TIMEOUT)

            async def send(i: int, t: int) -> None:
                await ws.send(pack(t) + pad)

            rate = await paced(count, LATENCY_INTERVAL, send)
            done = await b.expect("done", params["timeout"])
    return Latency(done["delays"], rate, count, count)


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of already sorted values."""
    return sorted_values[max(0, math.ceil(q * len(sorted_values)) - 1)]


@dataclass
class LatencyResult:
    count: int
    default: Latency
    no_window: Latency
    raw: Latency
    size: int


async def bench_latency(count: int, prof: str | None) -> LatencyResult:
    window = SyncSettings().batch_window
    size = len(one_entry_message())
    progress(f"2. latency: crdtkv, batch_window {window * 1e3:g} ms (default), {count:,} writes at 1/ms")
    default = await crdtkv_latency(count, window, prof)
    progress(f"2. latency: raw websockets, {count:,} messages of {size} bytes at 1/ms")
    raw = await raw_latency(count, size, prof)
    progress(f"2. latency: crdtkv, batch_window 0, {count:,} writes at 1/ms")
    no_window = await crdtkv_latency(count, 0.0, prof)
    return LatencyResult(count, default, no_window, raw, size)


# -- measurement 3: catch-up after a partition ----------------------------------------------------------


@dataclass
class Round:
    minimal: int
    payload: int
    messages: dict[str, int]
    message_bytes: int
    wire_bytes: int
    entries_sent: int
    parts_sent: int
    total: float
    #: from B starting its Node to B's Node calling the transport's ``connect``
    before_dial: float
    #: the time between consecutive MARKS, from B's ``connect`` call on
    steps: list[float]
    connections: int
    gc_a: dict[str, list[int]]
    gc_b: dict[str, list[int]]


@dataclass
class CatchUp:
    n: int
    build_seconds: float
    sync_seconds: float
    sync_from_dial: float
    sync_entries_sent: int
    rounds: list[Round] = field(default_factory=list)
    raw_total: list[float] = field(default_factory=list)
    raw_open: list[float] = field(default_factory=list)
    agree: bool = False
    sync_gc: str = ""
    #: on the initial sync: from B's Hello arriving at A to A sending its Hello, and from that to
    #: A sending its first Deltas
    sync_hello_wait: float = 0.0
    sync_deltas_wait: float = 0.0


#: the marks of a catch-up round after B's ``connect`` call, in order: a "sent" mark is A's Node
#: calling its connection's ``send``, an "at" mark the receiver's ``receive`` returning the message
MARKS = (
    "WebSocket open at B",
    "A's Challenge at B",
    "B's Hello at A",
    "A's Hello sent",
    "A's first Deltas sent",
    "Deltas at B",
    "all changes applied at B",
)


def _first(records: Sequence[Sequence[int]], code: int) -> int:
    for t, _, c in records:
        if c == code:
            return t
    raise RuntimeError(f"no {CODE_NAMES.get(code, code)} message recorded")


async def bench_catchup(n: int, rounds: int, rng: random.Random, prof: str | None) -> CatchUp:
    progress(f"3. catch-up: building the {n:,}-key store at A")
    store = KvStore.open(STORE, replica_id="a")
    state = store._state
    put = store.put
    keys = [key_of(i) for i in range(n)]
    began = time.perf_counter()
    for i, key in enumerate(keys):
        put(key, value_of(i))
    build = time.perf_counter() - began
    transport = RecordingTransport()
    sync_timeout = 60 + n / 10_000
    async with (
        Node(store, listen="ws://127.0.0.1:0", secret=SECRET, transports={"ws": transport}) as node,
        spawn("catchup", {"url": node.url}, prof) as b,
    ):
        origin = state.origin
        progress(f"3. catch-up: B syncs all {n:,} keys")
        GC.reset()
        await b.send(cmd="sync", n=n, origin=origin, stamp=state.vv[origin], timeout=sync_timeout)
        synced = await b.expect("synced", sync_timeout + 10)
        sync_gc = f"{gc_note('A', GC.summary())}; {gc_note('B', synced['gc'])}"
        sync_stats = dict(only_link(node).session.stats)
        first = transport.connections[0]
        hello_sent = _first(first.sent, 2)
        hello_wait = (hello_sent - _first(first.received, 2)) / 1e9
        deltas_wait = (_first(first.sent, 3) - hello_sent) / 1e9
        await b.send(cmd="stop")
        await b.expect("stopped", 60)
        await until(lambda: not node._links, 10, "A's link to B to close")
        result = CatchUp(
            n,
            build,
            (synced["t_done"] - synced["t_start"]) / 1e9,
            (synced["t_done"] - synced["t_dial"]) / 1e9,
            sync_stats["entries_sent"],
            sync_gc=sync_gc,
            sync_hello_wait=hello_wait,
            sync_deltas_wait=deltas_wait,
        )
        for r in range(rounds):
            progress(f"3. catch-up round {r + 1}/{rounds}: A overwrites {CHANGED_KEYS:,} keys, B reconnects")
            chosen = sorted(rng.sample(range(n), CHANGED_KEYS))
            expect = {keys[i]: f"r{r}:{i}" for i in chosen}
            for key, value in expect.items():
                put(key, value)
            minimal = encode_delta(Delta(state.name, dict(state.vv), [(k, state.entries[k]) for k in expect]))
            mark = len(transport.connections)
            GC.reset()
            await b.send(cmd="reconnect", expect=expect, origin=origin, stamp=state.vv[origin], timeout=30)
            caught = await b.expect("caught-up", 40)
            gc_a = GC.summary()
            link = only_link(node)
            connection = link.connection
            if transport.connections[mark:] != [connection]:
                raise RuntimeError("expected exactly one new connection from B")
            stats = dict(link.session.stats)
            last = r == rounds - 1
            await b.send(cmd="stop", digest=last)
            stopped = await b.expect("stopped", 120)
            if last:
                result.agree = stopped["digest"] == store.digest()
            await until(lambda: not node._links, 10, "A's link to B to close")
            sent = [rec for rec in connection.sent if rec[0] <= caught["t_done"]]
            kinds: dict[str, int] = {}
            for _, size, code in sent:
                name = CODE_NAMES.get(code, f"type {code}")
                kinds[name] = kinds.get(name, 0) + size
            received = caught["received"]
            marks = [  # B's connect call, then MARKS
                caught["t_dial"],
                caught["t_open"],
                _first(received, 1),
                _first(connection.received, 2),
                _first(connection.sent, 2),
                _first(connection.sent, 3),
                _first(received, 3),
                caught["t_done"],
            ]
            result.rounds.append(
                Round(
                    minimal=len(minimal),
                    payload=stats["bytes_sent"],
                    messages=kinds,
                    message_bytes=sum(size for _, size, _ in sent),
                    wire_bytes=sum(ws_frame_bytes(size) for _, size, _ in sent)
                    + connection.http_response_bytes(),
                    entries_sent=stats["entries_sent"],
                    parts_sent=stats["parts_sent"],
                    total=(caught["t_done"] - caught["t_start"]) / 1e9,
                    before_dial=(caught["t_dial"] - caught["t_start"]) / 1e9,
                    steps=[(y - x) / 1e9 for x, y in itertools.pairwise(marks)],
                    connections=caught["connections"],
                    gc_a=gc_a,
                    gc_b=caught["gc"],
                )
            )
        await b.send(cmd="quit")
    size = round(statistics.median(rd.minimal for rd in result.rounds))
    progress(f"3. catch-up: raw websockets connect + one {size:,}-byte message, {rounds} rounds")
    async with (
        RawServer(greeting=os.urandom(size)) as server,
        spawn("raw-reconnect", {"url": server.url, "rounds": rounds}, prof) as b,
    ):
        done = await b.expect("done", 60)
    for rd in done["rounds"]:
        result.raw_total.append((rd["t_done"] - rd["t_start"]) / 1e9)
        result.raw_open.append((rd["t_open"] - rd["t_start"]) / 1e9)
    return result


# -- formatting ------------------------------------------------------------------------------


def fmt_ms(seconds: float) -> str:
    return f"{seconds * 1e3:.2f} ms" if seconds < 0.1 else f"{seconds * 1e3:.0f} ms"


def fmt_s(seconds: float) -> str:
    return f"{seconds:.3f} s"


def throughput_rows(t: Throughput, rows: list[Row]) -> None:
    n = t.n
    best_i = min(range(len(t.crdtkv)), key=lambda i: t.crdtkv[i].seconds)
    best = t.crdtkv[best_i]
    rate = n / best.seconds
    raw_best = min(t.raw)
    raw_rate = n / raw_best
    small_best = min(t.small)
    small_rate = n / small_best
    deltas = [r for r in best.sent if r[2] == 3]
    messages = len(best.sent)
    total = sum(size for _, size, _ in best.sent)
    per_msg = n / messages
    times = ", ".join(f"{b.seconds:.3f}" for b in t.crdtkv)
    repeats = len(t.crdtkv)
    agree = all(b.agree for b in t.crdtkv)
    rows.append(
        Row(
            "1a",
            f"sustained replication: A puts {n:,} new keys (yield every {YIELD_EVERY:,}), until B holds all",
            f"{fmt_num(rate)} entries/s",
            "-",
            "-",
            "-",
            f">= {fmt_num(THROUGHPUT_GOAL)} entries/s",
            met(rate >= THROUGHPUT_GOAL),
            f"best of {repeats} ({times} s); A's puts took {fmt_s(best.write_seconds)}, first entry at B "
            f"after {fmt_ms(best.first_arrival)}; {len(deltas)} Deltas messages of {len(best.sent)}, "
            f"{total / 1e6:.2f} MB, {fmt_num(per_msg)} entries/message; "
            f"entries_sent {best.stats['entries_sent']:,}, B entries_received "
            f"{best.b_stats['entries_received']:,}; digests equal: {'yes' if agree else 'NO'}; "
            f"{gc_note('A', best.gc_a)}; {gc_note('B', best.gc_b)}",
        )
    )
    raw_msgs = ", ".join(str(m) for m in t.raw_messages)
    rows.append(
        Row(
            "1b",
            "same, against raw websockets sending the same messages",
            f"{fmt_num(rate)} entries/s",
            f"raw `websockets` send loop, crdtkv's messages replayed ({messages} messages, "
            f"{total / 1e6:.2f} MB in the best run)",
            f"{fmt_num(messages / raw_best)} msgs/s = {fmt_num(raw_rate)} entries/s eq.",
            fmt_ratio(rate / raw_rate),
            f">= {RAW_RATIO_GOAL:g} x raw",
            met(rate / raw_rate >= RAW_RATIO_GOAL),
            f"raw best of {repeats} ({', '.join(f'{s:.3f}' for s in t.raw)} s; each replays the "
            f"crdtkv run just before it: {raw_msgs} messages); entries/s eq. = entries per message x msgs/s",
        )
    )
    rows.append(
        Row(
            "1c",
            "same, against raw websockets with one message per entry",
            f"{fmt_num(rate)} entries/s",
            f"raw `websockets`, {n:,} messages of {t.small_size} B (a one-entry crdtkv message)",
            f"{fmt_num(small_rate)} msgs/s = entries/s",
            fmt_ratio(rate / small_rate),
            "- (what batching buys)",
            "n/a",
            f"best of {repeats} ({', '.join(f'{s:.3f}' for s in t.small)} s)",
        )
    )
    write_best = min(b.write_seconds for b in t.crdtkv)
    local_best = min(t.local)
    tails = ", ".join(fmt_ms(b.seconds - b.write_seconds) for b in t.crdtkv)
    rows.append(
        Row(
            "1d",
            "A's put loop while replicating (diagnostic for 1a)",
            f"{fmt_num(n / write_best)} puts/s",
            "the same put loop into a store with no Node",
            f"{fmt_num(n / local_best)} puts/s",
            fmt_ratio(local_best / write_best),
            "-",
            "n/a",
            f"best of {repeats} each ({', '.join(f'{b.write_seconds:.3f}' for b in t.crdtkv)} s vs "
            f"{', '.join(f'{s:.3f}' for s in t.local)} s); B held all keys {tails} after A's last put; "
            f"in 1a's best run A's put loop took {best.write_seconds / best.seconds:.0%} of the time",
        )
    )


def latency_cells(lat: Latency) -> tuple[str, float]:
    s = sorted(d / 1e9 for d in lat.delays)
    p50, p90, p99 = (percentile(s, q) for q in (0.5, 0.9, 0.99))
    return f"p50 {fmt_ms(p50)} / p90 {fmt_ms(p90)} / p99 {fmt_ms(p99)} / max {fmt_ms(s[-1])}", p99


def latency_rows(lr: LatencyResult, rows: list[Row]) -> None:
    raw_text, raw_p99 = latency_cells(lr.raw)
    raw_name = f"raw `websockets`, one {lr.size} B message every 1 ms, one-way"
    for num, lat, what in (
        (
            "2a",
            lr.default,
            f"propagation latency, one put every 1 ms, default batch_window "
            f"{SyncSettings().batch_window * 1e3:g} ms",
        ),
        ("2b", lr.no_window, "same with batch_window = 0 (diagnostic: the path without the batching wait)"),
    ):
        text, p99 = latency_cells(lat)
        is_default = num == "2a"
        rows.append(
            Row(
                num,
                what,
                text,
                raw_name,
                raw_text,
                f"p99 {fmt_ratio(p99 / raw_p99)}",
                f"p99 < {LATENCY_P99_GOAL * 1e3:g} ms" if is_default else "-",
                met(p99 < LATENCY_P99_GOAL) if is_default else "n/a",
                f"{len(lat.delays):,} samples, writes at {fmt_num(lat.rate)}/s; {lat.messages:,} Deltas "
                f"messages, {lat.applies:,} merges at B ({len(lat.delays) / max(1, lat.applies):.2f} "
                f"entries each); raw sent at {fmt_num(lr.raw.rate)}/s; {lat.gc}",
            )
        )


def catchup_rows(c: CatchUp, rows: list[Row]) -> None:
    rounds = c.rounds
    k = len(rounds)
    med = statistics.median

    def span(values: Sequence[float], fmt: Callable[[float], str]) -> str:
        return f"median {fmt(med(values))}, min {fmt(min(values))}, max {fmt(max(values))}"

    minimal = med(r.minimal for r in rounds)
    payload = med(r.payload for r in rounds)
    wire = med(r.wire_bytes for r in rounds)
    worst_payload = max(r.payload / r.minimal for r in rounds)
    worst_wire = max(r.wire_bytes / r.minimal for r in rounds)
    entries = sorted({r.entries_sent for r in rounds})
    parts = sorted({r.parts_sent for r in rounds})
    last = rounds[-1]
    kinds = ", ".join(f"{name} {size:,} B" for name, size in last.messages.items())
    rows.append(
        Row(
            "3a",
            f"catch-up bytes: delta payload A sent on the new link ({CHANGED_KEYS:,} keys changed of "
            f"{c.n:,})",
            f"{payload:,.0f} B",
            f"`encode_delta` of exactly the {CHANGED_KEYS:,} changed entries",
            f"{minimal:,.0f} B",
            fmt_ratio(payload / minimal),
            f"<= {CATCHUP_BYTES_GOAL:g}x",
            met(worst_payload <= CATCHUP_BYTES_GOAL),
            f"median of {k} rounds (worst ratio {worst_payload:.2f}x); session stats bytes_sent; "
            f"entries_sent {', '.join(f'{e:,}' for e in entries)} (not {c.n:,}), parts_sent "
            f"{', '.join(map(str, parts))}",
        )
    )
    rows.append(
        Row(
            "3b",
            "catch-up bytes: everything A sent to B on the new link",
            f"{wire:,.0f} B",
            "same minimal delta",
            f"{minimal:,.0f} B",
            fmt_ratio(wire / minimal),
            f"<= {CATCHUP_BYTES_GOAL:g}x",
            met(worst_wire <= CATCHUP_BYTES_GOAL),
            f"worst ratio {worst_wire:.2f}x; crdtkv messages ({kinds}; {last.message_bytes:,} B) + "
            "WebSocket frame headers + the HTTP 101 response; TCP/IP headers not counted",
        )
    )
    totals = [r.total for r in rounds]
    raw_total = med(c.raw_total)
    connections = sorted({r.connections for r in rounds})
    rows.append(
        Row(
            "3c",
            f"catch-up time: B starts a new Node -> B holds all {CHANGED_KEYS:,} changes",
            f"median {fmt_ms(med(totals))}, max {fmt_ms(max(totals))}",
            "raw `websockets`: connect + receive one message of the minimal delta's size",
            fmt_ms(raw_total),
            fmt_ratio(med(totals) / raw_total),
            f"< {CATCHUP_TIME_GOAL * 1e3:g} ms",
            met(max(totals) < CATCHUP_TIME_GOAL),
            f"{k} rounds: {span(totals, fmt_ms)} (met = every round under the goal); ratio of medians; "
            f"raw {span(c.raw_total, fmt_ms)}; connections per round: {', '.join(map(str, connections))}; "
            f"gc during the rounds: {gc_sum('A', [r.gc_a for r in rounds])}; "
            f"{gc_sum('B', [r.gc_b for r in rounds])}",
        )
    )
    from_dial = [r.total - r.before_dial for r in rounds]
    rows.append(
        Row(
            "3d",
            "same, from B's `connect` call (without B's Node start-up before it)",
            fmt_ms(med(from_dial)),
            "same raw figure",
            fmt_ms(raw_total),
            fmt_ratio(med(from_dial) / raw_total),
            "-",
            "n/a",
            f"{span(from_dial, fmt_ms)}; B's Node called `connect` "
            f"{span([r.before_dial for r in rounds], fmt_ms)} after B started it",
        )
    )
    steps = [med(r.steps[i] for r in rounds) for i in range(len(MARKS))]
    rows.append(
        Row(
            "3e",
            "catch-up from B's `connect` call, step by step (medians, each since the mark before): "
            + " / ".join(MARKS),
            " / ".join(fmt_ms(x) for x in steps),
            "raw `websockets` connect (TCP + HTTP upgrade)",
            fmt_ms(med(c.raw_open)),
            f"WebSocket open {fmt_ratio(steps[0] / med(c.raw_open))}",
            "-",
            "n/a",
            "one system-wide clock, marks taken in A and in B; the first figure is from B's `connect` "
            "call; 'sent' = A's Node calling its connection's `send`, 'at' = the receiving side's "
            "`receive` returning the message, 'applied' = B's store listener finding every change",
        )
    )
    rows.append(
        Row(
            "3f",
            f"initial sync: B (empty) dials A and receives all {c.n:,} keys",
            f"{fmt_num(c.n / c.sync_from_dial)} entries/s",
            "-",
            "-",
            "-",
            "-",
            "n/a",
            f"{fmt_s(c.sync_from_dial)} from B's dial ({fmt_s(c.sync_seconds)} from Node start); "
            f"entries_sent {c.sync_entries_sent:,}; A built the store in {fmt_s(c.build_seconds)}; "
            f"A sent its Hello {fmt_ms(c.sync_hello_wait)} after B's Hello arrived and its first Deltas "
            f"{fmt_ms(c.sync_deltas_wait)} after its Hello; digests equal after the last round: "
            f"{'yes' if c.agree else 'NO'}; {c.sync_gc}",
        )
    )


PHASES = ("throughput", "latency", "catchup")


async def run_all(args: argparse.Namespace, rows: list[Row]) -> None:
    rng = random.Random(args.seed)
    phases = [args.only] if args.only else list(PHASES)
    if "throughput" in phases:
        throughput_rows(await bench_throughput(args.keys, args.repeats, args.profile), rows)
    if "latency" in phases:
        latency_rows(await bench_latency(args.latency_writes, args.profile), rows)
    if "catchup" in phases:
        catchup_rows(await bench_catchup(args.catchup_keys, args.rounds, rng, args.profile), rows)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"a smoke run: N = {QUICK_KEYS:,}, {QUICK_LATENCY_WRITES} latency writes, a "
        f"{QUICK_CATCHUP_KEYS:,}-key catch-up store, one run each",
    )
    parser.add_argument("--keys", type=int, default=None, help=f"keys in the write burst ({DEFAULT_KEYS:,})")
    parser.add_argument(
        "--catchup-keys", type=int, default=None, help=f"catch-up store keys ({DEFAULT_CATCHUP_KEYS:,})"
    )
    parser.add_argument("--repeats", type=int, default=None, help=f"write-burst repeats ({DEFAULT_REPEATS})")
    parser.add_argument("--rounds", type=int, default=None, help=f"catch-up rounds ({DEFAULT_ROUNDS})")
    parser.add_argument("--only", choices=PHASES, default=None, help="run one measurement only")
    parser.add_argument("--seed", type=int, default=1, help="seed for the keys changed in the catch-up")
    parser.add_argument("--profile", metavar="DIR", default=None, help="cProfile A and every B into DIR")
    parser.add_argument("--role", choices=sorted(ROLES), default=None, help=argparse.SUPPRESS)
    parser.add_argument("--params", default="{}", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.role is not None:
        return child_main(args.role, args.params, args.profile)

    quick = args.quick
    args.keys = args.keys or (QUICK_KEYS if quick else DEFAULT_KEYS)
    args.catchup_keys = args.catchup_keys or (QUICK_CATCHUP_KEYS if quick else DEFAULT_CATCHUP_KEYS)
    args.repeats = args.repeats or (QUICK_REPEATS if quick else DEFAULT_REPEATS)
    args.rounds = args.rounds or (QUICK_ROUNDS if quick else DEFAULT_ROUNDS)
    args.latency_writes = QUICK_LATENCY_WRITES if quick else LATENCY_WRITES
    if args.keys < YIELD_EVERY or args.catchup_keys < CHANGED_KEYS or args.repeats < 1 or args.rounds < 1:
        parser.error(
            f"need --keys >= {YIELD_EVERY}, --catchup-keys >= {CHANGED_KEYS}, --repeats/--rounds >= 1"
        )

    revision = crdtkv_revision("crdtkv", "transports")  # the code was imported just now: record which
    command = command_line(SCRIPT, argv)
    started = time.perf_counter()
    rows: list[Row] = []
    with profiled(args.profile, "A"):
        anyio.run(run_all, args, rows)
    elapsed = time.perf_counter() - started

    clock = time.get_clock_info("monotonic")
    print(
        f"{header(SCRIPT, revision)}, {platform.system()} {platform.release()}; "
        f"websockets {version_of('websockets')}, anyio {version_of('anyio')}, cbor2 {version_of('cbor2')}; "
        f"clock time.monotonic_ns = {clock.implementation} in both processes"
    )
    print()
    print(
        f"Two processes on loopback: A (listens, writes) and B (dials, receives), each an `anyio.run` "
        f"event loop (asyncio backend); B started with `sys.executable`. Write burst N = {args.keys:,} keys "
        f"(best of {args.repeats}, crdtkv and baselines round-robin); "
        f"latency {args.latency_writes:,} writes; "
        f"catch-up store {args.catchup_keys:,} keys, {CHANGED_KEYS:,} changed per round, "
        f"{args.rounds} rounds. Node and sync settings are the defaults unless a row says otherwise. "
        "Baselines are plain `websockets` (asyncio API, compression off, crdtkv's max_size and max_queue) "
        "between the same two processes in the same run. Ratios: rates crdtkv / baseline (higher is "
        "better); times, latencies and sizes crdtkv / baseline (lower is better)."
    )
    print()
    print_results(rows, elapsed=elapsed, command=command)
    return exit_status(rows)


if __name__ == "__main__":
    sys.exit(main())

"""Nodes for the replication benches: message recording, in-process pairs and a peer in a child process.

* :class:`Recording` is a transport plug-in wrapping another (``Node(...,
  transports={"ws": Recording(...)})``): it notes the time, size and type of
  every message the node sends, so a bench counts the bytes a real Node put
  on the link. The type is the first item of the message's CBOR array (the
  wire format, not an API of crdtkv).
* :func:`memory_node` runs a Node over the in-process memory transport.
* :func:`spawn` runs ``async def fn(channel, params)`` of a bench module in a
  child process (``python bench/harness.py MODULE FN PARAMS``): JSON lines,
  commands on its stdin and events on its stdout. Both processes time with
  ``time.monotonic_ns``, one clock for the whole machine on Linux, so times
  taken in the two can be subtracted.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
import subprocess
import sys
import time
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import anyio
import anyio.abc
import anyio.to_thread
import report  # noqa: F401  (makes crdtkv importable from a checkout)
from anyio.streams.buffered import BufferedByteReceiveStream

from crdtkv import KvStore, Node, NodeSettings
from crdtkv.transport import Connection, Handler, Listener, Transport, TransportSettings
from transports.memory import MemoryNetwork, MemoryTransport

SECRET = b"bench-secret"
#: the type code of a Deltas message (the batches of entries) in the wire format
DELTAS = 3
#: (monotonic ns, bytes, type code) of one message sent
Sent = tuple[int, int, int]
now_ns = time.monotonic_ns


def message_type(message: bytes) -> int:
    """The type code of a crdtkv message: a short CBOR array whose first item is a small int."""
    return message[1] if len(message) > 1 and 0x80 <= message[0] <= 0x97 and message[1] < 24 else -1


class Recorded:
    """A connection that notes every message sent on it."""

    def __init__(self, inner: Connection) -> None:
        self.inner = inner
        self.sent: list[Sent] = []

    @property
    def remote(self) -> str:
        return self.inner.remote

    async def send(self, message: bytes) -> None:
        self.sent.append((now_ns(), len(message), message_type(message)))
        await self.inner.send(message)

    async def receive(self) -> bytes:
        return await self.inner.receive()

    async def aclose(self) -> None:
        await self.inner.aclose()

    def bytes_sent(self, kind: int | None = DELTAS, since: int = 0) -> int:
        """Bytes of the messages of type ``kind`` (None: all) sent from the ``since``-th on."""
        return sum(size for _, size, code in self.sent[since:] if kind is None or code == kind)


class Recording:
    """A transport wrapping ``inner``; ``connections`` holds every link made or accepted, newest last."""

    def __init__(self, inner: Transport) -> None:
        self.inner = inner
        self.connections: list[Recorded] = []

    async def connect(self, url: str, settings: TransportSettings) -> Connection:
        connection = Recorded(await self.inner.connect(url, settings))
        self.connections.append(connection)
        return connection

    async def listen(self, url: str, handler: Handler, settings: TransportSettings) -> Listener:
        async def recorded(inner: Connection) -> None:
            connection = Recorded(inner)
            self.connections.append(connection)
            await handler(connection)

        return await self.inner.listen(url, recorded, settings)


async def until_all(store: KvStore, expect: dict[str, Any], timeout: float) -> int:
    """Wait until ``store`` reads every value in ``expect``; return the monotonic ns it did.

    A watch of the keys' common prefix wakes the check as soon as a change is applied.
    """
    pending = dict(expect)
    prefix = os.path.commonprefix(list(expect))  # noqa: RUF071 (of keys, not paths)
    async with store.watch(prefix, buffer=1 << 20, buffer_bytes=1 << 30) as changes:
        with anyio.fail_after(timeout):
            while True:
                for key in [k for k, v in pending.items() if store.get(k) == v]:
                    del pending[key]
                if not pending:
                    return now_ns()
                await changes.__anext__()


def node_settings(window: float | None = None) -> NodeSettings:
    """The default settings, with the batch window given (seconds), if any."""
    settings = NodeSettings()
    if window is None:
        return settings
    return dataclasses.replace(settings, sync=dataclasses.replace(settings.sync, batch_window=window))


@asynccontextmanager
async def memory_node(
    store: KvStore, network: MemoryNetwork, name: str, peer: str | None = None, window: float | None = None
) -> AsyncIterator[tuple[Node, Recording]]:
    """A Node for ``store`` on the memory transport: listening as ``memory://name``, or dialing ``peer``."""
    transport = Recording(MemoryTransport(network, name))
    async with Node(
        store,
        listen=None if peer else f"memory://{name}",
        peers=[peer] if peer else [],
        secret=SECRET,
        settings=node_settings(window),
        transports={"memory": transport},
    ) as node:
        yield node, transport


async def sync_to_empty(source: KvStore, expect: dict[str, Any]) -> Recorded:
    """The link on which a Node for ``source`` brought an empty replica to hold ``expect``."""
    network = MemoryNetwork()
    async with memory_node(source, network, "source") as (_, transport):
        empty = KvStore.open(source.name, replica_id="empty")
        async with memory_node(empty, network, "empty", peer="memory://source"):
            await until_all(empty, expect, timeout=120)
    return transport.connections[-1]


# -- a child process -----------------------------------------------------------------------------


class ChildFailed(RuntimeError):
    pass


class Remote:
    """The parent's handle on a child process."""

    def __init__(self, process: anyio.abc.Process) -> None:
        assert process.stdin is not None and process.stdout is not None
        self.process = process
        self._stdin = process.stdin
        self._lines = BufferedByteReceiveStream(process.stdout)

    async def send(self, **command: Any) -> None:
        await self._stdin.send(json.dumps(command).encode() + b"\n")

    async def expect(self, event: str, timeout: float = 120.0) -> dict[str, Any]:
        """The child's next event, which must be ``event``."""
        try:
            with anyio.fail_after(timeout):
                line = await self._lines.receive_until(b"\n", 1 << 26)
        except (anyio.IncompleteRead, anyio.EndOfStream):
            raise ChildFailed(f"the child exited before {event!r}") from None
        message: dict[str, Any] = json.loads(line)
        if message.get("event") != event:
            raise ChildFailed(f"expected {event!r} from the child, got {str(message)[:2000]}")
        return message


@asynccontextmanager
async def spawn(module: str, function: str, **params: Any) -> AsyncIterator[Remote]:
    """Run ``module.function(channel, params)`` in a child; it is killed if still running after the body."""
    args = [sys.executable, os.path.abspath(__file__), module, function, json.dumps(params)]
    process = await anyio.open_process(args, stderr=None)
    try:
        yield Remote(process)
        with anyio.fail_after(60):
            await process.wait()
    finally:
        with anyio.CancelScope(shield=True):
            if process.returncode is None:
                process.kill()
                await process.wait()
            await process.aclose()


class Channel:
    """The child's side: events to stdout, commands from stdin (the child exits when stdin closes)."""

    @staticmethod
    def emit(event: str, **fields: Any) -> None:
        sys.stdout.write(json.dumps({"event": event, **fields}) + "\n")
        sys.stdout.flush()

    async def command(self) -> dict[str, Any]:
        line = await anyio.to_thread.run_sync(sys.stdin.readline)
        if not line:
            os._exit(70)  # the parent is gone: never linger
        command: dict[str, Any] = json.loads(line)
        return command


def child_main(module: str, function: str, params: str) -> int:
    fn: Callable[[Channel, dict[str, Any]], Awaitable[None]] = getattr(
        importlib.import_module(module), function
    )
    try:
        anyio.run(fn, Channel(), json.loads(params))
    except BaseException:
        Channel.emit("error", error=traceback.format_exc())
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(child_main(*sys.argv[1:4]))


@contextmanager
def face_child(args: list[str], prefix: str, cwd: str | os.PathLike[str] | None = None) -> Iterator[str]:
    """A child process that prints ``<prefix> ADDRESS`` (``http on ...``, ``resp on ...``).

    Yields that address once printed (a ``crdtkv serve`` child prints its face
    lines before its ``serving store`` line); stops the child afterwards
    (SIGTERM, then SIGKILL after 30 s).
    """
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=cwd)
    try:
        assert process.stdout is not None
        address = ""
        for line in process.stdout:
            if line.startswith(prefix):
                address = line.split()[-1]
                break
        if not address:
            raise RuntimeError(f"no `{prefix}ADDRESS` line from {args}")
        yield address
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=30)

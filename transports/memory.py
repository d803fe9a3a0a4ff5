"""In-process transport with seeded fault injection, for testing replication.

The memory transport moves messages between tasks of one process, through a
:class:`MemoryNetwork` that can lose, duplicate, reorder, delay and partition
them. It ships with crdtkv so that your own tests can run several nodes in one
process and check that they converge over a bad network, deterministically::

    from crdtkv.transport import TransportSettings
    from transports.memory import MemoryNetwork, MemoryTransport

    net = MemoryNetwork(seed=42)
    london = MemoryTransport(net, name="london")
    sydney = MemoryTransport(net, name="sydney")
    listener = await london.listen("memory://london", handler, TransportSettings())
    link = await sydney.connect("memory://london", TransportSettings())

    net.drop = 0.2                          # lose 20 % of messages from now on
    net.partition(["london"], ["sydney"])   # a network split: silence both ways
    net.heal()                              # and back

Endpoint names
    A listener is named by the host part of its URL: ``memory://london`` listens
    as ``"london"`` (names are case-sensitive; there is no port). A dialing side
    is named by its transport: ``MemoryTransport(net, name="sydney")``. A
    transport created without a name dials as ``"anonymous-N"`` (unique on its
    network), which works but cannot be targeted by a partition. Partitions
    and ``remote`` use these names; ``remote`` reads ``"memory://<name>"``.

The network
    ``MemoryTransport()`` with no arguments (what the ``memory`` entry point
    builds) uses the module-level :data:`DEFAULT_NETWORK`. Fault settings live
    on the network and may be changed at any time; each send reads them once:

    * ``drop``: probability that a message vanishes.
    * ``duplicate``: probability that it is delivered twice.
    * ``reorder``: probability that it is held back and delivered right after
      the next message on the same link and direction, or on its own after
      ``reorder_window`` seconds if no message follows.
    * ``delay``: ``(min, max)`` seconds; each copy is delivered after a delay
      drawn uniformly from the range, which reorders messages too. A delayed
      message does not block its sender.
    * ``partition(group_a, group_b)``: messages between any endpoint of one
      group and any of the other are silently dropped (a black hole, also for
      messages already in flight), and dialing across fails with
      ``ConnectFailed``. Links that exist stay open, silent, as TCP would.
      ``heal()`` removes every partition.

    With every fault setting at zero (the default) a link is FIFO and lossless.
    ``stats`` counts what happened to messages, for assertions in tests.

Determinism
    Every random choice comes from one ``random.Random(seed)`` per network, in
    the order sends happen across the whole network. Drops, duplicates and
    reordering therefore replay exactly for a given seed and a given sequence
    of sends. With ``delay`` set the delivery order also depends on the clock;
    a held-back message that no other message follows depends on it too
    (set ``reorder_window`` high to rule that out).

Limits and closing
    Each direction of a link is an anyio memory object stream buffering
    ``settings.max_queue`` messages (the receiving end's settings), so a slow
    reader slows its sender down. At most ``max_queue`` delayed messages per
    direction are in flight; one more send waits for one of them to land. A
    message over ``max_message_bytes`` (the smaller of both ends' limits)
    closes the link: both ends get ``LinkClosed`` saying it was too large.
    Closing a link (either end, a handler returning, the listener closing)
    lets the other end read what was already delivered, then raise
    ``LinkClosed``; messages still delayed or held back are lost.

The transport needs asyncio (anyio's asyncio backend): a listener serves in the
background after ``listen`` returns, which needs a task that outlives the call.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass, fields
from typing import Any, TypeVarTuple
from urllib.parse import urlsplit

import anyio
import anyio.abc
import anyio.lowlevel
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from crdtkv.errors import ConnectFailed, InvalidArgument, LinkClosed, ListenFailed
from crdtkv.transport import Connection, Handler, Listener, TransportSettings, serve_link

__all__ = [
    "DEFAULT_NETWORK",
    "MemoryConnection",
    "MemoryListener",
    "MemoryNetwork",
    "MemoryTransport",
    "NetworkStats",
]

log = logging.getLogger("crdtkv.transport")

SCHEME = "memory"

Args = TypeVarTuple("Args")


@dataclass
class NetworkStats:
    """What happened to messages on a network since it was created (or reset)."""

    #: Calls to ``send`` that were accepted (not counting ones that closed the link).
    sent: int = 0
    #: Copies put into a receiver's buffer.
    delivered: int = 0
    #: Messages lost to ``drop``.
    dropped: int = 0
    #: Messages lost to a partition (at send or when a delayed copy landed).
    blackholed: int = 0
    #: Messages sent twice because of ``duplicate``.
    duplicated: int = 0
    #: Copies held back because of ``reorder``.
    reordered: int = 0
    #: Copies given a non-zero delay.
    delayed: int = 0

    def reset(self) -> None:
        """Set every counter back to zero."""
        for field in fields(self):
            setattr(self, field.name, 0)


def _probability(name: str, value: float) -> float:
    if not 0.0 <= value <= 1.0:
        raise InvalidArgument(f"{name} must be a probability between 0 and 1, not {value!r}")
    return float(value)


def _group(names: Iterable[str]) -> frozenset[str]:
    # A bare string is one name, not a collection of one-letter names.
    return frozenset([names]) if isinstance(names, str) else frozenset(names)


class MemoryNetwork:
    """Listeners by name, plus the faults every link on this network suffers."""

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self.stats = NetworkStats()
        #: Longest time (seconds) a reordered message waits for a message to follow it.
        self.reorder_window = 0.05
        #: the seeded random source every fault decision draws from
        self.rng = random.Random(seed)
        self._drop = 0.0
        self._duplicate = 0.0
        self._reorder = 0.0
        self._delay = (0.0, 0.0)
        self._partitions: list[tuple[frozenset[str], frozenset[str]]] = []
        self._listeners: dict[str, MemoryListener] = {}
        self._anonymous = itertools.count(1)

    @property
    def drop(self) -> float:
        """Probability that a message vanishes."""
        return self._drop

    @drop.setter
    def drop(self, value: float) -> None:
        self._drop = _probability("drop", value)

    @property
    def duplicate(self) -> float:
        """Probability that a message is delivered twice."""
        return self._duplicate

    @duplicate.setter
    def duplicate(self, value: float) -> None:
        self._duplicate = _probability("duplicate", value)

    @property
    def reorder(self) -> float:
        """Probability that a message is delivered after the next one."""
        return self._reorder

    @reorder.setter
    def reorder(self, value: float) -> None:
        self._reorder = _probability("reorder", value)

    @property
    def delay(self) -> tuple[float, float]:
        """``(min, max)`` seconds each message spends in flight."""
        return self._delay

    @delay.setter
    def delay(self, value: tuple[float, float]) -> None:
        low, high = value
        if not 0.0 <= low <= high:
            raise InvalidArgument(f"delay must be (min, max) with 0 <= min <= max, not {value!r}")
        self._delay = (float(low), float(high))

    def partition(self, group_a: Iterable[str], group_b: Iterable[str]) -> None:
        """Black-hole traffic between every endpoint of ``group_a`` and every one of ``group_b``.

        A bare string counts as a group of one name. Partitions add up until :meth:`heal`.
        """
        side_a, side_b = _group(group_a), _group(group_b)
        if side_a & side_b:
            raise InvalidArgument(
                f"an endpoint cannot be on both sides of a partition: {sorted(side_a & side_b)}"
            )
        self._partitions.append((side_a, side_b))

    def heal(self) -> None:
        """Remove every partition."""
        self._partitions.clear()

    def reachable(self, a: str, b: str) -> bool:
        """Whether messages between endpoints ``a`` and ``b`` get through (either direction)."""
        for side_a, side_b in self._partitions:
            if (a in side_a and b in side_b) or (a in side_b and b in side_a):
                return False
        return True

    def _anonymous_name(self) -> str:
        return f"anonymous-{next(self._anonymous)}"


#: The network used by ``MemoryTransport()`` with no arguments (the ``memory`` entry point).
DEFAULT_NETWORK = MemoryNetwork()


def _name_of(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme.lower() != SCHEME or not parts.netloc:
        raise ValueError(f"not a memory URL (memory://<name>): {url!r}")
    return parts.netloc


class _Background:
    """A task group that outlives the call that created it.

    ``listen`` returns while its listener keeps serving; anyio has no detached
    tasks, so one asyncio task hosts the group until :meth:`aclose`.
    """

    def __init__(self) -> None:
        self._task: asyncio.Task[None] | None = None
        self._group: anyio.abc.TaskGroup | None = None

    async def start(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError as exc:
            raise ListenFailed("the memory transport runs on asyncio (anyio's asyncio backend)") from exc
        ready = anyio.Event()
        self._task = loop.create_task(self._host(ready))
        await ready.wait()

    async def _host(self, ready: anyio.Event) -> None:
        async with anyio.create_task_group() as group:
            self._group = group
            ready.set()
            await anyio.sleep_forever()

    @property
    def group(self) -> anyio.abc.TaskGroup:
        assert self._group is not None, "background group not started"
        return self._group

    async def aclose(self) -> None:
        if self._group is not None:
            self._group.cancel_scope.cancel()
        if self._task is not None:
            await self._task


class _Link:
    """Both ends of one connection and the tasks that carry delayed messages."""

    def __init__(self, network: MemoryNetwork) -> None:
        self.network = network
        self.closed = False
        self.reason = "link closed"
        #: (the listener's end, the dialer's end), set right after construction.
        self.ends: tuple[MemoryConnection, ...] = ()
        self._closing = anyio.Event()
        self._group: anyio.abc.TaskGroup | None = None

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Host the link's delivery tasks until it closes (runs in the listener's group)."""
        try:
            async with anyio.create_task_group() as group:
                self._group = group
                task_status.started()
                await self._closing.wait()
                group.cancel_scope.cancel()
        finally:
            self.close("listener closed")

    def spawn(self, func: Callable[[*Args], Coroutine[Any, Any, None]], *args: *Args) -> bool:
        """Start a delivery task; False once the link is closed."""
        if self.closed or self._group is None:
            return False
        self._group.start_soon(func, *args)
        return True

    def close(self, reason: str) -> None:
        """Close both directions; each end may still read what was delivered."""
        if self.closed:
            return
        self.closed = True
        self.reason = reason
        for end in self.ends:
            end._out.close()
            end._direction.wake()
        self._closing.set()


class _Direction:
    """One direction of a link: applies the network's faults to each message sent."""

    def __init__(
        self, link: _Link, src: str, dst: str, out: MemoryObjectSendStream[bytes], capacity: int
    ) -> None:
        self._link = link
        self._src = src
        self._dst = dst
        self._out = out
        self._capacity = capacity
        self._in_flight = 0
        self._changed = anyio.Event()
        self._held: bytes | None = None
        self._held_id = 0

    def wake(self) -> None:
        """Wake a sender waiting for an in-flight slot (one landed, or the link closed)."""
        self._changed.set()
        self._changed = anyio.Event()

    async def send(self, message: bytes) -> None:
        net = self._link.network
        stats = net.stats
        stats.sent += 1
        if not net.reachable(self._src, self._dst):
            stats.blackholed += 1
            return
        rng = net.rng
        if net.drop and rng.random() < net.drop:
            stats.dropped += 1
            return
        copies = 1
        if net.duplicate and rng.random() < net.duplicate:
            stats.duplicated += 1
            copies = 2
        for _ in range(copies):
            low, high = net.delay
            delay = rng.uniform(low, high) if high > 0 else 0.0
            if delay > 0:
                stats.delayed += 1
                await self._reserve_slot()
                if not self._link.spawn(self._deliver_later, message, delay):
                    raise LinkClosed(self._link.reason)
            elif self._held is None and net.reorder and rng.random() < net.reorder:
                stats.reordered += 1
                self._held = message
                self._held_id += 1
                self._link.spawn(self._flush_later, self._held_id, net.reorder_window)
            else:
                await self._put(message)
                if self._held is not None:  # the held message goes right after this one
                    held, self._held = self._held, None
                    await self._put(held)

    async def _put(self, message: bytes) -> None:
        """Put one copy into the receiver's buffer (waits while it is full)."""
        try:
            await self._out.send(message)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError) as exc:
            raise LinkClosed(self._link.reason) from exc
        self._link.network.stats.delivered += 1

    async def _reserve_slot(self) -> None:
        while self._in_flight >= self._capacity:
            if self._link.closed:
                raise LinkClosed(self._link.reason)
            await self._changed.wait()
        self._in_flight += 1

    async def _deliver_later(self, message: bytes, delay: float) -> None:
        try:
            await anyio.sleep(delay)
            if not self._link.network.reachable(self._src, self._dst):
                self._link.network.stats.blackholed += 1
                return
            await self._put(message)
        except LinkClosed:
            pass  # in flight when the link closed: lost
        finally:
            self._in_flight -= 1
            self.wake()

    async def _flush_later(self, held_id: int, window: float) -> None:
        await anyio.sleep(window)
        if self._held is not None and self._held_id == held_id:
            held, self._held = self._held, None
            if not self._link.network.reachable(self._src, self._dst):
                self._link.network.stats.blackholed += 1
                return
            with contextlib.suppress(LinkClosed):  # closed meanwhile: lost
                await self._put(held)


class MemoryConnection:
    """One end of an in-process link (see the module docstring for its behaviour)."""

    def __init__(
        self,
        link: _Link,
        name: str,
        peer: str,
        inbox: MemoryObjectReceiveStream[bytes],
        out: MemoryObjectSendStream[bytes],
        peer_capacity: int,
        max_message_bytes: int,
    ) -> None:
        # max_message_bytes is the smaller of both ends' limits: a message either end would refuse.
        self._link = link
        self._name = name
        self._peer = peer
        self._inbox = inbox
        self._out = out
        self._max_message_bytes = max_message_bytes
        self._direction = _Direction(link, name, peer, out, peer_capacity)

    @property
    def name(self) -> str:
        """This end's endpoint name."""
        return self._name

    @property
    def remote(self) -> str:
        return f"{SCHEME}://{self._peer}"

    @property
    def closed(self) -> bool:
        """Whether the link is closed (by either end)."""
        return self._link.closed

    async def send(self, message: bytes) -> None:
        """Send one message through the network's faults; waits while the peer's buffer is full."""
        if self._link.closed:
            raise LinkClosed(self._link.reason)
        if len(message) > self._max_message_bytes:
            self._link.close(f"message too large: {len(message)} bytes, limit {self._max_message_bytes}")
            raise LinkClosed(self._link.reason)
        await self._direction.send(bytes(message))

    async def receive(self) -> bytes:
        """Receive the next message; raises LinkClosed once the link is closed and drained."""
        try:
            return await self._inbox.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError) as exc:
            raise LinkClosed(self._link.reason) from exc

    async def aclose(self) -> None:
        """Close the link (idempotent)."""
        self._link.close(f"closed by {self._name}")
        self._inbox.close()


class MemoryListener:
    """A name on a :class:`MemoryNetwork` that serves each accepted link with a handler."""

    def __init__(
        self, network: MemoryNetwork, name: str, handler: Handler, settings: TransportSettings
    ) -> None:
        self._network = network
        self._name = name
        self._handler = handler
        self._settings = settings
        self._background = _Background()
        # Listener ends not closed yet (closed by _serve, or by aclose if _serve never ran).
        self._accepted: set[MemoryConnection] = set()
        self._closed = False

    @property
    def url(self) -> str:
        return f"{SCHEME}://{self._name}"

    @property
    def name(self) -> str:
        return self._name

    @property
    def closed(self) -> bool:
        return self._closed

    async def _accept(self, dialer: str, settings: TransportSettings) -> MemoryConnection:
        """Make a link from ``dialer`` to this listener; returns the dialer's end."""
        if self._closed:
            raise ConnectFailed(f"cannot connect to {self.url}: the listener is closed")
        link = _Link(self._network)
        limit = min(self._settings.max_message_bytes, settings.max_message_bytes)
        to_server_send, to_server_recv = anyio.create_memory_object_stream[bytes](self._settings.max_queue)
        to_client_send, to_client_recv = anyio.create_memory_object_stream[bytes](settings.max_queue)
        server_end = MemoryConnection(
            link,
            self._name,
            dialer,
            to_server_recv,
            to_client_send,
            settings.max_queue,
            limit,
        )
        client_end = MemoryConnection(
            link,
            dialer,
            self._name,
            to_client_recv,
            to_server_send,
            self._settings.max_queue,
            limit,
        )
        link.ends = (server_end, client_end)
        self._accepted.add(server_end)
        try:
            await self._background.group.start(link.run)
        except BaseException:
            await client_end.aclose()
            await server_end.aclose()
            raise
        self._background.group.start_soon(self._serve, server_end)
        return client_end

    async def _serve(self, connection: MemoryConnection) -> None:
        """Run the handler for one link; its failure closes that link only."""
        try:
            await serve_link(self._handler, connection, self.url)
        finally:
            self._accepted.discard(connection)

    async def aclose(self) -> None:
        """Stop accepting, close every link, and cancel handlers still running."""
        if self._closed:
            return
        self._closed = True
        if self._network._listeners.get(self._name) is self:
            del self._network._listeners[self._name]
        for end in list(self._accepted):
            end._link.close(f"listener {self.url} closed")
            await end.aclose()
        self._accepted.clear()
        await self._background.aclose()


class MemoryTransport:
    """The ``memory://`` transport: dials and listens on a :class:`MemoryNetwork`."""

    def __init__(
        self,
        network: MemoryNetwork | None = None,
        name: str | None = None,
        *,
        seed: int | None = None,
        delay: float | tuple[float, float] | None = None,
    ) -> None:
        """Dial and listen on ``network`` (default: the process-wide :data:`DEFAULT_NETWORK`).

        With ``seed`` or ``delay`` the transport gets a network of its own
        instead: seeded faults, and every message ``delay`` seconds in flight
        (a number, or ``(min, max)``), for callers that find it through the
        plug-in lookup (:func:`crdtkv.transport.transport_factory`).
        """
        if seed is not None or delay is not None:
            if network is not None:
                raise InvalidArgument("give a network, or seed and delay for a network of its own, not both")
            network = MemoryNetwork(seed=seed or 0)
            if delay is not None:
                network.delay = (delay, delay) if isinstance(delay, (int, float)) else delay
        self.network = network if network is not None else DEFAULT_NETWORK
        #: The name this transport dials as (partitions and the peer's ``remote`` use it).
        self.name = name if name is not None else self.network._anonymous_name()

    async def connect(self, url: str, settings: TransportSettings) -> Connection:
        """Dial the listener named by ``url``; raises ConnectFailed."""
        await anyio.lowlevel.checkpoint()
        try:
            target = _name_of(url)
        except ValueError as exc:
            raise ConnectFailed(str(exc)) from exc
        listener = self.network._listeners.get(target)
        if listener is None or listener.closed:
            raise ConnectFailed(f"cannot connect to {url}: nothing listens on memory name {target!r}")
        if not self.network.reachable(self.name, target):
            raise ConnectFailed(f"cannot connect to {url} from {self.name!r}: network partition")
        return await listener._accept(self.name, settings)

    async def listen(self, url: str, handler: Handler, settings: TransportSettings) -> Listener:
        """Serve the name in ``url``; raises ListenFailed if it is taken."""
        try:
            name = _name_of(url)
        except ValueError as exc:
            raise ListenFailed(str(exc)) from exc
        if name in self.network._listeners:
            raise ListenFailed(f"cannot listen on {url}: the name {name!r} is already taken")
        listener = MemoryListener(self.network, name, handler, settings)
        self.network._listeners[name] = listener
        try:
            await listener._background.start()
        except BaseException:
            del self.network._listeners[name]
            raise
        return listener

"""Fault injection of the memory transport: seeded, documented, and cleaned up on close."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import anyio
import pytest

from crdtkv.errors import ConnectFailed, InvalidArgument, LinkClosed, ListenFailed
from crdtkv.transport import Connection, TransportSettings, find_transport
from transports.memory import DEFAULT_NETWORK, MemoryNetwork, MemoryTransport

pytestmark = pytest.mark.anyio

SETTINGS = TransportSettings(max_queue=64)
GUARD = 10
END = b"end"


@dataclass
class Pair:
    """Both ends of one link: ``client`` dials as "sydney", ``server`` listens as "london"."""

    network: MemoryNetwork
    client: Connection
    server: Connection
    sydney: MemoryTransport


@asynccontextmanager
async def pair(network: MemoryNetwork, settings: TransportSettings = SETTINGS) -> AsyncIterator[Pair]:
    accepted: list[Connection] = []
    ready = anyio.Event()

    async def hold(connection: Connection) -> None:
        accepted.append(connection)
        ready.set()
        await anyio.sleep_forever()

    london = MemoryTransport(network, name="london")
    sydney = MemoryTransport(network, name="sydney")
    listener = await london.listen("memory://london", hold, settings)
    try:
        client = await sydney.connect("memory://london", settings)
        try:
            await ready.wait()
            yield Pair(network, client, accepted[0], sydney)
        finally:
            await client.aclose()
    finally:
        await listener.aclose()


def numbered(i: int) -> bytes:
    return str(i).encode()


async def receive_until_end(connection: Connection) -> list[bytes]:
    got = []
    while (message := await connection.receive()) != END:
        got.append(message)
    return got


async def send_and_collect(network: MemoryNetwork, link: Pair, count: int) -> list[bytes]:
    """Send ``count`` numbered messages, then faultlessly two END markers (one may let a held message out)."""

    async def send_all() -> None:
        for i in range(count):
            await link.client.send(numbered(i))
        network.drop = network.duplicate = network.reorder = 0.0
        await link.client.send(END)
        await link.client.send(END)

    async with anyio.create_task_group() as group:
        group.start_soon(send_all)
        got = await receive_until_end(link.server)
        got += await receive_until_end(link.server)
    return got


async def delivered_with(seed: int, count: int = 200) -> tuple[list[bytes], dict[str, int]]:
    network = MemoryNetwork(seed=seed)
    network.drop, network.duplicate, network.reorder = 0.2, 0.2, 0.2
    network.reorder_window = 60  # only a following message releases a held one: no clock involved
    with anyio.fail_after(GUARD):
        async with pair(network) as link:
            got = await send_and_collect(network, link, count)
    return got, vars(network.stats).copy()


async def test_same_seed_same_delivered_sequence() -> None:
    first, first_stats = await delivered_with(seed=1)
    second, second_stats = await delivered_with(seed=1)
    other, _ = await delivered_with(seed=2)
    assert first == second
    assert first_stats == second_stats
    assert first != other
    assert first != [numbered(i) for i in range(200)]
    assert first_stats["dropped"] > 0
    assert first_stats["duplicated"] > 0
    assert first_stats["reordered"] > 0


async def test_no_faults_means_fifo_and_lossless() -> None:
    network = MemoryNetwork(seed=3)
    with anyio.fail_after(GUARD):
        async with pair(network) as link:
            got = await send_and_collect(network, link, 500)
    assert got == [numbered(i) for i in range(500)]
    assert network.stats.sent == network.stats.delivered == 502


async def test_drop_everything_delivers_nothing() -> None:
    network = MemoryNetwork()
    network.drop = 1.0
    with anyio.fail_after(GUARD):
        async with pair(network) as link:
            got = await send_and_collect(network, link, 50)
    assert got == []
    assert network.stats.dropped == 50


async def test_duplicate_everything_delivers_each_message_twice() -> None:
    network = MemoryNetwork()
    network.duplicate = 1.0
    with anyio.fail_after(GUARD):
        async with pair(network) as link:
            got = await send_and_collect(network, link, 10)
    assert got == [numbered(i) for i in range(10) for _ in range(2)]
    assert network.stats.duplicated == 10


async def test_reorder_swaps_a_message_with_the_next_one() -> None:
    network = MemoryNetwork()
    network.reorder = 1.0
    network.reorder_window = 60
    with anyio.fail_after(GUARD):
        async with pair(network) as link:
            got = await send_and_collect(network, link, 5)
    # 0 is held until 1 passes it, 2 until 3 does; 4 is held until the first END passes it.
    assert got == [b"1", b"0", b"3", b"2", b"4"]
    assert network.stats.reordered == 3


async def test_a_held_message_is_flushed_when_nothing_follows() -> None:
    network = MemoryNetwork()
    network.reorder = 1.0
    network.reorder_window = 0.01
    with anyio.fail_after(GUARD):
        async with pair(network) as link:
            await link.client.send(b"alone")
            assert await link.server.receive() == b"alone"
    assert network.stats.reordered == 1


async def test_delay_holds_messages_back_without_blocking_the_sender() -> None:
    network = MemoryNetwork()
    network.delay = (0.05, 0.1)
    with anyio.fail_after(GUARD):
        async with pair(network) as link:
            start = anyio.current_time()
            for i in range(10):
                await link.client.send(numbered(i))
            first = await link.server.receive()
            waited = anyio.current_time() - start
            got = [first] + [await link.server.receive() for _ in range(9)]
    assert waited >= 0.05 - 0.01  # a lower bound only: the delay is a minimum, slowness cannot fail it
    assert sorted(got, key=int) == [numbered(i) for i in range(10)]
    assert network.stats.delayed == 10


async def test_delayed_messages_in_flight_are_discarded_on_close() -> None:
    network = MemoryNetwork()
    network.delay = (60, 60)
    with anyio.fail_after(GUARD):
        async with pair(network) as link:
            for i in range(5):
                await link.client.send(numbered(i))  # returns at once: delivery is a minute away
            assert network.stats.delayed == 5
    assert network.stats.delivered == 0


async def test_partition_blocks_both_directions_and_new_links_until_healed() -> None:
    network = MemoryNetwork()
    with anyio.fail_after(GUARD):
        async with pair(network) as link:
            network.partition(["london"], ["sydney"])
            assert not network.reachable("sydney", "london")
            await link.client.send(b"lost to london")
            await link.server.send(b"lost to sydney")
            with pytest.raises(ConnectFailed, match="partition"):
                await link.sydney.connect("memory://london", SETTINGS)
            assert network.stats.blackholed == 2

            network.heal()
            assert network.reachable("sydney", "london")
            await link.client.send(b"hello london")
            await link.server.send(b"hello sydney")
            assert await link.server.receive() == b"hello london"
            assert await link.client.receive() == b"hello sydney"
            again = await link.sydney.connect("memory://london", SETTINGS)
            await again.aclose()


async def test_partition_accepts_single_names_and_leaves_other_endpoints_alone() -> None:
    network = MemoryNetwork()
    network.partition("london", ["paris", "sydney"])
    assert not network.reachable("london", "sydney")
    assert not network.reachable("paris", "london")
    assert network.reachable("paris", "sydney")
    assert network.reachable("london", "tokyo")
    with pytest.raises(InvalidArgument):
        network.partition(["london"], ["london"])


async def test_partition_drops_delayed_messages_that_land_during_it() -> None:
    network = MemoryNetwork()
    network.delay = (0.01, 0.01)
    with anyio.fail_after(GUARD):
        async with pair(network) as link:
            await link.client.send(b"in flight")
            network.partition(["london"], ["sydney"])
            network.delay = (0, 0)
            while network.stats.blackholed == 0:
                await anyio.sleep(0.01)
            network.heal()
            await link.client.send(b"after")
            assert await link.server.receive() == b"after"


@pytest.mark.parametrize(
    ("delay", "max_queue"),
    [(0.0, 3), (60.0, 2)],  # a receiver that does not read; messages held in flight by a delay
)
async def test_a_slow_receiver_or_a_slow_link_applies_backpressure(delay: float, max_queue: int) -> None:
    network = MemoryNetwork()
    network.delay = (delay, delay)
    settings = TransportSettings(max_queue=max_queue)
    async with pair(network, settings) as link:
        sent = 0
        with anyio.move_on_after(0.2):
            for i in range(10):
                await link.client.send(numbered(i))
                sent += 1
    assert sent == max_queue


async def test_fault_settings_are_validated() -> None:
    network = MemoryNetwork()
    for name in ("drop", "duplicate", "reorder"):
        with pytest.raises(InvalidArgument):
            setattr(network, name, 1.5)
        with pytest.raises(InvalidArgument):
            setattr(network, name, -0.1)
    with pytest.raises(InvalidArgument):
        network.delay = (0.2, 0.1)
    with pytest.raises(InvalidArgument):
        network.delay = (-1, 0)


async def test_a_name_can_only_be_listened_on_once() -> None:
    network = MemoryNetwork()

    async def nothing(connection: Connection) -> None:
        pass

    transport = MemoryTransport(network)
    listener = await transport.listen("memory://taken", nothing, SETTINGS)
    try:
        with pytest.raises(ListenFailed, match="taken"):
            await transport.listen("memory://taken", nothing, SETTINGS)
    finally:
        await listener.aclose()
    second = await transport.listen("memory://taken", nothing, SETTINGS)
    await second.aclose()


async def test_bad_urls_are_refused() -> None:
    transport = MemoryTransport(MemoryNetwork())
    with pytest.raises(ConnectFailed):
        await transport.connect("memory://", SETTINGS)
    with pytest.raises(ConnectFailed):
        await transport.connect("ws://127.0.0.1:1", SETTINGS)


async def test_remote_names_both_endpoints_and_anonymous_dialers_get_unique_names() -> None:
    network = MemoryNetwork()
    with anyio.fail_after(GUARD):
        async with pair(network) as link:
            assert link.client.remote == "memory://london"
            assert link.server.remote == "memory://sydney"
    first, second = MemoryTransport(network), MemoryTransport(network)
    assert first.name != second.name


async def test_the_entry_point_transport_uses_the_default_network() -> None:
    async def echo(connection: Connection) -> None:
        await connection.send(await connection.receive())

    listener = await MemoryTransport().listen("memory://default-network-test", echo, SETTINGS)
    try:
        assert DEFAULT_NETWORK.reachable("a", "b")
        with anyio.fail_after(GUARD):
            client = await find_transport(listener.url).connect(listener.url, SETTINGS)
            try:
                await client.send(b"hi")
                assert await client.receive() == b"hi"
            finally:
                await client.aclose()
    finally:
        await listener.aclose()


async def test_stats_reset() -> None:
    network = MemoryNetwork()
    with anyio.fail_after(GUARD):
        async with pair(network) as link:
            await link.client.send(b"x")
            assert await link.server.receive() == b"x"
    assert network.stats.sent == network.stats.delivered == 1
    network.stats.reset()
    assert vars(network.stats) == dict.fromkeys(vars(network.stats), 0)


async def test_link_closed_reason_names_the_closing_end() -> None:
    network = MemoryNetwork()
    with anyio.fail_after(GUARD):
        async with pair(network) as link:
            await link.client.aclose()
            with pytest.raises(LinkClosed, match="closed by sydney"):
                await link.server.receive()

"""How a node manages its links: closes logged once, quiet redials, itself, duplicates, oversize entries."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable

import anyio
import pytest
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed

from crdtkv import KvStore
from crdtkv.client import Client
from crdtkv.core.limits import KIB
from crdtkv.core.messages import ROLE_CLIENT
from crdtkv.core.sync import Session, SyncSettings
from crdtkv.node import Link, Node, NodeSettings
from crdtkv.transport import TransportSettings
from transports.websocket import WebSocketTransport

from .test_node import FAST, SECRET, converge
from .test_processes import free_ports

pytestmark = pytest.mark.anyio

GUARD = 20.0


async def until(predicate: Callable[[], object], what: str) -> None:
    with anyio.fail_after(GUARD):
        while not predicate():
            await anyio.sleep(0.005)


def node_records(caplog: pytest.LogCaptureFixture, *words: str) -> list[logging.LogRecord]:
    return [
        record
        for record in caplog.records
        if record.name == "crdtkv.node" and all(word in record.getMessage() for word in words)
    ]


# -- every close is logged once ----------------------------------------------------------


async def test_a_handshake_timeout_is_logged_once_with_its_code_and_reason(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="crdtkv.node")
    settings = NodeSettings(inbound_handshake_timeout=0.2)
    async with Node(KvStore.open("t"), listen="ws://127.0.0.1:0", secret=SECRET, settings=settings) as node:
        assert node.url is not None
        async with ws_connect(node.url, compression=None) as ws:
            host, port = ws.local_address[:2]
            await ws.recv()  # the challenge; then silence
            with anyio.fail_after(GUARD), pytest.raises(ConnectionClosed):
                await ws.recv()
        label = f"{host}:{port}"
        await until(lambda: node_records(caplog, label, "closed"), "the close to be logged")
        await anyio.sleep(0.1)  # anything logged twice would be logged by now
    [record] = node_records(caplog, label)
    assert "code 4005" in record.getMessage() and "handshake timed out" in record.getMessage()


async def test_a_keepalive_timeout_is_logged_once_with_its_code_and_reason(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="crdtkv.node")
    settings = NodeSettings(sync=SyncSettings(keepalive_interval=0.05, keepalive_timeout=0.3))
    async with Node(KvStore.open("t"), listen="ws://127.0.0.1:0", secret=SECRET, settings=settings) as node:
        assert node.url is not None
        transport = WebSocketTransport()
        connection = await transport.connect(node.url, TransportSettings())
        try:
            session = Session(
                KvStore.open("t")._state, dialer=True, now=time.monotonic(), secret=SECRET, role=ROLE_CLIENT
            )
            with anyio.fail_after(GUARD):
                while not session.opened:  # authenticate, then answer nothing (no pongs)
                    session.receive(await connection.receive(), time.monotonic())
                    for data in session.outgoing(time.monotonic()):
                        await connection.send(data)
            await until(lambda: node_records(caplog, "keepalive"), "the keepalive close to be logged")
            await until(lambda: not node.links, "the link to go")
            await anyio.sleep(0.1)
        finally:
            await connection.aclose()
    records = [r for r in node_records(caplog, "closed") if r.levelno >= logging.DEBUG]
    assert len(records) == 1
    assert "code 4005" in records[0].getMessage() and "keepalive timed out" in records[0].getMessage()


async def test_closes_by_the_peer_and_lost_links_are_logged_once_each(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="crdtkv.node")
    a, b = KvStore.open("t", replica_id="a"), KvStore.open("t", replica_id="b")
    async with Node(a, listen="ws://127.0.0.1:0", settings=FAST) as na:
        async with Node(b, peers=[na.url], settings=FAST) as nb:  # type: ignore[list-item]
            await nb.wait_for_peers(1)
            await na.wait_for_peers(1)
        await until(lambda: not na.links, "a to see b go")
    # b shut down: b logs its close (4006), a logs the close by the peer, each once
    ours = node_records(caplog, "closed:", "code 4006")
    theirs = node_records(caplog, "closed by the peer", "code 4006")
    assert len(ours) == 1 and len(theirs) == 1


# -- failed dials, recovery, client logging ------------------------------------------------


async def test_failed_dials_warn_once_per_reason_and_recovery_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="crdtkv.node")
    url = f"ws://127.0.0.1:{free_ports(1)[0]}"
    a, b = KvStore.open("t", replica_id="a"), KvStore.open("t", replica_id="b")
    async with Node(a, peers=[url], settings=FAST):
        await until(lambda: len(node_records(caplog, url, "reach")) >= 4, "a few failed dials")
        async with Node(b, listen=url, settings=FAST) as nb:
            await nb.wait_for_peers(1, timeout=GUARD)
            await until(lambda: node_records(caplog, "reached peer", url), "the recovery to be logged")
            async with Client(url, store="t"):
                pass
    failures = node_records(caplog, url, "reach peer")
    first, *repeats = failures
    assert first.levelno == logging.WARNING and "cannot connect" in first.getMessage()  # the reason
    assert repeats and all(record.levelno == logging.DEBUG for record in repeats)
    [recovery] = node_records(caplog, "reached peer", url)
    assert recovery.levelno == logging.INFO
    # peers at INFO, clients at DEBUG
    assert [r.levelno for r in node_records(caplog, "replicating with")] == [logging.INFO] * 2
    client_records = node_records(caplog, "client")
    assert client_records and all(r.levelno == logging.DEBUG for r in client_records)
    assert not [r for r in caplog.records if r.name == "crdtkv.node" and r.levelno >= logging.ERROR]


async def test_a_node_dialing_itself_stops_with_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="crdtkv.node")
    url = f"ws://127.0.0.1:{free_ports(1)[0]}"
    store = KvStore.open("t", replica_id="alone")
    async with Node(store, listen=url, peers=[url], secret=SECRET, settings=FAST) as node:
        await until(lambda: not node.dialing, "the node to stop dialing itself")
        await until(lambda: not node.links, "the self link to close")
        links_seen = len(node_records(caplog, "closed"))
        await anyio.sleep(5 * FAST.reconnect_max)  # several redial periods: none comes
        assert len(node_records(caplog, "closed")) == links_seen
        assert not node.links
    warnings = [r for r in caplog.records if r.name == "crdtkv.node" and r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "itself" in warnings[0].getMessage() and url in warnings[0].getMessage()


# -- one link per pair of nodes ------------------------------------------------------------


def replication_links(node: Node) -> list[Link]:
    return [link for link in node.links if link.session.replicating]


async def test_two_nodes_listing_each_other_keep_one_link_and_recover_when_it_dies() -> None:
    url_a, url_b = (f"ws://127.0.0.1:{port}" for port in free_ports(2))
    a, b = KvStore.open("t", replica_id="a"), KvStore.open("t", replica_id="b")
    async with (
        Node(a, listen=url_a, peers=[url_b], secret=SECRET, settings=FAST) as na,
        Node(b, listen=url_b, peers=[url_a], secret=SECRET, settings=FAST) as nb,
    ):

        def one_link_each() -> bool:
            """One link, counted once, on each side: the one dialed by the smaller origin id."""
            if not all(
                len(node.links) == 1 and len(replication_links(node)) == 1 and len(node.connected) == 1
                for node in (na, nb)
            ):
                return False  # (a node whose first dial failed has only the other's link for a moment)
            [link_a], [link_b] = replication_links(na), replication_links(nb)
            return (
                link_a.session.dialer == (a.origin < b.origin)
                and link_b.session.dialer != link_a.session.dialer
            )

        for round_ in range(2):
            await until(one_link_each, "exactly one link between the two nodes")
            [link_a] = replication_links(na)
            [link_b] = replication_links(nb)
            received = link_b.session.stats["entries_received"] + link_a.session.stats["entries_received"]
            a.put(f"from-a-{round_}", round_)
            b.put(f"from-b-{round_}", round_)
            await converge(a, b)
            assert b.get(f"from-a-{round_}") == round_ and a.get(f"from-b-{round_}") == round_
            after = link_b.session.stats["entries_received"] + link_a.session.stats["entries_received"]
            assert after - received == 2  # each change crossed once
            assert one_link_each()
            # kill the surviving link under both nodes: they must find each other again
            link_a.connection.websocket.transport.abort()  # type: ignore[attr-defined]
            await until(
                lambda dead=(link_a, link_b): dead[0] not in na.links and dead[1] not in nb.links,  # type: ignore[misc]
                "the link to die",
            )


# -- an entry the link cannot carry ----------------------------------------------------------


async def test_an_entry_larger_than_the_link_allows_is_reported_and_the_link_stays_usable(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A node whose links carry at most 256 KiB holds a 400 KB value: it is not sent (an error
    names the key), and the link is not closed and redialed forever; later changes arrive."""
    caplog.set_level(logging.INFO, logger="crdtkv.node")
    small = NodeSettings(
        sync=FAST.sync,
        transport=TransportSettings(max_message_bytes=256 * KIB),
        reconnect_initial=FAST.reconnect_initial,
        reconnect_max=FAST.reconnect_max,
    )
    sender, receiver = KvStore.open("t", replica_id="sender"), KvStore.open("t", replica_id="receiver")
    async with (
        Node(receiver, listen="ws://127.0.0.1:0", settings=FAST) as nr,
        Node(sender, peers=[nr.url], settings=small) as ns,  # type: ignore[list-item]
    ):
        await ns.wait_for_peers(1)
        sender.put("huge", os.urandom(400 * KIB))
        sender.put("after", 1)
        await until(lambda: receiver.get("after") == 1, "the later change to arrive")
        sender.put("later-still", 2)
        await until(lambda: receiver.get("later-still") == 2, "the next change to arrive")
        assert receiver.get("huge") is None
        [error] = [r for r in node_records(caplog, "huge") if r.levelno == logging.ERROR]
        assert "not sent" in error.getMessage()
        assert len(node_records(caplog, "replicating with")) == 2  # one link each side, never redialed

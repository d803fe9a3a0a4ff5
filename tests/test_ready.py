"""Readiness: a node with peers is ready once it caught up with one; the session says when that is."""

from __future__ import annotations

import anyio
import pytest

from crdtkv import KvStore
from crdtkv.core.messages import Deltas, decode_message
from crdtkv.core.sync import Applied, Session
from crdtkv.node import Node, NodeSettings

from .core.test_sync import pair

FAST = NodeSettings(reconnect_initial=0.02, reconnect_max=0.1)


def handshake(dialer: Session, listener: Session, now: float) -> list[bytes]:
    """Carry the handshake both ways; return the delta parts held back (not delivered)."""
    held: list[bytes] = []
    for _ in range(4):
        for data in listener.outgoing(now):
            if isinstance(decode_message(data, listener.limits), Deltas):
                held.append(data)
            else:
                dialer.receive(data, now)
        for data in dialer.outgoing(now):
            if not isinstance(decode_message(data, dialer.limits), Deltas):
                listener.receive(data, now)
    return held


def test_a_session_is_caught_up_once_it_holds_what_the_peers_hello_announced() -> None:
    a, b, dialer, listener = pair()
    for i in range(50):
        b.put(f"k{i}", i)
    held = handshake(dialer, listener, 0.1)
    assert dialer.replicating and listener.replicating
    assert not dialer.caught_up  # the listener's hello named writes the dialer lacks
    assert listener.caught_up  # the dialer's hello named nothing
    assert held
    events = [event for data in held for event in dialer.receive(data, 0.2)]
    assert dialer.caught_up
    assert a.digest() == b.digest()
    # one propagation sample per adopted batch: the newest stamp it moved
    applied = [event for event in events if isinstance(event, Applied)]
    assert applied and applied[-1].newest == b.replica.vv[b.origin]
    # a later write on the peer does not make it "not caught up" again
    b.put("later", 1)
    assert dialer.caught_up


def test_catching_up_through_another_link_counts_too() -> None:
    a, b, dialer, listener = pair()
    b.put("x", 1)
    held = handshake(dialer, listener, 0.1)
    assert held and dialer.replicating and not dialer.caught_up
    a.merge(b.snapshot())  # the same writes, from elsewhere
    assert dialer.caught_up


@pytest.mark.anyio
async def test_a_node_is_ready_only_once_it_holds_what_its_peer_held() -> None:
    source = KvStore.open("t", replica_id="source")
    for i in range(3000):
        source.put(f"key:{i:05}", "x" * 200)
    fresh = KvStore.open("t", replica_id="fresh")
    async with Node(source, listen="ws://127.0.0.1:0", settings=FAST) as serving:
        assert serving.ready  # no peers to dial: ready once serving
        async with Node(fresh, peers=[serving.url or ""], settings=FAST) as node:
            assert not node.ready
            with anyio.fail_after(30):
                while not node.ready:
                    await anyio.sleep(0)  # poll as often as the loop turns
            # the first moment it says ready it holds everything its peer had
            assert fresh.digest() == source.digest()
            assert node.status()["ready"] is True
        assert not node.ready  # stopped
    source.close()
    fresh.close()


@pytest.mark.anyio
async def test_a_node_whose_peer_is_unreachable_is_not_ready() -> None:
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    await listener.aclose()  # nothing listens there now
    store = KvStore.open("t", replica_id="alone")
    async with Node(store, peers=[f"ws://127.0.0.1:{port}"], settings=FAST) as node:
        with anyio.fail_after(30):
            while node.dial_failures < 3:
                await anyio.sleep(0.01)
        assert not node.ready
        [peer] = node.status()["peers"]
        assert peer["state"] == "down" and peer["last_error"]
    store.close()

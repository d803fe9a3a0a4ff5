"""Hostile input over a real WebSocket: the offender's link closes, nothing else changes."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import tracemalloc
from collections.abc import AsyncIterator

import anyio
import cbor2
import pytest
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed

from crdtkv import KvStore
from crdtkv.client import Client
from crdtkv.core.limits import DEFAULT_LIMITS
from crdtkv.core.messages import (
    NONCE_BYTES,
    PROTOCOL_VERSION,
    ROLE_PEER,
    Challenge,
    Close,
    Hello,
    decode_message,
    encode_message,
)
from crdtkv.core.sync import make_proof
from crdtkv.node import Node

from .helpers import FakeClock
from .test_node import FAST, SECRET, converge

pytestmark = pytest.mark.anyio

#: the ``cluster`` fixture: the victim node, its store, and its honest peer's store
Cluster = tuple[Node, KvStore, KvStore]


async def drain(ws: ClientConnection) -> list[object]:
    """Every message the node sends until it closes the link."""
    received: list[object] = []
    with anyio.fail_after(10):
        try:
            while True:
                received.append(decode_message(await ws.recv(), DEFAULT_LIMITS))  # type: ignore[arg-type]
        except ConnectionClosed:
            pass
    return received


def signed_hello(challenge: Challenge, store: KvStore, secret: bytes, nonce: bytes | None = None) -> Hello:
    nonce = nonce or os.urandom(NONCE_BYTES)
    bare = Hello(PROTOCOL_VERSION, store.name, store.origin, ROLE_PEER, nonce, b"", dict(store._state.vv))
    proof = make_proof(secret, "dial", challenge.nonce, nonce, bare)
    return Hello(bare.version, bare.store, bare.origin, bare.role, nonce, proof, bare.vv)


@pytest.fixture
async def cluster() -> AsyncIterator[Cluster]:
    """A node under attack (victim) with one honest peer replicating with it."""
    victim_store = KvStore.open("t", replica_id="victim")
    honest_store = KvStore.open("t", replica_id="honest")
    victim_store.put("precious", "data")
    async with (
        Node(victim_store, listen="ws://127.0.0.1:0", secret=SECRET, settings=FAST) as victim,
        Node(honest_store, peers=[victim.url], secret=SECRET, settings=FAST) as honest,  # type: ignore[list-item]
    ):
        await honest.wait_for_peers(1)
        await converge(victim_store, honest_store)
        yield victim, victim_store, honest_store


async def still_serving(victim: Node, victim_store: KvStore, honest_store: KvStore, marker: str) -> None:
    honest_store.put(marker, True)
    await converge(victim_store, honest_store)
    assert victim_store.get(marker) is True
    async with Client(victim.url, store="t", secret=SECRET) as client:  # type: ignore[arg-type]
        assert await client.get("precious") == "data"


def huge_nesting() -> bytes:
    return b"\x81" * 100_000 + b"\x00"


PRE_AUTH_GARBAGE = {
    "random bytes": os.urandom(64),
    "wrong schema": cbor2.dumps({"hello": "world"}),
    "deep nesting": huge_nesting(),
    "unknown message type": cbor2.dumps([42, "x"]),
    "data before hello": cbor2.dumps([3, 1, 0, True, [], b""]),
}


@pytest.mark.parametrize("case", sorted(PRE_AUTH_GARBAGE))
async def test_garbage_before_authentication_gets_nothing(
    cluster: Cluster, case: str, caplog: pytest.LogCaptureFixture
) -> None:
    victim, victim_store, honest_store = cluster
    before = victim_store.digest()
    caplog.set_level(logging.INFO, logger="crdtkv.node")
    async with ws_connect(victim.url, compression=None, max_size=None) as ws:  # type: ignore[arg-type]
        challenge = decode_message(await ws.recv(), DEFAULT_LIMITS)  # type: ignore[arg-type]
        assert isinstance(challenge, Challenge)
        await ws.send(PRE_AUTH_GARBAGE[case])
        assert await drain(ws) == []  # not a byte about the store
    assert victim_store.digest() == before
    assert any("closed" in record.getMessage() for record in caplog.records)
    await still_serving(victim, victim_store, honest_store, f"after {case}")


async def test_a_frame_over_the_size_limit_closes_the_link(cluster: Cluster) -> None:
    victim, victim_store, honest_store = cluster
    before = victim_store.digest()
    async with ws_connect(victim.url, compression=None, max_size=None) as ws:  # type: ignore[arg-type]
        await ws.recv()
        await ws.send(b"\x00" * (DEFAULT_LIMITS.max_message_bytes + 1))
        with anyio.fail_after(10):
            with pytest.raises(ConnectionClosed) as info:
                while True:
                    await ws.recv()
        assert info.value.rcvd is not None and info.value.rcvd.code == 1009
    assert victim_store.digest() == before
    await still_serving(victim, victim_store, honest_store, "after big frame")


@pytest.mark.parametrize("secret", [b"wrong secret", b""])
async def test_a_wrong_proof_is_refused(cluster: Cluster, secret: bytes) -> None:
    victim, victim_store, honest_store = cluster
    before = victim_store.digest()
    attacker = KvStore.open("t", replica_id="attacker")
    attacker.put("precious", "overwritten")
    async with ws_connect(victim.url, compression=None) as ws:  # type: ignore[arg-type]
        challenge = decode_message(await ws.recv(), DEFAULT_LIMITS)  # type: ignore[arg-type]
        hello = (
            signed_hello(challenge, attacker, secret)  # type: ignore[arg-type]
            if secret
            else Hello(PROTOCOL_VERSION, "t", attacker.origin, ROLE_PEER, os.urandom(NONCE_BYTES), b"", {})
        )
        await ws.send(encode_message(hello))
        assert await drain(ws) == [Close(4001, "authentication failed")]
    assert victim_store.digest() == before
    await still_serving(victim, victim_store, honest_store, "after wrong proof")


async def test_a_replayed_proof_is_refused(cluster: Cluster) -> None:
    victim, victim_store, honest_store = cluster
    before = victim_store.digest()
    insider = KvStore.open("t", replica_id="insider")
    async with ws_connect(victim.url, compression=None) as ws:  # type: ignore[arg-type]
        challenge = decode_message(await ws.recv(), DEFAULT_LIMITS)  # type: ignore[arg-type]
        recorded = encode_message(signed_hello(challenge, insider, SECRET))  # type: ignore[arg-type]
        await ws.send(recorded)
        first = decode_message(await ws.recv(), DEFAULT_LIMITS)  # type: ignore[arg-type]
        assert isinstance(first, Hello)  # the genuine exchange worked
    async with ws_connect(victim.url, compression=None) as ws:  # type: ignore[arg-type]
        await ws.recv()  # a fresh challenge
        await ws.send(recorded)  # replay the old, once valid, hello
        assert await drain(ws) == [Close(4001, "authentication failed")]
    assert victim_store.digest() == before
    await still_serving(victim, victim_store, honest_store, "after replay")


async def test_a_peer_with_a_clock_far_ahead_is_cut_off(cluster: Cluster) -> None:
    victim, victim_store, honest_store = cluster
    before = victim_store.digest()
    skewed = KvStore.open("t", replica_id="skewed", clock=FakeClock(+3600))
    skewed.put("precious", "from the future")
    async with ws_connect(victim.url, compression=None) as ws:  # type: ignore[arg-type]
        challenge = decode_message(await ws.recv(), DEFAULT_LIMITS)  # type: ignore[arg-type]
        await ws.send(encode_message(signed_hello(challenge, skewed, SECRET)))  # type: ignore[arg-type]
        messages = await drain(ws)
    assert isinstance(messages[-1], Close) and messages[-1].code == 4003
    assert "ClockSkewError" in messages[-1].reason
    assert victim_store.digest() == before
    await still_serving(victim, victim_store, honest_store, "after skew")


async def test_garbage_from_an_authenticated_peer_closes_only_its_link(cluster: Cluster) -> None:
    victim, victim_store, honest_store = cluster
    before = victim_store.digest()
    insider = KvStore.open("t", replica_id="insider")
    async with ws_connect(victim.url, compression=None) as ws:  # type: ignore[arg-type]
        challenge = decode_message(await ws.recv(), DEFAULT_LIMITS)  # type: ignore[arg-type]
        await ws.send(encode_message(signed_hello(challenge, insider, SECRET)))  # type: ignore[arg-type]
        await ws.recv()  # the victim's hello
        await ws.send(cbor2.dumps([3, 1, 0, True, [], b"\xff\xff not a delta"]))
        messages = await drain(ws)
    closes = [m for m in messages if isinstance(m, Close)]
    assert closes and closes[-1].code == 4000 and "DecodeError" in closes[-1].reason
    assert victim_store.digest() == before
    await still_serving(victim, victim_store, honest_store, "after insider garbage")


async def test_a_thousand_connect_cycles_leak_no_tasks_or_memory() -> None:
    store = KvStore.open("t", replica_id="server")
    async with Node(store, listen="ws://127.0.0.1:0", secret=SECRET, settings=FAST) as node:

        async def cycle(handshake: bool) -> None:
            if handshake:
                async with Client(node.url, store="t", secret=SECRET) as client:  # type: ignore[arg-type]
                    await client.digest()
            else:
                async with ws_connect(node.url, compression=None) as ws:  # type: ignore[arg-type]
                    await ws.recv()

        for index in range(100):  # warm-up: imports, caches, allocator pools
            await cycle(index % 2 == 0)
        await anyio.sleep(0.2)
        gc.collect()
        tasks_before = len(asyncio.all_tasks())
        tracemalloc.start()
        try:
            memory_before = tracemalloc.get_traced_memory()[0]
            for index in range(1000):
                await cycle(index % 2 == 0)
            await anyio.sleep(0.2)
            gc.collect()
            memory_after = tracemalloc.get_traced_memory()[0]
        finally:
            tracemalloc.stop()
        tasks_after = len(asyncio.all_tasks())
    assert tasks_after <= tasks_before
    growth = memory_after - memory_before
    assert growth < 256 * 1024, f"memory grew by {growth} bytes over 1,000 connections"

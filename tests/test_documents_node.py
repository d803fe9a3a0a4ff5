"""Document values over real links: replication, live binding, hostile updates."""

from __future__ import annotations

import random

import anyio
import pytest
from cbor2 import dumps
from websockets.asyncio.client import connect as ws_connect

from crdtkv import KvStore
from crdtkv.core.document import DocState
from crdtkv.core.entry import TOMBSTONE, Entry
from crdtkv.core.limits import DEFAULT_LIMITS
from crdtkv.core.messages import Close, decode_message, encode_message
from crdtkv.core.wire import Delta, encode_delta
from crdtkv.node import Node

from .test_hostile import Cluster, cluster, drain, signed_hello, still_serving  # noqa: F401 (cluster is a fixture)
from .test_node import FAST, SECRET, Network, converge, network, stores  # noqa: F401 (network is a fixture)

pytestmark = pytest.mark.anyio


async def test_three_nodes_merge_concurrent_document_edits(network: Network) -> None:  # noqa: F811
    url_for, transports = network
    a, b, c = stores(3)
    async with (
        Node(c, listen=url_for("dc"), secret=SECRET, transports=transports, settings=FAST) as nc,
        Node(
            b,
            listen=url_for("db"),
            peers=[nc.url],  # type: ignore[list-item]
            secret=SECRET,
            transports=transports,
            settings=FAST,
        ) as nb,
        Node(a, peers=[nb.url, nc.url], secret=SECRET, transports=transports, settings=FAST) as na,  # type: ignore[list-item]
    ):
        await na.wait_for_peers(2)
        carts = [store.doc("cart") for store in (a, b, c)]
        carts[0].map("items")["seed"] = 0
        await converge(a, b, c)
        rnd = random.Random(3)
        expected = {"seed": 0}
        for i in range(120):
            index = rnd.randrange(3)
            items = carts[index].map("items")  # fetched again: a generation may have arrived
            items[f"item-{i}"] = i
            expected[f"item-{i}"] = i
            carts[index].text("note").insert(0, "x")
            if rnd.random() < 0.3:
                await anyio.sleep(0)
        await converge(a, b, c)
        for store, cart in zip((a, b, c), carts, strict=True):
            value = store.get("cart")
            assert value["items"] == expected
            assert value["note"] == "x" * 120
            assert cart.to_py() == value


async def test_a_malformed_document_update_closes_only_the_senders_link(cluster: Cluster) -> None:  # noqa: F811
    victim, victim_store, honest_store = cluster
    honest_store.doc("cart").map("items")["apple"] = 1
    await converge(victim_store, honest_store)
    before = victim_store.digest()
    insider = KvStore.open("t", replica_id="insider")
    stamp = insider._state.clock.tick()
    bad = DocState((stamp, "insider"), b"\x05\x99 not yrs", {"insider": stamp}, {}, {"items": "map"}, {})
    delta = encode_delta(Delta("t", {"insider": stamp}, [("cart", Entry(0, "", TOMBSTONE, doc=bad))]))
    async with ws_connect(victim.url, compression=None) as ws:  # type: ignore[arg-type]
        challenge = decode_message(await ws.recv(), DEFAULT_LIMITS)  # type: ignore[arg-type]
        await ws.send(encode_message(signed_hello(challenge, insider, SECRET)))  # type: ignore[arg-type]
        await ws.recv()  # the victim's hello
        await ws.send(dumps([3, 1, 0, True, [], delta]))
        messages = await drain(ws)
    closes = [m for m in messages if isinstance(m, Close)]
    assert closes and closes[-1].code == 4000 and "DecodeError" in closes[-1].reason
    assert victim_store.digest() == before
    assert victim_store.get("cart") == {"items": {"apple": 1}}
    await still_serving(victim, victim_store, honest_store, "after a bad document")
    honest_store.doc("cart").map("items")["pear"] = 2
    await converge(victim_store, honest_store)
    assert victim_store.get("cart") == {"items": {"apple": 1, "pear": 2}}

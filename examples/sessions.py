"""Sessions: log in at one PoP, be recognised at another, expire everywhere on time.

London stores a session with a TTL and metadata naming its user; Sydney reads
it (with who wrote it and when it expires) a few milliseconds later, and
extends it on the user's next request. Then the PoPs are cut off from each
other: the session still expires at every PoP, judged by each PoP's own
clock, because the expiry travelled with the write.

Run: python examples/sessions.py
"""

import time

import anyio

from crdtkv import KvStore, Node

POPS = ("london", "sydney", "new-york")
SECRET = b"example-secret"
TTL = 3.0  # seconds: short, so the example runs fast, yet far longer than replication takes


async def main() -> None:
    stores = {name: KvStore.open("edge", replica_id=name) for name in POPS}
    london, sydney = stores["london"], stores["sydney"]

    async def until_everywhere(key: str, value: object) -> None:
        with anyio.fail_after(5):
            while any(store.get(key) != value for store in stores.values()):
                await anyio.sleep(0.001)

    async with (
        Node(london, listen="ws://127.0.0.1:0", secret=SECRET) as hub,
        Node(sydney, listen="ws://127.0.0.1:0", peers=[hub.url], secret=SECRET) as second,  # type: ignore[list-item]
        Node(stores["new-york"], peers=[hub.url, second.url], secret=SECRET) as third,  # type: ignore[list-item]
    ):
        for node in (hub, second, third):
            await node.wait_for_peers(2)

        london.put("session:7f3a", {"cart": ["sku-1"]}, ttl=TTL, metadata={"user": "ana"})
        await until_everywhere("session:7f3a", {"cart": ["sku-1"]})
        record = sydney.get_with_metadata("session:7f3a")
        assert record is not None and record.expires_at is not None
        print(f"sydney reads session:7f3a = {record.value}, metadata {record.metadata}")
        print(f"  written by {record.replica}, expires in {record.expires_at - time.time():.2f} s")
        assert record.metadata == {"user": "ana"} and record.replica == "london"

        await anyio.sleep(0.2)  # the user's next request, at sydney
        left = sydney.get_with_metadata("session:7f3a").expires_at - time.time()  # type: ignore[operator, union-attr]
        sydney.put("session:7f3a", {"cart": ["sku-1", "sku-2"]}, ttl=TTL, metadata={"user": "ana"})
        await until_everywhere("session:7f3a", {"cart": ["sku-1", "sku-2"]})
        record = london.get_with_metadata("session:7f3a")
        assert record is not None and record.expires_at is not None and record.replica == "sydney"
        expires_at = record.expires_at
        print(f"sydney extends it ({left:.2f} s left); london: expires in {expires_at - time.time():.2f} s")
        assert all("session:7f3a" in store for store in stores.values())
    print("links closed: from here on no PoP can send another PoP a message")

    await anyio.sleep(max(0.0, expires_at - time.time()) + 0.01)
    for name, store in stores.items():
        present = "session:7f3a" in store
        print(f"  {name:>8} after expiry: session:7f3a {'present' if present else 'gone'}")
        assert not present and store.get("session:7f3a") is None
        assert store.get_with_metadata("session:7f3a") is None
    print("the session expired at every PoP without a message")


anyio.run(main)

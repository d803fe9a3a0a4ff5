"""Per-tenant configuration: keys under ``tenant:<name>:``, listed page by page anywhere.

London writes the configuration of two tenants; Sydney lists one tenant's keys
a page at a time with a cursor. Then London and New York change the same
setting at the same moment, neither seeing the other's write: every PoP picks
the same winner (last writer by hybrid clock, ties to the larger origin id),
and the replicas end with equal digests.

Run: python examples/tenant_config.py
"""

import anyio

from crdtkv import KvStore, Node

POPS = ("london", "sydney", "new-york")
SECRET = b"example-secret"
ACME = {"plan": "pro", "region": "eu", "sso": True, "seats": 50, "limit:api": 1000, "limit:storage-gb": 200}
ACME |= {f"webhook:{i}": f"https://hooks.acme.example/{i}" for i in range(4)}


async def main() -> None:
    stores = {name: KvStore.open("edge", replica_id=name) for name in POPS}
    london, sydney, new_york = stores.values()

    async def converged() -> str:
        with anyio.fail_after(5):
            while len({store.digest() for store in stores.values()}) > 1:
                await anyio.sleep(0.001)
        return london.digest()

    async with (
        Node(london, listen="ws://127.0.0.1:0", secret=SECRET) as hub,
        Node(sydney, listen="ws://127.0.0.1:0", peers=[hub.url], secret=SECRET) as second,  # type: ignore[list-item]
        Node(new_york, peers=[hub.url, second.url], secret=SECRET) as third,  # type: ignore[list-item]
    ):
        for node in (hub, second, third):
            await node.wait_for_peers(2)
        for setting, value in ACME.items():
            london.put(f"tenant:acme:{setting}", value)
        london.put("tenant:globex:plan", "free")
        await converged()

        pages, cursor = [], None
        while True:
            page = sydney.list("tenant:acme:", limit=4, cursor=cursor)
            pages.append(page.keys)
            settings = ", ".join(key.removeprefix("tenant:acme:") for key in page.keys)
            print(f"sydney, page {len(pages)} of tenant:acme: {settings}")
            if page.cursor is None:
                break
            cursor = page.cursor
        assert [key for keys in pages for key in keys] == sorted(f"tenant:acme:{s}" for s in ACME)

        london.put("tenant:acme:plan", "enterprise")  # both writes happen before either PoP
        new_york.put("tenant:acme:plan", "business")  # can send the other anything: concurrent
        print(
            f"concurrent writes: london reads {london.get('tenant:acme:plan')!r}, "
            f"new-york reads {new_york.get('tenant:acme:plan')!r}"
        )
        digest = await converged()

    for name, store in stores.items():
        record = store.get_with_metadata("tenant:acme:plan")
        assert record is not None
        print(f"  {name:>8} reads tenant:acme:plan = {record.value!r} (written by {record.replica})")
    assert len({store.get("tenant:acme:plan") for store in stores.values()}) == 1
    assert len({store.digest() for store in stores.values()}) == 1
    print(f"all PoPs picked the same winner; equal digests {digest[:16]}...")


anyio.run(main)

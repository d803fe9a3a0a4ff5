"""A shared cache of computed results: computed once, served from every PoP.

Requests for the same report arrive at london, then sydney and new-york, 200 ms
apart. The first one computes the report (100 ms of work) and caches it with a
TTL; the cached result replicates in milliseconds, so the other PoPs serve it
without computing it again. Once the TTL has passed the entry reads as missing
everywhere, and the next request computes it afresh. (Two PoPs that miss within
one propagation delay, a few milliseconds, would both compute.)

Run: python examples/cache.py
"""

import time

import anyio

from crdtkv import KvStore, Node

POPS = ("london", "sydney", "new-york")
SECRET = b"example-secret"
TTL = 2.0  # seconds: short, so the example runs fast, yet far longer than replication takes
computed_at: list[str] = []  # the PoPs that computed the report, one entry per computation


async def compute_report(quarter: str, pop: str) -> dict[str, object]:
    computed_at.append(pop)
    await anyio.sleep(0.1)  # the expensive part: queries, rendering, ...
    return {"quarter": quarter, "revenue": 1_250_000, "orders": 8_400}


async def get_or_compute(store: KvStore, quarter: str) -> tuple[dict[str, object], str]:
    key = f"cache:report:{quarter}"
    cached = store.get_with_metadata(key)
    if cached is not None:
        return cached.value, f"cached by {cached.replica}"
    report = await compute_report(quarter, store.replica_id)
    store.put(key, report, ttl=TTL)
    return report, "computed"


async def main() -> None:
    stores = {name: KvStore.open("edge", replica_id=name) for name in POPS}
    async with (
        Node(stores["london"], listen="ws://127.0.0.1:0", secret=SECRET) as hub,
        Node(stores["sydney"], listen="ws://127.0.0.1:0", peers=[hub.url], secret=SECRET) as second,  # type: ignore[list-item]
        Node(stores["new-york"], peers=[hub.url, second.url], secret=SECRET) as third,  # type: ignore[list-item]
    ):
        for node in (hub, second, third):
            await node.wait_for_peers(2)
        start = time.perf_counter()
        for name in [*POPS, *POPS]:
            began = time.perf_counter()
            report, how = await get_or_compute(stores[name], "2024-q3")
            took = (time.perf_counter() - began) * 1000
            print(f"{began - start:5.2f} s {name:>8}: {how:<17} in {took:6.2f} ms")
            assert report["orders"] == 8_400
            await anyio.sleep(0.2)  # the next request arrives a little later
        assert computed_at == ["london"], computed_at

        record = stores["sydney"].get_with_metadata("cache:report:2024-q3")
        assert record is not None and record.expires_at is not None
        await anyio.sleep(max(0.0, record.expires_at - time.time()) + 0.01)  # past the expiry everywhere
        began = time.perf_counter()
        _, how = await get_or_compute(stores["sydney"], "2024-q3")
        print(f"{began - start:5.2f} s   sydney: {how} again, the TTL ({TTL} s) having passed")
        assert how == "computed" and computed_at == ["london", "sydney"], computed_at
    print(f"{len(computed_at)} computations for 7 requests at 3 PoPs")


anyio.run(main)

"""A global rate limit shared by three PoPs: 100 requests per 0.5 s window for one user.

Requests for ``api:ana`` arrive at london, sydney and new-york at different
rates, far more than the limit. Each PoP decides locally and at once with
``rate_limit``; the admissions replicate as a counter, so together the PoPs
admit about the limit per window. A PoP cannot see what the others admitted
during the last propagation delay d, so per window at most (PoPs - 1) x B extra
requests get in, B being the most requests that reached one PoP within d.

Run: python examples/rate_limiter.py
"""

import time

import anyio

from crdtkv import KvStore, Node

RATES = {"london": 600, "sydney": 300, "new-york": 150}  # requests per second at each PoP
SECRET = b"example-secret"
LIMIT, WINDOW, WINDOWS = 100, 0.5, 3
D = 0.05  # propagation delay d for the bound: generous (loopback takes a few ms; the measured max if larger)


async def main() -> None:
    stores = {name: KvStore.open("edge", replica_id=name) for name in RATES}
    arrivals: dict[str, list[float]] = {name: [] for name in RATES}
    admitted: dict[tuple[int, str], int] = {}
    requests: dict[int, int] = {}
    delays: list[float] = []

    async def traffic(name: str, end: float) -> None:
        while time.time() < end:
            arrivals[name].append(time.monotonic())
            decision = stores[name].rate_limit("api:ana", LIMIT, WINDOW)
            window = round((time.time() + decision.reset_after) / WINDOW)  # the window's end
            requests[window] = requests.get(window, 0) + 1
            admitted[window, name] = admitted.get((window, name), 0) + decision.allowed
            await anyio.sleep(1 / RATES[name])

    async def probe(end: float) -> None:  # the propagation delay under this load, london -> the others
        while time.time() < end:
            sent = time.monotonic()
            stores["london"].put("probe", sent)
            with anyio.fail_after(5):
                while stores["sydney"].get("probe") != sent or stores["new-york"].get("probe") != sent:
                    await anyio.sleep(0.0005)
            delays.append(time.monotonic() - sent)
            await anyio.sleep(0.02)

    async with (
        Node(stores["london"], listen="ws://127.0.0.1:0", secret=SECRET) as hub,
        Node(stores["sydney"], listen="ws://127.0.0.1:0", peers=[hub.url], secret=SECRET) as second,
        Node(stores["new-york"], peers=[hub.url, second.url], secret=SECRET) as third,
    ):
        for node in (hub, second, third):
            await node.wait_for_peers(2)
        await anyio.sleep(WINDOW - time.time() % WINDOW + 0.01)  # start with a fresh window
        end = time.time() - time.time() % WINDOW + WINDOWS * WINDOW - 0.02
        async with anyio.create_task_group() as group:
            for name in RATES:
                group.start_soon(traffic, name, end)
            group.start_soon(probe, end)

    d = max([D, *delays])
    burst = max(sum(t <= u < t + d for u in times) for times in arrivals.values() for t in times)
    bound = LIMIT + (len(RATES) - 1) * burst
    print(f"limit {LIMIT} per {WINDOW} s window, shared by {len(RATES)} PoPs")
    print(f"window  requests  {'  '.join(f'{name:>8}' for name in RATES)}  admitted")
    for number, window in enumerate(sorted(requests), start=1):
        total = sum(admitted.get((window, name), 0) for name in RATES)
        per_pop = "  ".join(f"{admitted.get((window, name), 0):>8}" for name in RATES)
        print(f"{number:>6}  {requests[window]:>8}  {per_pop}  {total:>8}")
        assert LIMIT <= total <= bound, (window, total, bound)
    print(f"bound per window: limit + (PoPs - 1) x B = {LIMIT} + {len(RATES) - 1} x {burst} = {bound}")
    print(f"  B = {burst}: most requests reaching one PoP within d = {d * 1000:.0f} ms, a generous delay:")
    print(f"  measured london -> sydney, new-york under this load: max {max(delays) * 1000:.1f} ms")
    assert len(requests) == WINDOWS


anyio.run(main)

"""A global rate limit shared by three PoPs: 100 requests per 0.5 s window for one user.

Requests for ``api:ana`` arrive at london, sydney and new-york at different
rates, far more than the limit. Each PoP decides locally and at once with
``rate_limit``; the admissions replicate as a counter, so together the PoPs
admit about the limit per window. A PoP cannot see what the others admitted
during the last propagation delay d, so per window at most (PoPs - 1) x B extra
requests get in, B being the most requests that reached one PoP within d.

The checks hold on a machine of any speed, idle or loaded: a PoP never refuses
while the count it sees is below the limit, so each window admits at least
min(limit, requests); and each window admits at most the limit plus the most
admissions one PoP had not yet seen when it admitted, which is at most
(PoPs - 1) x B, with d at least the propagation delay the PoPs actually had.

Run: python examples/rate_limiter.py
"""

import time
from dataclasses import dataclass, field

import anyio

from crdtkv import KvStore, Node

RATES = {"london": 600, "sydney": 300, "new-york": 150}  # requests per second at each PoP
SECRET = b"example-secret"
LIMIT, WINDOW, WINDOWS = 100, 0.5, 3
D = 0.05  # propagation delay d for the bound: generous (loopback takes a few ms; the measured max if larger)


@dataclass
class Window:
    """What happened in one limiter window, across the PoPs."""

    requests: int = 0
    admitted: dict[str, int] = field(default_factory=lambda: dict.fromkeys(RATES, 0))
    #: every admission in the order the PoPs made them: (time.monotonic(), PoP)
    log: list[tuple[float, str]] = field(default_factory=list)
    #: the most admissions made elsewhere that one PoP had not yet seen when it admitted
    unseen: int = 0


async def main() -> None:
    stores = {name: KvStore.open("edge", replica_id=name) for name in RATES}
    arrivals: dict[str, list[float]] = {name: [] for name in RATES}
    windows: dict[float, Window] = {}
    delays: list[float] = []
    lags: list[float] = [0.0]

    async def traffic(name: str, end: float) -> None:
        while time.time() < end:
            now = time.monotonic()
            arrivals[name].append(now)
            decision = stores[name].rate_limit("api:ana", LIMIT, WINDOW)
            window = windows.setdefault(decision.window_start, Window())
            window.requests += 1
            if decision.allowed:
                assert decision.count <= LIMIT  # a PoP admits only below the limit it sees
                window.admitted[name] += 1
                window.log.append((now, name))
                # admissions made anywhere (this one included) that this PoP's count leaves out: all
                # made by the others, within the last `unseen` of theirs, so at least that old
                unseen = len(window.log) - decision.count
                window.unseen = max(window.unseen, unseen)
                if unseen:
                    others = [t for t, pop in reversed(window.log) if pop != name]
                    lags.append(now - others[unseen - 1])
            await anyio.sleep(1 / RATES[name])

    async def probe(end: float) -> None:  # the propagation delay under this load, london -> the others
        while time.time() < end:
            sent = time.monotonic()
            stores["london"].put("probe", sent)
            with anyio.fail_after(30):  # a hang guard only
                while stores["sydney"].get("probe") != sent or stores["new-york"].get("probe") != sent:
                    await anyio.sleep(0.0005)
            delays.append(time.monotonic() - sent)
            await anyio.sleep(0.02)

    async with (
        Node(stores["london"], listen="ws://127.0.0.1:0", secret=SECRET) as hub,
        Node(stores["sydney"], listen="ws://127.0.0.1:0", peers=[hub.url], secret=SECRET) as second,  # type: ignore[list-item]
        Node(stores["new-york"], peers=[hub.url, second.url], secret=SECRET) as third,  # type: ignore[list-item]
    ):
        for node in (hub, second, third):
            await node.wait_for_peers(2)
        await anyio.sleep(WINDOW - time.time() % WINDOW + 0.01)  # start with a fresh window
        end = time.time() - time.time() % WINDOW + WINDOWS * WINDOW - 0.02
        async with anyio.create_task_group() as group:
            for name in RATES:
                group.start_soon(traffic, name, end)
            group.start_soon(probe, end)

    # d: the generous default, or what this run measured if larger (a loaded machine is slower)
    d = max([D, *delays, *lags])
    burst = max(sum(t <= u <= t + d for u in times) for times in arrivals.values() for t in times)
    bound = LIMIT + (len(RATES) - 1) * burst
    print(f"limit {LIMIT} per {WINDOW} s window, shared by {len(RATES)} PoPs")
    print(f"window  requests  {'  '.join(f'{name:>8}' for name in RATES)}  admitted  unseen")
    for number, start in enumerate(sorted(windows), start=1):
        window = windows[start]
        total = sum(window.admitted.values())
        per_pop = "  ".join(f"{window.admitted[name]:>8}" for name in RATES)
        print(f"{number:>6}  {window.requests:>8}  {per_pop}  {total:>8}  {window.unseen:>6}")
        assert min(LIMIT, window.requests) <= total <= LIMIT + window.unseen <= bound, (number, total, bound)
    print(f"bound per window: limit + (PoPs - 1) x B = {LIMIT} + {len(RATES) - 1} x {burst} = {bound}")
    print(f"  B = {burst}: most requests reaching one PoP within d = {d * 1000:.0f} ms, a generous delay:")
    print(f"  measured london -> sydney, new-york under this load: max {max(delays) * 1000:.1f} ms;")
    print(f"  oldest admission a PoP had not yet seen when it admitted: {max(lags) * 1000:.1f} ms")
    print("  unseen: the most admissions made elsewhere that one PoP had not seen when it admitted")
    assert windows, "no request was decided"


anyio.run(main)

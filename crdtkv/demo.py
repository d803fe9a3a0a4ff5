"""``crdtkv demo``: three PoPs count page views two ways and compare.

Each PoP serves its share of page views in rounds. Between rounds every PoP
merges the state of one random other PoP, as replicas exchanging deltas would.
One counter is kept the classic edge-KV way (read the value, add one, write it
back); the other with ``incr``. At the end all PoPs merge everything and the
demo shows what each pattern kept.
"""

from __future__ import annotations

import random
import time

from .store import KvStore

POPS = ("london", "sydney", "new-york")
#: Share of the traffic each PoP serves.
SHARES = (0.45, 0.20, 0.35)
RMW_KEY = "views:read-modify-write"
INCR_KEY = "views:incr"


def _serve(store: KvStore) -> None:
    """One page view, counted both ways."""
    store.put(RMW_KEY, store.get(RMW_KEY, 0) + 1)
    store.incr(INCR_KEY)


def run(total: int = 30_000, rounds: int = 20, seed: int = 2026) -> int:
    rnd = random.Random(seed)
    stores = [KvStore.open("demo", replica_id=pop) for pop in POPS]
    per_pop = [round(total * share) for share in SHARES]
    per_pop[0] += total - sum(per_pop)
    shares = ", ".join(f"{pop} {count:,}" for pop, count in zip(POPS, per_pop, strict=True))
    print(f"crdtkv demo: {total:,} page views at {len(POPS)} PoPs ({shares}),")
    print(f"in {rounds} rounds; after each round every PoP merges one random peer's state.\n")
    header = "round  " + "  ".join(f"{pop:>20}" for pop in POPS)
    print(header)
    print("       " + "  ".join(f"{'read+write / incr':>20}" for _ in POPS))
    started = time.perf_counter()
    served = [0] * len(POPS)
    for round_ in range(1, rounds + 1):
        # interleave the PoPs' traffic within the round
        quota = [count * round_ // rounds - done for count, done in zip(per_pop, served, strict=True)]
        order = [index for index, count in enumerate(quota) for _ in range(count)]
        rnd.shuffle(order)
        for index in order:
            _serve(stores[index])
            served[index] += 1
        for index, store in enumerate(stores):
            peer = rnd.choice([other for other in range(len(stores)) if other != index])
            store.merge(stores[peer])
        if round_ in (1, 2, 3) or round_ % 5 == 0 or round_ == rounds:
            cells = [f"{s.get(RMW_KEY, 0):>9,} / {s.get(INCR_KEY, 0):>8,}" for s in stores]
            print(f"{round_:>5}  " + "  ".join(f"{cell:>20}" for cell in cells))
    for store in stores:  # final anti-entropy: everyone merges everyone
        for other in stores:
            store.merge(other)
    elapsed = time.perf_counter() - started
    digests = {store.digest() for store in stores}
    rmw = stores[0].get(RMW_KEY)
    incr = stores[0].get(INCR_KEY)
    print(f"\nafter a full merge ({elapsed:.2f} s):")
    print(f"  page views served:            {total:>9,}")
    print(
        f"  read-modify-write counter:    {rmw:>9,}  ({total - rmw:,} increments lost, "
        f"{(total - rmw) / total:.0%})"
    )
    print(f"  incr counter:                 {incr:>9,}  ({total - incr:,} increments lost)")
    print(
        f"  replicas agree (digest):      {'yes' if len(digests) == 1 else 'NO'}"
        f"  {next(iter(digests))[:16]}..."
    )
    ok = len(digests) == 1 and incr == total
    if not ok:
        print("  ERROR: replicas disagree or incr lost increments")
    return 0 if ok else 1

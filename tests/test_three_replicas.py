"""Three in-memory replicas, 10,000 random mixed operations each, merged at random."""

from __future__ import annotations

import random

import pytest

from crdtkv import KvStore
from crdtkv.errors import WrongType

from .helpers import FakeClock
from .model import CounterModel

OPS_PER_REPLICA = 10_000


@pytest.mark.parametrize("seed", [1, 2])
def test_random_mixed_workload_converges_with_exact_counters(seed: int) -> None:
    rnd = random.Random(seed)
    clocks = [FakeClock(rnd.uniform(-20, 20)) for _ in range(3)]
    stores = [
        KvStore.open("pops", replica_id=name, clock=clock)
        for name, clock in zip(["london", "sydney", "newyork"], clocks, strict=True)
    ]
    model = CounterModel(3)
    counter_keys = [f"views:{i}" for i in range(40)]  # incr and delete only: exact by the model
    pure_counters = [f"hits:{i}" for i in range(10)]  # incr only: the plain sum
    mixed_keys = [f"k:{i}" for i in range(60)]  # every operation
    sums = dict.fromkeys(pure_counters, 0)
    done = [0, 0, 0]
    while min(done) < OPS_PER_REPLICA:
        who = rnd.randrange(3)
        if done[who] >= OPS_PER_REPLICA:
            continue
        done[who] += 1
        store = stores[who]
        clocks[who].advance(rnd.random() * 0.002)
        roll = rnd.random()
        if roll < 0.01:
            other = rnd.randrange(3)
            store.merge(stores[other])
            model.merge(who, other)
        elif roll < 0.35:
            key = rnd.choice(counter_keys)
            if rnd.random() < 0.05:
                store.delete(key)
                model.remove(who, key)
            else:
                by = rnd.randint(-3, 10)
                store.incr(key, by)
                model.incr(who, key, by)
        elif roll < 0.5:
            key = rnd.choice(pure_counters)
            by = rnd.randint(1, 5)
            store.incr(key, by)
            sums[key] += by
        else:
            key = rnd.choice(mixed_keys)
            action = rnd.random()
            if action < 0.5:
                store.put(key, rnd.choice(["a", 1, None, [1, 2], {"x": rnd.random()}]))
            elif action < 0.7:
                store.delete(key)
            else:
                try:
                    store.incr(key, rnd.randint(-5, 5))
                except WrongType:
                    assert key in store
    # pairwise merges in random order until every pair has exchanged state
    pairs = [(a, b) for a in range(3) for b in range(3) if a != b]
    for _ in range(2):
        rnd.shuffle(pairs)
        for dst, src in pairs:
            stores[dst].merge(stores[src])
    digests = {store.digest() for store in stores}
    assert len(digests) == 1
    everything = sorted({key for store in stores for key in store.keys()})
    for store in stores[1:]:
        assert list(store.keys()) == list(stores[0].keys())
        assert all(store.get(key) == stores[0].get(key) for key in everything)
    for key in counter_keys:
        assert stores[0].get(key) == model.value(key)
    for key, total in sums.items():
        assert stores[0].get(key) == total
    # and a fresh replica rebuilt from one snapshot agrees
    rebuilt = KvStore.open("pops", replica_id="rebuilt", clock=FakeClock(+25))
    rebuilt.merge(stores[rnd.randrange(3)].snapshot())
    assert rebuilt.digest() in digests

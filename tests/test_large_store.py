"""A million keys: the store works and its memory per key stays bounded."""

from __future__ import annotations

import gc
import tracemalloc

from crdtkv import KvStore

N = 1_000_000
#: Bytes per key beyond the key and value strings themselves. The benchmark's
#: goal is 300; this test allows a margin for allocator differences.
MAX_OVERHEAD_PER_KEY = 330


def test_a_million_keys_fit_in_bounded_memory_and_round_trip() -> None:
    keys = [f"user:{i:07d}" for i in range(N)]
    values = [f"v{i}" for i in range(N)]
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        store = KvStore.open("big", replica_id="london")
        put = store.put
        for key, value in zip(keys, values, strict=True):
            put(key, value)
        gc.collect()
        used = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    per_key = used / N
    print(f"\n{N:,} keys: {per_key:.0f} bytes per key beyond key and value")
    assert per_key < MAX_OVERHEAD_PER_KEY
    assert store.get("user:0999999") == "v999999"
    assert len(list(store.keys("user:00000"))) == 100
    # catch-up after 1,000 changes sends 1,000 entries, not a million
    seen = dict(store._state.vv)
    for i in range(0, N, 1000):
        store.put(keys[i], "changed")
    assert len(store._state.delta_since(seen).entries) == 1000
    copy = KvStore.open("big", replica_id="sydney")
    assert copy.merge(store.snapshot()) == N
    assert copy.digest() == store.digest()
    assert copy.get(keys[0]) == "changed"

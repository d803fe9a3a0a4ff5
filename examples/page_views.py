"""The classic edge-KV page-view counter, next to crdtkv's ``incr``.

Three PoPs serve page views at the same time. The classic pattern reads the
counter, adds one and writes it back: when the PoPs' states meet, one PoP's
write wins and the others' increments vanish. ``incr`` keeps a total per PoP,
so merging loses nothing.

Run: python examples/page_views.py
"""

from crdtkv import KvStore

VIEWS = {"london": 4_000, "sydney": 1_500, "new-york": 3_000}

pops = {name: KvStore.open("site", replica_id=name) for name in VIEWS}

for name, views in VIEWS.items():  # concurrent: no PoP sees another's writes yet
    store = pops[name]
    for _ in range(views):
        store.put("views:classic", store.get("views:classic", 0) + 1)  # read, add one, write back
        store.incr("views")

for store in pops.values():  # the PoPs exchange state
    for other in pops.values():
        store.merge(other)

served = sum(VIEWS.values())
london = pops["london"]
classic, counted = london.get("views:classic"), london.get("views")
print(f"page views served:        {served:,}")
print(f"read-modify-write counter {classic:,} ({served - classic:,} increments lost)")
print(f"incr counter              {counted:,} ({served - counted:,} increments lost)")
assert len({store.digest() for store in pops.values()}) == 1, "replicas disagree"

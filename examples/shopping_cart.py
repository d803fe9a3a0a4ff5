"""A shopping cart edited at three PoPs at once: a whole-value cart next to a document cart.

London creates the cart and every PoP syncs. Then london, sydney and new-york
each add or remove items before seeing any other PoP's edits. The classic cart
is one register value, read, changed and written back: when the PoPs' states
meet, the last writer's cart wins and the other PoPs' edits vanish. The
document cart (``store.doc``) merges the edits themselves, so every PoP's
additions and removals survive and the carts converge.

Run: python examples/shopping_cart.py
"""

import time

from crdtkv import KvStore

INITIAL = {"apple": 2, "bread": 1}
EDITS: dict[str, dict[str, int | None]] = {  # item -> new quantity, None removes the item
    "london": {"milk": 1, "apple": 3},
    "sydney": {"tea": 2},
    "new-york": {"bread": None, "eggs": 12},
}
EXPECTED = {"apple": 3, "milk": 1, "tea": 2, "eggs": 12}

pops = {name: KvStore.open("shop", replica_id=name) for name in EDITS}


def sync() -> None:
    for store in pops.values():
        for other in pops.values():
            store.merge(other)


def lost(cart: dict[str, int]) -> int:
    return sum(cart.get(item) != quantity for edits in EDITS.values() for item, quantity in edits.items())


london = pops["london"]
london.put("cart:classic", INITIAL)
london.doc("cart:42").map("items").update(INITIAL)
sync()

for name, edits in EDITS.items():  # concurrent: no PoP sees another's edits yet
    store = pops[name]
    classic = store.get("cart:classic")  # read, change, write back the whole cart
    cart = store.doc("cart:42")
    items = cart.map("items")
    with cart.transaction():
        for item, quantity in edits.items():
            if quantity is None:
                del classic[item]
                del items[item]
            else:
                classic[item] = items[item] = quantity
    store.put("cart:classic", classic)
    time.sleep(0.002)  # a moment apart, so the same PoP writes last on every run

sync()

made = sum(map(len, EDITS.values()))
classic = dict(sorted(london.get("cart:classic").items()))
document = dict(sorted(london.get("cart:42")["items"].items()))
print(f"edits made at {len(pops)} PoPs: {made}")
print(f"read-modify-write cart {classic} ({lost(classic)} edits lost)")
print(f"document cart          {document} ({lost(document)} edits lost)")
for store in pops.values():
    assert store.get("cart:42") == {"items": EXPECTED}, store.replica_id
    assert store.doc("cart:42").to_py() == {"items": EXPECTED}, store.replica_id
assert len({store.digest() for store in pops.values()}) == 1, "replicas disagree"
assert lost(classic) > 0, "the classic cart kept every edit"
print(f"document cart: {lost(document)} of {made} edits lost at {len(pops)} PoPs; equal digests")

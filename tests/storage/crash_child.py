"""Child process for the crash test: writes in a loop, acknowledging each durable write.

Each loop puts a register, increments a counter and edits a document.

Usage: python -m tests.storage.crash_child PATH MODE START
Prints "ready ORIGIN" once everything is imported and the store is open (so a
kill after it lands among writes, not in start-up), then "ack I STAMP" after
write I is durable.
"""

from __future__ import annotations

import sys

from crdtkv import KvStore


def main() -> None:
    path, mode, start = sys.argv[1], sys.argv[2], int(sys.argv[3])
    store = KvStore.open("crash", path=path, replica_id="london", durability=mode)
    items = store.doc("cart").map("items")  # loads the document support (pycrdt) before "ready"
    print(f"ready {store.origin}", flush=True)
    index = start
    while True:
        store.put(f"k{index}", index)
        store.incr("n")
        items[f"i{index}"] = index  # a document edit, written like any other change
        if mode == "batch":
            store.flush()
        stamp = store._state.vv[store.origin]
        print(f"ack {index} {stamp}", flush=True)
        index += 1


if __name__ == "__main__":
    main()

"""Child process for the crash test: writes in a loop, acknowledging each durable write.

Usage: python -m tests.storage.crash_child PATH MODE START
Prints "ready ORIGIN" and then "ack I STAMP" after write I is durable.
"""

from __future__ import annotations

import sys

from crdtkv import KvStore


def main() -> None:
    path, mode, start = sys.argv[1], sys.argv[2], int(sys.argv[3])
    store = KvStore.open("crash", path=path, replica_id="london", durability=mode)
    print(f"ready {store.origin}", flush=True)
    index = start
    while True:
        store.put(f"k{index}", index)
        store.incr("n")
        if mode == "batch":
            store.flush()
        stamp = store._state.vv[store.origin]
        print(f"ack {index} {stamp}", flush=True)
        index += 1


if __name__ == "__main__":
    main()

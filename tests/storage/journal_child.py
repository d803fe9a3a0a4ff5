"""Child process for the journal's SIGKILL tests.

Usage: python -m tests.storage.journal_child PATH MODE

``flushed``: a store whose commit window never ends (an hour) puts ``a0`` to
``a49``, flushes, prints "flushed", puts ``b0`` to ``b49`` (staged, never
committed), prints "staged" and waits to be killed.

``stream``: a batch-mode store with a short window puts fresh keys ``k0``,
``k1``, ... forever, printing "ack I" after put I returns (not durable: the
background and the writer's own group commits race the writes).
"""

from __future__ import annotations

import sys
import time

from crdtkv import KvStore
from crdtkv.storage.sqlite import SqliteStorage


def main() -> None:
    path, mode = sys.argv[1], sys.argv[2]
    if mode == "flushed":
        store = KvStore.open(
            "journal", storage=SqliteStorage(path, commit_window=3600.0), replica_id="london"
        )
        for index in range(50):
            store.put(f"a{index}", index)
        store.flush()
        print("flushed", flush=True)
        for index in range(50):
            store.put(f"b{index}", index)
        print("staged", flush=True)
        time.sleep(3600)
    else:
        store = KvStore.open("journal", storage=SqliteStorage(path, commit_window=0.001), replica_id="london")
        print(f"ready {store.origin}", flush=True)
        index = 0
        while True:
            store.put(f"k{index}", index)
            print(f"ack {index}", flush=True)
            index += 1


if __name__ == "__main__":
    main()

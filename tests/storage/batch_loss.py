"""By-hand experiment: how long before a SIGKILL can a batch-mode write be acknowledged and still be lost?

Not a test (it measures time, which tests must not assert). A real
``crdtkv serve --data F`` node (batch durability, the default) takes puts from
concurrent clients; at a seeded random moment the node is SIGKILLed and
restarted on its file, and every put the clients saw acknowledged is looked up.
For each lost put, its *loss age* is the time from its acknowledgement (the
reply reaching the client) to the kill; the figure the README states is the
largest loss age seen. Run it on a loaded machine, for instance with two busy
processes beside it::

    for i in 1 2; do python3 -c 'while True: pass' & done
    .venv/bin/python -m tests.storage.batch_loss --rounds 100
    kill %1 %2
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from pathlib import Path

import anyio

from crdtkv.client import Client
from crdtkv.errors import CrdtKvError

from .serve import SECRET, Serve


async def write_round(url: str, node: Serve, writers: int, run_for: float) -> tuple[dict[str, float], float]:
    """Put from ``writers`` clients for ``run_for`` s, SIGKILL the node; return ack times and kill time."""
    acked: dict[str, float] = {}
    counter = iter(range(10**9))

    async def writer() -> None:
        try:
            async with Client(url, secret=SECRET) as client:
                while True:
                    key = f"k{next(counter)}"
                    await client.put(key, key)
                    acked[key] = time.monotonic()
        except (CrdtKvError, OSError):
            return

    async with anyio.create_task_group() as group:
        for _ in range(writers):
            group.start_soon(writer)
        await anyio.sleep(run_for)
        node.process.send_signal(9)
        killed = time.monotonic()  # after the signal is sent: no later write can have committed
        group.cancel_scope.cancel()
    return acked, killed


async def lookup(url: str, keys: list[str]) -> set[str]:
    """The keys among ``keys`` the node does not hold."""
    async with Client(url, secret=SECRET) as client:
        missing = object()
        return {key for key in keys if await client.get(key, missing) is missing}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--writers", type=int, default=4)
    parser.add_argument("--seed", type=int, default=10)
    args = parser.parse_args()
    rnd = random.Random(args.seed)
    ages: list[float] = []
    lossy_rounds = acks = 0
    with tempfile.TemporaryDirectory() as tmp:
        secret_file = Path(tmp) / "secret"
        secret_file.write_bytes(SECRET + b"\n")
        for round_ in range(args.rounds):
            data = Path(tmp) / f"r{round_}.db"
            node = Serve(data, secret_file)
            try:
                url = node.wait_serving()
                acked, killed = anyio.run(write_round, url, node, args.writers, rnd.uniform(0.05, 0.3))
                node.wait_exit()
            finally:
                node.close()
            acks += len(acked)
            again = Serve(data, secret_file)
            try:
                lost = anyio.run(lookup, again.wait_serving(), sorted(acked))
                again.stop()
            finally:
                again.close()
            if lost:
                lossy_rounds += 1
                ages.extend(killed - acked[key] for key in lost)
    print(f"{args.rounds} kills, {acks} acknowledged puts, {len(ages)} lost in {lossy_rounds} rounds")
    if ages:
        ms = sorted(age * 1000 for age in ages)
        p99 = ms[min(len(ms) - 1, int(len(ms) * 0.99))]
        print(
            f"loss age (ack to kill): median {statistics.median(ms):.2f} ms, p99 {p99:.2f} ms, "
            f"max {ms[-1]:.2f} ms; the five largest: {', '.join(f'{age:.2f}' for age in ms[-5:])}"
        )


if __name__ == "__main__":
    main()

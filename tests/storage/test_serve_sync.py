"""`crdtkv serve --durability sync`: every write a client saw acknowledged survives SIGKILL of the node.

Real processes: a node on a SQLite file takes increments and puts from several
concurrent clients, is SIGKILLed a seeded number of acknowledgements into the
round (plus a seeded sub-millisecond-to-milliseconds delay, so the kill lands at
an arbitrary point while other writes are in flight), and is restarted on the
same file. The restarted node must hold every acknowledged write; the counter
may also hold increments that were in flight (sent, never acknowledged), and
nothing more.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

import anyio

from crdtkv.client import Client
from crdtkv.errors import CrdtKvError

from .serve import SECRET, START_TIMEOUT, Serve

ROUNDS = 20
WRITERS = 4


@dataclass
class Ledger:
    """What clients were told: acknowledged increments and puts, and increments left unanswered."""

    incr_acked: int = 0
    incr_unanswered: int = 0
    puts: dict[str, int] = field(default_factory=dict)
    next_index: int = 0
    round_acks: int = 0


async def write_until_killed(url: str, ledger: Ledger, enough: anyio.Event, target: int) -> None:
    """Alternate incr and put until the node goes away; record only what was acknowledged."""
    try:
        async with Client(url, secret=SECRET, timeout=START_TIMEOUT) as client:
            while True:
                try:
                    await client.incr("n")
                except (CrdtKvError, OSError):
                    ledger.incr_unanswered += 1  # sent, maybe applied, never acknowledged
                    return
                ledger.incr_acked += 1
                ledger.round_acks += 1
                index = ledger.next_index
                ledger.next_index += 1
                await client.put(f"k{index}", index)  # an unanswered put may or may not be there
                ledger.puts[f"k{index}"] = index
                ledger.round_acks += 1
                if ledger.round_acks >= target:
                    enough.set()
    except (CrdtKvError, OSError):
        return  # the link went with the node (also while connecting, or during an unanswered put)


async def kill_round(node: Serve, ledger: Ledger, rnd: random.Random) -> int:
    """Run the writers against ``node`` and SIGKILL it mid-writes; return the acks it gave this round."""
    assert node.url is not None
    ledger.round_acks = 0
    target = rnd.randint(1, 40)
    enough = anyio.Event()
    with anyio.fail_after(START_TIMEOUT):  # a hang guard only
        async with anyio.create_task_group() as group:
            for _ in range(WRITERS):
                group.start_soon(write_until_killed, node.url, ledger, enough, target)
            await enough.wait()
            await anyio.sleep(rnd.uniform(0, 0.005))
            assert node.kill() == -9  # it was alive and serving when killed
    return ledger.round_acks


async def check(url: str, ledger: Ledger) -> None:
    async with Client(url, secret=SECRET, timeout=START_TIMEOUT) as client:
        n = await client.get("n", 0)
        assert n or ledger.incr_acked == 0
        assert ledger.incr_acked <= n <= ledger.incr_acked + ledger.incr_unanswered, (n, ledger)
        for key, value in ledger.puts.items():
            assert await client.get(key) == value, f"acknowledged put {key} lost"


def test_acknowledged_writes_survive_sigkill_of_a_sync_node(tmp_path: Path) -> None:
    rnd = random.Random(20261128)
    secret_file = tmp_path / "secret"
    secret_file.write_bytes(SECRET + b"\n")
    data = tmp_path / "london.db"
    ledger = Ledger()
    node = Serve(data, secret_file, durability="sync")
    try:
        node.wait_serving()
        for _ in range(ROUNDS):
            acks = anyio.run(kill_round, node, ledger, rnd)
            assert acks >= 1  # the kill came after acknowledged writes, never before the first
            node.close()
            node = Serve(data, secret_file, durability="sync")  # restart on the same file
            anyio.run(check, node.wait_serving(), ledger)
        assert node.stop() == 0
    finally:
        node.close()
    assert ledger.incr_acked >= ROUNDS and len(ledger.puts) >= 1

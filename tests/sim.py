"""A deterministic network simulator over the sans-I/O sync protocol.

Replicas are KvStores with fake clocks; every link runs two protocol Sessions;
messages cross links with seeded drop, duplication, reordering, delay and
partitions. Time advances in fixed steps, so every run with the same seed is
the same run.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field

from crdtkv import KvStore
from crdtkv.core.feed import Cause, Stage, Subscriber
from crdtkv.core.forwarding import Holds
from crdtkv.core.sync import Closed, Session, SyncSettings

from .helpers import FakeClock

SETTINGS = SyncSettings(
    batch_window=0.002,
    keepalive_interval=0.5,
    keepalive_timeout=2.0,
    handshake_timeout=1.0,
    resync_after=0.3,
    keys_per_part=64,
    forward_delay=0.02,
)


@dataclass
class Faults:
    drop: float = 0.0
    duplicate: float = 0.0
    reorder: float = 0.0
    delay: tuple[float, float] = (0.001, 0.005)


@dataclass
class Link:
    a: int
    b: int
    dialer: Session | None = None
    listener: Session | None = None
    # in flight: (deliver_at, sequence, to_listener, bytes)
    flight: list[tuple[float, int, bool, bytes]] = field(default_factory=list)
    reconnect_at: float = 0.0
    opened: int = 0
    #: drops everything while true, without closing: a link that stopped delivering
    blocked: bool = False
    #: when the last message each way arrives (to the dialer, to the listener): a link
    #: delivers in order, as a real one does, unless a reorder fault says otherwise
    last: list[float] = field(default_factory=lambda: [0.0, 0.0])


class Simulation:
    def __init__(
        self,
        replicas: int,
        seed: int,
        *,
        faults: Faults | None = None,
        skews: list[float] | None = None,
        topology: str = "mesh",
        secret: bytes | None = None,
        settings: SyncSettings = SETTINGS,
    ) -> None:
        self.rnd = random.Random(seed)
        self.faults = faults or Faults()
        self.now = 0.0
        skews = skews or [0.0] * replicas
        self.clocks = [FakeClock(skew) for skew in skews]
        self.stores = [
            KvStore.open("sim", replica_id=f"pop{i}", clock=clock) for i, clock in enumerate(self.clocks)
        ]
        self.secret = secret
        self.settings = settings
        #: each replica's forwarding holds, shared by its sessions as a Node shares them
        self.holds = [Holds(settings.forward_delay) for _ in self.stores]
        pairs = [(a, b) for a in range(replicas) for b in range(a + 1, replicas)]
        if topology == "chain":
            pairs = [(i, i + 1) for i in range(replicas - 1)]
        elif topology == "star":
            pairs = [(0, i) for i in range(1, replicas)]
        self.links = [Link(a, b) for a, b in pairs]
        self.cut: set[int] = set()  # replicas on the far side of a partition
        self.sequence = 0
        self.closes: list[Closed] = []
        for index, store in enumerate(self.stores):
            store._state.feed.subscribe(self._changed_callback(index), Stage.REPLICATION)

    def _changed_callback(self, index: int) -> Subscriber:

        def changed(keys: Sequence[str], cause: Cause) -> None:
            if cause is Cause.COLLECTION:
                return
            merged = cause is Cause.MERGE
            # as a Node does: a merge names the origins it moved
            origins = self.stores[index]._state.merged_origins if merged else None
            for link in self.links:
                if index in (link.a, link.b):
                    for session in (link.dialer, link.listener):
                        if session is not None:
                            session.local_changed(self.now, forwarded=merged, origins=origins)

        return changed

    # -- links ---------------------------------------------------------------------

    def _partitioned(self, link: Link) -> bool:
        return (link.a in self.cut) != (link.b in self.cut)

    def _connect(self, link: Link) -> None:
        rnd_bytes = lambda n: self.rnd.randbytes(n)  # noqa: E731 - deterministic nonces
        link.dialer = Session(
            self.stores[link.a]._state,
            dialer=True,
            now=self.now,
            secret=self.secret,
            settings=self.settings,
            random_bytes=rnd_bytes,
            holds=self.holds[link.a],
        )
        link.listener = Session(
            self.stores[link.b]._state,
            dialer=False,
            now=self.now,
            secret=self.secret,
            settings=self.settings,
            random_bytes=rnd_bytes,
            holds=self.holds[link.b],
        )
        link.flight = []
        link.last = [0.0, 0.0]
        link.opened += 1

    def _transmit(self, link: Link, to_listener: bool, data: bytes) -> None:
        faults, rnd = self.faults, self.rnd
        if link.blocked or self._partitioned(link) or rnd.random() < faults.drop:
            return
        copies = 2 if rnd.random() < faults.duplicate else 1
        for _ in range(copies):
            at = max(self.now + rnd.uniform(*faults.delay), link.last[to_listener])
            if rnd.random() < faults.reorder:
                at += rnd.uniform(0.005, 0.05)
            else:
                link.last[to_listener] = at
            self.sequence += 1
            link.flight.append((at, self.sequence, to_listener, data))

    def step(self, dt: float = 0.001) -> None:
        self.now += dt
        for clock in self.clocks:
            clock.advance(dt)
        for link in self.links:
            if link.dialer is None or link.dialer.closed or link.listener is None or link.listener.closed:
                if link.dialer is not None:
                    self._drain(link)  # the Close message, if any
                    for session in (link.dialer, link.listener):
                        if session is not None:  # as a transport tells both ends
                            session.connection_lost("the link closed")
                    link.dialer = link.listener = None
                    link.reconnect_at = self.now + self.rnd.uniform(0.01, 0.1)
                if self.now >= link.reconnect_at:
                    self._connect(link)
                continue
            self._drain(link)
            due = sorted(item for item in link.flight if item[0] <= self.now)
            link.flight = [item for item in link.flight if item[0] > self.now]
            for _, _, to_listener, data in due:
                session = link.listener if to_listener else link.dialer
                assert session is not None
                for event in session.receive(data, self.now):
                    if isinstance(event, Closed):
                        self.closes.append(event)

    def _drain(self, link: Link) -> None:
        for session, to_listener in ((link.dialer, True), (link.listener, False)):
            if session is None:
                continue
            while True:
                out = session.outgoing(self.now)
                for data in out:
                    self._transmit(link, to_listener, data)
                if not out or session.closed:
                    break

    def run(self, seconds: float, dt: float = 0.001) -> None:
        for _ in range(int(seconds / dt)):
            self.step(dt)

    def converged(self) -> bool:
        return len({store.digest() for store in self.stores}) == 1

    def settle(self, limit: float = 30.0) -> float:
        """Run until every replica has the same digest; return the time it took."""
        start = self.now
        while not self.converged():
            assert self.now - start < limit, "replicas did not converge"
            self.run(0.05)
        return self.now - start

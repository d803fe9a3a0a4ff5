"""Holding back forwarded changes, so each change crosses each link once.

A node forwards what it merged from one peer to its other peers: that is
how a change reaches PoPs with no direct link to its writer. In a mesh, or
where a PoP has two hubs, most peers already hold the change, or will in a
moment from a better-placed node. So a change merged from a peer is held
back from forwarding for a while, per origin, while the peers that received
it tell everyone they hold it (an :class:`~.messages.Ack` listing the
origins that moved). Once the hold ends, a peer that still lacks the change
gets it, through whatever path survives: holding only delays forwarding, it
never drops it, so convergence never depends on it.

The receiving side steers it. A node asks the peer that first brought it a
change of an origin to forward that origin's changes at once
(:class:`~.messages.Route`): that peer is on its quickest path from the
origin, so in steady state each change travels the quickest tree without
any hold. Every other link holds. How long is chosen by the receiving side
too: each node ranks its
replication links (0 for the first it opened) and sends the rank
(:class:`~.messages.Prefer`); a sender holds ``forward_delay * (1 + 3 * rank)``
(rank at most 3). A PoP's first hub forwards after one delay, its second
after four, by which time the PoP has told the second hub it holds the
change.

Own writes are never held: they go to every peer after the batching window.

One :class:`Holds` serves every session of one replica. Sans-I/O: time is
passed in.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Collection
from typing import Final, Protocol

#: Ranks beyond this hold no longer than it: a hub ranks hundreds of links.
MAX_RANK: Final = 3
#: Each rank past the first holds this many delays more: far enough behind the preferred
#: path that the PoP's "I hold it" arrives first, even when the backup heard of the change
#: a hop earlier.
BACKUP_FACTOR: Final = 3


class Routed(Protocol):
    """A link an origin's changes are routed through (a session)."""

    def unroute(self, origins: list[str]) -> None:
        """Ask the peer to hold these origins' changes again, like the others'."""


class Holds:
    """Per origin: when its changes were merged, and from which stamp on."""

    __slots__ = ("_longest", "delay", "merges", "neighbours", "routes")

    def __init__(self, delay: float) -> None:
        #: the hold of rank 0, in seconds (``SyncSettings.forward_delay``)
        self.delay = delay
        #: origin -> (time of a merge, the origin's stamp here just before it), oldest first
        self.merges: dict[str, deque[tuple[float, int]]] = {}
        self._longest = delay * (1 + BACKUP_FACTOR * MAX_RANK)
        #: origin -> the link that first brought one of its changes; that link's peer was
        #: asked to forward the origin's changes at once
        self.routes: dict[str, Routed] = {}
        #: origins of the peers this replica has a replication link with: their own changes
        #: come straight from them, so they are never routed through a third node
        self.neighbours: dict[str, int] = {}

    def merged(self, now: float, before: dict[str, int]) -> None:
        """Changes of these origins were merged; ``before`` holds each one's stamp until then."""
        merges = self.merges
        for origin, stamp in before.items():
            queue = merges.get(origin)
            if queue is None:
                merges[origin] = deque([(now, stamp)])
            elif queue[-1][1] < stamp or queue[-1][0] < now:
                queue.append((now, stamp))

    def hold_for(self, rank: int) -> float:
        """How long a link whose peer gave it ``rank`` holds merged changes."""
        return self.delay * (1 + BACKUP_FACTOR * min(rank, MAX_RANK))

    def limits(self, now: float, hold: float) -> dict[str, int]:
        """Origin -> the stamp up to which a link holding ``hold`` seconds may forward now.

        That is the origin's stamp before its first merge of the last ``hold``
        seconds. Origins not named may be forwarded in full.
        """
        merges = self.merges
        if not merges:
            return {}
        forgotten = now - self._longest
        ripe = now - hold
        limits: dict[str, int] = {}
        for origin in list(merges):
            queue = merges[origin]
            while queue and queue[0][0] <= forgotten:
                queue.popleft()
            if not queue:
                del merges[origin]
                continue
            for merged_at, stamp in queue:
                if merged_at > ripe:
                    limits[origin] = stamp
                    break
        return limits

    def release(self, now: float, hold: float) -> float | None:
        """When a link holding ``hold`` seconds may forward more, if it holds anything now."""
        ripe = now - hold
        times = [
            merged_at + hold for queue in self.merges.values() for merged_at, _ in queue if merged_at > ripe
        ]
        return min(times, default=None)

    def route(self, link: Routed, origins: set[str]) -> list[str]:
        """Origins newly routed through ``link``: those of ``origins`` with no route yet."""
        routes = self.routes
        neighbours = self.neighbours
        new = [origin for origin in origins if origin not in routes and origin not in neighbours]
        for origin in new:
            routes[origin] = link
        return new

    def linked(self, origin: str, up: bool) -> None:
        """A replication link to the replica writing as ``origin`` opened (``up``) or closed."""
        count = self.neighbours.get(origin, 0) + (1 if up else -1)
        if count > 0:
            self.neighbours[origin] = count
        else:
            self.neighbours.pop(origin, None)
        if up:
            via = self.routes.pop(origin, None)  # it comes straight from its writer now
            if via is not None:
                via.unroute([origin])

    def forget(self, link: Routed) -> None:
        """``link`` closed: its origins get a route again from the next link that brings them."""
        routes = self.routes
        for origin in [origin for origin, via in routes.items() if via is link]:
            del routes[origin]

    def forget_origins(self, origins: Collection[str]) -> None:
        """Drop what is kept about ``origins`` (retired and pruned: they never write again)."""
        for origin in origins:
            self.merges.pop(origin, None)
            self.routes.pop(origin, None)

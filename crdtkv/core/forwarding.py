"""Routing and holding back forwarded changes, so each change crosses each link once.

A node forwards what it merged from one peer to its other peers: that is
how a change reaches PoPs with no direct link to its writer. In a mesh, or
where a PoP has two hubs, most peers already hold the change, or will in a
moment from a better-placed node. The receiving side steers who sends it
what, per origin, with :class:`~.messages.Route`:

* **At once** (``ROUTE_AT_ONCE``): a node asks the peer that first brought
  it a change of an origin to forward that origin's changes at once. That
  peer is on its quickest path from the origin, so in steady state each
  change travels the quickest tree, with no hold.
* **Elsewhere** (``ROUTE_ELSEWHERE``): every other link of that node is
  told that it gets the origin's changes another way, and so is every link
  for the origins it is linked to directly (their writer sends them). Such a
  link holds the origin's changes for the long hold, ``forward_delay *
  ELSEWHERE_FACTOR`` (2 s at the defaults), while the node tells it what it
  holds (haves, gathered for a quarter of that). In steady state the haves
  always come first and nothing is sent twice, however loaded the node:
  an event loop would have to lag by more than 1.5 s for a duplicate.
* **Hold** (``ROUTE_HOLD``, the default): an origin with no route yet (its
  first change, or its route just closed) is held by the link's rank. Each
  node ranks its replication links (0 for the first it opened) and sends
  the rank (:class:`~.messages.Prefer`); a sender holds ``forward_delay *
  (1 + 3 * rank)`` (rank at most 3), so a PoP's first hub forwards after
  one delay and its second after four, by which time the PoP has told it
  that it holds the change.

When a route's link closes, or the link to an origin's writer, the node
sets the origin back to the rank's hold on every other link, and the next
link that brings it becomes its route.

Why it is safe: every mode only delays forwarding, never drops it. A link
still forwards whatever its peer does not demonstrably hold once the
longest hold ends, and what a peer holds (``sent``) only grows from what the
peer itself said (hello, acks, haves, route stamps) or from batches it will
adopt. So a change reaches everyone through any surviving path, even when
a route message is lost or a route's peer stops receiving the origin.

Own writes are never held: they go to every peer after the batching window.

One :class:`Holds` serves every session of one replica. Sans-I/O: time is
passed in.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Collection, Iterable
from typing import Final, Protocol

from .messages import ROUTE_AT_ONCE, ROUTE_ELSEWHERE, ROUTE_HOLD

#: Ranks beyond this hold no longer than it: a hub ranks hundreds of links.
MAX_RANK: Final = 3
#: Each rank past the first holds this many delays more: far enough behind the preferred
#: path that the PoP's "I hold it" arrives first, even when the backup heard of the change
#: a hop earlier.
BACKUP_FACTOR: Final = 3
#: A link whose peer gets an origin elsewhere holds its changes this many delays: the
#: fallback when that other way fails without closing, long enough that the peer's haves
#: come first even from a saturated event loop.
ELSEWHERE_FACTOR: Final = 40
#: A link wakes to release held changes at most this many times per hold.
RELEASES_PER_HOLD: Final = 4
#: Routes a replica keeps at most: peers announce origins before their first change, so a
#: peer with the secret could name made-up ones; past this, origins go unrouted (held by rank).
MAX_ROUTES: Final = 65_536


class Routed(Protocol):
    """A replication link the routes are told to (a session)."""

    def tell_route(self, mode: int, origins: Iterable[str]) -> None:
        """Tell the peer how to forward these origins' changes to this side from now on."""


class Holds:
    """Per origin: when its changes were merged, and which link brings them (the routes)."""

    __slots__ = ("_longest", "delay", "elsewhere_hold", "links", "merges", "neighbours", "routes", "told")

    def __init__(self, delay: float) -> None:
        #: the hold of rank 0, in seconds (``SyncSettings.forward_delay``)
        self.delay = delay
        #: the hold of an origin the peer gets elsewhere
        self.elsewhere_hold = delay * ELSEWHERE_FACTOR
        #: origin -> (time of a merge, the origin's stamp here just before it), oldest first
        self.merges: dict[str, deque[tuple[float, int]]] = {}
        self._longest = max(delay * (1 + BACKUP_FACTOR * MAX_RANK), self.elsewhere_hold)
        #: origin -> the link that first brought one of its changes; that link's peer was
        #: asked to forward the origin's changes at once
        self.routes: dict[str, Routed] = {}
        #: origins of the peers this replica has a replication link with (-> how many links):
        #: their own changes come straight from them, so they are never routed through a third node
        self.neighbours: dict[str, int] = {}
        #: the replication links open, oldest first
        self.links: list[Routed] = []
        #: route modes told to links so far: a shell that sees it move wakes the links it told
        self.told = 0

    def _tell(self, link: Routed, mode: int, origins: list[str]) -> None:
        if origins:
            link.tell_route(mode, origins)
            self.told += 1

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
        """How long a link whose peer gave it ``rank`` holds merged changes of unrouted origins."""
        return self.delay * (1 + BACKUP_FACTOR * min(rank, MAX_RANK))

    def held(self, origin: str, now: float, hold: float) -> tuple[int, float] | None:
        """What a link holding ``hold`` seconds holds back of ``origin`` now; None if nothing.

        The stamp up to which it may forward the origin (its stamp before its
        first merge of the last ``hold`` seconds), and when it may forward
        more: never sooner than a fraction of the hold from now, so a link
        holding the changes of many origins wakes a few times per hold, not
        once per merge.
        """
        queue = self.merges.get(origin)
        if queue is None:
            return None
        forgotten = now - self._longest
        while queue and queue[0][0] <= forgotten:
            queue.popleft()
        if not queue:
            del self.merges[origin]
            return None
        ripe = now - hold
        for merged_at, stamp in queue:
            if merged_at > ripe:
                return stamp, max(merged_at + hold, now + hold / RELEASES_PER_HOLD)
        return None

    def opened(self, link: Routed, origin: str) -> None:
        """A replication link to the replica writing as ``origin`` opened.

        The new link hears every origin this replica gets another way; the
        others hear that ``origin``'s changes now come straight from it.
        """
        count = self.neighbours.get(origin, 0)
        self.neighbours[origin] = count + 1
        self._tell(link, ROUTE_ELSEWHERE, [o for o in (*self.neighbours, *self.routes) if o != origin])
        if count == 0:
            via = self.routes.pop(origin, None)
            if via is not None:  # the others were told already
                self._tell(via, ROUTE_ELSEWHERE, [origin])
            else:
                for other in self.links:
                    self._tell(other, ROUTE_ELSEWHERE, [origin])
        self.links.append(link)

    def closed(self, link: Routed, origin: str | None) -> None:
        """``link`` closed (``origin``: its peer's, if it was a replication link).

        Its routes, and ``origin`` if no other link reaches it, go back to the
        rank's hold on every other link: the next link that brings one of
        their changes becomes its route.
        """
        if link in self.links:
            self.links.remove(link)
        lost = [o for o, via in self.routes.items() if via is link]
        if origin is not None and origin in self.neighbours:
            count = self.neighbours[origin] - 1
            if count > 0:
                self.neighbours[origin] = count
            else:
                del self.neighbours[origin]
                lost.append(origin)
        self._lose(lost)

    def _lose(self, origins: list[str]) -> None:
        """``origins`` have no route now: every link holds them by rank again."""
        for origin in origins:
            self.routes.pop(origin, None)
        if origins:
            for other in self.links:
                self._tell(other, ROUTE_HOLD, origins)

    def route(self, link: Routed, origins: Collection[str]) -> None:
        """Route through ``link`` those of ``origins`` with no route yet.

        Called when changes of them came on ``link``, and when its peer
        announced them (told this side it gets them elsewhere): it holds a
        route for them, or a link to their writer, that is not this side, so
        the route leads away from here and never loops back. Routes so spread
        from each writer outwards as links open, before its first change:
        that change travels at once.
        """
        routes = self.routes
        neighbours = self.neighbours
        new = [origin for origin in origins if origin not in routes and origin not in neighbours]
        del new[max(0, MAX_ROUTES - len(routes)) :]
        if not new:
            return
        for origin in new:
            routes[origin] = link
        self._tell(link, ROUTE_AT_ONCE, new)
        for other in self.links:
            if other is not link:
                self._tell(other, ROUTE_ELSEWHERE, new)

    def withdrawn(self, link: Routed, origins: Collection[str]) -> None:
        """``link``'s peer has no route for ``origins`` now, or routes them through this side.

        A route through it is given up: every link holds them by rank again,
        and the next link that brings one of their changes becomes its route.
        """
        routes = self.routes
        self._lose([origin for origin in origins if routes.get(origin) is link])

    def forget_origins(self, origins: Collection[str]) -> None:
        """Drop what is kept about ``origins`` (retired and pruned: they never write again)."""
        for origin in origins:
            self.merges.pop(origin, None)
            self.routes.pop(origin, None)

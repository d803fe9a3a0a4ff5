"""A reference model of what replicas must read, independent of the CRDT code.

Each increment is a distinct event; a replica knows a set of events; a merge
unions knowledge; a delete or an overwriting put removes the events its replica
knows. A counter's value is the sum of the events nobody removed. This is the
observed-remove semantics DESIGN.md asks for, written the slow obvious way.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class CounterModel:
    replicas: int
    events: dict[str, list[tuple[int, int]]] = field(default_factory=dict)  # key -> [(event id, by)]
    known: list[set[int]] = field(default_factory=list)
    removed: dict[str, set[int]] = field(default_factory=dict)
    next_id: int = 0

    def __post_init__(self) -> None:
        self.known = [set() for _ in range(self.replicas)]

    def incr(self, replica: int, key: str, by: int) -> None:
        event = self.next_id
        self.next_id += 1
        self.events.setdefault(key, []).append((event, by))
        self.known[replica].add(event)

    def remove(self, replica: int, key: str) -> None:
        """A delete, or a put over the key: removes what ``replica`` knows."""
        seen = {event for event, _ in self.events.get(key, []) if event in self.known[replica]}
        self.removed.setdefault(key, set()).update(seen)

    def merge(self, dst: int, src: int) -> None:
        self.known[dst] |= self.known[src]

    def value(self, key: str) -> int | None:
        """The converged value: None when every increment was removed."""
        gone = self.removed.get(key, set())
        alive = [by for event, by in self.events.get(key, []) if event not in gone]
        return sum(alive) if alive else None

"""Version vectors: ``{origin: highest stamp seen}``, and the pointwise operations on them.

Every place that joins, compares or copies per-origin maxima uses these, so
the rule ("the larger stamp per origin wins") is written once.
"""

from __future__ import annotations

from collections.abc import Mapping

#: What a replica has seen: the highest stamp of each origin.
VersionVector = dict[str, int]


def join_into(into: dict[str, int], other: Mapping[str, int]) -> bool:
    """Raise each origin in ``into`` to its value in ``other``; True if any rose."""
    grew = False
    for origin, stamp in other.items():
        if into.get(origin, 0) < stamp:
            into[origin] = stamp
            grew = True
    return grew


def joined(mine: Mapping[str, int], theirs: Mapping[str, int]) -> dict[str, int]:
    """The pointwise maximum of two vectors, as a new dict."""
    result = dict(mine)
    join_into(result, theirs)
    return result


def dominates(mine: Mapping[str, int], other: Mapping[str, int]) -> bool:
    """True if ``mine`` has seen everything ``other`` has (pointwise >=)."""
    return all(mine.get(origin, 0) >= stamp for origin, stamp in other.items())


__all__ = ["VersionVector", "dominates", "join_into", "joined"]

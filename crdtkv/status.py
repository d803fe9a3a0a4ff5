"""A node's status at a glance: for ``crdtkv status``, the HTTP status page and RESP ``INFO``.

:func:`node_status` returns a JSON-ready dict::

    {"id", "origin", "version", "uptime", "started_at", "ready", "keys", "tombstones", "digest",
     "peers": [{"origin", "url", "direction", "state", "lag_seconds", "lacking", "last_ack_age",
                "sent_bytes", "received_bytes", "sent_entries", "received_entries", "last_error"}]}

``uptime`` and ``started_at`` are seconds (``started_at`` since the epoch);
``keys`` counts live keys and ``tombstones`` entries kept for deleted or
expired keys until garbage collection. Each peer is a replication peer:
``direction`` is "out" (this node dials it) or "in"; ``state`` is "up",
"connecting" or "down" (the last dial failed); ``lag_seconds`` is how long the
peer has acknowledged nothing while batches wait for its ack (0.0 when none
waits, None unless up); ``lacking`` counts entries with changes the peer does
not demonstrably hold yet; ``last_ack_age`` is seconds since its last ack (None
before one); the byte and entry counters count from the moment the current
link opened. A node answers the client request ``status`` with the same dict.
"""

from __future__ import annotations

from typing import Any

from .node import Node


def node_status(node: Node) -> dict[str, Any]:
    """The node's status now (see the module docstring for the shape)."""
    return node.status()


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 1:
        return f"{value * 1000:.0f}ms"
    if value < 120:
        return f"{value:.1f}s"
    minutes, seconds = divmod(int(value), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days}d{hours}h{minutes}m"
    if hours:
        return f"{hours}h{minutes}m"
    return f"{minutes}m{seconds}s"


def format_status(status: dict[str, Any]) -> str:
    """The status as text: the node, then one table row per peer (what ``crdtkv status`` prints)."""
    lines = [
        f"node      {status['id']} (origin {status['origin']}, crdtkv {status['version']})",
        f"uptime    {_seconds(status['uptime'])}",
        f"ready     {'yes' if status['ready'] else 'no'}",
        f"keys      {status['keys']} ({status['tombstones']} tombstones)",
        f"digest    {status['digest']}",
    ]
    peers = status["peers"]
    if not peers:
        lines.append("peers     none")
        return "\n".join(lines)
    header = ("PEER", "DIR", "STATE", "LAG", "LACKING", "LAST ACK", "SENT", "RECEIVED", "URL")
    rows = [header]
    for peer in peers:
        rows.append(
            (
                peer["origin"] or "?",
                peer["direction"],
                peer["state"],
                _seconds(peer["lag_seconds"]),
                str(peer["lacking"]),
                _seconds(peer["last_ack_age"]),
                f"{peer['sent_entries']}/{peer['sent_bytes']}B",
                f"{peer['received_entries']}/{peer['received_bytes']}B",
                peer["url"] + (f"  ({peer['last_error']})" if peer["last_error"] else ""),
            )
        )
    widths = [max(len(row[column]) for row in rows) for column in range(len(header) - 1)]
    lines.append("")
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        lines.append("  ".join([*cells, row[-1]]).rstrip())
    return "\n".join(lines)


__all__ = ["format_status", "node_status"]

"""Helpers shared by the transport tests."""

from __future__ import annotations

from crdtkv.errors import LinkClosed
from crdtkv.transport import Connection


async def echo(connection: Connection) -> None:
    """Serve a link by sending back every message, until it closes."""
    try:
        while True:
            await connection.send(await connection.receive())
    except LinkClosed:
        pass

"""Fixtures shared by the transport tests: one case per transport, loopback only."""

from __future__ import annotations

import itertools
import socket
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from crdtkv.transport import Transport
from transports.memory import MemoryNetwork, MemoryTransport
from transports.websocket import WebSocketTransport

_names = itertools.count(1)


@dataclass(frozen=True)
class Case:
    """A transport under test, a URL it can listen on, and one where nothing listens."""

    transport: Transport
    listen_url: str
    dead_url: str


@pytest.fixture(params=["websocket", "memory"])
def case(request: pytest.FixtureRequest) -> Iterator[Case]:
    if request.param == "websocket":
        # A bound socket that does not listen: dialing its port is refused, and no one else can take it.
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as blocker:
            blocker.bind(("127.0.0.1", 0))
            port = blocker.getsockname()[1]
            yield Case(WebSocketTransport(), "ws://127.0.0.1:0", f"ws://127.0.0.1:{port}")
    else:
        n = next(_names)
        network = MemoryNetwork()
        yield Case(MemoryTransport(network), f"memory://server-{n}", f"memory://nobody-{n}")

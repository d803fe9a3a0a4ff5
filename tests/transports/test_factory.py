"""Transports found through the plug-in lookup, with a plug-in's own options."""

from __future__ import annotations

import pytest

from crdtkv.errors import ConnectFailed, InvalidArgument
from crdtkv.transport import transport_factory
from transports.memory import DEFAULT_NETWORK, MemoryNetwork, MemoryTransport


def test_the_memory_plug_in_makes_a_transport_on_a_delayed_network_of_its_own() -> None:
    transport = transport_factory("memory")(seed=7, delay=0.03)
    assert isinstance(transport, MemoryTransport)
    assert transport.network is not DEFAULT_NETWORK
    assert (transport.network.seed, transport.network.delay) == (7, (0.03, 0.03))
    assert MemoryTransport(delay=(0.01, 0.02)).network.delay == (0.01, 0.02)
    assert MemoryTransport().network is DEFAULT_NETWORK


def test_a_network_and_options_for_one_of_its_own_are_refused() -> None:
    with pytest.raises(InvalidArgument, match="not both"):
        MemoryTransport(MemoryNetwork(), seed=1)


def test_an_unknown_scheme_names_itself() -> None:
    with pytest.raises(ConnectFailed, match="'carrier-pigeon'"):
        transport_factory("carrier-pigeon")

"""The sans-I/O core of crdtkv: clocks, CRDT entries, replica state, wire format.

Plain synchronous Python with time injected: no event loop, no sockets, no
threads. Bytes or calls in, state changes and bytes out.
"""

from .entry import TOMBSTONE, CounterState, Entry
from .hlc import HybridClock
from .limits import DEFAULT_LIMITS, Limits
from .replica import ReplicaState
from .wire import Delta, decode_delta, decode_snapshot, encode_delta, encode_snapshot

__all__ = [
    "DEFAULT_LIMITS",
    "TOMBSTONE",
    "CounterState",
    "Delta",
    "Entry",
    "HybridClock",
    "Limits",
    "ReplicaState",
    "decode_delta",
    "decode_snapshot",
    "encode_delta",
    "encode_snapshot",
]

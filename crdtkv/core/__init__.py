"""The sans-I/O core of crdtkv: clocks, CRDT entries, replica state, codec.

Plain synchronous Python with time injected: no event loop, no sockets, no
threads. Bytes or calls in, state changes and bytes out.
"""

from .codec import Delta, decode_delta, decode_snapshot, encode_delta, encode_snapshot
from .entry import TOMBSTONE, CounterState, Entry
from .hlc import HybridClock
from .limits import DEFAULT_LIMITS, Limits
from .replica import ReplicaState

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

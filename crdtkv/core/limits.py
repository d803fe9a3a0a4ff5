"""Size and time limits, each a setting with a safe default."""

from __future__ import annotations

from dataclasses import dataclass

KIB = 1024
MIB = 1024 * KIB


@dataclass(frozen=True)
class Limits:
    """Every bound crdtkv enforces, in one place.

    The defaults keep a single entry well inside one replication message and
    bound the memory an untrusted input can make the process allocate.
    """

    #: Longest key, in UTF-8 bytes.
    max_key_bytes: int = 1 * KIB
    #: Largest value, in encoded CBOR bytes.
    max_value_bytes: int = 512 * KIB
    #: Deepest nesting of lists and maps inside one value.
    max_value_depth: int = 32
    #: Largest metadata map attached to a value, in encoded CBOR bytes.
    max_metadata_bytes: int = 1 * KIB
    #: Largest replication message (a delta batch), in bytes.
    max_message_bytes: int = 1 * MIB
    #: Largest snapshot ``merge`` accepts, in bytes.
    max_snapshot_bytes: int = 1024 * MIB
    #: How far (seconds) a remote stamp may lie ahead of the local clock.
    max_clock_skew: float = 60.0
    #: How long (seconds) tombstones and expired values are kept before garbage
    #: collection removes them. Every replica must sync with a peer at least
    #: this often; data held only by a replica offline for longer is deleted
    #: again when it returns, never resurrected.
    gc_grace: float = 86_400.0

    def __post_init__(self) -> None:
        for name in (
            "max_key_bytes",
            "max_value_bytes",
            "max_value_depth",
            "max_metadata_bytes",
            "max_message_bytes",
            "max_snapshot_bytes",
        ):
            if getattr(self, name) <= 0:
                raise ValueError(f"Limits.{name} must be positive")
        if self.max_clock_skew < 0:
            raise ValueError("Limits.max_clock_skew must not be negative")
        if self.gc_grace <= 0:
            raise ValueError("Limits.gc_grace must be positive")


DEFAULT_LIMITS = Limits()

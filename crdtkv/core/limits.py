"""Size and time limits, each a setting with a safe default."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from ..errors import InvalidArgument, InvalidArgumentType

KIB = 1024
MIB = 1024 * KIB

#: Bytes one entry may need beyond its key, register value, metadata and
#: document: stamps, origin references, an expiry and the CBOR headers around
#: them (measured worst case: under 200 bytes).
ENTRY_OVERHEAD: Final = 1 * KIB
#: Bytes a replication message needs around its entries: the message and delta
#: headers, the store name (up to 1 KiB) and a version vector of a few dozen
#: origins. Each origin that wrote an entry's counter or document adds a
#: row of its own (under 100 bytes, plus the origin id in the message's origin
#: table) besides.
FRAME_RESERVE: Final = 16 * KIB
#: Most bytes ``max_counter_bytes`` may be (per-origin totals below 2**512).
MAX_COUNTER_BYTES: Final = 64
#: Largest expiry any replica accepts, in epoch milliseconds: the largest a
#: hybrid-clock stamp can name (48 bits, until the year 10889).
MAX_EXPIRY_MS: Final = (1 << 48) - 1

#: The default of ``Limits.prune_after``: seven days of silence retire an origin.
DEFAULT_PRUNE_AFTER: Final = 7 * 86_400.0

_SIZES: Final = (
    "max_key_bytes",
    "max_value_bytes",
    "max_value_depth",
    "max_metadata_bytes",
    "max_counter_bytes",
    "max_message_bytes",
    "max_snapshot_bytes",
)


@dataclass(frozen=True)
class Limits:
    """Every bound crdtkv enforces, in one place.

    The defaults keep a single entry well inside one replication message and
    bound the memory an untrusted input can make the process allocate. The
    construction checks that the largest entry a replica may write
    (:attr:`max_entry_bytes`) fits in one message of ``max_message_bytes``,
    so a peer with the same limits can always receive it.
    """

    #: Longest key, in UTF-8 bytes.
    max_key_bytes: int = 1 * KIB
    #: Largest value, in encoded CBOR bytes; for a document, its stored Yrs update.
    max_value_bytes: int = 480 * KIB
    #: Deepest nesting of lists and maps inside one value.
    max_value_depth: int = 32
    #: Largest metadata map attached to a value, in encoded CBOR bytes.
    max_metadata_bytes: int = 1 * KIB
    #: Largest per-origin increment (and decrement) total of a counter, in
    #: bytes of magnitude: totals, and so any one ``incr``, stay below
    #: ``2 ** (8 * max_counter_bytes)`` (2**128 by default).
    max_counter_bytes: int = 16
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
    #: How long (seconds) an origin may stay silent before every replica treats
    #: it as retired and prunes it from version vectors, change logs and
    #: counters (see :mod:`.prune`). At least twice ``gc_grace``: a live
    #: replica writes a heartbeat long before, and its writes reach everyone
    #: within the grace period, so no replica prunes an origin that still writes.
    #: 0 (the default) means :data:`DEFAULT_PRUNE_AFTER` (7 days), or twice
    #: ``gc_grace`` if that is longer; the field then holds the value used.
    prune_after: float = 0.0

    def __post_init__(self) -> None:
        for name in _SIZES:
            value = getattr(self, name)
            if type(value) is not int:
                raise InvalidArgumentType(f"Limits.{name} must be an int, not {type(value).__name__}")
            if value <= 0:
                raise InvalidArgument(f"Limits.{name} must be positive")
        for name in ("max_clock_skew", "gc_grace", "prune_after"):
            value = getattr(self, name)
            if type(value) not in (int, float):
                raise InvalidArgumentType(f"Limits.{name} must be a number, not {type(value).__name__}")
            if not value < float("inf"):  # also NaN
                raise InvalidArgument(f"Limits.{name} must be finite")
        if self.max_clock_skew < 0:
            raise InvalidArgument("Limits.max_clock_skew must not be negative")
        if self.gc_grace <= 0:
            raise InvalidArgument("Limits.gc_grace must be positive")
        if self.prune_after == 0:
            object.__setattr__(self, "prune_after", max(DEFAULT_PRUNE_AFTER, 2 * self.gc_grace))
        if self.prune_after < 2 * self.gc_grace:
            raise InvalidArgument(
                f"Limits.prune_after ({self.prune_after}) must be at least twice gc_grace ({self.gc_grace})"
            )
        if self.max_counter_bytes > MAX_COUNTER_BYTES:
            raise InvalidArgument(f"Limits.max_counter_bytes must be at most {MAX_COUNTER_BYTES}")
        if self.max_entry_bytes + FRAME_RESERVE > self.max_message_bytes:
            raise InvalidArgument(
                f"the largest entry these limits allow ({self.max_entry_bytes} bytes: max_key_bytes "
                f"+ max_metadata_bytes + 2 x max_value_bytes + {ENTRY_OVERHEAD}) plus {FRAME_RESERVE} "
                f"bytes of message framing exceeds max_message_bytes ({self.max_message_bytes}); "
                "a peer could never receive it"
            )

    @property
    def max_entry_bytes(self) -> int:
        """The largest encoded entry a replica may hold, not counting per-origin rows.

        A key can hold a register value and a document at once (a ``put``
        over a document keeps the document for edits it had not seen), so
        both count, with the metadata, the key and :data:`ENTRY_OVERHEAD`.
        """
        return self.max_key_bytes + self.max_metadata_bytes + 2 * self.max_value_bytes + ENTRY_OVERHEAD

    @property
    def max_counter_total(self) -> int:
        """Per-origin counter totals (and ``incr`` amounts) must stay below this."""
        return 1 << (8 * self.max_counter_bytes)


DEFAULT_LIMITS = Limits()

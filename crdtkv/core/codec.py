"""Former home of the CBOR forms, kept so old import paths work while callers move.

Each job now has its own module: strict loading and the shared readers in
:mod:`.cbor`, deltas and snapshots in :mod:`.wire`, the digest in
:mod:`.digest`, storage rows in :mod:`crdtkv.storage.rows`. Import from
those; this module goes once nothing imports it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .cbor import MAX_ORIGIN_CHARS, strict_loads
from .digest import digest_entries
from .wire import (
    CHECKSUM_BYTES,
    FORMAT,
    MAX_ROOT_CHARS,
    MAX_ROOTS,
    MAX_YRS_CLOCK,
    SNAPSHOT_MAGIC,
    Delta,
    decode_delta,
    decode_snapshot,
    encode_delta,
    encode_snapshot,
    entry_to_wire,
)

if TYPE_CHECKING:
    from ..storage.rows import decode_rows, encode_row


def __getattr__(name: str) -> Any:
    """``encode_row`` and ``decode_rows`` from :mod:`crdtkv.storage.rows`, loaded when asked for."""
    if name in ("encode_row", "decode_rows"):
        from ..storage import rows

        return getattr(rows, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "CHECKSUM_BYTES",
    "FORMAT",
    "MAX_ORIGIN_CHARS",
    "MAX_ROOTS",
    "MAX_ROOT_CHARS",
    "MAX_YRS_CLOCK",
    "SNAPSHOT_MAGIC",
    "Delta",
    "decode_delta",
    "decode_rows",
    "decode_snapshot",
    "digest_entries",
    "encode_delta",
    "encode_row",
    "encode_snapshot",
    "entry_to_wire",
    "strict_loads",
]

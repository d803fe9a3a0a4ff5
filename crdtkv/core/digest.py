"""The convergence digest: a hash of the canonical replicated state.

Two replicas have equal digests if and only if they hold the same state. The
hash covers each entry's canonical wire form (origins by name, map keys
sorted, a document by its identity rather than its update bytes, which
differ between replicas holding the same document), in key order.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import cbor2

from .entry import Entry
from .wire import entry_to_wire


def digest_entries(items: Iterable[tuple[str, Entry]]) -> str:
    """SHA-256 over the canonical encoding of entries, in key order."""
    hasher = hashlib.sha256()
    same = str
    for key, entry in sorted(items, key=lambda item: item[0]):
        hasher.update(cbor2.dumps(entry_to_wire(key, entry, same, identity=True), canonical=True))
    return hasher.hexdigest()


__all__ = ["digest_entries"]

"""Bulk work without cyclic-GC churn.

Decoding or merging a large batch creates one entry object per key. Entries
form no reference cycles, yet each allocation counts toward CPython's cyclic
collector, which then repeatedly walks every live entry of the store: at a
million keys that costs more than the merge itself. For large batches the
collector is paused for the duration of the (synchronous) call and restored
afterwards; reference counting still frees everything as usual.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

#: Batches smaller than this run with the collector untouched.
BULK_THRESHOLD = 1_000


@contextmanager
def collector_paused(items: int) -> Iterator[None]:
    """Pause the cyclic collector while handling ``items`` entries, if that many."""
    if items < BULK_THRESHOLD or not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()

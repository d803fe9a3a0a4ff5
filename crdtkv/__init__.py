"""crdtkv: an edge key-value store whose replicas converge without coordination.

Values live in per-key last-writer-wins registers, counters that never lose
an increment, and collaborative documents; replicas merge deterministically,
in any order.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

# First: with CRDTKV_PURE=1 this puts the finder of the pure-Python modules in place
# before anything below imports the core (crdtkv/build.py).
from .build import loaded_build
from .core.limits import Limits
from .cursor import KeyInfo, Page
from .ratelimit import Decision
from .store import KvStore, Record

if TYPE_CHECKING:
    from .blocking import BlockingClient
    from .client import Client
    from .document import Document
    from .node import Node, NodeSettings
    from .watch import Change

from .version import __version__

#: The build loaded: "compiled" (the hot modules built by mypyc) or "pure" (pure Python,
#: or CRDTKV_PURE=1); ``crdtkv --version`` prints it too.
BUILD = loaded_build()

__all__ = [
    "BUILD",
    "BlockingClient",
    "Change",
    "Client",
    "Decision",
    "Document",
    "KeyInfo",
    "KvStore",
    "Limits",
    "Node",
    "NodeSettings",
    "Page",
    "Record",
    "__version__",
]

# The replication layer (anyio, websockets) and pycrdt (which loads anyio) load
# on first use, so embedding just the store, or the sans-I/O core, pulls in no
# event loop.
_LAZY = {
    "Node": "node",
    "NodeSettings": "node",
    "Client": "client",
    "BlockingClient": "blocking",
    "Change": "watch",
    "Document": "document",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'crdtkv' has no attribute {name!r}")
    from importlib import import_module

    return getattr(import_module(f".{module}", __name__), name)

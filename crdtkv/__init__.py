"""crdtkv: an edge key-value store whose replicas converge without coordination.

Values live in per-key last-writer-wins registers and counters that never lose
an increment; replicas merge deterministically, in any order.
"""

from .core.limits import Limits
from .store import KvStore

__version__ = "0.1.0"

__all__ = ["KvStore", "Limits", "__version__"]

"""Which build of crdtkv is loaded: the mypyc-compiled hot modules, or pure Python.

A compiled install (``pip install .`` with a C compiler; see setup.py) ships every
``.py`` file beside its extension. With ``CRDTKV_PURE=1`` in the environment, the
package's modules load from those ``.py`` files instead: importing this module (the
first thing ``crdtkv/__init__.py`` does, before anything imports the core) puts a
finder ahead of the default ones that prefers the source of every ``crdtkv``
module. Either all compiled modules load or none does (compiled modules call each
other directly), so the switch is per process, read once at import.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from types import ModuleType
from typing import Final

#: The environment variable that forces the pure-Python modules (set to "1"), at build and at run time.
PURE_ENV: Final = "CRDTKV_PURE"

#: The compiled modules' shared library (setup.py's GROUP plus mypyc's suffix): loaded iff they are.
COMPILED_LIBRARY: Final = "crdtkv.compiled__mypyc"


class PreferSources:
    """A meta path finder: every ``crdtkv.*`` module from its ``.py`` file, where there is one."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if path is None or not fullname.startswith("crdtkv."):
            return None
        name = fullname.rpartition(".")[2]
        for directory in path:
            source = os.path.join(directory, f"{name}.py")
            if os.path.isfile(source):
                return importlib.util.spec_from_file_location(fullname, source)
        return None  # a package (its __init__.py loads as usual) or not ours


def pure_requested() -> bool:
    """Whether ``CRDTKV_PURE=1`` asks for the pure-Python modules."""
    return os.environ.get(PURE_ENV) == "1"


def loaded_build() -> str:
    """``"compiled"`` if the mypyc-compiled modules are the ones loaded, else ``"pure"``."""
    return "compiled" if COMPILED_LIBRARY in sys.modules else "pure"


def describe_build() -> str:
    """The loaded build in words, as ``crdtkv --version`` prints it: "compiled: mypyc" or "pure Python"."""
    return "compiled: mypyc" if loaded_build() == "compiled" else "pure Python"


if pure_requested() and not any(isinstance(finder, PreferSources) for finder in sys.meta_path):
    sys.meta_path.insert(0, PreferSources())

"""Build: the hot modules compiled by mypyc when a C compiler is present, else the pure-Python package.

Everything else about the package is in pyproject.toml. ``CRDTKV_PURE=1`` at build
time builds the pure-Python package (no compiler, no mypy run); at run time it makes
``import crdtkv`` load the ``.py`` files even where the compiled modules are installed
(every wheel ships the ``.py`` files too). ``crdtkv --version`` names the build loaded.
"""

from __future__ import annotations

import os
import sys
import tempfile

from setuptools import setup

#: The modules the compiled build compiles, into one extension group (calls between them
#: are direct C calls). Each pays in the benchmarks (docs/performance.md has the numbers);
#: the rest of the package is interpreted. tests/test_build.py checks every one is loaded
#: compiled in a compiled build.
COMPILED = [
    "crdtkv/core/cbor.py",
    "crdtkv/core/entry.py",
    "crdtkv/core/feed.py",
    "crdtkv/core/hlc.py",
    "crdtkv/core/keyindex.py",
    "crdtkv/core/replica.py",
    "crdtkv/core/sync.py",
    "crdtkv/core/values.py",
    "crdtkv/core/vv.py",
    "crdtkv/core/wire.py",
    "crdtkv/core/bulk.py",
    "crdtkv/core/changelog.py",
    "crdtkv/core/digest.py",
    "crdtkv/core/document.py",
    "crdtkv/core/forwarding.py",
    "crdtkv/core/gc.py",
    "crdtkv/core/messages.py",
    "crdtkv/core/prune.py",
    "crdtkv/core/yrs.py",
    "crdtkv/storage/journal.py",
    "crdtkv/storage/rows.py",
    "crdtkv/gateway/resp_state.py",
    "crdtkv/gateway/resp_keyspace.py",
    "crdtkv/gateway/resp_connection.py",
    "crdtkv/gateway/resp_commands.py",
    "crdtkv/gateway/resp_protocol.py",
]

#: The extension group's shared library is ``crdtkv/compiled__mypyc``: inside the package,
#: so it loads wherever ``crdtkv`` does (an installed wheel, or an in-place build whose
#: source root is not on sys.path), and no top-level module is added.
GROUP = "crdtkv.compiled"

#: A C file that compiles only where both a C compiler and Python's headers are installed.
PROBE = "#include <Python.h>\nint crdtkv_probe(void) { return Py_IsInitialized(); }\n"


def notice(reason: str) -> None:
    """One line on stderr saying the build is the pure-Python one, and why."""
    print(f"crdtkv: building the pure-Python package ({reason})", file=sys.stderr)


def compiler_missing() -> str | None:
    """Why no extension can be built here (no C compiler, no Python headers), or None."""
    from distutils import ccompiler, sysconfig  # setuptools' own copy (imported above)

    try:
        compiler = ccompiler.new_compiler()
        sysconfig.customize_compiler(compiler)
        with tempfile.TemporaryDirectory() as work:
            source = os.path.join(work, "probe.c")
            with open(source, "w", encoding="ascii") as out:
                out.write(PROBE)
            compiler.compile([source], output_dir=work, include_dirs=[sysconfig.get_python_inc()])
    except Exception as exc:  # any failure means: no usable compiler
        return f"no usable C compiler or Python headers: {type(exc).__name__}: {exc}".splitlines()[0]
    return None


def extensions() -> list[object]:
    """The compiled modules' extensions, or none for the pure-Python package."""
    if os.environ.get("CRDTKV_PURE") == "1":
        notice("CRDTKV_PURE=1")
        return []
    try:
        from mypyc.build import mypycify
    except ImportError:
        notice("mypyc is not installed")
        return []
    reason = compiler_missing()
    if reason is not None:
        notice(reason)
        return []
    return list(mypycify(COMPILED, group_name=GROUP, opt_level="3"))


setup(ext_modules=extensions())

"""The build loaded: compiled (mypyc) or pure Python, as expected, switchable at run time, named by --version.

``CRDTKV_EXPECT_BUILD=compiled|pure`` (set by ``make test`` and CI) names the
build the run must load, so a compiled build that silently fell back to pure
Python fails here. Without it, the build expected is the one the tree holds:
compiled if the compiled modules are installed, pure with ``CRDTKV_PURE=1``.
"""

from __future__ import annotations

import ast
import importlib
import os
import subprocess
import sys
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path

import pytest

import crdtkv
from crdtkv.build import COMPILED_LIBRARY, PURE_ENV

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = Path(crdtkv.__file__).resolve().parent


def compiled_modules() -> list[str]:
    """The module names setup.py's COMPILED list compiles (the one list there is)."""
    tree = ast.parse((ROOT / "setup.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets] == ["COMPILED"]:
            paths = ast.literal_eval(node.value)
            return [path.removesuffix(".py").replace("/", ".") for path in paths]
    raise AssertionError("setup.py has no COMPILED list")


def extension_of(module: str) -> Path | None:
    """The compiled extension file installed for ``module`` beside its source, if any."""
    base = PACKAGE.parent.joinpath(*module.split("."))
    for suffix in EXTENSION_SUFFIXES:
        if base.with_name(base.name + suffix).is_file():
            return base.with_name(base.name + suffix)
    return None


def expected_build() -> str:
    """The build this run must load: CRDTKV_EXPECT_BUILD, else what is installed and asked for."""
    named = os.environ.get("CRDTKV_EXPECT_BUILD")
    if named is not None:
        assert named in ("compiled", "pure"), f"CRDTKV_EXPECT_BUILD={named!r}: 'compiled' or 'pure'"
        return named
    if os.environ.get(PURE_ENV) == "1" or extension_of(COMPILED_LIBRARY) is None:
        return "pure"
    return "compiled"


def run_python(code: str, *, pure: bool) -> str:
    """stdout of ``code`` run by a fresh interpreter outside the source tree, CRDTKV_PURE=1 or not."""
    env = {key: value for key, value in os.environ.items() if key != PURE_ENV}
    if pure:
        env[PURE_ENV] = "1"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd="/", timeout=120
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_the_loaded_build_is_the_one_expected() -> None:
    assert expected_build() == crdtkv.BUILD
    assert (COMPILED_LIBRARY in sys.modules) == (crdtkv.BUILD == "compiled")


def test_every_listed_module_is_compiled_in_the_compiled_build_and_only_those() -> None:
    listed = compiled_modules()
    assert "crdtkv.core.replica" in listed
    for name in listed:
        module = importlib.import_module(name)
        origin = Path(module.__file__ or "")
        if crdtkv.BUILD == "compiled":
            assert origin.suffix != ".py", f"{name} is listed in setup.py but loaded from {origin}"
        else:
            assert origin.suffix == ".py", f"{name} loaded from {origin} in the pure build"
    for name, module in list(sys.modules.items()):
        if name.startswith("crdtkv.") and name not in listed and name != COMPILED_LIBRARY:
            found = getattr(module, "__file__", None)
            assert found is None or found.endswith(".py"), f"{name} is compiled but not listed: {found}"


def test_a_compiled_build_in_the_tree_is_not_older_than_its_sources() -> None:
    """A stale in-place build would run old code: rebuild it (``make test`` does, when sources change)."""
    stale = []
    for name in compiled_modules():
        extension = extension_of(name)
        source = PACKAGE.parent.joinpath(*name.split(".")).with_suffix(".py")
        if extension is not None and extension.stat().st_mtime < source.stat().st_mtime:
            stale.append(name)
    assert stale == [], f"compiled modules older than their .py files: {stale}; rebuild (make compiled)"


def test_crdtkv_pure_switches_to_the_pure_modules_at_run_time() -> None:
    probe = (
        "import sys, crdtkv, crdtkv.store, crdtkv.core.replica\n"
        "compiled = sorted(n for n, m in sys.modules.items() if n.startswith('crdtkv') "
        "and not (getattr(m, '__file__', None) or '.py').endswith('.py'))\n"
        "print(crdtkv.BUILD, compiled)"
    )
    assert run_python(probe, pure=True) == "pure []"
    unforced = "compiled" if extension_of(COMPILED_LIBRARY) is not None else "pure"
    build, modules = run_python(probe, pure=False).split(" ", 1)
    assert build == unforced
    assert (modules != "[]") == (unforced == "compiled")


def test_version_names_the_build() -> None:
    version = "import sys; sys.argv = ['crdtkv', '--version']; from crdtkv.cli import main; main()"
    assert run_python(version, pure=True) == f"crdtkv {crdtkv.__version__} (pure Python)"
    unforced = run_python(version, pure=False)
    if extension_of(COMPILED_LIBRARY) is not None:
        assert unforced == f"crdtkv {crdtkv.__version__} (compiled: mypyc)"
    else:
        assert unforced == f"crdtkv {crdtkv.__version__} (pure Python)"


@pytest.mark.anyio
async def test_the_metrics_label_the_build_loaded() -> None:
    from crdtkv.metrics import node_metrics
    from crdtkv.node import Node

    async with Node(crdtkv.KvStore.open(replica_id="london"), listen="ws://127.0.0.1:0") as node:
        text = node_metrics(node).render().decode()
    (info,) = [line for line in text.splitlines() if line.startswith("crdtkv_info{")]
    assert f'runtime="{crdtkv.BUILD}"' in info and 'id="london"' in info


def test_no_compiled_module_reuses_an_exception_name_across_handlers() -> None:
    """``except A as exc`` then ``except B as exc`` in one try: compiled, the second raises TypeError.

    mypyc gives the name the first clause's type, so a B caught there fails
    its runtime type check: the error reply or close the handler was for
    never happens. Each clause needs its own name.
    """
    reused = []
    for module in compiled_modules():
        path = ROOT.joinpath(*module.split(".")).with_suffix(".py")
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Try):
                names = [handler.name for handler in node.handlers if handler.name is not None]
                if len(names) != len(set(names)):
                    reused.append(f"{path.relative_to(ROOT)}:{node.lineno} {names}")
    assert not reused, reused

"""The wheel users install holds the whole package: every module, py.typed, the entry points, the version.

The suite otherwise runs against an editable install, which imports straight
from the source tree and so cannot notice a subpackage left out of the wheel.
Here a wheel is built (``pip wheel``, as a user or CI would) from a copy of the
tree, so no build directory left by an earlier build can fill a gap, and its
file list is compared with the source tree.
"""

from __future__ import annotations

import configparser
import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

import crdtkv

ROOT = Path(__file__).resolve().parent.parent
#: the importable trees the wheel must ship whole
PACKAGE_TREES = ("crdtkv", "transports")
#: never copied into the build: caches, environments, earlier build output
NOT_COPIED = shutil.ignore_patterns(
    ".git",
    ".venv",
    "build",
    "dist",
    "*.egg-info",
    "__pycache__",
    ".*_cache",
    ".hypothesis",
    "*.snapshot",
    "*.so",
)

pytestmark = pytest.mark.slow  # one `pip wheel` for the module: a few seconds


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    """The wheel ``pip wheel`` builds from a fresh copy of the source tree.

    The pure-Python wheel (CRDTKV_PURE=1), to keep this quick: .ci/wheel-smoke.sh
    builds and runs the compiled one, which ships every ``.py`` file as well.
    """
    base = tmp_path_factory.mktemp("wheel")
    source, out = base / "source", base / "out"
    shutil.copytree(ROOT, source, ignore=NOT_COPIED)
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "CRDTKV_PURE": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(source)],
        capture_output=True,
        text=True,
        timeout=600,  # a hang guard: the build backend may be fetched from the package index
        env=env,
    )
    assert result.returncode == 0, f"pip wheel failed:\n{result.stdout}\n{result.stderr}"
    (built,) = out.glob("crdtkv-*.whl")
    with zipfile.ZipFile(built) as archive:
        archive.testzip()
    return zipfile.ZipFile(built)


def source_files() -> list[str]:
    """Every module and marker file of the package trees, as paths inside the wheel."""
    found = []
    for tree in PACKAGE_TREES:
        for path in sorted((ROOT / tree).rglob("*")):
            if (
                path.is_file()
                and "__pycache__" not in path.parts
                and path.suffix in (".py", ".typed", ".html")
            ):
                found.append(path.relative_to(ROOT).as_posix())
    return found


def dist_info(wheel: zipfile.ZipFile, name: str) -> str:
    (path,) = [n for n in wheel.namelist() if n.endswith(f".dist-info/{name}")]
    return wheel.read(path).decode()


def test_every_package_of_the_source_tree_is_in_the_wheel(wheel: zipfile.ZipFile) -> None:
    names = set(wheel.namelist())
    packages = [
        path.parent.relative_to(ROOT).as_posix()
        for tree in PACKAGE_TREES
        for path in (ROOT / tree).rglob("__init__.py")
    ]
    assert {"crdtkv", "crdtkv/core", "crdtkv/storage", "transports"} <= set(packages)
    missing_packages = [p for p in packages if f"{p}/__init__.py" not in names]
    assert missing_packages == []
    missing_files = [f for f in source_files() if f not in names]
    assert missing_files == []
    assert "crdtkv/py.typed" in names
    assert "transports/py.typed" in names


def test_the_wheel_holds_no_tests_benches_or_examples(wheel: zipfile.ZipFile) -> None:
    top = {name.split("/", 1)[0] for name in wheel.namelist()}
    assert top - {f"crdtkv-{crdtkv.__version__}.dist-info"} == set(PACKAGE_TREES)


def test_the_wheel_declares_the_entry_points_of_pyproject(wheel: zipfile.ZipFile) -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    points = configparser.ConfigParser(delimiters=("=",))
    points.optionxform = str  # type: ignore[assignment, method-assign]  # keep names as written
    points.read_string(dist_info(wheel, "entry_points.txt"))
    assert dict(points["console_scripts"]) == {"crdtkv": "crdtkv.cli:main"} == project["scripts"]
    transports = dict(points["crdtkv.transports"])
    assert transports == project["entry-points"]["crdtkv.transports"]
    assert {"ws", "wss", "memory"} <= set(transports)
    names = set(wheel.namelist())
    for target in [*transports.values(), "crdtkv.cli:main"]:
        module = target.split(":")[0].replace(".", "/")
        assert f"{module}.py" in names, target


def test_the_wheel_version_and_license_are_the_packages(wheel: zipfile.ZipFile) -> None:
    metadata = Parser().parsestr(dist_info(wheel, "METADATA"))
    assert metadata["Version"] == crdtkv.__version__
    assert Path(wheel.filename or "").name.startswith(f"crdtkv-{crdtkv.__version__}-")
    assert metadata["License-Expression"] == "MIT"
    requires = metadata.get_all("Requires-Dist") or []
    assert any(r.startswith("pycrdt") and "extra ==" not in r for r in requires)

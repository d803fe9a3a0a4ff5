"""No leading-underscore name crosses a module boundary in crdtkv/ and transports/.

A name such as ``_state`` belongs to the module that defines it: other modules
use public names (``KvStore.replica``, the change feed), so a module can change
its internals without breaking another. Checked on the syntax tree:
``from x import _y``, ``module._y`` and ``obj._y`` (also ``getattr(obj, "_y")``)
where ``obj`` is not ``self`` or ``cls``, unless ``_y`` is defined in the module
doing it and in no other (without types, a name two modules define could be
either one's, so it counts as crossing). Dunder names (``__init__``) are not
private.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TREES = ("crdtkv", "transports")


def private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def defined_names(tree: ast.AST) -> set[str]:
    """Every name the module defines: functions, classes, variables, attributes and slots it assigns."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.add(node.attr)
        elif isinstance(node, ast.arg):
            names.add(node.arg)
        elif isinstance(node, ast.Assign) and any(
            isinstance(target, ast.Name) and target.id == "__slots__" for target in node.targets
        ):
            names.update(
                item.value
                for item in ast.walk(node.value)
                if isinstance(item, ast.Constant) and isinstance(item.value, str)
            )
    return names


def crossings(source: str, elsewhere: frozenset[str] = frozenset()) -> list[str]:
    """The private names ``source`` uses that are not its own alone, as ``line: code``.

    ``elsewhere``: the names other modules define.
    """
    tree = ast.parse(source)
    own = defined_names(tree) - elsewhere
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            found += [
                f"{node.lineno}: from {'.' * node.level}{node.module or ''} import {alias.name}"
                for alias in node.names
                if private(alias.name)
            ]
        elif isinstance(node, ast.Import):
            found += [
                f"{node.lineno}: import {alias.name}"
                for alias in node.names
                if any(private(part) for part in alias.name.split("."))
            ]
        elif isinstance(node, ast.Attribute) and private(node.attr):
            owner = node.value
            if isinstance(owner, ast.Name) and owner.id in ("self", "cls"):
                continue
            if node.attr not in own:
                found.append(f"{node.lineno}: {ast.unparse(node)}")
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("getattr", "setattr", "hasattr", "delattr")
            and len(node.args) >= 2
            and isinstance(node.args[1], ast.Constant)
            and isinstance(node.args[1].value, str)
            and private(node.args[1].value)
        ):
            owner = node.args[0]
            if isinstance(owner, ast.Name) and owner.id in ("self", "cls"):
                continue
            if node.args[1].value not in own:
                found.append(f"{node.lineno}: {ast.unparse(node)}")
    return found


def modules() -> list[Path]:
    return sorted(path for tree in TREES for path in (ROOT / tree).rglob("*.py"))


@functools.cache
def private_definitions() -> dict[Path, frozenset[str]]:
    """The private names each module of crdtkv/ and transports/ defines."""
    return {
        path: frozenset(name for name in defined_names(ast.parse(path.read_text())) if private(name))
        for path in modules()
    }


def defined_elsewhere(path: Path) -> frozenset[str]:
    """The private names the other modules of crdtkv/ and transports/ define."""
    return frozenset().union(*(names for other, names in private_definitions().items() if other != path))


@pytest.mark.parametrize("path", modules(), ids=lambda path: str(path.relative_to(ROOT)))
def test_no_private_name_crosses_a_module_boundary(path: Path) -> None:
    assert crossings(path.read_text(), defined_elsewhere(path)) == []


def test_a_private_name_two_modules_define_is_not_taken_for_the_module_own() -> None:
    source = "class A:\n    def f(self, other):\n        self._x = 1\n        return other._x\n"
    assert crossings(source, frozenset({"_x"})) == ["4: other._x"]
    assert crossings(source, frozenset({"_y"})) == []


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("from .store import _check_name\n", ["1: from .store import _check_name"]),
        ("import crdtkv._hidden\n", ["1: import crdtkv._hidden"]),
        ("def f(store):\n    return store._state\n", ["2: store._state"]),
        ("import anyio\nanyio._backend\n", ["2: anyio._backend"]),
        ("def f(root):\n    return getattr(root, '_doc', None)\n", ["2: getattr(root, '_doc', None)"]),
        ("class A:\n    def f(self):\n        return self._x\n", []),
        ("class A:\n    def f(self, other):\n        self._x = 1\n        return other._x\n", []),
        ("class A:\n    __slots__ = ('_x',)\n\ndef f(a):\n    return a._x\n", []),
        ("def f(a):\n    return a.__class__\n", []),
    ],
)
def test_the_check_sees_each_kind_of_crossing(source: str, expected: list[str]) -> None:
    assert crossings(source) == expected

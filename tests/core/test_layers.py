"""Import structure: no cycle among crdtkv's modules.

Every import counts: inside functions (a cycle hidden there is still a
cycle) and under ``if TYPE_CHECKING:`` (a dependency for types only is still
a dependency between the modules).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "crdtkv"
#: Every package checked: crdtkv and the transports that plug into it.
TREES = (PACKAGE, ROOT / "transports")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, name: str, modules: set[str]) -> set[str]:
    """Every crdtkv module ``name`` imports, at any depth of the file."""
    is_package = path.name == "__init__.py"
    package = name if is_package else name.rpartition(".")[0]
    found: set[str] = set()
    pending: list[ast.AST] = [ast.parse(path.read_text(), str(path))]
    while pending:
        node = pending.pop()
        pending.extend(ast.iter_child_nodes(node))
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            for alias in node.names:  # ``from . import x`` may name a module
                submodule = f"{target}.{alias.name}"
                found.add(submodule if submodule in modules else target)
    return {module for module in found if module in modules and module != name}


def import_graph() -> dict[str, set[str]]:
    paths = {module_name(path): path for tree in TREES for path in tree.rglob("*.py")}
    modules = set(paths)
    return {name: imports_of(path, name, modules) for name, path in paths.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def restricted(graph: dict[str, set[str]], prefixes: tuple[str, ...]) -> dict[str, set[str]]:
    def inside(module: str) -> bool:
        return any(module == prefix or module.startswith(prefix + ".") for prefix in prefixes)

    return {name: {t for t in targets if inside(t)} for name, targets in graph.items() if inside(name)}


def test_no_import_cycle_in_the_core_and_storage() -> None:
    assert cycles(restricted(import_graph(), ("crdtkv.core", "crdtkv.storage"))) == []


def test_no_import_cycle_in_crdtkv_and_the_transports() -> None:
    assert cycles(import_graph()) == []


def test_crdtkv_finds_transports_only_through_the_plug_in_lookup() -> None:
    graph = import_graph()
    reaching = {
        name: sorted(t for t in targets if t.split(".")[0] == "transports") for name, targets in graph.items()
    }
    assert {name: found for name, found in reaching.items() if name.startswith("crdtkv") and found} == {}


def test_the_graph_sees_the_shells_and_transports() -> None:
    graph = import_graph()
    # the store loads documents and watches inside its methods (they bring pycrdt and anyio)
    assert {"crdtkv.document", "crdtkv.watch"} <= graph["crdtkv.store"]
    assert "crdtkv.transport" in graph["transports.memory"]


def test_the_graph_sees_imports_inside_functions() -> None:
    graph = import_graph()
    assert "crdtkv.core.values" in graph["crdtkv.core.wire"]
    # the SQLite backend is imported inside KvStore.open, so the store stays light
    assert "crdtkv.storage.sqlite" in graph["crdtkv.store"]
    # and the store's recovery imports the row decoder, which the core never does
    assert "crdtkv.storage.rows" in graph["crdtkv.storage.recovery"]
    assert not any(name.startswith("crdtkv.storage") for name in graph["crdtkv.core.replica"])


def test_a_cycle_is_found() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]

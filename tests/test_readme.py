"""The README's examples run as printed."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.DOTALL)


def test_readme_embedded_example_runs() -> None:
    namespace: dict[str, object] = {}
    exec(compile(python_blocks()[0], "README.md", "exec"), namespace)
    store = namespace["london"]
    assert store.get("views") == 6  # type: ignore[attr-defined]


def test_readme_replication_example_runs() -> None:
    block = python_blocks()[1]
    assert "anyio.run(main)" in block
    exec(compile(block, "README.md", "exec"), {"__name__": "readme"})  # returns once both read 2


def test_readme_document_example_runs() -> None:
    from crdtkv import KvStore

    (block,) = [block for block in python_blocks() if 'store.doc("cart:42")' in block]
    namespace: dict[str, object] = {"store": KvStore.open()}
    exec(compile(block, "README.md", "exec"), namespace)
    store = namespace["store"]
    assert store.get("cart:42") == {"items": {"pear": 1}, "note": "ring twice"}  # type: ignore[attr-defined]
    assert "{'items': {'pear': 1}, 'note': 'ring twice'}" in block  # the comment shows the real result

"""Every example in examples/ runs as documented: `python examples/<name>.py`, no arguments.

Each example ends with assertions of its own point (flags reach every PoP,
sessions expire everywhere, digests agree, ...), so a broken library makes it
exit non-zero; here we also check a key line of its output.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))

#: a line each example prints once it has checked its point
KEY_LINES = {
    "page_views.py": "incr counter              8,500 (0 increments lost)",
    "feature_flags.py": "every PoP serves flag:new-checkout = False; every watcher saw both changes",
    "sessions.py": "the session expired at every PoP without a message",
    "tenant_config.py": "all PoPs picked the same winner; equal digests",
    "cache.py": "2 computations for 7 requests at 3 PoPs",
    "rate_limiter.py": "bound per window: limit + (PoPs - 1) x B = 100 + 2 x",
    "shopping_cart.py": "document cart: 0 of 5 edits lost at 3 PoPs; equal digests",
}


def test_the_examples_are_all_found() -> None:
    assert set(KEY_LINES) <= {path.name for path in EXAMPLES}


@pytest.mark.parametrize("path", EXAMPLES, ids=[path.name for path in EXAMPLES])
def test_example_runs(path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(path.relative_to(ROOT))],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    report = f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    assert result.returncode == 0, report
    assert result.stderr == "", report
    key_line = KEY_LINES.get(path.name)
    if key_line is not None:
        assert key_line in result.stdout, report

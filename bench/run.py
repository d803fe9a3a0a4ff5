#!/usr/bin/env python3
"""Run crdtkv's benchmarks: every case of the table in ``report.CASES``, or the ones named.

Usage::

    python bench/run.py                        # every case, full size (minutes)
    python bench/run.py --quick                # every case as a smoke run in seconds (CI)
    python bench/run.py --repeats 9 rate-limit # one case, median of 9
    python bench/run.py --list

Each case prints a Markdown table; the figures in docs/performance.md (and the
README's summary of it) come from these tables. A failed measurement shows
ERROR in its row and makes the exit status 1.
"""

from __future__ import annotations

import argparse
import importlib
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Sequence
from pathlib import Path

from report import CASES, ROOT, Options, Row, exit_status, progress, render

#: the case modules: importing one registers its cases, so this is the table's order
MODULES = ("local_ops", "replication", "durability", "rate_limit", "documents", "scale", "gateway")


def revision() -> str:
    """The git commit measured, and whether crdtkv/ or transports/ have uncommitted edits."""
    try:
        git = ["git", "-C", str(ROOT)]
        head = subprocess.run(
            [*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        )
        dirty = subprocess.run([*git, "status", "--porcelain", "crdtkv", "transports"], capture_output=True,
                               text=True, check=True)  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return "git revision unknown"
    return f"git {head.stdout.strip()}" + (" + uncommitted edits" if dirty.stdout.strip() else "")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("cases", nargs="*", metavar="case", help="cases to run (default: all)")
    parser.add_argument("--quick", action="store_true", help="small sizes, one repeat: a smoke run (CI)")
    parser.add_argument("--repeats", type=int, default=None, help="repeats per timing (the median is kept)")
    parser.add_argument("--dir", type=Path, default=None, help="where cases write files (default: cwd)")
    parser.add_argument("--require-redis", action="store_true", help="fail if the Redis baseline cannot run")
    parser.add_argument("--list", action="store_true", help="list the cases and exit")
    args = parser.parse_args(argv)
    for module in MODULES:
        importlib.import_module(module)
    names = list(CASES)
    if args.list:
        for name in names:
            print(f"{name}\t{CASES[name].title}")
        return 0
    unknown = [c for c in args.cases if c not in CASES]
    if unknown or (args.repeats is not None and args.repeats < 1):
        parser.error(f"unknown case(s) {unknown} (see --list)" if unknown else "--repeats must be at least 1")
    chosen = [n for n in names if n in args.cases] if args.cases else names
    command = shlex.join(["python", "bench/run.py", *(sys.argv[1:] if argv is None else argv)])
    where = f"Python {platform.python_version()}, {os.cpu_count()} CPUs"
    print(f"crdtkv {importlib.import_module('crdtkv').__version__} ({revision()}), {where}; `{command}`")
    if args.dir is not None:
        Path(args.dir).mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="crdtkv-bench-", dir=args.dir) as tmp:
        options = Options(args.quick, args.repeats, Path(tmp), args.require_redis)
        for name in chosen:
            progress(f"case {name}")
            began = time.perf_counter()
            try:
                case_rows = CASES[name].run(options)
            except Exception as exc:
                traceback.print_exc()
                case_rows = [
                    Row(name, CASES[name].title, "ERROR", notes=f"{type(exc).__name__}: {exc}"[:300])
                ]
            rows += case_rows
            print(f"\n### {name}: {CASES[name].title} ({time.perf_counter() - began:.1f} s)\n")
            print(render(case_rows), flush=True)
    print(f"\nTotal wall time: {time.perf_counter() - started:.1f} s.")
    return exit_status(rows)


if __name__ == "__main__":
    sys.exit(main())

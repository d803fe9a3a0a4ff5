"""What the by-hand benchmarks in ``bench/`` share: timing races, number formats, the table, the header.

Imported as ``report`` by every script in ``bench/``: a script's own directory is the first entry of
``sys.path``, so this works wherever they are started from. Importing this
module also makes ``crdtkv`` (and ``transports``) importable from a checkout
without ``pip install -e .``, so the scripts import it before crdtkv.

Timing rules, common to every script: each timing is the best (minimum) of
``repeats`` runs; the variants of one comparison run round-robin (A B C A B C
...) so a slow spell hits them alike; the cyclic garbage collector is collected
just before each timed region and (unless asked otherwise) disabled inside it,
for the measured operation and its baselines alike.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import importlib.metadata
import math
import os
import platform
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

#: the checkout this file is in
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

try:
    import crdtkv
except ModuleNotFoundError:  # a checkout without `pip install -e .`: use the tree this file is in
    sys.path.insert(0, ROOT)
    crdtkv = importlib.import_module("crdtkv")


def add_repeats_option(parser: argparse.ArgumentParser, default: int, quick: int) -> None:
    """The ``--repeats`` option the benchmarks share (the best of that many runs is kept)."""
    parser.add_argument(
        "--repeats",
        type=int,
        default=None,
        help=f"repeats per timing, best kept (default {default}, --quick {quick})",
    )


def chosen_repeats(args: argparse.Namespace, default: int, quick: int) -> int:
    """``--repeats`` if given, else the ``--quick`` or the default count."""
    return int(args.repeats) if args.repeats is not None else (quick if args.quick else default)


def progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- timing ----------------------------------------------------------------------------------


def _no_setup() -> None:
    return None


@dataclass
class Variant:
    """One contestant in a round-robin race: ``run(setup())`` is timed; setup and teardown are not.

    ``teardown(ctx, result)``, if given, runs after every timed run, a failed
    one too (``result`` is then None): it closes and removes what the run used
    and returns a small summary (a size, a count, statistics), so the result
    itself can be dropped. Every successful run's summary is kept in
    ``summaries``, the fastest run's in ``summary``.
    """

    name: str
    run: Callable[[Any], object]
    setup: Callable[[], Any] = _no_setup
    teardown: Callable[[Any, Any], Any] | None = None
    best: float = math.inf
    times: list[float] = field(default_factory=list)
    summary: Any = None
    summaries: list[Any] = field(default_factory=list)
    error: str | None = None

    def rate(self, ops: float) -> float:
        return ops / self.best if self.ok else math.nan

    @property
    def ok(self) -> bool:
        return self.error is None and math.isfinite(self.best)


def summarize(fn: Callable[[Any], object]) -> Callable[[Any, Any], object]:
    """A teardown that keeps ``fn(result)`` (a length, a count) as the summary."""
    return lambda ctx, result: fn(result)


def race(
    variants: Sequence[Variant], repeats: int, *, warm: bool = False, collector: bool = False
) -> dict[str, Variant]:
    """Time each variant ``repeats`` times, round-robin; keep each one's minimum.

    With ``warm``, each timed run directly follows an untimed run of the same
    variant on the same setup, so every variant is timed with its own data in
    the CPU caches (otherwise a baseline would profit from the baseline before
    it touching the same data); only for runs that can repeat on one state.
    The cyclic collector is disabled in the timed region unless ``collector``.
    """
    for _ in range(repeats):
        for v in variants:
            if v.error is not None:
                continue
            try:
                ctx = v.setup()
                if warm:
                    v.run(ctx)
            except Exception as exc:
                v.error = f"setup failed: {type(exc).__name__}: {exc}"
                continue
            result: Any = None
            elapsed = math.inf
            gc.collect()
            if not collector:
                gc.disable()
            try:
                start = time.perf_counter()
                result = v.run(ctx)
                elapsed = time.perf_counter() - start
            except Exception as exc:
                v.error = f"{type(exc).__name__}: {exc}"
            finally:
                gc.enable()
            summary = None
            if v.teardown is not None:
                try:
                    summary = v.teardown(ctx, result)
                except Exception as exc:
                    v.error = v.error or f"teardown failed: {type(exc).__name__}: {exc}"
            del ctx, result
            if v.error is not None:
                continue
            v.times.append(elapsed)
            v.summaries.append(summary)
            if elapsed < v.best:
                v.best = elapsed
                v.summary = summary
    return {v.name: v for v in variants}


def timed_once(fn: Callable[[], Any], *, collector: bool = False) -> tuple[float, Any]:
    """One timed call (one-off builds), under the same gc rule as :func:`race`."""
    gc.collect()
    if not collector:
        gc.disable()
    try:
        start = time.perf_counter()
        result = fn()
        return time.perf_counter() - start, result
    finally:
        gc.enable()


# -- formatting ------------------------------------------------------------------------------


def fmt_num(x: float) -> str:
    if math.isnan(x):
        return "n/a"
    if x >= 1e6:
        return f"{x / 1e6:.2f} M"
    if x >= 1e3:
        return f"{x / 1e3:.1f} k"
    return f"{x:.0f}" if x >= 100 else f"{x:.3g}"


def fmt_rate(x: float, unit: str) -> str:
    return f"{fmt_num(x)} {unit}"


def fmt_ratio(x: float) -> str:
    if math.isnan(x):
        return "n/a"
    if 0 < x < 1:
        return f"{x:.3f} (1/{1 / x:.1f})"
    return f"{x:.2f}x" if x < 100 else f"{x:,.0f}x"


def fmt_time(seconds: float) -> str:
    if math.isnan(seconds) or math.isinf(seconds):
        return "n/a"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f} us"
    if seconds < 1:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds:.2f} s"


def met(ok: bool | None) -> str:
    if ok is None:
        return "n/a"
    return "yes" if ok else "**NO**"


# -- the table ---------------------------------------------------------------------------------


@dataclass
class Row:
    num: str
    what: str
    measured: str
    baseline_name: str
    baseline: str
    ratio: str
    goal: str = "-"
    met: str = "n/a"
    notes: str = ""


def error_row(num: str, what: str, baseline_name: str, variants: Iterable[Variant]) -> Row | None:
    """An ERROR row naming every failed variant, or None if none failed."""
    errors = [f"{v.name}: {v.error}" for v in variants if v.error is not None]
    if not errors:
        return None
    text = "; ".join(errors).replace("\n", " ")
    return Row(num, what, "ERROR", baseline_name, "ERROR", "n/a", notes=text[:300])


def rate_row(
    num: str,
    what: str,
    measured: Variant,
    baseline: Variant,
    baseline_name: str,
    *,
    ops: float,
    unit: str,
    goal: float | None = None,
    goal_text: str | None = None,
    notes: str = "",
    with_time: bool = False,
) -> Row:
    """A row comparing two rates: ratio = crdtkv rate / baseline rate, met if the ratio >= ``goal``.

    ``goal_text`` defaults to ``>= {goal}x``; ``with_time`` shows the best time before each rate.
    """

    def cell(v: Variant) -> str:
        text = fmt_rate(v.rate(ops), unit)
        return f"{fmt_time(v.best)} ({text})" if with_time else text

    failed = error_row(num, what, baseline_name, (measured, baseline))
    if failed is not None:
        if measured.ok:
            failed.measured = cell(measured)
        if baseline.ok:
            failed.baseline = cell(baseline)
        return failed
    ratio = measured.rate(ops) / baseline.rate(ops)
    if goal_text is None:
        goal_text = "-" if goal is None else f">= {goal:g}x"
    return Row(
        num,
        what,
        cell(measured),
        baseline_name,
        cell(baseline),
        fmt_ratio(ratio),
        goal_text,
        met(None if goal is None else ratio >= goal),
        notes,
    )


def render(rows: Sequence[Row]) -> str:
    """The Markdown table; a ``|`` inside a cell becomes ``/``."""
    header = ("#", "Measurement", "crdtkv", "Baseline", "Baseline figure", "Ratio", "Goal", "Met", "Notes")
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for r in rows:
        cells = (r.num, r.what, r.measured, r.baseline_name, r.baseline, r.ratio, r.goal, r.met, r.notes)
        lines.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    return "\n".join(lines)


# -- what was measured, and how ----------------------------------------------------------------


def crdtkv_revision(*trees: str) -> str:
    """The git commit of the code being measured, and whether ``trees`` (default crdtkv/) have edits.

    Call it right after the imports: it records the code the run imported.
    """
    trees = trees or ("crdtkv",)
    root = os.path.dirname(os.path.dirname(os.path.abspath(crdtkv.__file__)))
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", *trees],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split("\n")
    except (OSError, subprocess.CalledProcessError):
        return "git revision unknown"
    edited = [line[3:] for line in dirty if line.strip()]
    clean = " and ".join(f"{tree}/" for tree in trees) + " clean"
    return f"git {head}" + (f" + uncommitted edits to {', '.join(edited)}" if edited else f", {clean}")


def version_of(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def header(script: str, revision: str) -> str:
    """The start of a script's first output line: crdtkv, the script, Python and the machine."""
    return (
        f"crdtkv {crdtkv.__version__} ({revision}) bench/{os.path.basename(script)}: "
        f"Python {platform.python_version()} ({platform.python_implementation()}), "
        f"machine {platform.machine()}, {os.cpu_count()} CPUs"
    )


def command_line(script: str, argv: Sequence[str] | None) -> str:
    """The command that ran ``script`` (``argv``: its arguments, default ``sys.argv[1:]``)."""
    python = os.path.relpath(sys.executable) if sys.executable.startswith(os.getcwd()) else "python"
    args = sys.argv[1:] if argv is None else list(argv)
    return shlex.join([python, os.path.relpath(script), *args])


#: what a cell says when a measurement failed or gave a wrong result
FAILURE_MARKS = ("ERROR", "UNEXPECTED")


def failed_rows(rows: Iterable[object]) -> list[str]:
    """The rows (any dataclass of cells: :class:`Row`, a script's own) that show a failure, as text."""
    failed = []
    for row in rows:
        cells = [str(value) for value in vars(row).values()]
        if any(mark in cell for cell in cells for mark in FAILURE_MARKS):
            failed.append(" | ".join(cells))
    return failed


def exit_status(rows: Iterable[object]) -> int:
    """The script's exit status: 1 if a row failed (each named on stderr), else 0.

    A failed measurement still gets its row in the table, so a by-hand run shows
    everything; the status makes ``--quick`` runs in CI fail on it.
    """
    failed = failed_rows(rows)
    for text in failed:
        progress(f"FAILED: {text[:500]}")
    return 1 if failed else 0


def print_results(
    rows: Sequence[Row], notes: Sequence[str] = (), *, elapsed: float, command: str | None = None
) -> None:
    """The table, the notes as a list, the command (if given) and the wall time, blank lines between."""
    print(render(rows))
    print()
    if notes:
        for note in notes:
            print(f"- {note}")
        print()
    if command is not None:
        print(f"Command: `{command}`")
        print()
    print(f"Total wall time: {elapsed:.1f} s (pid {os.getpid()}).")

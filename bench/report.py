"""What every bench case shares: the case table, timing races, number formats and the Markdown table.

Timing rules: each timing is the median of ``repeats`` runs; the
variants of one comparison run round-robin (A B C A B C ...), so a slow spell
on the shared machine hits them alike; the cyclic garbage collector runs just
before each timed region and is off inside it, for every variant alike. Every
ratio is against a baseline measured in the same run, and "met" is computed.
"""

from __future__ import annotations

import gc
import importlib
import math
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

ROOT = Path(__file__).resolve().parent.parent
try:  # a checkout without `pip install -e .`: use the tree this file is in
    importlib.import_module("crdtkv")
except ModuleNotFoundError:
    sys.path.insert(0, str(ROOT))

T = TypeVar("T")


@dataclass
class Options:
    """What the runner's command line asks of every case."""

    quick: bool = False
    repeats: int | None = None  # None: each case's own default
    directory: Path = field(default_factory=Path.cwd)  # where cases write files
    require_redis: bool = False  # a missing Redis fails the case instead of skipping its baseline

    def size(self, full: T, quick: T) -> T:
        return quick if self.quick else full

    def reps(self, full: int) -> int:
        return self.repeats if self.repeats is not None else (1 if self.quick else full)


@dataclass
class Row:
    num: str
    what: str
    measured: str
    baseline_name: str = "-"
    baseline: str = "-"
    ratio: str = "-"
    goal: str = "-"
    met: str = "n/a"
    notes: str = ""


@dataclass
class Case:
    name: str
    title: str
    run: Callable[[Options], list[Row]]


#: every case, in the order the runner runs them
CASES: dict[str, Case] = {}


def case(name: str, title: str) -> Callable[[Callable[[Options], list[Row]]], Callable[[Options], list[Row]]]:
    """Register ``fn(options) -> rows`` as the case ``name``."""

    def register(fn: Callable[[Options], list[Row]]) -> Callable[[Options], list[Row]]:
        CASES[name] = Case(name, title, fn)
        return fn

    return register


def progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


@dataclass
class Variant:
    """One contestant: ``run(setup())`` is timed; setup and ``teardown(ctx, result)`` are not.

    The teardown's return value (a count, a check) is kept in ``summaries``.
    With ``self_timed``, ``run`` returns the seconds it measured itself.
    """

    name: str
    run: Callable[[Any], Any]
    setup: Callable[[], Any] = lambda: None
    teardown: Callable[[Any, Any], Any] | None = None
    self_timed: bool = False
    #: seconds of each timed run
    times: list[float] = field(default_factory=list)
    summaries: list[Any] = field(default_factory=list)
    error: str | None = None

    @property
    def seconds(self) -> float:
        """The median of the timed runs (inf before any)."""
        return statistics.median(self.times) if self.times else math.inf

    @property
    def ok(self) -> bool:
        return self.error is None and bool(self.times)

    def rate(self, ops: float) -> float:
        return ops / self.seconds if self.ok else math.nan


def race(variants: Sequence[Variant], repeats: int, *, warm: bool = False) -> dict[str, Variant]:
    """Time each variant ``repeats`` times round-robin; each one's figure is its median.

    With ``warm``, each timed run follows an untimed one on the same setup, so
    each variant finds its own data in the CPU caches.
    """
    for _ in range(repeats):
        for v in variants:
            if v.error is not None:
                continue
            try:
                ctx = v.setup()
                if warm:
                    v.run(ctx)
                gc.collect()
                gc.disable()
                try:
                    start = time.perf_counter()
                    result = v.run(ctx)
                    elapsed = time.perf_counter() - start
                finally:
                    gc.enable()
                v.summaries.append(v.teardown(ctx, result) if v.teardown is not None else None)
            except Exception as exc:
                v.error = f"{type(exc).__name__}: {exc}"
                continue
            v.times.append(float(result) if v.self_timed else elapsed)
    return {v.name: v for v in variants}


def timed_once(fn: Callable[[], T]) -> tuple[float, T]:
    """One timed call (one-off builds), under the gc rule of :func:`race`."""
    gc.collect()
    gc.disable()
    try:
        start = time.perf_counter()
        result = fn()
        return time.perf_counter() - start, result
    finally:
        gc.enable()


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile."""
    return sorted(values)[max(0, math.ceil(q * len(values)) - 1)]


def fmt_num(x: float) -> str:
    if math.isnan(x):
        return "n/a"
    if x >= 1e3:
        return f"{x / 1e6:.2f} M" if x >= 1e6 else f"{x / 1e3:.1f} k"
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
    if not math.isfinite(seconds):
        return "n/a"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.1f} us"
    return f"{seconds * 1e3:.2f} ms" if seconds < 1 else f"{seconds:.2f} s"


def fmt_bytes(n: float) -> str:
    return f"{n / (1 << 20):.2f} MiB" if n >= 1 << 20 else f"{n:,.1f} B" if n < 100 else f"{n:,.0f} B"


def met(ok: bool | None) -> str:
    return "n/a" if ok is None else "yes" if ok else "**NO**"


def failures(variants: Iterable[Variant]) -> str:
    return "; ".join(f"{v.name}: {v.error}" for v in variants if v.error is not None)[:300]


def rate_row(
    num: str,
    what: str,
    measured: Variant,
    baseline: Variant,
    baseline_name: str,
    *,
    ops: float,
    unit: str,
    baseline_ops: float | None = None,
    goal: float | None = None,
    goal_text: str | None = None,
    notes: str = "",
) -> Row:
    """Two rates compared: ratio = measured rate / baseline rate, met when it is >= ``goal``."""
    if failures((measured, baseline)):
        return Row(num, what, "ERROR", baseline_name, "ERROR", "n/a", notes=failures((measured, baseline)))
    ratio = measured.rate(ops) / baseline.rate(baseline_ops or ops)
    goal_text = goal_text or ("-" if goal is None else f">= {goal:g}x")
    mine, theirs = fmt_rate(measured.rate(ops), unit), fmt_rate(baseline.rate(baseline_ops or ops), unit)
    ok = met(None if goal is None else ratio >= goal)
    return Row(num, what, mine, baseline_name, theirs, fmt_ratio(ratio), goal_text, ok, notes)


def render(rows: Sequence[Row]) -> str:
    """The Markdown table; a ``|`` inside a cell becomes ``/``."""
    head = ("#", "Measurement", "crdtkv", "Baseline", "Baseline figure", "Ratio", "Goal", "Met", "Notes")
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for r in rows:
        cells = (r.num, r.what, r.measured, r.baseline_name, r.baseline, r.ratio, r.goal, r.met, r.notes)
        lines.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    return "\n".join(lines)


#: what a cell says when a measurement failed or gave a wrong result
FAILURE_MARKS = ("ERROR", "UNEXPECTED")


def exit_status(rows: Iterable[Row]) -> int:
    """1 if a row shows a failure (each named on stderr), else 0: a failed measurement fails CI."""
    failed = [
        r for r in rows if any(mark in str(cell) for cell in vars(r).values() for mark in FAILURE_MARKS)
    ]
    for r in failed:
        progress(f"FAILED: {r.num} {r.what}: {r.notes[:300]}")
    return 1 if failed else 0

#!/usr/bin/env python3
"""By-hand benchmark of crdtkv's embedded rate limiter against a Redis-backed fixed-window limiter.

Run it by hand and paste the Markdown table it prints into the README. CI runs
it with ``--quick`` (tests/test_bench.py), which checks that it still runs and
that every measurement succeeds (the exit status is 1 if one failed), not its
figures. The machine is assumed shared and noisy, so every figure is set
against a baseline measured in the same process, in the same run, in the same
loop shape:

* ``store.rate_limit(key, limit, window)`` on an in-memory :class:`KvStore`,
  for one hot key under its limit, one hot key over its limit (denials, which
  count nothing) and many distinct keys taken round-robin;
* the same decisions from a fixed-window limiter on a local ``redis-server``
  (started by this script on a free loopback port, with no persistence, and
  always stopped at the end), done the usual way with redis-py, one round trip
  per decision: ``INCR`` + ``EXPIRE`` in one pipeline with
  ``transaction=False`` (no MULTI/EXEC), and one Lua script (``register_script``,
  run with EVALSHA) doing ``INCR`` and, on a new key, ``EXPIRE`` atomically;
  both name the counter per key and window like crdtkv does;
* a plain-dict fixed-window limiter in Python, the floor for one in-process
  decision;
* each timing is the best (minimum) of ``repeats`` runs, the variants of one
  workload run round-robin (A B C A B C ...), after one untimed warm-up run
  each; the cyclic gc is disabled in every timed region, for all variants alike;
* "goal met" is computed from the measured numbers, never assumed.

If ``redis-server`` is not on PATH or the ``redis`` package cannot be imported,
the Redis rows say so and are skipped; the crdtkv rows still run
(``--require-redis`` makes that an error instead, as in CI). The exit status is
1 if a measurement failed or a limiter admitted an unexpected count.

Usage::

    .venv/bin/python bench/rate_limit.py              # best of 5
    .venv/bin/python bench/rate_limit.py --quick      # a smoke run in seconds (CI): few decisions, one run
    .venv/bin/python bench/rate_limit.py --repeats 7 --redis-ops 20000
"""

from __future__ import annotations

import argparse
import importlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from report import (  # before crdtkv: it makes crdtkv importable from a checkout without `pip install -e .`
    Row,
    Variant,
    add_repeats_option,
    chosen_repeats,
    command_line,
    crdtkv_revision,
    error_row,
    exit_status,
    fmt_num,
    fmt_ratio,
    header,
    met,
    print_results,
    progress,
    race,
    summarize,
    version_of,
)

from crdtkv import Decision, KvStore

SCRIPT = os.path.abspath(__file__)

DEFAULT_REPEATS = 5
QUICK_REPEATS = 1
#: decisions per timed run of an in-process limiter (crdtkv, plain dict)
DEFAULT_LOCAL_OPS = 100_000
QUICK_LOCAL_OPS = 5_000
#: decisions per timed run of a Redis-backed limiter (one round trip each)
DEFAULT_REDIS_OPS = 10_000
QUICK_REDIS_OPS = 500
#: distinct keys of the many-keys workload
DEFAULT_KEYS = 10_000
QUICK_KEYS = 1_000

#: window of every limiter, in seconds: long, so a run rarely crosses a window boundary
WINDOW = 3600
#: the limit of the under-limit workloads: never reached
NO_LIMIT = 10**12
#: the limit of the over-limit workload, reached before each timed run
OVER_LIMIT = 100
GOAL = 10.0

#: the classic atomic fixed-window counter: INCR, and EXPIRE when the key is new
LUA_INCR_EXPIRE = """
local count = redis.call('INCR', KEYS[1])
if count == 1 then
    redis.call('EXPIRE', KEYS[1], ARGV[1])
end
return count
"""

Limiter = Callable[[str, int, int], Decision]


# -- the limiters (each called as ``rate_limit(key, limit, window)`` and returning a Decision) ---------


def decision(allowed: bool, count: int, limit: int, start_ms: int, window_ms: int, now_ms: int) -> Decision:
    """The :class:`Decision` crdtkv's limiter would return, built by field name for every limiter alike."""
    return Decision(
        allowed=allowed,
        count=count,
        remaining=max(0, limit - count),
        reset_after=(start_ms + window_ms - now_ms) / 1000,
        limit=limit,
        window_start=start_ms / 1000,
    )


class DictLimiter:
    """The in-process floor: crdtkv's fixed-window arithmetic and key naming on a plain dict, no expiry."""

    def __init__(self) -> None:
        self._counts: dict[str, int] = {}

    def rate_limit(self, key: str, limit: int, window: int) -> Decision:
        now_ms = time.time_ns() // 1_000_000
        window_ms = window * 1000
        start = now_ms - now_ms % window_ms
        name = f"\x00rl\x00{key}\x00{start}"
        seen = self._counts.get(name, 0)
        allowed = seen + 1 <= limit
        if allowed:
            seen += 1
            self._counts[name] = seen
        return decision(allowed, seen, limit, start, window_ms, now_ms)


def pipeline_limiter(client: Any, prefix: str) -> Limiter:
    """INCR + EXPIRE in one pipeline (``transaction=False``: no MULTI/EXEC), one round trip per decision.

    As usual for this pattern, a refused request is counted too (the INCR comes first).
    """

    def rate_limit(key: str, limit: int, window: int) -> Decision:
        now_ms = time.time_ns() // 1_000_000
        window_ms = window * 1000
        start = now_ms - now_ms % window_ms
        name = f"{prefix}{key}:{start}"
        pipe = client.pipeline(transaction=False)
        pipe.incr(name)
        pipe.expire(name, window)
        count = pipe.execute()[0]
        return decision(count <= limit, count, limit, start, window_ms, now_ms)

    return rate_limit


def lua_limiter(client: Any, prefix: str) -> Limiter:
    """One EVALSHA of :data:`LUA_INCR_EXPIRE` per decision (redis-py's ``register_script``)."""
    script = client.register_script(LUA_INCR_EXPIRE)

    def rate_limit(key: str, limit: int, window: int) -> Decision:
        now_ms = time.time_ns() // 1_000_000
        window_ms = window * 1000
        start = now_ms - now_ms % window_ms
        count = script(keys=[f"{prefix}{key}:{start}"], args=[window])
        return decision(count <= limit, count, limit, start, window_ms, now_ms)

    return rate_limit


def loop_decide(fn: Limiter, keys: Sequence[str], limit: int, window: int) -> int:
    """``fn(key, limit, window)`` for each key, every limiter alike; returns how many were admitted."""
    admitted = 0
    for k in keys:
        if fn(k, limit, window).allowed:
            admitted += 1
    return admitted


# -- the local redis-server ---------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """A ``redis-server`` on 127.0.0.1, free port, no persistence, in a temporary directory."""

    def __init__(self, exe: str, redis_mod: Any) -> None:
        self.exe = exe
        self.redis = redis_mod
        self.dir = tempfile.mkdtemp(prefix="crdtkv-bench-redis-")
        self.log_path = os.path.join(self.dir, "redis.log")
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.client: Any = None
        self.version = "unknown"

    def start(self, attempts: int = 3, timeout: float = 10.0) -> None:
        """Start it and wait until it answers PING; retries on another port if the one picked was taken."""
        for _ in range(attempts):
            self.port = free_port()
            with open(self.log_path, "wb") as log:
                self.proc = subprocess.Popen(
                    [
                        *(self.exe, "--port", str(self.port), "--bind", "127.0.0.1"),
                        *("--save", "", "--appendonly", "no", "--dir", self.dir, "--daemonize", "no"),
                    ],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            self.client = self.redis.Redis(host="127.0.0.1", port=self.port)
            deadline = time.monotonic() + timeout
            while self.proc.poll() is None and time.monotonic() < deadline:
                try:
                    if self.client.ping():
                        self.version = str(self.client.info("server").get("redis_version", "unknown"))
                        return
                except self.redis.ConnectionError:
                    time.sleep(0.05)
            self.stop_process()
        raise RuntimeError(f"redis-server did not answer PING; its log ends: {self.log_tail()!r}")

    def log_tail(self) -> str:
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as f:
                return " ".join(f.read()[-300:].split())
        except OSError:
            return ""

    def stop_process(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def stop(self) -> None:
        """Stop the server (if running) and remove its directory."""
        try:
            self.stop_process()
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


def find_redis() -> tuple[str, Any, str]:
    """``(redis-server path, redis module, "")``, or ``("", None, why not)``."""
    try:
        redis_mod = importlib.import_module("redis")
    except Exception as exc:
        return "", None, f"the `redis` package is not importable ({type(exc).__name__}: {exc})"
    exe = shutil.which("redis-server")
    if exe is None:
        return "", None, "`redis-server` is not on PATH"
    return exe, redis_mod, ""


# -- the benchmark ------------------------------------------------------------------------------------


@dataclass
class Workload:
    num: str
    what: str
    limit: int
    #: keys of one timed run of an in-process limiter / a Redis-backed one
    local_keys: list[str]
    redis_keys: list[str]
    #: requests on each key before every run (untimed), to push it over its limit
    prefill: int = 0

    def spread(self, keys: list[str]) -> str:
        """For many-key workloads: how many distinct keys one run of ``keys`` touches."""
        distinct = len(set(keys))
        return f" over {distinct:,} distinct keys" if distinct > 1 else ""

    def expected(self, n: int) -> int:
        """Admissions expected in a run of ``n`` decisions."""
        return 0 if self.prefill else n


@dataclass
class Config:
    repeats: int
    local_ops: int
    redis_ops: int
    keys: int


def workloads(cfg: Config) -> list[Workload]:
    many = [f"user:{i:05d}" for i in range(cfg.keys)]
    return [
        Workload(
            "a", "one hot key, under its limit", NO_LIMIT, ["hot"] * cfg.local_ops, ["hot"] * cfg.redis_ops
        ),
        Workload(
            "b",
            f"one hot key, over its limit ({OVER_LIMIT}): denials",
            OVER_LIMIT,
            ["hot-over"] * cfg.local_ops,
            ["hot-over"] * cfg.redis_ops,
            prefill=OVER_LIMIT,
        ),
        Workload(
            "c",
            f"{cfg.keys:,} distinct keys, round-robin, under their limit",
            NO_LIMIT,
            [many[i % cfg.keys] for i in range(cfg.local_ops)],
            [many[i % cfg.keys] for i in range(cfg.redis_ops)],
        ),
    ]


def variant(name: str, fn: Limiter, keys: list[str], w: Workload) -> Variant:
    limit = w.limit

    def setup() -> None:
        for k in dict.fromkeys(keys):
            for _ in range(w.prefill):
                fn(k, limit, WINDOW)

    return Variant(name, lambda _: loop_decide(fn, keys, limit, WINDOW), setup, teardown=summarize(int))


def run_workload(
    w: Workload, repeats: int, limiters: dict[str, Limiter], redis_names: set[str]
) -> dict[str, Variant]:
    variants = [
        variant(name, fn, w.redis_keys if name in redis_names else w.local_keys, w)
        for name, fn in limiters.items()
    ]
    progress(f"1{w.num}. {w.what}: warm-up, then best of {repeats} ({', '.join(limiters)})")
    for v in variants:  # one untimed run each: every key exists in the current window before timing
        try:
            v.run(v.setup())
        except Exception as exc:
            v.error = f"warm-up failed: {type(exc).__name__}: {exc}"
    return race(variants, repeats)


def per_decision(v: Variant, n: int) -> str:
    return f"{fmt_num(v.rate(n))} decisions/s ({v.best / n * 1e6:.2f} us each)"


def admissions(v: Variant, n: int, expected: int) -> str:
    counts = sorted(set(v.summaries))
    if counts == [expected]:
        return f"{v.name}: {expected:,} of {n:,} admitted in every run"
    return f"{v.name}: UNEXPECTED admissions per run {counts} (expected {expected:,} of {n:,})"


def compare_row(
    num: str,
    w: Workload,
    measured: Variant,
    n_measured: int,
    baseline: Variant,
    n_baseline: int,
    baseline_name: str,
    goal: float | None,
    notes: str,
) -> Row:
    """Ratio = crdtkv decisions/s / baseline decisions/s (each over its own run length)."""
    failed = error_row(num, w.what, baseline_name, (measured, baseline))
    if failed is not None:
        if measured.ok:
            failed.measured = per_decision(measured, n_measured)
        if baseline.ok:
            failed.baseline = per_decision(baseline, n_baseline)
        return failed
    ratio = measured.rate(n_measured) / baseline.rate(n_baseline)
    return Row(
        num,
        w.what,
        per_decision(measured, n_measured),
        baseline_name,
        per_decision(baseline, n_baseline),
        fmt_ratio(ratio),
        "-" if goal is None else f">= {goal:g}x",
        met(None if goal is None else ratio >= goal),
        notes,
    )


def skipped_row(num: str, w: Workload, crdt: Variant, n: int, baseline_name: str, why: str) -> Row:
    measured = per_decision(crdt, n) if crdt.ok else "ERROR"
    return Row(num, w.what, measured, baseline_name, "skipped", "n/a", f">= {GOAL:g}x", "n/a", why)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"{QUICK_LOCAL_OPS:,} / {QUICK_REDIS_OPS:,} decisions per run, {QUICK_REPEATS} repeats",
    )
    add_repeats_option(parser, DEFAULT_REPEATS, QUICK_REPEATS)
    parser.add_argument(
        "--local-ops",
        type=int,
        default=None,
        help=f"decisions per run of crdtkv and the dict limiter (default {DEFAULT_LOCAL_OPS:,})",
    )
    parser.add_argument(
        "--redis-ops",
        type=int,
        default=None,
        help=f"decisions per run of a Redis-backed limiter (default {DEFAULT_REDIS_OPS:,})",
    )
    parser.add_argument(
        "--keys", type=int, default=None, help=f"distinct keys in row c (default {DEFAULT_KEYS:,})"
    )
    parser.add_argument(
        "--require-redis",
        action="store_true",
        help="exit 2 instead of skipping the Redis rows when redis-server or the redis package is "
        "missing or the server does not start (CI installs both)",
    )
    args = parser.parse_args(argv)
    quick = args.quick
    cfg = Config(
        repeats=chosen_repeats(args, DEFAULT_REPEATS, QUICK_REPEATS),
        local_ops=args.local_ops or (QUICK_LOCAL_OPS if quick else DEFAULT_LOCAL_OPS),
        redis_ops=args.redis_ops or (QUICK_REDIS_OPS if quick else DEFAULT_REDIS_OPS),
        keys=args.keys or (QUICK_KEYS if quick else DEFAULT_KEYS),
    )
    if min(cfg.repeats, cfg.local_ops, cfg.redis_ops, cfg.keys) < 1:
        parser.error("--repeats, --local-ops, --redis-ops and --keys must be at least 1")

    revision = crdtkv_revision()  # the code was imported just now: record which
    command = command_line(SCRIPT, argv)
    started = time.perf_counter()

    exe, redis_mod, skip = find_redis()
    if skip and args.require_redis:
        progress(f"FAILED: --require-redis, and {skip}")
        return 2
    if skip:
        progress(f"SKIPPING the Redis rows: {skip}; the crdtkv rows still run")
    store = KvStore.open("bench-rate-limit")
    limiters: dict[str, Limiter] = {"dict": DictLimiter().rate_limit, "crdtkv": store.rate_limit}
    server: RedisServer | None = None
    results: list[tuple[Workload, dict[str, Variant]]] = []
    try:
        if not skip:
            server = RedisServer(exe, redis_mod)
            try:
                server.start()
            except Exception as exc:
                skip = f"could not start redis-server: {type(exc).__name__}: {exc}"
                if args.require_redis:
                    progress(f"FAILED: --require-redis, and {skip}")
                    return 2
                progress(f"SKIPPING the Redis rows: {skip}")
            else:
                progress(
                    f"redis-server {server.version} (pid {server.proc and server.proc.pid}) answers PING"
                )
                limiters["pipeline"] = pipeline_limiter(server.client, "rl:pipe:")
                limiters["lua"] = lua_limiter(server.client, "rl:lua:")
        redis_names = {"pipeline", "lua"}
        window_at_start = time.time_ns() // 1_000_000_000 // WINDOW
        for w in workloads(cfg):
            results.append((w, run_workload(w, cfg.repeats, limiters, redis_names)))
        crossed = time.time_ns() // 1_000_000_000 // WINDOW != window_at_start
    finally:
        if server is not None:
            server.stop()
            progress("redis-server stopped")
    elapsed = time.perf_counter() - started

    rows: list[Row] = []
    n_local, n_redis = cfg.local_ops, cfg.redis_ops
    for w, res in results:
        crdt, floor = res["crdtkv"], res["dict"]
        local_checks = "; ".join(
            admissions(v, n_local, w.expected(n_local)) for v in (crdt, floor) if v.ok and v.summaries
        )
        rows.append(
            compare_row(
                f"1{w.num}",
                w,
                crdt,
                n_local,
                floor,
                n_local,
                "plain-dict fixed-window limiter (in process)",
                None,
                f"{n_local:,} decisions per run{w.spread(w.local_keys)}; {local_checks}",
            )
        )
        for num, name, baseline_name in (
            ("2", "pipeline", "redis-py: INCR + EXPIRE, one pipeline (transaction=False)"),
            ("3", "lua", "redis-py: Lua INCR + EXPIRE, one EVALSHA"),
        ):
            if name not in res:
                rows.append(skipped_row(f"{num}{w.num}", w, crdt, n_local, baseline_name, f"skipped: {skip}"))
                continue
            base = res[name]
            check = admissions(base, n_redis, w.expected(n_redis)) if base.ok and base.summaries else ""
            rows.append(
                compare_row(
                    f"{num}{w.num}",
                    w,
                    crdt,
                    n_local,
                    base,
                    n_redis,
                    baseline_name,
                    GOAL,
                    f"crdtkv {n_local:,} / Redis {n_redis:,} decisions per run{w.spread(w.redis_keys)}; "
                    f"{check}",
                )
            )
    rows.sort(key=lambda r: r.num)

    redis_text = (
        f"redis-server {server.version} on 127.0.0.1 (no persistence), redis-py {version_of('redis')}, "
        f"hiredis {version_of('hiredis')}"
        if server is not None and not skip
        else f"Redis skipped ({skip})"
    )
    print(f"{header(SCRIPT, revision)}; {redis_text}")
    print()
    print(
        f"Decisions per second of `store.rate_limit(key, limit, window)` on an in-memory KvStore, "
        f"window {WINDOW} s, cost 1. Each timing is the best of {cfg.repeats} runs after one untimed "
        f"warm-up run; per workload the limiters run round-robin in one process, the same loop calling "
        f"each as `rate_limit(key, limit, window)`, each returning a `Decision`. The Redis-backed "
        f"limiters talk to a redis-server this script started, over TCP loopback, one round trip "
        f"per decision, counter key `rl:<variant>:<key>:<window start ms>` (crdtkv: "
        f"`\\0rl\\0<key>\\0<window start ms>`). Rows 1: crdtkv against the in-process floor. "
        f"Rows 2-3: ratio = crdtkv decisions/s / Redis decisions/s (higher is better); goal >= "
        f"{GOAL:g}x. The cyclic gc is disabled in every timed region, for all limiters alike."
    )
    print()
    notes = [
        "Over-admission across PoPs (not measured here; tested in tests/test_rate_limit.py): "
        "per window at most (PoPs - 1) x B extra admissions, B = most requests reaching one PoP "
        "within one propagation delay. On one replica the limit is exact.",
        f"Row b: before every run each limiter gets {OVER_LIMIT} requests on the key (untimed), so every "
        "timed decision is a denial. crdtkv and the dict limiter do not count a denial; the two Redis "
        "limiters, done the usual way, INCR first and so count denials too.",
        "The Lua script sets the TTL only when INCR creates the key; the pipeline sends EXPIRE "
        "with every INCR. Neither uses MULTI/EXEC.",
        "The dict limiter is crdtkv's window arithmetic on a plain dict, with no expiry and "
        "no replication: the floor for one decision in Python, not a usable limiter.",
    ]
    if crossed:
        notes.append(
            f"A {WINDOW} s window boundary passed during the run: the runs after it started new "
            "windows (see the admission counts in the Notes column)."
        )
    print_results(rows, notes, elapsed=elapsed, command=command)
    return exit_status(rows)


if __name__ == "__main__":
    sys.exit(main())

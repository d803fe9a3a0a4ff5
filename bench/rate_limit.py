"""The embedded rate limiter against a fixed-window limiter on a local Redis, same run.

``store.rate_limit(key, limit, window)`` on an in-memory store, against redis-py
on a ``redis-server`` this case starts on a free loopback port (no persistence,
stopped at the end): INCR + EXPIRE in one pipeline, and one Lua script, one
round trip per decision. Without ``redis-server`` (or the ``redis`` package)
the Redis figures say "skipped" with the reason, unless the runner was given
``--require-redis`` (CI), which makes that a failure. Public API only.
"""

from __future__ import annotations

import importlib
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from report import Options, Row, Variant, case, failures, fmt_rate, progress, race, rate_row

from crdtkv import KvStore

WINDOW = 3600
NO_LIMIT = 10**12
OVER_LIMIT = 100
LUA = """
local count = redis.call('INCR', KEYS[1])
if count == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
return count
"""
Limiter = Callable[[str, int], bool]


@contextmanager
def redis_client(require: bool) -> Iterator[tuple[Any, str]]:
    """A client of a fresh redis-server, and "" (or None and why not)."""
    try:
        redis: Any = importlib.import_module("redis")
    except ImportError as exc:
        why = f"the `redis` package is not importable ({exc})"
    else:
        why = "" if shutil.which("redis-server") else "`redis-server` is not on PATH"
    if why:
        if require:
            raise RuntimeError(f"ERROR: --require-redis, but {why}")
        yield None, why
        return
    with socket.socket() as s, tempfile.TemporaryDirectory(prefix="crdtkv-bench-redis-") as tmp:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        args = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", tmp]
        process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(host="127.0.0.1", port=port)
        try:
            for _ in range(200):  # a hang guard: it answers within a second on an idle machine
                try:
                    client.ping()
                    break
                except redis.ConnectionError:
                    time.sleep(0.05)
            version = client.info("server")["redis_version"]
            progress(f"redis-server {version} on port {port}, redis-py {redis.__version__}")
            yield client, ""
        finally:
            client.close()
            process.terminate()
            process.wait(timeout=30)


def window_name(limiter: str, key: str) -> str:
    """The counter of ``key`` in the current window (named per key and window, as crdtkv does)."""
    now = int(time.time())
    return f"rl:{limiter}:{key}:{now - now % WINDOW}"


def pipeline_limiter(client: Any) -> Limiter:
    """INCR + EXPIRE in one pipeline (no MULTI/EXEC): one round trip; a refusal is counted too."""

    def allowed(key: str, limit: int) -> bool:
        pipe = client.pipeline(transaction=False)
        name = window_name("pipe", key)
        pipe.incr(name)
        pipe.expire(name, WINDOW)
        return bool(pipe.execute()[0] <= limit)

    return allowed


def lua_limiter(client: Any) -> Limiter:
    """One EVALSHA of a script doing INCR and, on a new key, EXPIRE."""
    script = client.register_script(LUA)
    return lambda key, limit: bool(script(keys=[window_name("lua", key)], args=[WINDOW]) <= limit)


def decide(fn: Limiter, keys: Sequence[str], limit: int) -> int:
    """``fn(key, limit)`` for each key, every limiter alike; how many were admitted."""
    admitted = 0
    for k in keys:
        if fn(k, limit):
            admitted += 1
    return admitted


def deciding(fn: Limiter, keys: Sequence[str], limit: int) -> Callable[[object], int]:
    return lambda _: decide(fn, keys, limit)


@case("rate-limit", "rate_limit decisions against a Redis fixed-window limiter (redis-py)")
def rate_limit(o: Options) -> list[Row]:
    local_n, redis_n, keys_n = o.size(100_000, 5_000), o.size(10_000, 500), o.size(10_000, 1_000)
    reps = o.reps(5)
    store = KvStore.open("bench-rate-limit")
    rows = []
    with redis_client(o.require_redis) as (client, why):
        limiters: dict[str, Limiter] = {"crdtkv": lambda k, limit: store.rate_limit(k, limit, WINDOW).allowed}
        if client is not None:
            limiters |= {"pipeline": pipeline_limiter(client), "lua": lua_limiter(client)}
        many = [f"user:{i:05d}" for i in range(keys_n)]
        for num, what, limit, pick in (
            ("a", "one hot key, under its limit", NO_LIMIT, lambda i: "hot"),
            ("b", f"one hot key, over its limit ({OVER_LIMIT}): denials", OVER_LIMIT, lambda i: "over"),
            ("c", f"{keys_n:,} keys round-robin", NO_LIMIT, lambda i: many[i % keys_n]),
        ):
            progress(f"{what}: {', '.join(limiters)}, median of {reps}")
            variants = []
            for name, fn in limiters.items():
                keys = [pick(i) for i in range(local_n if name == "crdtkv" else redis_n)]
                decide(fn, keys, limit)  # warm-up: every key exists (and "over" is over) before timing
                expected = 0 if limit == OVER_LIMIT else len(keys)
                variants.append(Variant(name, deciding(fn, keys, limit), teardown=lambda _, r: r))
                variants[-1].summaries.append(expected)  # so every run must admit the expected count
            result = race(variants, reps)
            for v in variants:
                if v.ok and len(set(v.summaries)) != 1:
                    v.error = f"UNEXPECTED admissions per run {sorted(set(v.summaries))}"
            for sub, name, label in (
                ("1", "pipeline", "Redis INCR+EXPIRE (pipeline)"),
                ("2", "lua", "redis-py: Lua INCR + EXPIRE"),
            ):
                if name not in result:
                    mine = result["crdtkv"]
                    rate = fmt_rate(mine.rate(local_n), "decisions/s") if mine.ok else "ERROR"
                    rows.append(
                        Row(f"{sub}{num}", what, rate, label, f"Redis skipped: {why}", notes=failures([mine]))
                    )
                    continue
                rows.append(rate_row(f"{sub}{num}", what, result["crdtkv"], result[name], label, ops=local_n,
                                     baseline_ops=redis_n, unit="decisions/s", goal=10.0))  # fmt: skip
    return sorted(rows, key=lambda r: r.num)

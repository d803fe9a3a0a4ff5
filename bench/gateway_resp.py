"""The RESP face under ``redis-benchmark``, against a real ``redis-server`` on the same machine.

:func:`measure` starts a real ``crdtkv serve --resp`` process and a real
``redis-server`` (on a free loopback port: it cannot bind port 0; no
persistence: ``--save "" --appendonly no``), runs ``redis-benchmark -t
get,set,incr -c 50`` against each, without and with ``-P 16`` (pipelining),
round-robin so a slow spell on the shared machine hits both alike, keeps each
one's best, and returns the requests per second and the ratios (goal: the
face at least 0.25x redis-server). ``quick`` is a smoke run of a few seconds.
:func:`rows` turns that into the runner's table rows (``bench/gateway.py``).
"""

from __future__ import annotations

import csv
import io
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from harness import face_child
from report import ROOT, Options, Row, progress

TESTS = ("set", "get", "incr")
CLIENTS = 50
PIPELINES = (1, 16)
GOAL = 0.25


@dataclass
class RespBench:
    """Requests per second by (test, pipeline depth), for the face and for redis-server."""

    requests: int
    crdtkv: dict[tuple[str, int], float] = field(default_factory=dict)
    redis: dict[tuple[str, int], float] = field(default_factory=dict)
    commands: list[str] = field(default_factory=list)
    redis_version: str = ""

    def ratio(self, test: str, pipeline: int) -> float:
        """The face's rate over redis-server's (nan if either is missing)."""
        ours, theirs = self.crdtkv.get((test, pipeline)), self.redis.get((test, pipeline))
        return ours / theirs if ours and theirs else float("nan")

    def as_dict(self) -> dict[str, object]:
        return {
            "requests": self.requests,
            "redis_version": self.redis_version,
            "commands": self.commands,
            "results": [
                {
                    "test": test,
                    "pipeline": pipeline,
                    "crdtkv_rps": self.crdtkv.get((test, pipeline)),
                    "redis_rps": self.redis.get((test, pipeline)),
                    "ratio": self.ratio(test, pipeline),
                    "goal": GOAL,
                }
                for test in TESTS
                for pipeline in PIPELINES
            ],
        }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until_answers(port: int) -> None:
    """Until something on ``port`` answers PING (a hang guard of 30 s)."""
    deadline = time.monotonic() + 30
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                s.sendall(b"*1\r\n$4\r\nPING\r\n")
                if s.recv(64).startswith(b"+PONG"):
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"nothing answers PING on port {port}")
        time.sleep(0.05)


@contextmanager
def crdtkv_serve() -> Iterator[int]:
    """A real ``crdtkv serve --resp`` child; yields the RESP port it printed."""
    args = [sys.executable, "-m", "crdtkv.cli", "serve", "--id", "bench-resp"]
    args += ["--listen", "ws://127.0.0.1:0", "--resp", "127.0.0.1:0"]
    with face_child(args, "resp on ", cwd=ROOT) as address:
        port = int(address.rsplit(":", 1)[1])
        wait_until_answers(port)
        yield port


@contextmanager
def redis_server() -> Iterator[int]:
    """A real ``redis-server`` on a free loopback port, without persistence."""
    with tempfile.TemporaryDirectory(prefix="crdtkv-bench-redis-") as tmp:
        port = free_port()
        args = [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ]
        process = subprocess.Popen(
            [*args, "--dir", tmp], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            wait_until_answers(port)
            yield port
        finally:
            process.terminate()
            process.wait(timeout=30)


def benchmark_command(port: int, requests: int, pipeline: int) -> list[str]:
    command = ["redis-benchmark", "-h", "127.0.0.1", "-p", str(port), "-t", ",".join(TESTS)]
    command += ["-c", str(CLIENTS), "-n", str(requests), "--csv"]
    return [*command, "-P", str(pipeline)] if pipeline > 1 else command


def run_benchmark(port: int, requests: int, pipeline: int) -> dict[str, float]:
    """Requests per second of each test, as ``redis-benchmark --csv`` reports them."""
    done = subprocess.run(
        benchmark_command(port, requests, pipeline), capture_output=True, text=True, timeout=600, check=True
    )
    rates: dict[str, float] = {}
    for record in csv.reader(io.StringIO(done.stdout)):
        if len(record) >= 2 and record[0].lower() in TESTS:
            rates[record[0].lower()] = float(record[1])
    missing = set(TESTS) - set(rates)
    if missing:
        raise RuntimeError(f"redis-benchmark reported no {sorted(missing)}: {done.stdout!r} {done.stderr!r}")
    return rates


def version() -> str:
    done = subprocess.run(["redis-server", "--version"], capture_output=True, text=True, check=False)
    return done.stdout.split(" v=")[1].split()[0] if " v=" in done.stdout else "unknown"


def measure(quick: bool = False, *, requests: int | None = None, repeats: int | None = None) -> RespBench:
    """Run the comparison; raises RuntimeError when redis-server or redis-benchmark is missing."""
    for tool in ("redis-server", "redis-benchmark"):
        if shutil.which(tool) is None:
            raise RuntimeError(f"`{tool}` is not on PATH (Debian: redis-server, redis-tools)")
    n = requests or (2_000 if quick else 100_000)
    rounds = repeats or (1 if quick else 3)
    result = RespBench(requests=n, redis_version=version())
    with crdtkv_serve() as ours, redis_server() as theirs:
        for pipeline in PIPELINES:
            result.commands.append(" ".join(benchmark_command(0, n, pipeline)).replace("-p 0", "-p PORT"))
        for round_number in range(rounds):
            for pipeline in PIPELINES:
                for name, port, into in (("crdtkv", ours, result.crdtkv), ("redis", theirs, result.redis)):
                    progress(
                        f"redis-benchmark -P {pipeline} against {name} (round {round_number + 1}/{rounds})"
                    )
                    for test, rate in run_benchmark(port, n, pipeline).items():
                        into[(test, pipeline)] = max(into.get((test, pipeline), 0.0), rate)
    return result


def rows(options: Options) -> list[Row]:
    """The comparison as rows of the runner's table."""
    result = measure(options.quick, repeats=options.repeats)
    found: list[Row] = []
    for number, (test, pipeline) in enumerate(((t, p) for p in PIPELINES for t in TESTS), start=1):
        ratio = result.ratio(test, pipeline)
        found.append(
            Row(
                num=str(number),
                what=f"RESP {test.upper()}, -c {CLIENTS}" + (f" -P {pipeline}" if pipeline > 1 else ""),
                measured=f"{result.crdtkv[(test, pipeline)]:,.0f} req/s",
                baseline_name=f"redis-server {result.redis_version}",
                baseline=f"{result.redis[(test, pipeline)]:,.0f} req/s",
                ratio=f"{ratio:.2f}x",
                goal=f">= {GOAL}x",
                met="yes" if ratio >= GOAL else "no",
                notes=f"redis-benchmark -n {result.requests}, best of rounds",
            )
        )
    return found


if __name__ == "__main__":
    import json

    print(json.dumps(measure(quick="--quick" in sys.argv[1:]).as_dict(), indent=2))

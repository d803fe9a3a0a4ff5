"""The HTTP face under ``wrk``, against a bare hello-world of the same server stack.

:func:`measure` starts a real ``crdtkv serve --http`` process (one key written
through the face) and, in another process, the face's own server loop
(:class:`crdtkv.gateway.http.HttpServer`: h11 over anyio sockets, same event
loop) with a handler that answers ``hello`` to everything. It runs the same
``wrk`` command against ``GET /v1/kv/{key}`` and against the hello world,
round-robin so a slow spell on the shared machine hits both alike, keeps each
one's best, and returns the requests per second and the ratio (goal: the GET
at least 0.5x the bare stack). ``quick`` is a smoke run of a few seconds.
:func:`rows` turns that into the runner's table rows (``bench/gateway.py``).

``python bench/gateway_http.py hello`` runs the hello world alone (it prints
``http on http://127.0.0.1:PORT``), for measuring other stacks beside it.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import anyio
import httpx
from harness import face_child
from report import ROOT, Options, Row, progress

from crdtkv.gateway.http import HttpServer
from crdtkv.gateway.http_messages import Request, Response

GOAL = 0.5
CONNECTIONS = 50
#: one wrk thread: the machine has few cores and the server under test needs one
THREADS = 1
KEY = "bench:greeting"
VALUE = "hello from crdtkv"


class Hello:
    """The bare stack's handler: ``hello`` for every request, nothing else."""

    def admit(self, request: Request) -> Response | None:
        return None

    def respond(self, request: Request) -> Response:
        return Response(200, b"hello", b"text/plain")


async def serve_hello() -> None:
    """Serve the hello world on a free loopback port and print its URL (the ``hello`` command)."""
    async with anyio.create_task_group() as group:
        host, port = await group.start(HttpServer(Hello()).serve, "127.0.0.1", 0)
        print(f"http on http://{host}:{port}", flush=True)


@dataclass
class HttpBench:
    """Requests per second of ``GET /v1/kv/{key}`` on the face and of the bare hello world."""

    seconds: int
    get_rps: float = 0.0
    hello_rps: float = 0.0
    commands: list[str] = field(default_factory=list)

    @property
    def ratio(self) -> float:
        return self.get_rps / self.hello_rps if self.get_rps and self.hello_rps else float("nan")

    def as_dict(self) -> dict[str, object]:
        return {
            "seconds": self.seconds,
            "get_rps": self.get_rps,
            "hello_rps": self.hello_rps,
            "ratio": self.ratio,
            "goal": GOAL,
            "commands": self.commands,
        }


@contextmanager
def child(args: list[str]) -> Iterator[str]:
    """A child that prints ``http on URL``; yields the URL once it answers, stops the child afterwards."""
    with face_child(args, "http on ", cwd=ROOT) as url:
        deadline = time.monotonic() + 30
        while True:  # a hang guard: until it answers
            try:
                httpx.get(url + "/healthz", timeout=5)
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield url


def crdtkv_serve() -> list[str]:
    return [sys.executable, "-m", "crdtkv.cli", "serve", "--id", "bench-http", "--listen", "ws://127.0.0.1:0",
            "--http", "127.0.0.1:0"]  # fmt: skip


def hello_world() -> list[str]:
    return [sys.executable, str(ROOT / "bench" / "gateway_http.py"), "hello"]


def wrk_command(url: str, seconds: int) -> list[str]:
    return ["wrk", "-t", str(THREADS), "-c", str(CONNECTIONS), "-d", f"{seconds}s", "--latency", url]


def run_wrk(url: str, seconds: int) -> float:
    """Requests per second as ``wrk`` reports them; RuntimeError if any request failed."""
    done = subprocess.run(
        wrk_command(url, seconds), capture_output=True, text=True, timeout=seconds + 120, check=True
    )
    found = re.search(r"Requests/sec:\s*([0-9.]+)", done.stdout)
    if found is None:
        raise RuntimeError(f"wrk reported no rate: {done.stdout!r} {done.stderr!r}")
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)|Socket errors: .*", done.stdout)
    if bad is not None:
        raise RuntimeError(f"wrk saw failed requests against {url}: {bad.group(0)}")
    return float(found.group(1))


def measure(quick: bool = False, *, seconds: int | None = None, repeats: int | None = None) -> HttpBench:
    """Run the comparison; raises RuntimeError when ``wrk`` is missing."""
    if shutil.which("wrk") is None:
        raise RuntimeError("`wrk` is not on PATH (Debian: wrk)")
    duration = seconds or (2 if quick else 10)
    rounds = repeats or (1 if quick else 3)
    result = HttpBench(seconds=duration)
    with child(crdtkv_serve()) as ours, child(hello_world()) as bare:
        put = httpx.put(
            f"{ours}/v1/kv/{KEY}", content=VALUE, headers={"Content-Type": "text/plain"}, timeout=30
        )
        put.raise_for_status()
        get_url, hello_url = f"{ours}/v1/kv/{KEY}", f"{bare}/"
        shown = ("http://HOST:PORT/v1/kv/" + KEY, "http://HOST:PORT/")
        result.commands = [" ".join(wrk_command(url, duration)) for url in shown]
        for round_number in range(rounds):
            progress(f"wrk against the HTTP face and the bare stack (round {round_number + 1}/{rounds})")
            result.get_rps = max(result.get_rps, run_wrk(get_url, duration))
            result.hello_rps = max(result.hello_rps, run_wrk(hello_url, duration))
    return result


def rows(options: Options) -> list[Row]:
    """The comparison as a row of the runner's table."""
    result = measure(options.quick, repeats=options.repeats)
    return [
        Row(
            num="1",
            what=f"HTTP GET /v1/kv/{{key}}, wrk -t {THREADS} -c {CONNECTIONS}",
            measured=f"{result.get_rps:,.0f} req/s",
            baseline_name="bare h11 + anyio hello world",
            baseline=f"{result.hello_rps:,.0f} req/s",
            ratio=f"{result.ratio:.2f}x",
            goal=f">= {GOAL}x",
            met="yes" if result.ratio >= GOAL else "no",
            notes=f"wrk -d {result.seconds}s, best of rounds",
        )
    ]


if __name__ == "__main__":
    if sys.argv[1:] == ["hello"]:
        anyio.run(serve_hello)
    elif sys.argv[1:2] == ["--quick"] or not sys.argv[1:]:
        import json

        print(json.dumps(measure(quick=sys.argv[1:2] == ["--quick"]).as_dict(), indent=2))
    else:
        sys.exit("usage: gateway_http.py [--quick] | hello")

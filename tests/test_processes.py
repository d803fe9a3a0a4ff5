"""Three real `crdtkv serve` processes on loopback, one killed with SIGKILL mid-run."""

from __future__ import annotations

import signal
import socket
import subprocess
from pathlib import Path

import anyio
import pytest

from crdtkv.client import Client

from .helpers import serve_command

pytestmark = pytest.mark.anyio

SECRET = b"process-test-secret"


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


class Server:
    def __init__(
        self, name: str, port: int, peers: list[int], secret_file: Path, logs: Path, data: Path | None = None
    ) -> None:
        self.name, self.port, self.peers = name, port, peers
        self.secret_file, self.logs, self.data = secret_file, logs, data
        self.process: subprocess.Popen[str] | None = None

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def start(self) -> None:
        args = serve_command(self.name, self.url, "--secret-file", str(self.secret_file))
        for port in self.peers:
            args += ["--peer", f"ws://127.0.0.1:{port}"]
        if self.data is not None:
            args += ["--data", str(self.data)]
        log = open(self.logs / f"{self.name}.log", "a")  # noqa: SIM115 - the child keeps it
        self.process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=log, text=True)
        log.close()
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        assert line.startswith("serving"), f"{self.name} did not start: {line!r}"

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)
        if self.process.stdout:
            self.process.stdout.close()

    def stop(self) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=10)
        if self.process.stdout:
            self.process.stdout.close()
        return code


async def incr_many(url: str, count: int, totals: list[int]) -> None:
    async with Client(url, secret=SECRET) as client:
        for _ in range(count):
            await client.incr("views")
            totals[0] += 1  # counted only once the node acknowledged it


async def digests(servers: list[Server]) -> set[str]:
    result = set()
    for server in servers:
        async with Client(server.url, secret=SECRET) as client:
            result.add(await client.digest())
    return result


async def wait_converged(servers: list[Server], timeout: float = 30) -> None:
    with anyio.fail_after(timeout):
        while len(await digests(servers)) > 1:
            await anyio.sleep(0.1)


async def test_three_processes_with_a_sigkilled_node_converge_exactly(tmp_path: Path) -> None:
    secret_file = tmp_path / "secret"
    secret_file.write_bytes(SECRET + b"\n")
    ports = free_ports(3)
    a = Server("london", ports[0], [], secret_file, tmp_path)
    b = Server("sydney", ports[1], [ports[0]], secret_file, tmp_path)
    c = Server("newyork", ports[2], [ports[0], ports[1]], secret_file, tmp_path)
    servers = [a, b, c]
    totals = [0]
    try:
        for server in servers:
            server.start()
        # phase 1: concurrent increments at all three
        async with anyio.create_task_group() as group:
            for server in servers:
                group.start_soon(incr_many, server.url, 150, totals)
        await wait_converged(servers)  # sydney's increments have reached the others
        # phase 2: sydney dies without warning; london and new york keep counting
        b.kill()
        async with anyio.create_task_group() as group:
            group.start_soon(incr_many, a.url, 100, totals)
            group.start_soon(incr_many, c.url, 100, totals)
        # phase 3: sydney restarts empty, re-learns from its peers, and counts again
        b.start()
        async with anyio.create_task_group() as group:
            for server in servers:
                group.start_soon(incr_many, server.url, 100, totals)
        await wait_converged(servers)
        for server in servers:
            async with Client(server.url, secret=SECRET) as client:
                assert await client.get("views") == totals[0]
        assert totals[0] == 3 * 150 + 2 * 100 + 3 * 100
    finally:
        codes = [server.stop() for server in servers if server.process is not None]
    assert codes == [0, 0, 0]  # SIGTERM stops a node cleanly
    logs = "".join((tmp_path / f"{s.name}.log").read_text() for s in servers)
    assert "Traceback" not in logs, logs[-3000:]


async def test_a_durable_node_keeps_its_data_across_restarts(tmp_path: Path) -> None:
    secret_file = tmp_path / "secret"
    secret_file.write_bytes(SECRET)
    data = tmp_path / "london.db"
    server = Server("london", free_ports(1)[0], [], secret_file, tmp_path, data=data)
    try:
        server.start()
        async with Client(server.url, secret=SECRET) as client:
            await client.put("greeting", "hello")
            assert await client.incr("views", 41) == 41
        assert server.stop() == 0  # SIGTERM: flush and exit
        server.start()
        async with Client(server.url, secret=SECRET) as client:
            assert await client.get("greeting") == "hello"
            assert await client.incr("views") == 42
    finally:
        if server.process is not None and server.process.poll() is None:
            server.stop()
    assert data.exists()

"""Hostile input on the HTTP port: each bad client loses its own connection; the node and its state do not.

Garbage, oversized heads and bodies, slowloris, clients that never read a
large response or a watch stream, and one connection too many. Bounds are
checked on what is deterministic: the face's own counts (connections,
watchers, bytes queued for watchers) and the fact that the face stops
reading a client it is still writing to (the client's writes block).
"""

from __future__ import annotations

import random
import socket

import anyio
import anyio.to_thread
import pytest

from crdtkv.gateway.settings import HttpSettings

from .test_http_face import PATIENCE, raw_exchange, served, wait_until

pytestmark = pytest.mark.anyio

#: short deadlines, so each test sees its timeouts fire (they are not speed checks)
QUICK = HttpSettings(request_timeout=0.5, idle_timeout=0.5, send_timeout=0.5)


def status_line(answer: bytes) -> bytes:
    return answer.split(b"\r\n", 1)[0]


async def exchange(port: int, data: bytes, until: bytes | None = None, half_close: bool = False) -> bytes:
    return await anyio.to_thread.run_sync(raw_exchange, port, data, until, half_close)


async def test_garbage_answers_400_closes_that_connection_and_nothing_else() -> None:
    async with served() as s:
        s.store.put("k", "v")
        digest = s.store.digest()
        # a keep-alive connection open beside the bad one keeps working
        assert (await s.client.get("/v1/kv/k")).text == "v"
        answer = await exchange(s.port, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage\r\n\r\n")
        assert status_line(answer) == b"HTTP/1.1 400 Bad Request"
        assert b'"error":"MalformedRequest"' in answer
        assert (await s.client.get("/v1/kv/k")).text == "v"
        assert s.store.digest() == digest
        await wait_until(lambda: s.face.connections == 1, "the bad connection to close")


async def test_random_bytes_never_break_the_node() -> None:
    async with served(settings=QUICK) as s:
        s.store.put("k", "v")
        digest = s.store.digest()
        rng = random.Random(13)
        starts = [
            b"",
            b"GET / HTTP/1.1\r\n",
            b"PUT /v1/kv/k HTTP/1.1\r\nContent-Length: 5\r\n",
            b"GET /v1/kv/",
        ]
        for n in range(40):
            noise = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 300)))
            # most clients end their side after the noise; every fifth waits for the request deadline
            answer = await exchange(s.port, rng.choice(starts) + noise, half_close=n % 5 != 0)
            assert answer == b"" or answer.startswith(b"HTTP/1.1 4"), answer[:80]
        assert s.store.digest() == digest
        assert (await s.client.get("/v1/kv/k")).text == "v"
        await wait_until(lambda: s.face.connections == 1, "every bad connection to close")


async def test_an_oversized_head_answers_431() -> None:
    settings = HttpSettings(max_header_bytes=4096)
    async with served(settings=settings) as s:
        head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n"
        answer = await exchange(s.port, head)
        assert status_line(answer) == b"HTTP/1.1 431 Request Header Fields Too Large"
        assert b'"error":"HeadersTooLarge"' in answer
        assert (await s.client.get("/healthz")).status_code == 200


async def test_a_declared_body_over_the_budget_answers_413_before_it_is_sent() -> None:
    settings = HttpSettings(max_body_bytes=1000)
    async with served(settings=settings) as s:
        digest = s.store.digest()
        head = b"PUT /v1/kv/k HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000000\r\n\r\n"
        answer = await exchange(s.port, head)  # the body is never sent: the answer comes anyway
        assert status_line(answer) == b"HTTP/1.1 413 Request Entity Too Large"
        assert b'"error":"RequestTooLarge"' in answer and b"connection: close" in answer
        assert s.store.digest() == digest


async def test_a_chunked_body_over_the_budget_answers_413() -> None:
    settings = HttpSettings(max_body_bytes=1000)
    async with served(settings=settings) as s:
        chunk = b"400\r\n" + b"x" * 1024 + b"\r\n"
        request = (
            b"PUT /v1/kv/k HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            + chunk * 3
            + b"0\r\n\r\n"
        )
        answer = await exchange(s.port, request)
        assert status_line(answer) == b"HTTP/1.1 413 Request Entity Too Large"
        assert "k" not in s.store


async def test_an_unauthenticated_body_is_refused_before_it_is_read() -> None:
    async with served(secret="s3cret") as s:
        head = b"PUT /v1/kv/k HTTP/1.1\r\nHost: x\r\nContent-Length: 500000\r\n\r\n"
        answer = await exchange(s.port, head)  # no body sent: the 401 does not wait for it
        assert status_line(answer) == b"HTTP/1.1 401 Unauthorized"
        assert "k" not in s.store


async def test_slowloris_gets_408_once_the_request_deadline_passes() -> None:
    async with served(settings=QUICK) as s:
        answer = await exchange(s.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: a")  # never finished
        assert status_line(answer) == b"HTTP/1.1 408 Request Timeout"
        assert b'"error":"RequestTimedOut"' in answer
        body = await exchange(s.port, b"PUT /v1/kv/k HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n12345")
        assert status_line(body) == b"HTTP/1.1 408 Request Timeout"
        assert "k" not in s.store
        await wait_until(lambda: s.face.connections <= 1, "the slow connections to close")


async def test_an_idle_keep_alive_connection_closes_quietly() -> None:
    async with served(settings=QUICK) as s:
        answer = await exchange(s.port, b"")  # connects, says nothing
        assert answer == b""
        await wait_until(lambda: s.face.connections <= 1, "the idle connection to close")


def pipeline_without_reading(port: int, request: bytes, cap: int) -> int:
    """Send ``request`` again and again without reading; the bytes sent before the writes block."""
    with socket.create_connection(("127.0.0.1", port), timeout=PATIENCE) as sock:
        sock.setblocking(False)
        sent = 0
        while sent < cap:
            try:
                sent += sock.send(request * 64)
            except BlockingIOError:
                return sent
        return sent


async def test_a_client_that_never_reads_a_large_response_is_dropped_and_stops_being_read() -> None:
    async with served(settings=QUICK) as s:
        s.store.put("big", b"x" * 400_000)
        digest = s.store.digest()
        cap = 256 * 1024 * 1024
        request = b"GET /v1/kv/big HTTP/1.1\r\nHost: x\r\n\r\n"

        def client() -> int:
            return pipeline_without_reading(s.port, request, cap)

        async with anyio.create_task_group() as group:
            sent: list[int] = []

            async def run() -> None:
                sent.append(await anyio.to_thread.run_sync(client))

            group.start_soon(run)
            await wait_until(lambda: bool(sent), "the client's writes to block")
        # the face stopped reading while its answer waited: the client could not push without bound
        assert sent[0] < cap
        await wait_until(lambda: s.face.connections == 0, "the face to drop the client after send_timeout")
        assert (await s.client.get("/healthz")).status_code == 200
        assert s.store.digest() == digest


async def test_a_watcher_that_never_reads_has_a_bounded_backlog_and_is_dropped() -> None:
    budget = 64 * 1024
    settings = HttpSettings(max_watch_backlog_bytes=budget, send_timeout=0.5)
    async with served(settings=settings) as s:
        with socket.create_connection(("127.0.0.1", s.port), timeout=PATIENCE) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.sendall(b"GET /v1/watch HTTP/1.1\r\nHost: x\r\n\r\n")
            await wait_until(lambda: s.face.watchers == 1, "the watch")
            peak = 0
            value = "v" * 1000
            batch = 0
            with anyio.fail_after(PATIENCE):
                # changes keep coming for a client that reads none of them, until the face drops it
                # (once the kernel's buffers are full, a send waits longer than send_timeout)
                while s.face.watchers:
                    for i in range(10):
                        s.store.put(f"key:{batch}:{i}", value)
                    batch += 1
                    peak = max(peak, s.face.watch_backlog_bytes)
                    await anyio.sleep(0.001)
            assert 0 < peak <= budget
            assert s.face.watch_backlog_bytes == 0
        assert (await s.client.get("/v1/kv/key:0:0")).text == value
        await wait_until(lambda: s.face.connections == 1, "the watcher's connection to close")


async def test_one_connection_over_max_connections_is_answered_503_and_closed() -> None:
    settings = HttpSettings(max_connections=2)
    async with served(settings=settings) as s:
        await s.client.get("/healthz")  # the client's keep-alive connection is one
        with socket.create_connection(("127.0.0.1", s.port), timeout=PATIENCE) as second:
            await wait_until(lambda: s.face.connections == 2, "two connections")
            answer = await exchange(s.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            assert status_line(answer) == b"HTTP/1.1 503 Service Unavailable"
            assert s.face.server.refused_connections == 1
            second.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert status_line(await anyio.to_thread.run_sync(second.recv, 65536)) == b"HTTP/1.1 200 OK"
        await wait_until(lambda: s.face.connections == 1, "the second connection to close")
        answer = await exchange(s.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert status_line(answer) == b"HTTP/1.1 200 OK"

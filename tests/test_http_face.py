"""The HTTP face on a real socket: every endpoint, its content types and error codes, auth on and off.

Each test starts a :class:`~crdtkv.Node` and its :class:`HttpFace` on
127.0.0.1 port 0 in the test's event loop and talks to it with httpx, curl
(subprocess) or raw sockets.
"""

from __future__ import annotations

import base64
import json
import shutil
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import anyio
import httpx
import pytest

from crdtkv import KvStore, Node
from crdtkv.gateway.http import HttpFace
from crdtkv.gateway.settings import HttpSettings

pytestmark = pytest.mark.anyio

SECRET = "http-face-secret"
AUTH = {"Authorization": f"Bearer {SECRET}"}
#: a hang guard for each poll loop, not a speed check
PATIENCE = 30.0


@dataclass
class Served:
    """A node with its HTTP face listening, and an httpx client for it."""

    node: Node
    face: HttpFace
    host: str
    port: int
    client: httpx.AsyncClient

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def store(self) -> KvStore:
        return self.node.store


@asynccontextmanager
async def served(
    secret: str | None = None,
    settings: HttpSettings | None = None,
    store: KvStore | None = None,
    **node_options: object,
) -> AsyncIterator[Served]:
    """A node (no peers unless given) with its HTTP face on 127.0.0.1, port 0."""
    store = store or KvStore.open(replica_id="pop")
    async with Node(store, secret=secret, **node_options) as node:  # type: ignore[arg-type]
        face = HttpFace(node, settings)
        async with anyio.create_task_group() as group:
            host, port = await group.start(face.serve, "127.0.0.1", 0)
            headers = AUTH if secret is not None else {}
            async with httpx.AsyncClient(
                base_url=f"http://{host}:{port}", headers=headers, timeout=30
            ) as client:
                yield Served(node, face, host, port, client)
            group.cancel_scope.cancel()


async def wait_until(check: object, what: str) -> None:
    """Poll ``check()`` (a hang guard only)."""
    with anyio.fail_after(PATIENCE):
        while not check():  # type: ignore[operator]
            await anyio.sleep(0.01)


# -- values --------------------------------------------------------------------------------


async def test_a_string_round_trips_as_text_with_metadata_and_expiration() -> None:
    async with served() as s:
        put = await s.client.put(
            "/v1/kv/greeting",
            content="héllo".encode(),
            headers={"Content-Type": "text/plain; charset=utf-8", "X-Crdtkv-Metadata": '{"owner": "ana"}'},
            params={"ttl": "3600"},
        )
        assert put.status_code == 204 and put.content == b""
        assert s.store.get("greeting") == "héllo"
        got = await s.client.get("/v1/kv/greeting")
        assert got.status_code == 200
        assert got.headers["content-type"] == "text/plain; charset=utf-8"
        assert got.text == "héllo"
        assert json.loads(got.headers["x-crdtkv-metadata"]) == {"owner": "ana"}
        assert abs(float(got.headers["x-crdtkv-expiration"]) - (time.time() + 3600)) < 60


async def test_bodies_are_read_by_content_type() -> None:
    async with served() as s:
        c = s.client
        assert (await c.put("/v1/kv/j", json={"a": [1, 2.5, None, True]})).status_code == 204
        assert (await c.put("/v1/kv/b", content=b"\x00\xff")).status_code == 204  # no Content-Type: bytes
        octets = {"Content-Type": "application/octet-stream"}
        assert (await c.put("/v1/kv/o", content=b"raw", headers=octets)).status_code == 204
        latin = {"Content-Type": "text/plain; charset=iso-8859-1"}
        assert (await c.put("/v1/kv/t", content="é".encode("latin-1"), headers=latin)).status_code == 204
        plus = {"Content-Type": "application/merge-patch+json"}
        assert (await c.put("/v1/kv/p", content=b"7", headers=plus)).status_code == 204
        assert s.store.get("j") == {"a": [1, 2.5, None, True]}
        assert s.store.get("b") == b"\x00\xff" and s.store.get("o") == b"raw"
        assert s.store.get("t") == "é" and s.store.get("p") == 7

        got = await c.get("/v1/kv/j")
        assert got.headers["content-type"] == "application/json" and got.json() == {"a": [1, 2.5, None, True]}
        got = await c.get("/v1/kv/b")
        assert got.headers["content-type"] == "application/octet-stream" and got.content == b"\x00\xff"
        assert "x-crdtkv-metadata" not in got.headers and "x-crdtkv-expiration" not in got.headers


async def test_values_json_cannot_carry_have_a_documented_form() -> None:
    async with served() as s:
        s.store.put("nested", {"blob": b"\x01\x02", "big": float("inf"), "nan": float("nan")})
        got = await s.client.get("/v1/kv/nested")
        assert got.json() == {"blob": base64.b64encode(b"\x01\x02").decode(), "big": "Infinity", "nan": "NaN"}


async def test_keys_are_percent_decoded_from_the_path() -> None:
    async with served() as s:
        assert (await s.client.put("/v1/kv/user%3A%C3%A9%2Fa%20b", content=b"x")).status_code == 204
        assert s.store.get("user:é/a b") == b"x"
        assert (await s.client.get("/v1/kv/user:%C3%A9/a%20b")).content == b"x"
        bad = await s.client.get("/v1/kv/%FF")
        assert bad.status_code == 400 and bad.json()["error"] == "InvalidKey"
        empty = await s.client.get("/v1/kv/")
        assert empty.status_code == 400 and empty.json()["error"] == "InvalidKey"


async def test_expiration_sets_an_absolute_expiry_and_ttl_with_it_is_refused() -> None:
    async with served() as s:
        at = time.time() + 600
        assert (await s.client.put("/v1/kv/e", content=b"v", params={"expiration": at})).status_code == 204
        got = await s.client.get("/v1/kv/e")
        assert abs(float(got.headers["x-crdtkv-expiration"]) - at) < 0.01
        past = await s.client.put("/v1/kv/gone", content=b"v", params={"expiration": time.time() - 10})
        assert past.status_code == 204
        assert (await s.client.get("/v1/kv/gone")).status_code == 404
        both = await s.client.put("/v1/kv/e", content=b"w", params={"expiration": at, "ttl": 5})
        assert both.status_code == 400 and both.json()["error"] == "InvalidArgument"
        for bad in ({"ttl": "soon"}, {"ttl": "nan"}, {"ttl": "-1"}):
            answer = await s.client.put("/v1/kv/e", content=b"w", params=bad)
            assert answer.status_code == 400, bad
            assert answer.json()["error"] == "InvalidArgument"
        assert s.store.get("e") == b"v"


async def test_bad_bodies_and_metadata_answer_400_and_change_nothing() -> None:
    async with served() as s:
        s.store.put("k", "kept")
        cases = [
            ({"Content-Type": "application/json"}, b"{not json"),
            ({"Content-Type": "application/json"}, b"[" * 100_000),  # deeper than the parser goes
            ({"Content-Type": "text/plain; charset=utf-8"}, b"\xff\xfe"),
            ({"Content-Type": "text/plain; charset=no-such-charset"}, b"x"),
            ({"X-Crdtkv-Metadata": "not json"}, b"x"),
            ({"X-Crdtkv-Metadata": "[1, 2]"}, b"x"),
        ]  # metadata over its size limit is a 413: test_a_value_over_the_store_limit_answers_413
        for headers, body in cases:
            answer = await s.client.put("/v1/kv/k", content=body, headers=headers)
            assert answer.status_code == 400, (headers, body[:20], answer.text)
            assert answer.headers["content-type"] == "application/json"
            assert set(answer.json()) == {"error", "message"}
        assert s.store.get("k") == "kept"


async def test_a_value_over_the_store_limit_answers_413() -> None:
    async with served() as s:
        limit = s.store.limits.max_value_bytes
        answer = await s.client.put("/v1/kv/big", content=b"x" * (limit + 1))
        assert answer.status_code == 413 and answer.json()["error"] == "ValueTooLarge"
        assert "big" not in s.store
        text = await s.client.put(
            "/v1/kv/big", content="é" * (limit // 2 + 1), headers={"Content-Type": "text/plain"}
        )
        assert text.status_code == 413 and text.json()["error"] == "ValueTooLarge"  # counted in UTF-8 bytes
        as_json = await s.client.put("/v1/kv/big", json=["x" * (limit // 2)] * 3)
        assert as_json.status_code == 413 and as_json.json()["error"] == "ValueTooLarge"
        metadata = await s.client.put(
            "/v1/kv/big", content=b"v", headers={"X-Crdtkv-Metadata": json.dumps({"m": "x" * 2000})}
        )
        assert metadata.status_code == 413 and metadata.json()["error"] == "ValueTooLarge"
        assert "big" not in s.store
        assert (await s.client.put("/v1/kv/big", content=b"x" * limit)).status_code == 204


async def test_delete_answers_204_whether_or_not_the_key_was_there() -> None:
    async with served() as s:
        s.store.put("k", "v")
        assert (await s.client.delete("/v1/kv/k")).status_code == 204
        assert "k" not in s.store
        assert (await s.client.delete("/v1/kv/k")).status_code == 204
        missing = await s.client.get("/v1/kv/k")
        assert missing.status_code == 404
        assert missing.json() == {"error": "NotFound", "message": "no key 'k'"}


# -- counters, listing, rate limits ---------------------------------------------------------------


async def test_incr_counts_and_reads_as_a_json_integer() -> None:
    async with served() as s:
        assert (await s.client.post("/v1/incr/views")).json() == {"value": 1}
        assert (await s.client.post("/v1/incr/views", params={"by": 41})).json() == {"value": 42}
        assert (await s.client.post("/v1/incr/views", params={"by": -2, "ttl": 60})).json() == {"value": 40}
        got = await s.client.get("/v1/kv/views")
        assert got.headers["content-type"] == "application/json" and got.json() == 40
        assert "x-crdtkv-expiration" in got.headers
        huge = await s.client.post("/v1/incr/huge", params={"by": 2**70})
        assert huge.json() == {"value": 2**70}
        bad = await s.client.post("/v1/incr/views", params={"by": "1.5"})
        assert bad.status_code == 400 and bad.json()["error"] == "InvalidArgument"


async def test_incr_on_a_register_answers_409_wrong_type() -> None:
    async with served() as s:
        s.store.put("name", "ana")
        answer = await s.client.post("/v1/incr/name")
        assert answer.status_code == 409 and answer.json()["error"] == "WrongType"
        assert s.store.get("name") == "ana"


async def test_keys_pages_in_workers_kv_shape() -> None:
    async with served() as s:
        for i in range(5):
            s.store.put(f"user:{i}", i, metadata={"n": i} if i == 2 else None, ttl=600 if i == 3 else None)
        s.store.put("other", 1)
        first = (await s.client.get("/v1/keys", params={"prefix": "user:", "limit": 3})).json()
        assert [k["name"] for k in first["keys"]] == ["user:0", "user:1", "user:2"]
        assert first["keys"][2] == {"name": "user:2", "expiration": None, "metadata": {"n": 2}}
        assert first["list_complete"] is False and isinstance(first["cursor"], str)
        rest = (await s.client.get("/v1/keys", params={"prefix": "user:", "cursor": first["cursor"]})).json()
        assert [k["name"] for k in rest["keys"]] == ["user:3", "user:4"]
        assert isinstance(rest["keys"][0]["expiration"], float)
        assert rest["list_complete"] is True and rest["cursor"] is None
        everything = (await s.client.get("/v1/keys")).json()
        assert len(everything["keys"]) == 6 and everything["list_complete"] is True
        for bad in ({"cursor": "nope"}, {"limit": "0"}, {"limit": "many"}):
            answer = await s.client.get("/v1/keys", params=bad)
            assert answer.status_code == 400, bad
            assert answer.json()["error"] == "InvalidArgument"


async def test_rate_limit_answers_200_while_allowed_and_429_when_refused() -> None:
    async with served() as s:
        params = {"limit": 2, "window": 60}
        first = await s.client.post("/v1/ratelimit/api:ana", params=params)
        assert first.status_code == 200
        decision = first.json()
        assert decision["allowed"] is True and decision["count"] == 1 and decision["remaining"] == 1
        assert decision["limit"] == 2 and 0 < decision["reset_after"] <= 60
        assert (await s.client.post("/v1/ratelimit/api:ana", params=params)).status_code == 200
        refused = await s.client.post("/v1/ratelimit/api:ana", params=params)
        assert refused.status_code == 429
        assert refused.json()["allowed"] is False and refused.json()["remaining"] == 0
        assert int(refused.headers["retry-after"]) >= 1
        missing = await s.client.post("/v1/ratelimit/api:ana", params={"limit": 2})
        assert missing.status_code == 400 and missing.json()["error"] == "InvalidArgument"


# -- watch -----------------------------------------------------------------------------------------


async def read_events(
    lines: AsyncIterator[str], count: int | None = None, until: str | None = None
) -> list[tuple[str, dict[str, object]]]:
    """The next ``count`` events of an SSE stream as (name, data), or up to the event named ``until``."""
    events: list[tuple[str, dict[str, object]]] = []
    name, data = "message", ""
    with anyio.fail_after(PATIENCE):
        async for line in lines:
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                data = line[6:]
            elif line == "" and data:
                events.append((name, json.loads(data)))
                if len(events) == count or name == until:
                    break
                name, data = "message", ""
    return events


async def test_watch_streams_changes_as_server_sent_events() -> None:
    async with served() as s:
        async with s.client.stream("GET", "/v1/watch", params={"prefix": "flag:"}) as response:
            assert response.status_code == 200
            assert response.headers["content-type"] == "text/event-stream"
            await wait_until(lambda: s.face.watchers == 1, "the watch")
            s.store.put("other", 1)  # not under the prefix
            s.store.put("flag:dark", "on")
            s.store.put("flag:bytes", b"\x00")
            s.store.delete("flag:dark")
            s.store.put("flag:none", None)  # a stored null is a value, not a delete
            events = await read_events(response.aiter_lines(), 4)
        origin = s.store.origin
        assert events == [
            ("message", {"key": "flag:dark", "value": "on", "origin": origin, "deleted": False}),
            ("message", {"key": "flag:bytes", "value": "AA==", "origin": origin, "deleted": False}),
            ("message", {"key": "flag:dark", "value": None, "origin": origin, "deleted": True}),
            ("message", {"key": "flag:none", "value": None, "origin": origin, "deleted": False}),
        ]
        await wait_until(lambda: s.face.watchers == 0, "the watch to end with its client")


async def test_a_watcher_that_fell_behind_gets_an_overflow_event() -> None:
    settings = HttpSettings(max_watch_backlog_bytes=4096)
    async with served(settings=settings) as s, s.client.stream("GET", "/v1/watch") as response:
        await wait_until(lambda: s.face.watchers == 1, "the watch")
        for i in range(100):  # written at once, before the stream can send any: far over 4 KiB
            s.store.put(f"k{i}", "v" * 100)
        assert s.face.watch_backlog_bytes <= 4096
        lines = response.aiter_lines()
        events = await read_events(lines, until="overflow")
        kept = len(events) - 1
        assert events[-1] == ("overflow", {"overflow": True})
        assert 0 < kept < 100
        assert [data["key"] for _, data in events[:kept]] == [f"k{i}" for i in range(kept)]
        s.store.put("after", 1)  # the stream goes on after the notice
        assert (await read_events(lines, 1))[0][1]["key"] == "after"


# -- routing, methods, keep-alive -----------------------------------------------------------------


async def test_unknown_routes_answer_404_and_wrong_methods_405_with_allow() -> None:
    async with served() as s:
        missing = await s.client.get("/v2/nothing")
        assert missing.status_code == 404 and missing.json()["error"] == "NotFound"
        wrong = await s.client.post("/v1/kv/k")
        assert wrong.status_code == 405 and wrong.json()["error"] == "MethodNotAllowed"
        assert wrong.headers["allow"] == "GET, PUT, DELETE, HEAD"
        assert (await s.client.get("/v1/incr/k")).headers["allow"] == "POST"
        assert (await s.client.delete("/metrics")).headers["allow"] == "GET, HEAD"


async def test_head_answers_the_headers_of_get_without_a_body() -> None:
    async with served() as s:
        s.store.put("k", "value")
        head = await s.client.head("/v1/kv/k")
        assert head.status_code == 200 and head.content == b""
        assert head.headers["content-length"] == "5"
        assert head.headers["content-type"] == "text/plain; charset=utf-8"
        assert (await s.client.head("/v1/kv/none")).status_code == 404
        watch = await s.client.head("/v1/watch")
        assert watch.status_code == 200 and watch.headers["content-type"] == "text/event-stream"
        assert s.face.watchers == 0


def raw_exchange(port: int, data: bytes, until: bytes | None = None, half_close: bool = False) -> bytes:
    """Send ``data`` on a new connection and read until the server closes it (or ``until`` shows).

    ``half_close``: end the sending side after ``data``.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=PATIENCE) as sock:
        sock.sendall(data)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        received = b""
        while until is None or until not in received:
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
        return received


async def test_keep_alive_serves_pipelined_requests_in_order_on_one_connection() -> None:
    async with served() as s:
        s.store.put("a", "1")
        s.store.put("b", "2")
        requests = (
            b"GET /v1/kv/a HTTP/1.1\r\nHost: x\r\n\r\n"
            b"PUT /v1/kv/c HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: 1\r\n\r\n3"
            b"GET /v1/kv/b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        answer = await anyio.to_thread.run_sync(raw_exchange, s.port, requests)
        assert answer.count(b"HTTP/1.1 ") == 3
        assert answer.index(b"\r\n\r\n1") < answer.index(b"204 No Content") < answer.index(b"\r\n\r\n2")
        assert s.store.get("c") == "3"
        await wait_until(lambda: s.face.connections == 0, "the closed connection")


async def test_http_1_0_closes_after_the_answer() -> None:
    async with served() as s:
        answer = await anyio.to_thread.run_sync(raw_exchange, s.port, b"GET /healthz HTTP/1.0\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 200 OK") and answer.endswith(b'{"status":"ok"}')


# -- auth ---------------------------------------------------------------------------------------------


async def test_with_a_secret_data_routes_need_the_bearer_secret() -> None:
    async with served(secret=SECRET) as s:
        s.store.put("k", "v")
        async with httpx.AsyncClient(base_url=s.url, timeout=30) as anonymous:
            for method, path in [
                ("GET", "/v1/kv/k"),
                ("PUT", "/v1/kv/k"),
                ("DELETE", "/v1/kv/k"),
                ("POST", "/v1/incr/n"),
                ("GET", "/v1/keys"),
                ("POST", "/v1/ratelimit/r?limit=1&window=1"),
                ("GET", "/v1/watch"),
                ("GET", "/v1/status"),
            ]:
                for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {SECRET}"}):
                    answer = await anonymous.request(method, path, headers=headers, content=b"x")
                    assert answer.status_code == 401, (method, path, headers)
                    assert answer.json()["error"] == "NotAuthenticated"
                    assert answer.headers["www-authenticate"].startswith("Bearer")
            for path in ("/healthz", "/readyz", "/metrics", "/"):
                assert (await anonymous.get(path)).status_code == 200, path
        assert s.store.get("k") == "v" and "n" not in s.store
        assert (await s.client.get("/v1/kv/k")).text == "v"
        lower = await s.client.get("/v1/kv/k", headers={"Authorization": f"bearer {SECRET}"})
        assert lower.status_code == 200


async def test_without_a_secret_everything_is_open() -> None:
    async with served() as s:
        assert (await s.client.put("/v1/kv/k", content=b"v")).status_code == 204
        assert (await s.client.get("/v1/status")).status_code == 200


# -- operations -----------------------------------------------------------------------------------------


async def test_healthz_status_and_metrics() -> None:
    async with served() as s:
        s.store.put("k", "v")
        assert (await s.client.get("/healthz")).json() == {"status": "ok"}
        assert (await s.client.get("/readyz")).json() == {"ready": True}
        status = (await s.client.get("/v1/status")).json()
        assert status["id"] == "pop" and status["keys"] == 1 and status["peers"] == []
        assert status["digest"] == s.store.digest()
        await s.client.get("/v1/kv/k")
        await s.client.get("/v1/kv/none")
        metrics = await s.client.get("/metrics")
        assert metrics.headers["content-type"].startswith("text/plain")
        text = metrics.text
        assert 'crdtkv_operations_total{face="http",kind="get",result="ok"} 1.0' in text
        assert 'crdtkv_operations_total{face="http",kind="get",result="NotFound"} 1.0' in text


async def test_readyz_answers_503_until_the_first_catch_up() -> None:
    with socket.socket() as unused:  # a port nothing listens on: the peer is never reached
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    async with served(peers=[f"ws://127.0.0.1:{port}"]) as s:
        answer = await s.client.get("/readyz")
        assert answer.status_code == 503 and answer.json() == {"ready": False}
        assert (await s.client.get("/healthz")).status_code == 200


async def test_the_status_page_is_plain_html_with_no_external_assets() -> None:
    async with served(secret=SECRET) as s:
        async with httpx.AsyncClient(base_url=s.url, timeout=30) as anonymous:
            page = await anonymous.get("/")
        assert page.status_code == 200 and page.headers["content-type"] == "text/html; charset=utf-8"
        assert "/v1/status" in page.text and "sessionStorage" in page.text
        assert "http://" not in page.text and "https://" not in page.text and "src=" not in page.text


# -- curl -------------------------------------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
async def test_curl_puts_reads_lists_and_deletes_with_the_secret() -> None:
    async with served(secret=SECRET) as s:

        async def curl(*args: str) -> tuple[int, str]:
            done = await anyio.run_process(
                [
                    "curl",
                    "-sS",
                    "-o",
                    "-",
                    "-w",
                    "\n%{http_code}",
                    "-H",
                    f"Authorization: Bearer {SECRET}",
                    *args,
                ],
                check=True,
            )
            body, _, code = done.stdout.decode().rpartition("\n")
            return int(code), body

        assert await curl(
            "-X", "PUT", "-H", "Content-Type: text/plain", "--data-binary", "hi", f"{s.url}/v1/kv/greeting"
        ) == (204, "")
        assert await curl(f"{s.url}/v1/kv/greeting") == (200, "hi")
        assert await curl(
            "-X", "PUT", "-H", "Content-Type: application/json", "-d", '{"a": 1}', f"{s.url}/v1/kv/doc?ttl=60"
        ) == (204, "")
        code, body = await curl(f"{s.url}/v1/keys?prefix=")
        assert code == 200 and [k["name"] for k in json.loads(body)["keys"]] == ["doc", "greeting"]
        assert await curl("-X", "POST", f"{s.url}/v1/incr/n?by=3") == (200, '{"value":3}')
        large = "x" * 100_000  # curl sends Expect: 100-continue first: the face answers it
        code, _ = await curl("-X", "PUT", "--data-binary", large, f"{s.url}/v1/kv/large")
        assert code == 204 and s.store.get("large") == large.encode()
        assert await curl("-X", "DELETE", f"{s.url}/v1/kv/greeting") == (204, "")
        assert (await curl(f"{s.url}/v1/kv/greeting"))[0] == 404
        head = await anyio.run_process(["curl", "-sS", "-I", f"{s.url}/healthz"], check=True)
        assert head.stdout.startswith(b"HTTP/1.1 200 OK")
        denied = await anyio.run_process(
            ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", f"{s.url}/v1/kv/n"], check=True
        )
        assert denied.stdout == b"401"

"""Two real `crdtkv serve` PoPs written through different faces converge exactly.

London is written with redis-py over its RESP face, Sydney with httpx over its
HTTP face; each then reads, through its own face, what the other was given, and
the counter both incremented holds every increment.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import redis

from .helpers import ServeProcess, wait_for

SECRET = "faces-converge-secret"


@pytest.mark.parametrize("with_secret", [False, True], ids=["open", "secret"])
def test_resp_at_one_pop_and_http_at_the_other_converge(tmp_path: Path, with_secret: bool) -> None:
    auth: list[str] = []
    headers: dict[str, str] = {}
    password: str | None = None
    if with_secret:
        secret_file = tmp_path / "secret"
        secret_file.write_text(SECRET)
        auth = ["--secret-file", str(secret_file)]
        headers = {"Authorization": f"Bearer {SECRET}"}
        password = SECRET
    with ServeProcess("london", "--resp", "127.0.0.1:0", *auth, log=str(tmp_path / "london.log")) as london:
        with ServeProcess(
            "sydney",
            "--http",
            "127.0.0.1:0",
            "--peer",
            london.ws_url,
            *auth,
            log=str(tmp_path / "sydney.log"),
        ) as sydney:
            assert london.resp_port is not None and sydney.http_url is not None
            r = redis.Redis(host="127.0.0.1", port=london.resp_port, password=password, decode_responses=True)
            h = httpx.Client(base_url=sydney.http_url, headers=headers, timeout=30)
            try:
                assert r.set("flag:dark-mode", "on") is True
                assert r.incrby("views", 5) == 5
                assert (
                    h.put(
                        "/v1/kv/greeting", content="hello", headers={"Content-Type": "text/plain"}
                    ).status_code
                    == 204
                )
                assert h.post("/v1/incr/views", params={"by": 7}).status_code == 200

                wait_for(
                    lambda: h.get("/v1/kv/flag:dark-mode").status_code == 200, "the RESP write at Sydney"
                )
                assert h.get("/v1/kv/flag:dark-mode").text == "on"
                wait_for(lambda: r.get("greeting") is not None, "the HTTP write at London")
                assert r.get("greeting") == "hello"
                wait_for(lambda: r.get("views") == "12", "both increments at London")
                wait_for(lambda: h.get("/v1/kv/views").text == "12", "both increments at Sydney")
                assert h.get("/v1/kv/views").json() == 12
                assert h.get("/v1/kv/views").headers["content-type"].startswith("application/json")
            finally:
                r.close()
                h.close()
        assert sydney.returncode == 0
    assert london.returncode == 0

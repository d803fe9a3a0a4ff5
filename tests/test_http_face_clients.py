"""The HTTP face with the clients its users have: Node.js fetch, a browser, and a real `crdtkv serve`.

* tests/js/http_face.mjs uses only Node.js's built-in ``fetch`` (skipped, with
  the reason, when ``node`` is not installed);
* headless Chromium opens the status page of a PoP linked to another and must
  find that peer on it after the page's script ran;
* a real ``crdtkv serve --http 127.0.0.1:0`` child answers httpx and curl.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import anyio
import httpx
import pytest

from crdtkv import KvStore, Node
from crdtkv.gateway.http import HttpFace

from .helpers import ServeProcess, wait_for
from .test_http_face import SECRET, served

JS = Path(__file__).parent / "js" / "http_face.mjs"
NODE = shutil.which("node")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


# -- Node.js -----------------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.skipif(NODE is None, reason="node (Node.js 18+, for its built-in fetch) is not installed")
@pytest.mark.parametrize("secret", [None, SECRET], ids=["open", "secret"])
async def test_a_node_js_worker_uses_the_api_with_builtin_fetch(secret: str | None) -> None:
    assert NODE is not None
    async with served(secret=secret) as s:
        args = [NODE, str(JS), s.url] + ([secret] if secret else [])
        done = await anyio.run_process(args, check=False)
        assert done.returncode == 0, done.stderr.decode()
        assert done.stdout.decode().strip() == "ok"
        assert s.store.get("js:greeting/é") == "hello from node"
        assert s.store.get("js:views") == 5


# -- the status page in a browser --------------------------------------------------------------------


async def dump_page(url: str, profile: Path) -> str:
    """The page's DOM after its script ran (Chromium's virtual time waits for its fetches)."""
    assert CHROMIUM is not None
    done = await anyio.run_process(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            f"--user-data-dir={profile}",
            "--virtual-time-budget=5000",
            "--dump-dom",
            url,
        ],
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    return done.stdout.decode()


def peer_rows(dom: str) -> list[str]:
    """The origins of the peer rows on the page."""
    return re.findall(r'<tr data-origin="([^"]*)" class="peer">', dom)


@pytest.mark.anyio
@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (.ci/run installs it)")
@pytest.mark.parametrize("secret", [None, SECRET], ids=["open", "secret"])
async def test_the_status_page_shows_the_peer_in_a_browser(tmp_path: Path, secret: str | None) -> None:
    london = KvStore.open(replica_id="london")
    sydney = KvStore.open(replica_id="sydney")
    async with Node(london, listen="ws://127.0.0.1:0", secret=secret) as hub:
        assert hub.url is not None
        async with Node(sydney, peers=[hub.url], secret=secret) as pop:
            await pop.wait_for_peers(1)
            face = HttpFace(hub)
            async with anyio.create_task_group() as group:
                host, port = await group.start(face.serve, "127.0.0.1", 0)
                url = f"http://{host}:{port}/"
                if secret is None:
                    dom = await dump_page(url, tmp_path / "profile")
                else:  # without the secret the page asks for it and shows what /metrics tells
                    asked = await dump_page(url, tmp_path / "profile-anonymous")
                    assert '<form id="auth">' in asked  # no longer hidden
                    assert peer_rows(asked) == [sydney.origin]
                    dom = await dump_page(url + "#secret=" + secret, tmp_path / "profile")
                    assert '<form id="auth" hidden="">' in dom
                group.cancel_scope.cancel()
    assert peer_rows(dom) == [sydney.origin]
    assert '<span id="node-id">london</span>' in dom
    assert re.search(r'<td class="up">up</td>', dom)
    assert re.search(r'<b id="ops">[0-9.]+</b>', dom)  # two polls at least: a rate was computed


# -- a real crdtkv serve process -----------------------------------------------------------------------


@pytest.mark.parametrize("with_secret", [False, True], ids=["open", "secret"])
def test_crdtkv_serve_with_http_answers_httpx_and_curl(tmp_path: Path, with_secret: bool) -> None:
    options: list[str] = []
    headers: dict[str, str] = {}
    if with_secret:
        (tmp_path / "secret").write_text(SECRET)
        options = ["--secret-file", str(tmp_path / "secret")]
        headers = {"Authorization": f"Bearer {SECRET}"}
    with ServeProcess("edge", "--http", "127.0.0.1:0", *options, log=str(tmp_path / "edge.log")) as edge:
        assert edge.http_url is not None and edge.http_url.startswith("http://127.0.0.1:")
        with httpx.Client(base_url=edge.http_url, headers=headers, timeout=30) as client:
            wait_for(lambda: client.get("/readyz").status_code == 200, "readiness")
            assert (
                client.put("/v1/kv/k", content="v", headers={"Content-Type": "text/plain"}).status_code == 204
            )
            assert client.get("/v1/kv/k").text == "v"
            assert client.post("/v1/incr/n", params={"by": 2}).json() == {"value": 2}
            assert [k["name"] for k in client.get("/v1/keys").json()["keys"]] == ["k", "n"]
            status = client.get("/v1/status").json()
            assert status["id"] == "edge" and status["keys"] == 2
            assert "crdtkv_operations_total" in client.get("/metrics").text
            with httpx.Client(base_url=edge.http_url, timeout=30) as anonymous:
                assert anonymous.get("/healthz").status_code == 200
                assert anonymous.get("/v1/kv/k").status_code == (401 if with_secret else 200)
        if shutil.which("curl"):
            curl = ["curl", "-sS", *(f"-HAuthorization: Bearer {SECRET}" for _ in [1] if with_secret)]
            got = subprocess.run(
                [*curl, f"{edge.http_url}/v1/kv/n"], capture_output=True, timeout=60, check=True
            )
            assert json.loads(got.stdout) == 2
        # garbage on the HTTP port does not hurt the process
        with httpx.Client(base_url=edge.http_url, headers=headers, timeout=30) as client:
            assert client.request("BREW", "/v1/kv/k").status_code == 405
            assert client.get("/v1/kv/k").text == "v"
    assert edge.returncode == 0

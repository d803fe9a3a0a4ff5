"""``crdtkv status`` against two real, connected ``crdtkv serve`` processes."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import crdtkv

from .helpers import ServeProcess

SECRET = "status-secret"


def status(url: str, *options: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "crdtkv.cli", "status", "--node", url, *options],
        capture_output=True,
        text=True,
        timeout=60,
    )


def wait_for_status(url: str, check: Any, *options: str, timeout: float = 60.0) -> dict[str, Any]:
    """Poll ``crdtkv status --json`` until ``check(status)`` holds (a hang guard only)."""
    deadline = time.monotonic() + timeout
    while True:
        done = status(url, "--json", *options)
        assert done.returncode == 0, done.stderr
        found: dict[str, Any] = json.loads(done.stdout)
        if check(found):
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"status never matched: {found}")
        time.sleep(0.1)


def test_status_shows_the_node_and_its_peers_as_json_and_as_a_table(tmp_path: Path) -> None:
    secret_file = tmp_path / "secret"
    secret_file.write_text(SECRET)
    auth = ("--secret-file", str(secret_file))
    with (
        ServeProcess("london", *auth, log=str(tmp_path / "london.log")) as london,
        ServeProcess("paris", "--peer", london.ws_url, *auth, log=str(tmp_path / "paris.log")) as paris,
    ):
        found = wait_for_status(
            paris.ws_url, lambda s: [p["state"] for p in s["peers"]] == ["up"] and s["ready"], *auth
        )
        assert set(found) == {
            "id", "origin", "version", "uptime", "started_at", "ready",
            "keys", "tombstones", "digest", "peers",
        }  # fmt: skip
        assert found["id"] == "paris" and found["origin"].startswith("paris")
        assert found["version"] == crdtkv.__version__  # the one source, also in a source tree
        assert found["uptime"] >= 0 and found["keys"] == 0
        [peer] = found["peers"]
        assert set(peer) == {
            "origin", "url", "direction", "state", "lag_seconds", "lacking", "last_ack_age",
            "sent_bytes", "received_bytes", "sent_entries", "received_entries", "last_error",
        }  # fmt: skip
        assert peer["origin"].startswith("london") and peer["direction"] == "out"
        assert peer["url"] == london.ws_url and peer["lag_seconds"] is not None
        # london sees paris as a peer that dialed in
        seen = wait_for_status(london.ws_url, lambda s: len(s["peers"]) == 1, *auth)
        assert seen["peers"][0]["direction"] == "in" and seen["peers"][0]["origin"] == found["origin"]

        put = subprocess.run(
            [sys.executable, "-m", "crdtkv.cli", "put", "--node", london.ws_url, *auth, "greeting", "hi"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert put.returncode == 0, put.stderr
        found = wait_for_status(paris.ws_url, lambda s: s["keys"] == 1, *auth)
        assert found["peers"][0]["received_entries"] >= 1
        assert found["digest"] == wait_for_status(london.ws_url, lambda s: True, *auth)["digest"]

        text = status(paris.ws_url, *auth)
        assert text.returncode == 0, text.stderr
        lines = text.stdout.splitlines()
        assert lines[0].startswith("node      paris (origin paris")
        assert any(line.startswith("uptime    ") for line in lines)
        assert "keys      1 (0 tombstones)" in lines
        assert f"digest    {found['digest']}" in lines
        header = next(line for line in lines if line.startswith("PEER"))
        assert header.split()[:4] == ["PEER", "DIR", "STATE", "LAG"]
        row = lines[lines.index(header) + 1].split()
        assert row[0] == peer["origin"] and row[1:3] == ["out", "up"]
    assert london.returncode == 0 and paris.returncode == 0


def test_status_of_a_node_without_the_secret_is_refused(tmp_path: Path) -> None:
    secret_file = tmp_path / "secret"
    secret_file.write_text(SECRET)
    with ServeProcess("london", "--secret-file", str(secret_file)) as london:
        done = status(london.ws_url)
        assert done.returncode == 2 and "Traceback" not in done.stderr
        assert done.stdout == ""

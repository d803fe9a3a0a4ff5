"""The ``crdtkv`` command as a new user meets it: exit codes, messages, serve, watch, put, keys, snapshot.

Every test runs the real command as a subprocess, against real ``crdtkv serve``
processes or an in-process Node on 127.0.0.1.
"""

from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import anyio
import pytest

from crdtkv import KvStore
from crdtkv.node import Node

from .test_processes import free_ports

GUARD = 60.0  # hang guard only
COMMAND = [sys.executable, "-m", "crdtkv.cli"]


def environment(**extra: str) -> dict[str, str]:
    """This process's environment without any CRDTKV_* variable, plus ``extra``."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("CRDTKV_")}
    env.update(extra)
    return env


def crdtkv(
    *args: str, cwd: Path | None = None, stdin: str | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*COMMAND, *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        input=stdin,
        env=env if env is not None else environment(),
        timeout=GUARD,
    )


async def crdtkv_async(*args: str) -> subprocess.CompletedProcess[bytes]:
    """Run the command without blocking the event loop (an in-process Node must keep serving)."""
    with anyio.fail_after(GUARD):
        return await anyio.run_process([*COMMAND, *args], check=False, env=environment())


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    """Assert exit code 2 with exactly one ``crdtkv: ...`` line on stderr; return it."""
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("crdtkv: "), result.stderr
    return lines[0]


class Serve:
    """A ``crdtkv serve`` process; the first stdout line says it is serving."""

    def __init__(self, *args: str, port: int | None = None, scheme: str = "ws") -> None:
        self.port = port or free_ports(1)[0]
        self.url = f"{scheme}://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [*COMMAND, "serve", "--id", "london", "--listen", self.url, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=environment(),
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        assert line.startswith("serving"), (line, self.process.stderr.read() if self.process.stderr else "")

    def stop(self, signum: int = signal.SIGTERM) -> tuple[int, str, str]:
        """Send ``signum``; the exit code and the rest of stdout and stderr."""
        if self.process.poll() is None:
            self.process.send_signal(signum)
        out, err = self.process.communicate(timeout=GUARD)
        return self.process.returncode, out, err


@contextmanager
def serving(*args: str, scheme: str = "ws") -> Iterator[Serve]:
    server = Serve(*args, scheme=scheme)
    try:
        yield server
    finally:
        if server.process.poll() is None:
            server.process.kill()
        server.process.communicate(timeout=GUARD)


@pytest.fixture
def secret_file(tmp_path: Path) -> Path:
    path = tmp_path / "secret"
    path.write_text("usage-secret\n")
    return path


# -- exit codes: 2 and one line for every error ------------------------------------------------


def _error_cases(tmp_path: Path) -> dict[str, tuple[list[str], str]]:
    store = KvStore.open("site")
    store.put("k", "v")
    (tmp_path / "good.snapshot").write_bytes(store.snapshot())
    (tmp_path / "empty").write_text("  \n")
    closed = f"ws://127.0.0.1:{free_ports(1)[0]}"
    return {
        "missing secret file": (
            ["get", "--node", closed, "--secret-file", str(tmp_path / "nope"), "k"],
            "cannot read secret file",
        ),
        "empty secret file": (
            ["get", "--node", closed, "--secret-file", str(tmp_path / "empty"), "k"],
            "empty",
        ),
        "merge into a missing directory": (
            ["merge", str(tmp_path / "good.snapshot"), "-o", str(tmp_path / "nodir" / "x")],
            "cannot write",
        ),
        "demo without views": (["demo", "--views", "0"], "at least 1 page view"),
        "show a missing file": (["show", str(tmp_path / "nope.snapshot")], "cannot read"),
        "no node": (["get", "k"], "CRDTKV_NODE"),
        "a URL without a scheme": (["get", "--node", "127.0.0.1:7001", "k"], "use ws://127.0.0.1:7001"),
        "an unreachable node": (
            ["get", "--node", closed, "--timeout", "5", "k"],
            f"cannot connect to {closed}",
        ),
        "serve with nothing to do": (["serve", "--id", "x"], "--listen URL"),
        "serve wss without a certificate": (
            ["serve", "--id", "x", "--listen", "wss://127.0.0.1:0"],
            "--tls-cert FILE --tls-key FILE",
        ),
        "serve a peer without a scheme": (
            ["serve", "--id", "x", "--peer", "localhost:7002"],
            "ws://localhost:7002",
        ),
    }


ERROR_NAMES = [
    "missing secret file",
    "empty secret file",
    "merge into a missing directory",
    "demo without views",
    "show a missing file",
    "no node",
    "a URL without a scheme",
    "an unreachable node",
    "serve with nothing to do",
    "serve wss without a certificate",
    "serve a peer without a scheme",
]


@pytest.mark.parametrize("case", ERROR_NAMES)
def test_every_error_exits_2_with_one_line_that_says_what_to_do(case: str, tmp_path: Path) -> None:
    args, expected = _error_cases(tmp_path)[case]
    line = one_error_line(crdtkv(*args, cwd=tmp_path))
    assert expected in line


def test_errors_a_node_reports_exit_2_with_one_line_and_a_missing_key_exits_1(
    secret_file: Path, tmp_path: Path
) -> None:
    wrong = tmp_path / "wrong"
    wrong.write_text("not-it")
    with serving("--secret-file", str(secret_file)) as server:
        node = ["--node", server.url, "--secret-file", str(secret_file)]
        assert crdtkv("put", *node, "name", "ana").returncode == 0
        missing = crdtkv("get", *node, "nope")
        assert missing.returncode == 1 and missing.stdout == "" and missing.stderr == ""
        assert "authentication failed" in one_error_line(
            crdtkv("get", "--node", server.url, "--secret-file", str(wrong), "name")
        )
        assert "store 'other'" in one_error_line(crdtkv("get", *node, "--store", "other", "name"))
        assert "ttl" in one_error_line(crdtkv("put", *node, "k", "v", "--ttl", "1e12"))
        assert "WrongType" in one_error_line(crdtkv("incr", *node, "name"))
        assert crdtkv("put", *node, "k", "v", "--ttl", "nan").returncode == 2  # argparse refuses it
        assert server.stop()[0] == 0


def test_ctrl_c_during_a_client_command_exits_2_without_a_traceback() -> None:
    with socket.create_server(("127.0.0.1", 0)) as silent:  # takes the connection, never answers
        url = f"ws://127.0.0.1:{silent.getsockname()[1]}"
        silent.settimeout(GUARD)
        process = subprocess.Popen(
            [*COMMAND, "get", "--node", url, "--timeout", "600", "k"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=environment(),
        )
        try:
            connection, _ = silent.accept()  # the client is now waiting for the upgrade
            with connection:
                process.send_signal(signal.SIGINT)
                _, err = process.communicate(timeout=GUARD)
        finally:
            if process.poll() is None:
                process.kill()
                process.communicate()
    assert process.returncode == 2, err
    assert err == "crdtkv: interrupted\n"


# -- environment variables ------------------------------------------------------------------


def test_crdtkv_node_and_crdtkv_secret_file_stand_in_for_the_flags(secret_file: Path) -> None:
    with serving("--secret-file", str(secret_file)) as server:
        env = environment(CRDTKV_NODE=server.url, CRDTKV_SECRET_FILE=str(secret_file))
        assert crdtkv("put", "greeting", "hello", env=env).returncode == 0
        result = crdtkv("get", "greeting", env=env)
        assert (result.returncode, result.stdout) == (0, "hello\n")
        # a flag still wins over the variable
        bad = crdtkv("get", "--node", "ws://127.0.0.1:1", "greeting", env=env)
        assert "ws://127.0.0.1:1" in one_error_line(bad)
    for command in (["--help"], ["get", "--help"], ["serve", "--help"]):
        text = crdtkv(*command).stdout
        assert "CRDTKV_SECRET_FILE" in text
        if command != ["serve", "--help"]:
            assert "CRDTKV_NODE" in text


# -- serve -------------------------------------------------------------------------------------


def test_serve_warns_when_no_secret_is_set(secret_file: Path) -> None:
    with serving() as open_node:
        code, _, err = open_node.stop()
    assert code == 0
    warning = [line for line in err.splitlines() if "no shared secret" in line]
    assert (
        warning and "WARNING" in warning[0] and open_node.url in warning[0] and "--secret-file" in warning[0]
    )
    with serving("--secret-file", str(secret_file)) as closed_node:
        code, _, err = closed_node.stop()
    assert code == 0 and "no shared secret" not in err


def test_sighup_stops_serve_like_sigterm_flushing_its_data(secret_file: Path, tmp_path: Path) -> None:
    data = tmp_path / "london.db"
    with serving("--secret-file", str(secret_file), "--data", str(data)) as server:
        node = ["--node", server.url, "--secret-file", str(secret_file)]
        assert crdtkv("put", *node, "greeting", "hello").returncode == 0
        assert crdtkv("incr", *node, "views", "5").stdout == "5\n"
        code, out, err = server.stop(signal.SIGHUP)
    assert code == 0, err
    assert "stopped; digest" in out and "Traceback" not in err
    with KvStore.open("default", path=str(data)) as reopened:
        assert reopened.get("greeting") == "hello" and reopened.get("views") == 5


def test_serve_wss_without_tls_ca_and_ws_wss_mismatches_point_at_the_fix(
    certificate: tuple[Path, Path],
) -> None:
    cert, key = certificate
    with (
        serving("--tls-cert", str(cert), "--tls-key", str(key), scheme="wss") as tls_node,
        serving() as plain_node,
    ):
        as_ws = tls_node.url.replace("wss://", "ws://")
        line = one_error_line(crdtkv("get", "--node", as_ws, "k"))
        assert f"use {tls_node.url}" in line and "--tls-ca" in line
        as_wss = plain_node.url.replace("ws://", "wss://")
        line = one_error_line(crdtkv("get", "--node", as_wss, "--tls-ca", str(cert), "k"))
        assert f"use {plain_node.url}" in line
        line = one_error_line(crdtkv("get", "--node", tls_node.url, "k"))
        assert "--tls-ca" in line
        assert crdtkv("get", "--node", tls_node.url, "--tls-ca", str(cert), "k").returncode == 1


# -- watch ends when the node stops -------------------------------------------------------------


def test_watch_exits_2_with_one_line_when_the_node_stops() -> None:
    with serving() as server:
        watcher = subprocess.Popen(
            [*COMMAND, "watch", "--node", server.url, "flag:"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=environment(),
        )
        try:
            assert watcher.stdout is not None
            deadline = time.monotonic() + GUARD
            first = ""
            while not first:  # the watch is registered once the node answers: poke until a change shows
                assert time.monotonic() < deadline, "the watch never printed a change"
                assert crdtkv("put", "--node", server.url, "flag:dark", "on").returncode == 0
                if select.select([watcher.stdout], [], [], 0.5)[0]:
                    first = watcher.stdout.readline()
            assert first == "flag:dark\ton\n"
            code, _, _ = server.stop(signal.SIGTERM)
            assert code == 0
            _, err = watcher.communicate(timeout=GUARD)  # before, it hung here forever
        finally:
            if watcher.poll() is None:
                watcher.kill()
                watcher.communicate()
    assert watcher.returncode == 2, err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("crdtkv: ") and "closed the link" in lines[0], err


# -- put: JSON, metadata, stdin --------------------------------------------------------------------


def test_put_json_metadata_and_stdin(secret_file: Path, tmp_path: Path) -> None:
    with serving("--secret-file", str(secret_file)) as server:
        node = ["--node", server.url, "--secret-file", str(secret_file)]
        config = '{"tier": "gold", "limits": [1, 2.5], "beta": true, "owner": null}'
        assert crdtkv("put", *node, "config", config, "--json", "--metadata", '{"by": "ana"}').returncode == 0
        assert crdtkv("put", *node, "flag:on", "true", "--json").returncode == 0
        assert crdtkv("put", *node, "n", "42", "--json").returncode == 0
        assert crdtkv("put", *node, "text", "-", stdin="two\nlines\n").returncode == 0
        assert crdtkv("put", *node, "piped", "-", "--json", stdin='{"from": "stdin"}\n').returncode == 0
        assert crdtkv("put", *node, "plain", "42").returncode == 0  # without --json: the string "42"
        assert "not valid JSON" in one_error_line(crdtkv("put", *node, "bad", "{oops", "--json"))
        assert "--metadata" in one_error_line(crdtkv("put", *node, "bad", "v", "--metadata", "[1]"))
        assert "not valid JSON" in one_error_line(crdtkv("put", *node, "bad", "v", "--metadata", "{"))
        assert crdtkv("get", *node, "--json", "plain").stdout == '"42"\n'
        assert crdtkv("get", *node, "--json", "text").stdout == '"two\\nlines\\n"\n'
        assert crdtkv("snapshot", *node, "-o", str(tmp_path / "s.snapshot")).returncode == 0
    store = KvStore.from_snapshot((tmp_path / "s.snapshot").read_bytes())
    record = store.get_with_metadata("config")
    assert record is not None
    assert record.value == {"tier": "gold", "limits": [1, 2.5], "beta": True, "owner": None}
    assert record.metadata == {"by": "ana"}
    assert store.get("flag:on") is True and store.get("n") == 42 and store.get("plain") == "42"
    assert store.get("text") == "two\nlines\n" and store.get("piped") == {"from": "stdin"}
    assert store.get("bad") is None


# -- keys pages through everything; snapshot of a large store --------------------------------------


@pytest.mark.anyio
async def test_keys_prints_every_key_and_limit_prints_a_cursor_that_continues() -> None:
    store = KvStore.open("default", replica_id="server")
    keys = [f"user:{i:05d}" for i in range(12_500)]  # more than one page (10,000) and one reply
    for key in keys:
        store.put(key, 1)
    store.put("other", 1)
    async with Node(store, listen="ws://127.0.0.1:0") as node:
        url = node.url or ""
        every = await crdtkv_async("keys", "--node", url, "user:")
        assert every.returncode == 0, every.stderr
        assert every.stdout.decode().splitlines() == keys
        head = await crdtkv_async("keys", "--node", url, "--limit", "4000", "user:")
        assert head.returncode == 0
        assert head.stdout.decode().splitlines() == keys[:4000]
        cursor = head.stderr.decode().split("--cursor ")[1].split()[0]
        rest = await crdtkv_async("keys", "--node", url, "--cursor", cursor, "user:")
        assert rest.stdout.decode().splitlines() == keys[4000:]
        last = await crdtkv_async("keys", "--node", url, "--limit", "20000", "user:")
        assert last.returncode == 0 and last.stderr == b""  # all fit: no cursor


@pytest.mark.anyio
async def test_snapshot_of_a_store_larger_than_one_message_feeds_show_and_merge(tmp_path: Path) -> None:
    store = KvStore.open("default", replica_id="server")
    for i in range(300):
        store.put(f"blob:{i:03d}", "x" * 8000)  # 2.4 MB: more than two 1 MiB messages
    store.incr("views", 3)
    other = KvStore.open("default", replica_id="other")
    other.incr("views", 4)
    (tmp_path / "other.snapshot").write_bytes(other.snapshot())
    out = tmp_path / "node.snapshot"
    async with Node(store, listen="ws://127.0.0.1:0") as node:
        result = await crdtkv_async("snapshot", "--node", node.url or "", "-o", str(out))
        assert result.returncode == 0, result.stderr
        assert f"digest {store.digest()}" in result.stdout.decode()
        assert node.snapshot_bytes_held == 0  # read to the end: the node holds nothing for it
    assert out.stat().st_size > 2 * store.limits.max_message_bytes
    assert KvStore.from_snapshot(out.read_bytes()).digest() == store.digest()
    shown = crdtkv("show", str(out), "views")
    assert shown.stdout == "views\t3\n"
    assert len(crdtkv("show", str(out)).stdout.splitlines()) == 301
    merged = crdtkv("merge", str(out), str(tmp_path / "other.snapshot"), "-o", str(tmp_path / "merged"))
    assert merged.returncode == 0, merged.stderr
    assert crdtkv("show", str(tmp_path / "merged"), "views").stdout == "views\t7\n"
    store.merge(other)
    assert KvStore.from_snapshot((tmp_path / "merged").read_bytes()).digest() == store.digest()

"""A real `crdtkv serve --resp` process with real clients: redis-cli (one-shot, ``-a``, ``--scan``,
and interactive on a terminal, where it reads COMMAND DOCS for its help) and redis-py."""

from __future__ import annotations

import os
import pty
import re
import select
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from .helpers import ServeProcess

SECRET = "cli-secret"
REDIS_CLI = shutil.which("redis-cli")
needs_redis_cli = pytest.mark.skipif(
    REDIS_CLI is None, reason="redis-cli (Debian redis-tools) is not installed"
)


@pytest.fixture(scope="module")
def open_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    log = tmp_path_factory.mktemp("resp-open") / "serve.log"
    with ServeProcess("resp-open", "--resp", "127.0.0.1:0", log=str(log)) as node:
        yield node


@pytest.fixture(scope="module")
def secret_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    directory = tmp_path_factory.mktemp("resp-secret")
    secret_file = directory / "secret"
    secret_file.write_text(SECRET)
    with ServeProcess(
        "resp-secret",
        "--resp",
        "127.0.0.1:0",
        "--secret-file",
        str(secret_file),
        log=str(directory / "serve.log"),
    ) as node:
        yield node


def cli(node: ServeProcess, *args: str) -> str:
    """redis-cli's output for one command (not a terminal: raw replies, one per line)."""
    assert REDIS_CLI is not None and node.resp_port is not None
    done = subprocess.run(
        [REDIS_CLI, "-h", "127.0.0.1", "-p", str(node.resp_port), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return (done.stdout + done.stderr).strip()


@needs_redis_cli
def test_redis_cli_commands(open_node: ServeProcess) -> None:
    assert cli(open_node, "PING") == "PONG"
    assert cli(open_node, "SET", "greeting", "hello") == "OK"
    assert cli(open_node, "GET", "greeting") == "hello"
    assert cli(open_node, "SET", "greeting", "again", "NX") == ""  # nil
    assert cli(open_node, "INCRBY", "views", "5") == "5"
    assert cli(open_node, "GET", "views") == "5"
    assert cli(open_node, "INCR", "greeting").startswith("WRONGTYPE ")
    assert cli(open_node, "EXPIRE", "greeting", "100") == "1"
    assert cli(open_node, "TTL", "greeting") in ("99", "100")
    assert cli(open_node, "TYPE", "views") == "counter"
    assert cli(open_node, "-r", "3", "INCR", "repeat").split() == ["1", "2", "3"]
    assert cli(open_node, "FLUSHALL").startswith("ERR unknown command 'FLUSHALL'")
    assert cli(open_node, "SELECT", "1") == "ERR DB index is out of range"
    assert cli(open_node, "-3", "GET", "greeting") == "hello"  # RESP3 (HELLO 3 first)
    assert int(cli(open_node, "COMMAND", "COUNT")) > 30
    assert "redis_version:" in cli(open_node, "INFO")
    assert "# Replication" in cli(open_node, "INFO", "replication")


@needs_redis_cli
def test_redis_cli_scan_walks_every_key(open_node: ServeProcess) -> None:
    keys = [f"scan:{i:04d}" for i in range(250)]
    assert cli(open_node, "MSET", *[part for key in keys for part in (key, "v")]) == "OK"
    scanned = cli(open_node, "--scan", "--pattern", "scan:*").split()
    assert sorted(scanned) == keys
    assert sorted(cli(open_node, "KEYS", "scan:01*").split()) == keys[100:200]


@needs_redis_cli
def test_redis_cli_with_a_password(secret_node: ServeProcess) -> None:
    assert cli(secret_node, "GET", "k") == "NOAUTH Authentication required."
    assert cli(secret_node, "--no-auth-warning", "-a", SECRET, "SET", "k", "v") == "OK"
    assert cli(secret_node, "--no-auth-warning", "-a", SECRET, "GET", "k") == "v"
    assert cli(secret_node, "--no-auth-warning", "--user", "default", "--pass", SECRET, "GET", "k") == "v"
    assert "WRONGPASS" in cli(secret_node, "--no-auth-warning", "-a", "wrong", "GET", "k")
    assert cli(secret_node, "--no-auth-warning", "-3", "-a", SECRET, "GET", "k") == "v"


def interactive(node: ServeProcess, lines: list[str], *options: str) -> str:
    """Everything an interactive redis-cli (on a terminal) shows for ``lines`` typed, then ``quit``."""
    assert REDIS_CLI is not None and node.resp_port is not None
    main, side = pty.openpty()
    env = {
        **os.environ,
        "TERM": "dumb",
        "HOME": os.environ.get("HOME", "/tmp"),
        "REDISCLI_HISTFILE": "/dev/null",
    }
    child = subprocess.Popen(
        [REDIS_CLI, "-h", "127.0.0.1", "-p", str(node.resp_port), *options],
        stdin=side,
        stdout=side,
        stderr=side,
        env=env,
        close_fds=True,
    )
    os.close(side)
    output = b""
    try:
        for line in [*lines, "quit"]:
            os.write(main, line.encode() + b"\r")
        deadline = time.monotonic() + 60  # a hang guard
        while child.poll() is None or select.select([main], [], [], 0)[0]:
            if time.monotonic() > deadline:
                raise AssertionError(f"interactive redis-cli did not finish: {output!r}")
            ready, _, _ = select.select([main], [], [], 0.1)
            if ready:
                try:
                    chunk = os.read(main, 65536)
                except OSError:  # the terminal closed with the child
                    break
                if not chunk:
                    break
                output += chunk
    finally:
        if child.poll() is None:
            child.kill()
        child.wait(timeout=30)
        os.close(main)
    return re.sub(r"\x1b\[[0-9;]*m", "", output.decode("utf-8", "replace"))  # without colours


@needs_redis_cli
def test_interactive_redis_cli_reads_command_docs_for_help(open_node: ServeProcess) -> None:
    shown = interactive(open_node, ["SET shell hello", "GET shell", "HELP SET", "HELP @string", "INCR shell"])
    assert '"hello"' in shown
    # HELP comes from the face's COMMAND DOCS (redis-cli's own table would say "Set the string value")
    assert "SET key value [NX|XX] [GET] [EX seconds|PX milliseconds|" in shown
    assert "summary: Sets the value of a key" in shown
    assert "group: string" in shown
    assert "INCRBY key increment" in shown  # listed by HELP @string
    assert "(error) WRONGTYPE" in shown


@needs_redis_cli
def test_interactive_redis_cli_with_a_password(secret_node: ServeProcess) -> None:
    shown = interactive(secret_node, ["SET who me", "GET who", "HELP GET"], "--no-auth-warning", "-a", SECRET)
    assert '"me"' in shown
    assert "summary: Returns the value of a key" in shown


@pytest.mark.parametrize("protocol", [2, 3], ids=["resp2", "resp3"])
def test_redis_py_against_a_serve_process(secret_node: ServeProcess, protocol: int) -> None:
    assert secret_node.resp_port is not None
    r = redis.Redis(host="127.0.0.1", port=secret_node.resp_port, password=SECRET, protocol=protocol)
    try:
        assert r.set(f"py:{protocol}", "value") is True
        assert r.get(f"py:{protocol}") == b"value"
        assert r.incr(f"py:n:{protocol}") == 1
        pipe = r.pipeline(transaction=False)
        for _ in range(100):
            pipe.incr(f"py:n:{protocol}")
        assert pipe.execute() == list(range(2, 102))
        assert r.info("server")["crdtkv_version"]
    finally:
        r.close()


def test_a_taken_resp_port_fails_serve(open_node: ServeProcess, tmp_path: Path) -> None:
    """A second node asking for the same RESP address exits with an error, not a traceback."""
    from .helpers import serve_command

    done = subprocess.run(
        serve_command("taken", "ws://127.0.0.1:0", "--resp", f"127.0.0.1:{open_node.resp_port}"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    assert "resp" in done.stderr.lower() or str(open_node.resp_port) in done.stderr

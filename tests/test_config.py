"""``crdtkv serve`` configuration: a TOML file, CRDTKV_* variables and flags, and JSON logs."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from crdtkv.config import TABLES, ConfigError, load_config, resolve

from .helpers import ServeProcess

#: Fields no table may set (derived from other options).
DERIVED = {"node": {"sync", "transport"}, "transport": {"ssl_context", "server_ssl_context"}}


def changed_values() -> dict[str, dict[str, Any]]:
    """For every table, every settable field at a valid value other than its default."""
    tables: dict[str, dict[str, Any]] = {}
    for table, cls in TABLES.items():
        defaults = cls()
        values: dict[str, Any] = {}
        for field in dataclasses.fields(cls):
            if field.name in DERIVED.get(table, set()):
                continue
            default = getattr(defaults, field.name)
            if isinstance(default, bool):
                values[field.name] = not default
            elif isinstance(default, int):
                values[field.name] = default + 1
            elif isinstance(default, float):
                values[field.name] = default * 2 if default else 0.0
            else:
                raise AssertionError(f"no test value for {table}.{field.name} = {default!r}")
        tables[table] = values
    # Limits: a message must still hold the largest entry
    tables["limits"]["max_message_bytes"] *= 2
    return tables


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    return repr(value)


def write_toml(path: Path, top: dict[str, Any], tables: dict[str, dict[str, Any]]) -> Path:
    lines = [f"{key} = {toml_value(value)}" for key, value in top.items()]
    for table, values in tables.items():
        lines.append(f"[{table}]")
        lines.extend(f"{key} = {toml_value(value)}" for key, value in values.items())
    path.write_text("\n".join(lines) + "\n")
    return path


def test_every_field_of_every_table_is_read(tmp_path: Path) -> None:
    tables = changed_values()
    path = write_toml(tmp_path / "all.toml", {"id": "london", "listen": "ws://127.0.0.1:0"}, tables)
    config = resolve({}, {}, str(path))
    read = {
        "node": config.node,
        "sync": config.node.sync,
        "transport": config.node.transport,
        "limits": config.limits,
        "http": config.http_settings,
        "resp": config.resp_settings,
    }
    for table, values in tables.items():
        for key, value in values.items():
            assert getattr(read[table], key) == value, (table, key)


def test_flags_beat_the_environment_which_beats_the_file(tmp_path: Path) -> None:
    path = write_toml(
        tmp_path / "c.toml",
        {"id": "file", "store": "file", "data": "file.db", "peers": ["ws://f:1"], "log_format": "json"},
        {},
    )
    environ = {"CRDTKV_ID": "env", "CRDTKV_STORE": "env", "CRDTKV_PEERS": "ws://e:1, ws://e:2"}
    flags: dict[str, Any] = {"id": "flag", "peers": [], "verbose": False, "http": None}
    config = resolve(flags, environ, str(path))
    assert config.id == "flag"  # flag over env over file
    assert config.store == "env"  # env over file
    assert config.data == "file.db" and config.log_format == "json"  # file over default
    assert config.peers == ["ws://e:1", "ws://e:2"]
    assert resolve({"peers": ["ws://x:1"]}, environ, str(path)).peers == ["ws://x:1"]
    # the file may come from CRDTKV_CONFIG
    assert resolve({}, {"CRDTKV_CONFIG": str(path)}).id == "file"
    assert resolve({}, {}).id is None and resolve({}, {}).durability == "batch"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[sync]\nbatch_windw = 0.01\n", ["[sync]", "'batch_windw'", "batch_window"]),
        ("[node]\nmax_connections = 'many'\n", ["[node]", "max_connections must be an integer", "'many'"]),
        ("[node]\nmax_connections = true\n", ["[node]", "max_connections must be an integer"]),
        ("[limits]\ngc_grace = 'a day'\n", ["[limits]", "gc_grace must be a number"]),
        ("[transport]\nssl_context = 'x'\n", ["[transport]", "'ssl_context'"]),
        ("[transport]\nping_interval = 'never'\n", ["[transport]", "ping_interval must be a number"]),
        ("[http]\nlisten = 8080\n", ["[http]", "listen must be a string"]),
        ("[resp]\nmax_frame_bytes = 0\n", ["[resp]", "max_frame_bytes must be positive"]),
        ("[node]\nsync = 1\n", ["[node]", "'sync'"]),
        ("colour = 'blue'\n", ["unknown key 'colour'"]),
        ("peers = 'ws://a:1'\n", ["peers must be an array of strings"]),
        ("id = 7\n", ["id must be a string"]),
        ("sync = 1\n", ["[sync] must be a table"]),
        ("id = \n", ["not valid TOML"]),
    ],
)
def test_a_wrong_key_or_type_is_refused_naming_file_table_and_key(
    tmp_path: Path, text: str, expected: list[str]
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert str(path) in message
    for part in expected:
        assert part in message


def test_bad_values_from_the_environment_are_refused() -> None:
    with pytest.raises(ConfigError, match="log format"):
        resolve({}, {"CRDTKV_LOG_FORMAT": "xml"})
    with pytest.raises(ConfigError, match="HOST:PORT"):
        resolve({}, {"CRDTKV_HTTP": "localhost"})


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "crdtkv.cli", *args], capture_output=True, text=True, timeout=60, env=env
    )


def test_serve_refuses_a_bad_config_file_with_one_line_and_exit_2(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[sync]\nbatch_window = 'soon'\n")
    done = run_cli("serve", "--id", "x", "--listen", "ws://127.0.0.1:0", "--config", str(path))
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert f"{path} [sync]: batch_window must be a number" in done.stderr


@pytest.mark.parametrize("flag", ["--http", "--resp"])
@pytest.mark.parametrize("address", ["localhost", "127.0.0.1:http", ":80", "127.0.0.1:70000"])
def test_a_bad_face_address_is_a_usage_error(flag: str, address: str) -> None:
    done = run_cli("serve", "--id", "x", "--listen", "ws://127.0.0.1:0", flag, address)
    assert done.returncode == 2
    assert "usage:" in done.stderr and "HOST:PORT" in done.stderr and "Traceback" not in done.stderr


def test_serve_takes_file_env_and_flags_in_order_starts_the_faces_and_logs_json(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_toml(
        tmp_path / "pop.toml",
        {"id": "from-file", "store": "filestore", "log_format": "json", "resp": "127.0.0.1:0"},
        {"http": {"listen": "127.0.0.1:0", "max_connections": 8}, "node": {"gc_interval": 30.0}},
    )
    monkeypatch.setenv("CRDTKV_ID", "from-env")
    monkeypatch.setenv("CRDTKV_STORE", "envstore")
    monkeypatch.setenv("CRDTKV_LISTEN", "ws://127.0.0.1:0")
    log = tmp_path / "serve.log"
    node = ServeProcess("unused", log=str(log))
    node.args = [sys.executable, "-m", "crdtkv.cli", "serve", "--config", str(path), "--store", "flagstore"]
    with node:
        assert node.http_url is not None and node.http_url.startswith("http://127.0.0.1:")
        assert node.resp_port is not None
        with httpx.Client(base_url=node.http_url, timeout=30) as http:
            metrics = http.get("/metrics")
            assert metrics.status_code == 200
            assert 'crdtkv_info{id="from-env"' in metrics.text
            assert http.get("/readyz").status_code == 200  # no peers: ready once serving
        done = run_cli("status", "--node", node.ws_url, "--store", "flagstore", "--json")
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["id"] == "from-env"
    assert node.returncode == 0
    records = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    assert records
    for record in records:
        assert {"time", "level", "logger", "message", "node"} <= set(record)
        assert record["node"] == "from-env"
    assert any(r["level"] == "WARNING" and "no shared secret" in r["message"] for r in records)


def test_serve_prints_the_face_lines_before_the_serving_line(tmp_path: Path) -> None:
    with ServeProcess("x", "--http", "127.0.0.1:0", "--resp", "127.0.0.1:0") as node:
        assert node.http_url is not None and node.resp_port is not None and node.ws_url
    node = ServeProcess("x", "--http", "127.0.0.1:0", "--resp", "127.0.0.1:0")
    process = subprocess.Popen(node.args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert process.stdout is not None
        lines = [process.stdout.readline() for _ in range(3)]
    finally:
        process.terminate()
        process.wait(timeout=30)
        if process.stdout is not None:
            process.stdout.close()
    assert lines[0].startswith("http on http://127.0.0.1:")
    assert lines[1].startswith("resp on redis://127.0.0.1:")
    assert lines[2].startswith("serving store 'default' as x")

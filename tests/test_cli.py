"""The crdtkv command line, run as a real subprocess."""

from __future__ import annotations

import select
import signal
import subprocess
import sys
import time
from pathlib import Path

from crdtkv import KvStore

from .helpers import serve_command

ROOT = Path(__file__).resolve().parent.parent


def crdtkv(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "crdtkv.cli", *args], capture_output=True, text=True, cwd=cwd, timeout=120
    )


def test_offline_merge_of_snapshot_files(tmp_path: Path) -> None:
    london = KvStore.open("site", replica_id="london")
    sydney = KvStore.open("site", replica_id="sydney")
    london.put("flag:dark-mode", True)
    london.incr("views", 3)
    sydney.incr("views", 4)
    sydney.put("config", {"tier": "gold"})
    (tmp_path / "a.snapshot").write_bytes(london.snapshot())
    (tmp_path / "b.snapshot").write_bytes(sydney.snapshot())
    result = crdtkv("merge", "a.snapshot", "b.snapshot", "-o", "out.snapshot", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    merged = KvStore.from_snapshot((tmp_path / "out.snapshot").read_bytes())
    assert merged.get("views") == 7
    assert merged.get("flag:dark-mode") is True
    assert merged.get("config") == {"tier": "gold"}
    london.merge(sydney)
    assert merged.digest() == london.digest()
    assert london.digest() in result.stdout

    shown = crdtkv("show", "out.snapshot", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.splitlines() == ['config\t{"tier": "gold"}', "flag:dark-mode\ttrue", "views\t7"]


def test_merge_refuses_damaged_or_foreign_snapshots(tmp_path: Path) -> None:
    good = KvStore.open("site")
    good.put("k", "v")
    data = good.snapshot()
    (tmp_path / "good.snapshot").write_bytes(data)
    (tmp_path / "cut.snapshot").write_bytes(data[:-3])
    other = KvStore.open("another-store")
    other.put("k", "v")
    (tmp_path / "other.snapshot").write_bytes(other.snapshot())
    cut = crdtkv("merge", "good.snapshot", "cut.snapshot", "-o", "out.snapshot", cwd=tmp_path)
    assert cut.returncode == 2
    assert "corrupted" in cut.stderr
    foreign = crdtkv("merge", "good.snapshot", "other.snapshot", "-o", "out.snapshot", cwd=tmp_path)
    assert foreign.returncode == 2
    assert "another-store" in foreign.stderr
    missing = crdtkv("merge", "nope.snapshot", "-o", "out.snapshot", cwd=tmp_path)
    assert missing.returncode == 2
    assert "cannot read" in missing.stderr
    assert not (tmp_path / "out.snapshot").exists()


def test_demo_shows_lost_read_modify_write_increments_and_exact_incr() -> None:
    result = crdtkv("demo", "--views", "3000", "--seconds", "1")
    assert result.returncode == 0, result.stderr
    lines = {line.split(":")[0].strip(): line for line in result.stdout.splitlines() if ":" in line}
    assert "3,000  (0 increments lost)" in lines["incr counter"]
    assert "(0 increments lost" not in lines["read-modify-write counter"]
    assert "all PoPs converged" in result.stdout
    assert "p99" in lines["propagation London -> Sydney/New York"]


def test_demo_with_a_simulated_wan_delay() -> None:
    result = crdtkv("demo", "--views", "1500", "--seconds", "1", "--wan-delay", "30")
    assert result.returncode == 0, result.stderr
    assert "30 ms one-way" in result.stdout
    line = next(line for line in result.stdout.splitlines() if "propagation" in line)
    p50 = float(line.split("p50 ")[1].split(" ms")[0])
    assert p50 >= 30  # a message cannot arrive before the link delay
    assert "1,500  (0 increments lost)" in result.stdout


def test_page_views_example_runs() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "page_views.py")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "incr counter              8,500 (0 increments lost)" in result.stdout
    classic = next(line for line in result.stdout.splitlines() if line.startswith("read-modify-write"))
    assert "(0 increments lost)" not in classic


def test_client_commands_against_a_serving_node(tmp_path: Path) -> None:
    from .test_processes import free_ports

    secret = tmp_path / "secret"
    secret.write_text("cli-secret\n")
    wrong = tmp_path / "wrong"
    wrong.write_text("not-the-secret\n")
    port = free_ports(1)[0]
    url = f"ws://127.0.0.1:{port}"
    server = subprocess.Popen(
        serve_command("london", url, "--secret-file", str(secret)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        assert server.stdout.readline().startswith("serving store 'default' as london~")
        node = ["--node", url, "--secret-file", str(secret)]
        assert crdtkv("put", *node, "greeting", "hello").returncode == 0
        assert crdtkv("get", *node, "greeting").stdout == "hello\n"
        missing = crdtkv("get", *node, "nope")
        assert missing.returncode == 1 and missing.stdout == ""
        assert crdtkv("incr", *node, "views").stdout == "1\n"
        assert crdtkv("incr", *node, "views", "41").stdout == "42\n"
        assert crdtkv("get", *node, "views").stdout == "42\n"
        assert crdtkv("keys", *node).stdout == "greeting\nviews\n"
        wrong_type = crdtkv("incr", *node, "greeting")
        assert wrong_type.returncode == 2 and "WrongType" in wrong_type.stderr
        assert crdtkv("del", *node, "greeting").returncode == 0
        assert crdtkv("get", *node, "greeting").returncode == 1
        assert len(crdtkv("digest", *node).stdout.strip()) == 64
        refused = crdtkv("get", "--node", url, "--secret-file", str(wrong), "views")
        assert refused.returncode == 2 and "authentication failed" in refused.stderr
        nobody = crdtkv("get", "--node", "ws://127.0.0.1:1", "--timeout", "2", "views")
        assert nobody.returncode == 2 and "ws://127.0.0.1:1" in nobody.stderr
    finally:
        server.terminate()
        _, stderr = server.communicate(timeout=10)
    assert server.returncode == 0, stderr
    assert "Traceback" not in stderr


def test_watch_command_prints_changes(tmp_path: Path) -> None:
    from .test_processes import free_ports

    port = free_ports(1)[0]
    url = f"ws://127.0.0.1:{port}"
    server = subprocess.Popen(
        serve_command("london", url),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    watcher = None
    try:
        assert server.stdout is not None and server.stdout.readline().startswith("serving")
        watcher = subprocess.Popen(
            [sys.executable, "-m", "crdtkv.cli", "watch", "--node", url, "flag:"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        lines: list[str] = []
        assert watcher.stdout is not None
        # the watch is registered once the node answers; poke until the first change shows up
        assert crdtkv("put", "--node", url, "flag:dark", "on").returncode == 0
        deadline = time.monotonic() + 20
        while not lines and time.monotonic() < deadline:
            if select.select([watcher.stdout], [], [], 0.5)[0]:
                lines.append(watcher.stdout.readline().strip())
            else:
                crdtkv("put", "--node", url, "flag:dark", "on")
        assert crdtkv("del", "--node", url, "flag:dark").returncode == 0
        while len(lines) < 2 or lines[-1] != "flag:dark\t(deleted)":
            assert time.monotonic() < deadline, lines
            lines.append(watcher.stdout.readline().strip())
        assert lines[0] == "flag:dark\ton"
        watcher.send_signal(signal.SIGTERM)
        assert watcher.wait(timeout=10) == 0
    finally:
        if watcher is not None:
            if watcher.poll() is None:
                watcher.kill()
            watcher.communicate(timeout=10)
        server.terminate()
        server.communicate(timeout=10)


def test_serve_and_clients_over_wss(certificate: tuple[Path, Path]) -> None:
    from .test_processes import free_ports

    cert, key = certificate
    ports = free_ports(2)
    hub_url, edge_url = (f"wss://127.0.0.1:{port}" for port in ports)
    tls = ["--tls-cert", str(cert), "--tls-key", str(key), "--tls-ca", str(cert)]
    servers = []
    try:
        for name, url, peers in (("london", hub_url, []), ("sydney", edge_url, ["--peer", hub_url])):
            server = subprocess.Popen(
                serve_command(name, url, *tls, *peers),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            servers.append(server)
            assert server.stdout is not None and server.stdout.readline().startswith("serving")
        assert crdtkv("incr", "--node", edge_url, "--tls-ca", str(cert), "views").stdout == "1\n"
        deadline = time.monotonic() + 20
        while crdtkv("get", "--node", hub_url, "--tls-ca", str(cert), "views").stdout != "1\n":
            assert time.monotonic() < deadline, "the write did not replicate over wss"
            time.sleep(0.05)
        untrusted = crdtkv("get", "--node", hub_url, "--timeout", "3", "views")  # no --tls-ca
        assert untrusted.returncode == 2 and "certificate" in untrusted.stderr.lower()
    finally:
        for server in servers:
            server.terminate()
            server.communicate(timeout=10)

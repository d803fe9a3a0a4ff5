"""A regional hub: the defaults and the process limits let one node serve 1,000 PoPs."""

from __future__ import annotations

import resource
import shlex
import subprocess
from pathlib import Path

import anyio
import pytest

from crdtkv import NodeSettings

from .helpers import serve_command
from .storage.serve import START_TIMEOUT


def soft_open_files(pid: int) -> int:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            return int(line.split()[3])
    raise AssertionError("no open-file limit in /proc")


def test_the_default_connection_cap_fits_a_hub_of_1000_pops() -> None:
    settings = NodeSettings()
    assert settings.max_connections >= 1000


def test_serve_raises_a_low_open_file_limit_to_fit_max_connections(tmp_path: Path) -> None:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    wanted = NodeSettings().max_connections + NodeSettings().max_handshaking
    if hard != resource.RLIM_INFINITY and hard < wanted + 64:
        pytest.skip(f"the hard open-file limit here ({hard}) is below what a hub needs")

    serve = "exec " + shlex.join(serve_command("hub", "ws://127.0.0.1:0"))
    process = subprocess.Popen(
        ["sh", "-c", f"ulimit -Sn 256 && {serve}"],  # a common default soft limit is 1,024
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()  # "serving ..." once the limit was raised
        assert line.startswith("serving"), line
        assert soft_open_files(process.pid) >= wanted
    finally:
        process.terminate()
        process.communicate(timeout=START_TIMEOUT)


@pytest.mark.anyio
async def test_a_large_catch_up_freezes_what_the_collector_tracks(monkeypatch: pytest.MonkeyPatch) -> None:
    """After a large merge the node calls gc.freeze(): the collector stops walking those objects."""
    import gc

    import crdtkv.node
    from crdtkv import KvStore, Node

    monkeypatch.setattr(crdtkv.node, "FREEZE_AFTER_ENTRIES", 500)
    gc.unfreeze()
    source = KvStore.open("t", replica_id="source")
    for i in range(2000):
        source.put(f"k{i}", i)
    copy = KvStore.open("t", replica_id="copy")
    try:
        async with Node(source, listen="memory://freeze-source") as hub, Node(copy, peers=[hub.url or ""]):
            with anyio.fail_after(30):
                while copy.get("k1999") != 1999:
                    await anyio.sleep(0.01)
            assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()

import subprocess
import sys

FORBIDDEN = ("asyncio", "anyio", "socket", "selectors", "trio", "threading", "ssl", "websockets")


def test_core_imports_no_event_loop_or_socket_module() -> None:
    code = (
        "import sys, crdtkv.core, crdtkv.store\n"
        f"bad = [m for m in {FORBIDDEN!r} if m in sys.modules]\n"
        "print(','.join(bad))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ""


def test_registers_and_counters_never_load_pycrdt() -> None:
    """pycrdt (which loads anyio) is imported only when a document is used."""
    code = (
        "import sys, crdtkv\n"
        "a, b = crdtkv.KvStore.open(replica_id='a'), crdtkv.KvStore.open(replica_id='b')\n"
        "a.put('k', {'v': 1}); a.incr('n'); b.merge(a.snapshot()); b.digest()\n"
        f"bad = [m for m in {(*FORBIDDEN, 'pycrdt')!r} if m in sys.modules]\n"
        "print(','.join(bad))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ""

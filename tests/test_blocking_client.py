"""``BlockingClient`` against a real ``crdtkv serve`` process: methods, threads, restarts."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

import crdtkv
from crdtkv import BlockingClient, Decision, KeyInfo, Record
from crdtkv.errors import ConnectFailed, LinkClosed, NotConnected, RemoteCallError

from .helpers import ServeProcess

GUARD = 30.0  # hang guard only


def test_it_is_exported_lazily_from_the_package() -> None:
    assert crdtkv.BlockingClient is BlockingClient
    assert "BlockingClient" in crdtkv.__all__


def test_every_method_against_a_real_serve_process() -> None:
    with ServeProcess("london") as node, BlockingClient(node.ws_url, timeout=GUARD) as client:
        assert client.get("missing") is None and client.get("missing", 0) == 0
        client.put("user:1", {"name": "ana"}, metadata={"owner": "ana"})
        client.put("user:2", "bo", ttl=60)
        client.put("user:3", b"\x00raw", expiration=time.time() + 120)
        assert client.incr("views", 3) == 3
        assert client.incr("views", 2, 30) == 5
        record = client.get_with_metadata("user:1")
        assert (
            isinstance(record, Record) and record.metadata == {"owner": "ana"} and record.replica == "london"
        )
        assert client.get_many(["user:1", "nope", "views"]) == [{"name": "ana"}, None, 5]
        assert client.ttl("views") == pytest.approx(30, abs=2)
        assert client.expire("views", 300) is True and client.ttl("views") == pytest.approx(300, abs=2)
        assert client.persist("views") is True and client.ttl("views") is None
        assert client.expire("nope", 5) is False
        assert [client.kind(k) for k in ("user:1", "views", "nope")] == ["register", "counter", None]
        page = client.list("user:", limit=2, detailed=True)
        assert page.keys == ["user:1", "user:2"] and page.cursor is not None
        assert page.details is not None and page.details[0] == KeyInfo("user:1", None, {"owner": "ana"})
        assert client.list("user:", cursor=page.cursor).keys == ["user:3"]
        assert client.keys("user:") == ["user:1", "user:2", "user:3"]
        decision = client.rate_limit("api", 1, 60.0)
        assert isinstance(decision, Decision) and decision.allowed
        assert not client.rate_limit("api", 1, 60.0).allowed
        assert client.delete("user:2") is True and client.get("user:2") is None
        with pytest.raises(RemoteCallError) as info:
            client.incr("user:1")
        assert info.value.kind == "WrongType"
        copy = crdtkv.KvStore.from_snapshot(client.snapshot())
        assert copy.digest() == client.digest()


def test_many_threads_share_one_client() -> None:
    with ServeProcess("london") as node, BlockingClient(node.ws_url, timeout=GUARD) as client:
        failures: list[BaseException] = []

        def worker(n: int) -> None:
            try:
                for i in range(25):
                    client.put(f"t{n}:{i}", i)
                    assert client.get(f"t{n}:{i}") == i
                    client.incr("total")
            except BaseException as exc:
                failures.append(exc)

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(GUARD)
        assert not failures
        assert client.get("total") == 8 * 25
        assert client.connections == 1


def test_it_redials_across_a_restart_of_the_serve_process_on_the_same_port(tmp_path: Path) -> None:
    data = str(tmp_path / "london.db")
    with ServeProcess("london", "--data", data, "--durability", "sync") as first:
        url = first.ws_url
        client = BlockingClient(url, timeout=2.0, reconnect_initial=0.05, reconnect_max=0.5)
        client.open()
        try:
            client.put("greeting", "hello")
            assert client.incr("restarts") == 1
            first.stop()
            # the node is down: a call redials with backoff for `timeout` seconds, then gives up
            with pytest.raises((ConnectFailed, LinkClosed)):
                client.get("greeting")
            with pytest.raises(ConnectFailed, match="attempts"):
                client.get("greeting")
            with ServeProcess("london", "--data", data, listen=url) as second:
                assert second.ws_url == url
                assert client.get("greeting") == "hello"  # the same client, a new link
                assert client.incr("restarts") == 2
                assert client.connections == 2
        finally:
            client.close()
    assert client.closed
    with pytest.raises(NotConnected):
        client.get("greeting")
    client.close()  # idempotent


def test_opening_a_client_of_a_node_that_is_not_there_fails_cleanly() -> None:
    with ServeProcess("london") as node:
        url = node.ws_url
    client = BlockingClient(url, timeout=1.0)
    with pytest.raises(ConnectFailed):
        client.open()
    assert client.closed
    with pytest.raises(NotConnected):
        client.get("k")


def test_watch_blocks_for_each_change() -> None:
    with ServeProcess("london") as node, BlockingClient(node.ws_url, timeout=GUARD) as client:
        seen: list[tuple[str | None, Any]] = []

        def follow() -> None:
            for change in client.watch("flag:"):
                seen.append((change.key, change.value))
                if len(seen) == 2:
                    break

        thread = threading.Thread(target=follow)
        thread.start()
        with BlockingClient(node.ws_url, timeout=GUARD) as writer:
            i = 0
            while thread.is_alive() and i < 500:  # until the watch is registered and sees two
                writer.put(f"flag:{i}", i)
                i += 1
                time.sleep(0.01)
        thread.join(GUARD)
        assert len(seen) == 2 and all(str(key).startswith("flag:") for key, _ in seen)
        assert client.get("flag:0") == 0  # the client still works after the watch ended

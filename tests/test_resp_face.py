"""The RESP face with real Redis clients: redis-py (sync and asyncio, RESP2 and RESP3) over loopback.

Each test starts a real Node and its face in an event loop of their own (a
blocking portal thread), so redis-py's synchronous client talks to it as to
any server; the store is only touched through ``Served.run`` (in the node's
loop).
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import anyio
import hiredis
import pytest
import redis
import redis.asyncio
from anyio.from_thread import BlockingPortal, start_blocking_portal

from crdtkv import KvStore, Node
from crdtkv.gateway.resp import RespFace
from crdtkv.gateway.resp_commands import COMMANDS
from crdtkv.gateway.settings import RespSettings
from crdtkv.metrics import node_metrics

from .helpers import wait_for

T = TypeVar("T")
SECRET = "resp-face-secret"


@dataclass
class Served:
    """A node serving RESP in its own event-loop thread."""

    portal: BlockingPortal
    store: KvStore
    node: Node
    face: RespFace
    port: int

    def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Call ``fn`` in the node's event loop (the store is not thread-safe)."""
        return self.portal.call(fn, *args)

    def client(self, **options: Any) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=30, **options)


def call(client: redis.Redis, *args: Any) -> Any:
    """``client.execute_command`` (redis-py leaves it untyped)."""
    return client.execute_command(*args)  # type: ignore[no-untyped-call]


@contextmanager
def serving(
    secret: str | None = None,
    settings: RespSettings | None = None,
    *,
    listen: str | None = None,
    peers: list[str] | None = None,
    replica: str = "resp",
) -> Iterator[Served]:
    """A Node with a RESP face on 127.0.0.1 (a free port), stopped on leaving."""
    with start_blocking_portal() as portal:
        store = KvStore.open(replica_id=replica)
        node = portal.call(lambda: Node(store, secret=secret, listen=listen, peers=peers or []))
        with portal.wrap_async_context_manager(node):
            face = RespFace(node, settings)
            future, (_, port) = portal.start_task(face.serve, "127.0.0.1", 0)
            try:
                yield Served(portal, store, node, face, port)
            finally:
                future.cancel()
        store.close()


@pytest.fixture
def served() -> Iterator[Served]:
    with serving() as s:
        yield s


PROTOCOLS = pytest.mark.parametrize("protocol", [2, 3], ids=["resp2", "resp3"])


@PROTOCOLS
def test_strings_and_counters(served: Served, protocol: int) -> None:
    r = served.client(protocol=protocol)
    assert r.ping() is True
    assert r.echo("hi") == b"hi"
    assert r.set("greeting", "hello") is True
    assert r.get("greeting") == b"hello"
    assert r.get("missing") is None
    assert r.set("greeting", "again", nx=True) is None
    assert r.set("fresh", "1", xx=True) is None
    assert r.set("greeting", "bye", xx=True, get=True) == b"hello"
    assert r.set("new", "v", get=True) is None
    assert call(r, "SETNX", "greeting", "no") == 0  # redis-py deprecates setnx()
    assert call(r, "SETNX", "other", "yes") == 1
    assert r.getdel("other") == b"yes"
    assert r.getdel("other") is None
    assert r.mset({"a": "1", "b": "2"}) is True
    assert r.mget("a", "zz", "b") == [b"1", None, b"2"]
    assert r.incr("views") == 1
    assert r.incrby("views", 10) == 11
    assert r.decr("views") == 10
    assert r.decrby("views", 4) == 6
    assert r.get("views") == b"6"
    assert r.exists("a", "a", "nope") == 2
    assert r.delete("a", "b", "nope") == 2
    assert r.unlink("greeting") == 1
    assert r.type("views") == b"counter"
    assert r.type("new") == b"string"
    assert r.type("nope") == b"none"
    assert r.dbsize() == 2
    assert served.run(served.store.get, "views") == 6
    r.close()


@PROTOCOLS
def test_set_stores_text_as_str_and_other_bytes_as_bytes(served: Served, protocol: int) -> None:
    r = served.client(protocol=protocol)
    r.set("text", "héllo")
    r.set("blob", b"\xff\x00\xfe")
    assert served.run(served.store.get, "text") == "héllo"
    assert served.run(served.store.get, "blob") == b"\xff\x00\xfe"
    assert r.get("blob") == b"\xff\x00\xfe"
    r.close()


@PROTOCOLS
def test_get_answers_json_for_values_that_are_not_strings(served: Served, protocol: int) -> None:
    store = served.store
    served.run(lambda: store.put("doc", {"a": [1, 2.5, None, True]}))
    served.run(lambda: store.put("number", 7))
    served.run(lambda: store.put("raw", [b"\x01"]))
    r = served.client(protocol=protocol)
    assert json.loads(r.get("doc") or b"") == {"a": [1, 2.5, None, True]}
    assert r.get("number") == b"7"
    assert json.loads(r.get("raw") or b"") == ["AQ=="]  # bytes inside JSON: base64
    assert r.mget("doc", "number") == [b'{"a":[1,2.5,null,true]}', b"7"]
    served.run(lambda: store.put("odd", [float("nan"), float("-inf"), 1.5]))
    # strict JSON, the same text the HTTP face answers: no bare NaN or -Infinity
    assert r.get("odd") == b'["NaN","-Infinity",1.5]'
    r.close()


def test_incr_on_a_register_says_counters_start_with_incr(served: Served) -> None:
    r = served.client()
    r.set("page", "10")
    with pytest.raises(redis.ResponseError) as caught:
        r.incr("page")
    assert str(caught.value).startswith("WRONGTYPE ")
    assert "counter" in str(caught.value) and "starts with INCR" in str(caught.value)
    assert r.get("page") == b"10"
    with pytest.raises(redis.ResponseError, match="not an integer"):
        r.incrby("n", "x")  # type: ignore[arg-type]
    r.incrby("n", 2**63 - 2)
    with pytest.raises(redis.ResponseError, match="overflow"):
        r.incrby("n", 5)
    assert r.get("n") == str(2**63 - 2).encode()
    r.close()


@PROTOCOLS
def test_set_options_and_expiry(served: Served, protocol: int) -> None:
    r = served.client(protocol=protocol)
    store = served.store
    assert r.set("k", "v", ex=100) is True
    assert 99 <= r.ttl("k") <= 100
    assert 99_000 <= r.pttl("k") <= 100_000
    assert r.set("k", "w", keepttl=True) is True
    assert 99 <= r.ttl("k") <= 100
    assert r.set("k", "x") is True
    assert r.ttl("k") == -1
    assert r.ttl("missing") == -2
    assert r.pttl("missing") == -2
    assert r.set("k", "y", px=50_000) is True
    assert 49 <= r.ttl("k") <= 50
    at = int(time.time()) + 1000
    assert r.set("k", "z", exat=at) is True
    expiry = served.run(lambda: store.get_with_metadata("k"))
    assert expiry is not None and expiry.expires_at == at
    assert r.set("k", "z", pxat=at * 1000 + 500) is True
    expiry = served.run(lambda: store.get_with_metadata("k"))
    assert expiry is not None and expiry.expires_at == pytest.approx(at + 0.5)
    assert call(r, "SETEX", "s", 30, "v") is True  # redis-py deprecates setex()
    assert 29 <= r.ttl("s") <= 30
    assert call(r, "PSETEX", "p", 30_000, "v") is True
    assert 29 <= r.ttl("p") <= 30
    with pytest.raises(redis.ResponseError, match="invalid expire time in 'set' command"):
        r.set("k", "v", ex=0)
    with pytest.raises(redis.ResponseError, match="invalid expire time in 'set' command"):
        r.set("k", "v", px=-1)
    with pytest.raises(redis.ResponseError, match="syntax error"):
        call(r, "SET", "k", "v", "EX", "10", "PX", "10")
    with pytest.raises(redis.ResponseError, match="syntax error"):
        call(r, "SET", "k", "v", "NX", "XX")
    with pytest.raises(redis.ResponseError, match="syntax error"):
        call(r, "SET", "k", "v", "BOGUS")
    r.close()


@PROTOCOLS
def test_expire_ttl_persist(served: Served, protocol: int) -> None:
    r = served.client(protocol=protocol)
    store = served.store
    assert r.expire("missing", 10) is False
    r.set("k", "v")
    assert r.expire("k", 100) is True
    assert 99 <= r.ttl("k") <= 100
    left = served.run(store.ttl, "k")
    assert left is not None and 99 <= left <= 100
    assert r.pexpire("k", 200_000) is True
    assert 199 <= r.ttl("k") <= 200
    at = int(time.time()) + 5000
    assert r.expireat("k", at) is True
    assert served.run(lambda: store.get_with_metadata("k")).expires_at == at  # type: ignore[union-attr]
    assert r.pexpireat("k", at * 1000) is True
    assert r.persist("k") is True
    assert r.persist("k") is False
    assert r.ttl("k") == -1
    # Redis 7's conditions, against the expiry this replica holds
    assert r.expire("k", 100, xx=True) is False
    assert r.expire("k", 100, nx=True) is True
    assert r.expire("k", 50, nx=True) is False
    assert r.expire("k", 50, gt=True) is False
    assert r.expire("k", 500, gt=True) is True
    assert r.expire("k", 1000, lt=True) is False
    assert r.expire("k", 10, lt=True) is True
    assert 9 <= r.ttl("k") <= 10
    with pytest.raises(redis.ResponseError, match="not compatible"):
        call(r, "EXPIRE", "k", "10", "NX", "XX")
    # a time in the past deletes, as in Redis
    assert r.expire("k", 0) is True
    assert r.exists("k") == 0
    r.set("c", "v")
    assert r.expireat("c", int(time.time()) - 10) is True
    assert r.get("c") is None
    r.incr("counter")
    assert r.expire("counter", 100) is True
    assert 99 <= r.ttl("counter") <= 100
    r.close()


def test_expired_keys_read_as_missing(served: Served) -> None:
    r = served.client()
    r.set("short", "v", px=1)
    wait_for(lambda: r.get("short") is None, "the key to expire")
    assert r.ttl("short") == -2
    assert r.exists("short") == 0
    assert r.keys() == []
    r.close()


@PROTOCOLS
def test_keys_and_scan(served: Served, protocol: int) -> None:
    r = served.client(protocol=protocol)
    names = [f"user:{i:03d}" for i in range(120)] + [
        "session:a",
        "session:b",
        "h?llo",
        "hello",
        "hallo",
        "hxllo",
    ]
    r.mset({name: "v" for name in names})
    r.incr("user:counter")
    assert sorted(r.keys()) == sorted(name.encode() for name in [*names, "user:counter"])
    assert sorted(r.keys("session:*")) == [b"session:a", b"session:b"]
    assert sorted(r.keys("h?llo")) == [b"h?llo", b"hallo", b"hello", b"hxllo"]
    assert sorted(r.keys("h[ae]llo")) == [b"hallo", b"hello"]
    assert sorted(r.keys("h[^e]llo")) == [b"h?llo", b"hallo", b"hxllo"]
    assert r.keys("h\\?llo") == [b"h?llo"]
    assert sorted(r.keys("user:00[0-2]")) == [b"user:000", b"user:001", b"user:002"]
    scanned = list(r.scan_iter(count=7))
    assert sorted(scanned) == sorted(r.keys())
    assert len(scanned) == len(set(scanned))
    assert sorted(r.scan_iter(match="user:1*", count=5)) == sorted(r.keys("user:1*"))
    assert list(r.scan_iter(match="*:counter", _type="counter")) == [b"user:counter"]
    cursor, page = r.scan(0, count=1000)
    assert cursor == 0 and len(page) == len(names) + 1
    with pytest.raises(redis.ResponseError, match="invalid cursor"):
        r.scan(987654321)
    r.close()


def test_scan_cursors_are_bounded() -> None:
    with serving(settings=RespSettings(max_scan_cursors=2)) as served:
        r = served.client()
        r.mset({f"k{i}": "v" for i in range(10)})
        first, _ = r.scan(0, count=1)
        r.scan(0, count=1)
        r.scan(0, count=1)  # a third cursor: the first is forgotten
        with pytest.raises(redis.ResponseError, match="invalid cursor"):
            r.scan(first, count=1)
        assert len(served.face.state.scan_cursors) == 2
        r.close()


@PROTOCOLS
def test_connection_commands(served: Served, protocol: int) -> None:
    r = served.client(protocol=protocol)
    assert r.select(0) is True
    with pytest.raises(redis.ResponseError, match="DB index is out of range"):
        r.select(1)
    client_id = r.client_id()
    assert isinstance(client_id, int) and client_id > 0
    assert r.client_setname("worker-1") is True
    assert r.client_getname() in ("worker-1", b"worker-1")
    with pytest.raises(redis.ResponseError, match="cannot contain spaces"):
        r.client_setname("has space")
    assert r.client_setinfo("LIB-NAME", "mine") is True
    with pytest.raises(redis.ResponseError, match="unknown subcommand"):
        call(r, "CLIENT", "KILL", "x")
    assert r.command_count() == len(COMMANDS)
    r.close()


def test_hello_3_answers_a_map_and_hello_2_an_array(served: Served) -> None:
    r = served.client()
    hello = call(r, "HELLO", "3")
    assert isinstance(hello, dict)
    assert hello[b"proto"] == 3 and hello[b"server"] == b"redis" and hello[b"mode"] == b"standalone"
    assert call(r, "GET", "missing") is None
    hello = call(r, "HELLO", "2")
    assert isinstance(hello, list) and hello[hello.index(b"proto") + 1] == 2
    with pytest.raises(redis.ResponseError, match="NOPROTO"):
        call(r, "HELLO", "4")
    r.close()


def test_resp3_nulls_and_maps_on_the_wire(served: Served) -> None:
    with socket.create_connection(("127.0.0.1", served.port), timeout=30) as s:
        s.sendall(b"*2\r\n$5\r\nHELLO\r\n$1\r\n3\r\n")
        assert read_until(s, b"modules\r\n*0\r\n").startswith(b"%7\r\n")
        s.sendall(b"*2\r\n$3\r\nGET\r\n$7\r\nmissing\r\n")
        assert read_until(s, b"\r\n") == b"_\r\n"
        s.sendall(b"*2\r\n$5\r\nHELLO\r\n$1\r\n2\r\n")
        assert read_until(s, b"modules\r\n*0\r\n").startswith(b"*14\r\n")
        s.sendall(b"*2\r\n$3\r\nGET\r\n$7\r\nmissing\r\n")
        assert read_until(s, b"\r\n") == b"$-1\r\n"


@dataclass(frozen=True)
class Err:
    """An error reply, as :class:`RawClient` answers it."""

    message: str


class RawClient:
    """A bare RESP connection: commands out, replies parsed by hiredis (errors as ``ReplyError``)."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.reader = hiredis.Reader()

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()

    def call(self, *args: str | bytes) -> Any:
        parts = [arg.encode() if isinstance(arg, str) else arg for arg in args]
        self.sock.sendall(b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%b\r\n" % (len(p), p) for p in parts))
        while True:
            reply = self.reader.gets()
            if isinstance(reply, hiredis.ReplyError):
                return Err(str(reply))
            if reply is not False:
                return reply
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed")
            self.reader.feed(chunk)


def read_until(sock: socket.socket, end: bytes) -> bytes:
    data = b""
    while not data.endswith(end):
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError(f"connection closed after {data!r}")
        data += chunk
    return data


@PROTOCOLS
def test_command_docs_describe_every_command(served: Served, protocol: int) -> None:
    with RawClient(served.port) as raw:
        raw.call("HELLO", str(protocol))
        docs = raw.call("COMMAND", "DOCS")
        pairs = docs if protocol == 3 else dict(zip(docs[::2], docs[1::2], strict=True))
        assert {name.decode() for name in pairs} == {spec.name.lower() for spec in COMMANDS.values()}
        set_docs = raw.call("COMMAND", "DOCS", "set")
        set_docs = set_docs[b"set"] if protocol == 3 else set_docs[1]
        if protocol == 2:
            set_docs = dict(zip(set_docs[::2], set_docs[1::2], strict=True))
        assert set(set_docs) >= {b"summary", b"since", b"group", b"arguments"}
        assert set_docs[b"group"] == b"string"
        info = raw.call("COMMAND", "INFO", "get", "nope")
        assert info[0][0] == b"get" and info[0][1] == 2 and info[1] is None
        assert b"get" in raw.call("COMMAND", "LIST")
        assert raw.call("COMMAND", "COUNT") == len(COMMANDS)
    r = served.client(protocol=protocol)
    everything = r.command()
    assert set(everything) == {spec.name.lower() for spec in COMMANDS.values()}
    assert everything["get"]["arity"] == 2 and everything["get"]["first_key_pos"] == 1
    r.close()


@PROTOCOLS
def test_unknown_commands_and_arity_errors_keep_the_connection(served: Served, protocol: int) -> None:
    r = served.client(protocol=protocol, single_connection_client=True)
    with pytest.raises(redis.ResponseError, match="unknown command 'FLUSHALL'"):
        call(r, "FLUSHALL")
    with pytest.raises(
        redis.ResponseError, match="unknown command 'LPUSH', with args beginning with: 'l' 'x'"
    ):
        call(r, "LPUSH", "l", "x")
    with pytest.raises(redis.ResponseError, match="wrong number of arguments for 'get' command"):
        call(r, "GET")
    with pytest.raises(redis.ResponseError, match="wrong number of arguments for 'mset' command"):
        call(r, "MSET", "a", "1", "b")
    with pytest.raises(redis.ResponseError, match="not an integer"):
        call(r, "EXPIRE", "a", "soon")
    with pytest.raises(redis.ResponseError, match="not an integer"):
        call(r, "INCRBY", "a", "01")
    with pytest.raises(redis.ResponseError, match="invalid key"):
        call(r, "GET", b"\xff")
    with pytest.raises(redis.ResponseError, match="empty"):
        r.set("", "empty key")
    with pytest.raises(redis.ResponseError, match="limit"):
        r.set("k" * 5000, "key over the limit")
    assert r.ping() is True  # the same connection still serves
    r.close()


def test_case_insensitive_command_names(served: Served) -> None:
    r = served.client()
    assert call(r, "set", "k", "v") is True
    assert call(r, "gEt", "k") == b"v"
    r.close()


@PROTOCOLS
def test_pipelines(served: Served, protocol: int) -> None:
    r = served.client(protocol=protocol)
    pipe = r.pipeline(transaction=False)
    for i in range(2000):
        pipe.set(f"p:{i}", str(i))
        pipe.incr("p:count")
        pipe.get(f"p:{i}")
    replies = pipe.execute()
    assert replies[0::3] == [True] * 2000
    assert replies[1::3] == list(range(1, 2001))
    assert replies[2::3] == [str(i).encode() for i in range(2000)]
    pipe = r.pipeline(transaction=False)
    pipe.get("p:1")
    pipe.incr("p:1")  # fails in the middle: the rest still runs
    pipe.get("p:2")
    replies = pipe.execute(raise_on_error=False)
    assert replies[0] == b"1" and isinstance(replies[1], redis.ResponseError) and replies[2] == b"2"
    r.close()


@PROTOCOLS
def test_asyncio_client(served: Served, protocol: int) -> None:
    async def main() -> None:
        r = redis.asyncio.Redis(host="127.0.0.1", port=served.port, protocol=protocol)
        try:
            assert await r.set("async", "yes") is True
            assert await r.get("async") == b"yes"
            assert await r.incr("async:n") == 1
            results = await anyio_gather([r.incr("async:n") for _ in range(50)])
            assert sorted(results) == list(range(2, 52))
            async with r.pipeline(transaction=False) as pipe:
                pipe.set("a1", "x")
                pipe.get("a1")
                pipe.expire("a1", 10)
                pipe.ttl("a1")
                assert await pipe.execute() == [True, b"x", True, 10]
        finally:
            await r.aclose()

    anyio.run(main)


async def anyio_gather(coroutines: list[Any]) -> list[Any]:
    results: list[Any] = [None] * len(coroutines)

    async def one(index: int, coroutine: Any) -> None:
        results[index] = await coroutine

    async with anyio.create_task_group() as group:
        for index, coroutine in enumerate(coroutines):
            group.start_soon(one, index, coroutine)
    return results


# -- auth --------------------------------------------------------------------------------


@pytest.fixture
def secured() -> Iterator[Served]:
    with serving(secret=SECRET) as s:
        yield s


@PROTOCOLS
def test_auth_with_password(secured: Served, protocol: int) -> None:
    r = secured.client(protocol=protocol, password=SECRET)
    assert r.set("k", "v") is True and r.get("k") == b"v"
    r.close()
    r = secured.client(protocol=protocol, username="default", password=SECRET)
    assert r.get("k") == b"v"
    r.close()


def test_noauth_before_auth_and_wrongpass(secured: Served) -> None:
    # redis-py cannot even connect without the password (its CLIENT SETINFO gets NOAUTH,
    # as from a Redis with a password): speak RESP directly
    with RawClient(secured.port) as raw:
        assert raw.call("GET", "k") == Err("NOAUTH Authentication required.")
        assert raw.call("PING") == Err("NOAUTH Authentication required.")
        assert raw.call("CLIENT", "SETINFO", "LIB-NAME", "x") == Err("NOAUTH Authentication required.")
        wrong = Err("WRONGPASS invalid username-password pair or user is disabled.")
        assert raw.call("AUTH", "wrong") == wrong
        assert raw.call("AUTH", "someone", SECRET) == wrong
        assert raw.call("AUTH", "a", "b", "c") == Err("ERR syntax error")
        hello = raw.call("HELLO", "3")
        assert isinstance(hello, Err) and hello.message.startswith("NOAUTH HELLO must be called")
        assert raw.call("NOSUCH") == Err("ERR unknown command 'NOSUCH', with args beginning with: ")
        assert raw.call("QUIT") == b"OK"
    with RawClient(secured.port) as raw:
        assert raw.call("AUTH", SECRET) == b"OK"
        assert raw.call("SET", "k", "v") == b"OK"
    assert secured.run(secured.store.get, "k") == "v"
    with pytest.raises(redis.AuthenticationError):
        secured.client(single_connection_client=True)


def test_auth_default_and_hello_auth(secured: Served) -> None:
    with RawClient(secured.port) as raw:
        assert raw.call("AUTH", "default", SECRET) == b"OK"
        assert raw.call("PING") == b"PONG"
    with RawClient(secured.port) as raw:
        hello = raw.call("HELLO", "3", "AUTH", "default", SECRET, "SETNAME", "me")
        assert isinstance(hello, dict) and hello[b"proto"] == 3
        assert raw.call("CLIENT", "GETNAME") == b"me"
    with RawClient(secured.port) as raw:
        refused = raw.call("HELLO", "3", "AUTH", "default", "nope")
        assert refused == Err("WRONGPASS invalid username-password pair or user is disabled.")
        assert raw.call("GET", "k") == Err("NOAUTH Authentication required.")


def test_auth_without_a_secret_is_an_error(served: Served) -> None:
    r = served.client(single_connection_client=True)
    with pytest.raises(redis.AuthenticationError, match="without any password configured"):
        call(r, "AUTH", "anything")
    assert r.ping() is True
    r.close()


# -- info, metrics, limits ------------------------------------------------------------------


def test_info_sections(served: Served) -> None:
    r = served.client()
    r.set("a", "1")
    info = r.info()
    assert info["redis_version"] and info["connected_clients"] >= 1
    assert info["db0"]["keys"] == 1
    assert info["crdtkv_replica_id"] == "resp"
    assert set(r.info("replication")) >= {"role", "connected_peers", "crdtkv_ready"}
    assert "db0" in r.info("keyspace") and "redis_version" not in r.info("keyspace")
    assert r.info("nothing-here") == {}
    r.close()


def test_info_replication_lists_peers_with_state_and_lag() -> None:
    with serving(listen="ws://127.0.0.1:0", replica="london") as london:
        url = london.node.url
        assert url is not None
        with serving(peers=[url], replica="sydney") as sydney:
            r = sydney.client(decode_responses=True)
            wait_for(lambda: r.info("replication")["connected_peers"] == 1, "the link to london")
            r.set("from-sydney", "hi")
            at_london = london.client()
            wait_for(lambda: at_london.get("from-sydney") == b"hi", "the write at london")
            at_london.close()
            peer = r.info("replication")["peer0"]
            assert peer["state"] == "up" and peer["direction"] == "out" and peer["url"] == url
            assert "lag_seconds" in peer or "last_ack_age" in peer
            r.close()


def test_commands_are_counted_in_the_node_metrics(served: Served) -> None:
    r = served.client()
    r.set("k", "v")
    r.get("k")
    with pytest.raises(redis.ResponseError):
        r.incr("k")
    text = served.run(lambda: node_metrics(served.node).render().decode())
    lines = [line for line in text.splitlines() if 'face="resp"' in line and not line.startswith("#")]
    assert any('kind="set"' in line and 'result="ok"' in line for line in lines), lines
    assert any('kind="incrby"' in line and 'result="WRONGTYPE"' in line for line in lines), lines
    r.close()


def test_max_connections() -> None:
    with serving(settings=RespSettings(max_connections=2)) as served:
        first, second = (
            served.client(single_connection_client=True),
            served.client(single_connection_client=True),
        )
        assert first.ping() and second.ping()
        with socket.create_connection(("127.0.0.1", served.port), timeout=30) as third:
            assert read_until(third, b"\r\n") == b"-ERR max number of clients reached\r\n"
            assert third.recv(100) == b""  # closed
        assert served.face.refused == 1
        first.close()
        wait_for(lambda: served.face.clients == 1, "the first client to leave")
        again = served.client(single_connection_client=True)
        assert again.ping() is True
        again.close()
        second.close()

"""Hostile input on the RESP port, over raw sockets: each case closes (at most) the offending
connection, keeps the node serving others, bounds what it buffers and leaves the store unchanged."""

from __future__ import annotations

import select
import socket
import threading
import time
from collections.abc import Iterator

import hiredis
import pytest

from crdtkv.errors import MalformedRequest, RequestTooLarge
from crdtkv.gateway.resp_protocol import CommandReader
from crdtkv.gateway.settings import RespSettings

from .helpers import wait_for
from .test_resp_face import RawClient, Served, serving

FRAME_LIMIT = 64 * 1024


@pytest.fixture
def served() -> Iterator[Served]:
    settings = RespSettings(max_frame_bytes=FRAME_LIMIT, max_reply_bytes=64 * 1024, send_timeout=5.0)
    with serving(settings=settings) as s:
        r = s.client()
        r.set("kept", "value")
        r.close()
        yield s


def closed_by_server(sock: socket.socket) -> bytes:
    """Everything the server still sent, once it closed the connection (a hang guard of 30 s)."""
    sock.settimeout(30)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    return data


def others_still_served(served: Served, digest: str) -> None:
    with RawClient(served.port) as raw:
        assert raw.call("PING") == b"PONG"
        assert raw.call("GET", "kept") == b"value"
    assert served.run(served.store.digest) == digest


@pytest.mark.parametrize(
    "garbage",
    [
        b"\x00\xff\xfegarbage\r\n",
        b"GET kept\r\n",  # inline commands are not RESP arrays
        b"*2\r\n$3\r\nGET\r\n:12\r\n",  # an integer where a bulk string belongs
        b"*1\r\n*1\r\n$4\r\nPING\r\n",  # nested arrays
        b"*2\r\n$3\r\nGET\r\n$-5\r\n",  # a negative length
        b"+PING\r\n",
        b"%1\r\n$1\r\na\r\n$1\r\nb\r\n",  # a RESP3 map
    ],
    ids=["binary", "inline", "integer-argument", "nested", "negative-length", "simple-string", "map"],
)
def test_garbage_closes_only_that_connection(served: Served, garbage: bytes) -> None:
    digest = served.run(served.store.digest)
    with RawClient(served.port) as bystander:
        assert bystander.call("PING") == b"PONG"
        with socket.create_connection(("127.0.0.1", served.port), timeout=30) as bad:
            bad.sendall(
                b"*1\r\n$4\r\nPING\r\n" + garbage + b"*3\r\n$3\r\nSET\r\n$4\r\nkept\r\n$4\r\nlost\r\n"
            )
            answer = closed_by_server(bad)
        assert answer.startswith(b"+PONG\r\n-ERR Protocol error")
        assert bystander.call("GET", "kept") == b"value"
    assert served.face.protocol_errors == 1
    others_still_served(served, digest)


def test_a_frame_over_the_limit_closes_the_connection(served: Served) -> None:
    digest = served.run(served.store.digest)
    value = b"x" * (FRAME_LIMIT + 1)
    with socket.create_connection(("127.0.0.1", served.port), timeout=30) as bad:
        try:
            bad.sendall(b"*3\r\n$3\r\nSET\r\n$4\r\nkept\r\n$%d\r\n%b\r\n" % (len(value), value))
        except (BrokenPipeError, ConnectionResetError):
            pass
        assert closed_by_server(bad).startswith(b"-ERR Protocol error")
    assert served.face.protocol_errors == 1
    others_still_served(served, digest)


@pytest.mark.parametrize(
    "header",
    [b"*2\r\n$3\r\nGET\r\n$999999999\r\n", b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$9223372036854775000\r\n"],
    ids=["huge-bulk", "int64-bulk"],
)
def test_a_huge_declared_length_is_refused_before_it_arrives(served: Served, header: bytes) -> None:
    """The face closes once the frame's bytes pass the limit, long before the declared length."""
    digest = served.run(served.store.digest)
    sent = 0
    with socket.create_connection(("127.0.0.1", served.port), timeout=30) as bad:
        bad.sendall(header)
        chunk = b"y" * 4096
        try:
            while sent < 100 * FRAME_LIMIT:  # a hang guard: the server closes long before
                bad.sendall(chunk)
                sent += len(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass
        closed_by_server(bad)
    assert served.face.protocol_errors == 1
    assert sent < 100 * FRAME_LIMIT
    others_still_served(served, digest)


def test_a_huge_argument_count_is_refused_by_its_bytes(served: Served) -> None:
    digest = served.run(served.store.digest)
    with socket.create_connection(("127.0.0.1", served.port), timeout=30) as bad:
        try:
            bad.sendall(b"*999999999\r\n")
            for _ in range(100):
                bad.sendall(b"$1\r\nx\r\n" * 4096)
        except (BrokenPipeError, ConnectionResetError):
            pass
        closed_by_server(bad)
    assert served.face.protocol_errors == 1
    others_still_served(served, digest)


def test_the_reader_counts_the_bytes_of_an_incomplete_frame() -> None:
    """Sans-I/O: the budget holds however the bytes are split, and a frame at the limit passes."""
    reader = CommandReader(max_frame_bytes=100, max_arguments=10)
    frame = b"*2\r\n$3\r\nSET\r\n$%d\r\n%b\r\n" % (80, b"v" * 80)  # exactly 100 bytes
    assert len(frame) == 100
    for byte in frame[:-1]:
        assert reader.feed(bytes([byte])) == []
        assert reader.pending_bytes <= 100
    assert reader.feed(frame[-1:]) == [[b"SET", b"v" * 80]]
    assert reader.pending_bytes == 0
    assert reader.feed(frame * 3 + frame[:50]) == [[b"SET", b"v" * 80]] * 3
    assert reader.pending_bytes == 50
    assert reader.feed(frame[50:]) == [[b"SET", b"v" * 80]]
    assert reader.feed(b"*2\r\n$3\r\nSET\r\n$200\r\n" + b"v" * 50) == []
    assert reader.pending_bytes == 69
    assert reader.feed(b"v" * 40) == []  # 109 bytes of a frame still incomplete
    assert isinstance(reader.failure, RequestTooLarge)
    assert reader.feed(frame) == []  # nothing after a failure
    many = CommandReader(max_frame_bytes=100, max_arguments=10)
    assert many.feed(b"*11\r\n" + b"$0\r\n\r\n" * 11) == []  # 11 arguments
    assert isinstance(many.failure, RequestTooLarge)
    small = CommandReader(max_frame_bytes=100, max_arguments=10)
    small.feed(b"*1\r\n$200\r\n" + b"z" * 200 + b"\r\n")  # complete in one piece, but too big
    assert isinstance(small.failure, RequestTooLarge)
    bad = CommandReader(100, 10)
    assert bad.feed(b"*1\r\n$4\r\nPING\r\n*1\r\n:1\r\n*1\r\n$4\r\nPING\r\n") == [[b"PING"]]
    assert isinstance(bad.failure, MalformedRequest) and not isinstance(bad.failure, RequestTooLarge)
    assert CommandReader(100, 10).feed(b"*0\r\n*-1\r\n*1\r\n$4\r\nPING\r\n") == [[b"PING"]]


def test_a_client_that_never_reads_is_bounded_and_dropped(served: Served) -> None:
    """Pipelined GETs of a 32 KiB value from a client that reads nothing: the face stops
    reading its commands once ``max_reply_bytes`` of replies wait, serves everyone else, and
    closes it after ``send_timeout``."""
    r = served.client()
    r.set("big", "b" * 32 * 1024)
    r.close()
    digest = served.run(served.store.digest)
    command = b"*2\r\n$3\r\nGET\r\n$3\r\nbig\r\n"
    with socket.socket() as hog:
        hog.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        hog.connect(("127.0.0.1", served.port))
        hog.setblocking(False)
        burst = command * 1000
        sent = 0
        stalled_since: float | None = None
        while True:  # send until the face has stopped taking commands for a while
            _, writable, _ = select.select([], [hog], [], 0.2)
            if writable:
                try:
                    sent += hog.send(burst)
                    stalled_since = None
                    continue
                except BlockingIOError:
                    pass
                except (ConnectionResetError, BrokenPipeError):  # dropped already: stalled for good
                    break
            stalled_since = stalled_since or time.monotonic()
            if time.monotonic() - stalled_since > 1.0:
                break
            assert sent < 10**9, "the face never stopped reading"
        # the replies the face holds for this client stay within the budget (plus one reply)
        assert served.face.peak_reply_bytes <= 64 * 1024 + 32 * 1024 + 64
        with RawClient(served.port) as other:
            assert other.call("PING") == b"PONG"
            assert other.call("SET", "other", "works") == b"OK"
        wait_for(lambda: served.face.send_timeouts == 1, "the face to drop the client that never reads")
    wait_for(lambda: served.face.clients == 0, "the connection to be gone")
    with RawClient(served.port) as other:
        assert other.call("DEL", "other") == 1
    assert served.run(served.store.get, "big") == "b" * 32 * 1024
    assert served.face.peak_reply_bytes <= 64 * 1024 + 32 * 1024 + 64
    others_still_served(served, served.run(served.store.digest))
    assert digest  # GETs changed nothing: only "other" came and went


def test_a_long_pipeline_read_late_gets_every_reply_in_order(served: Served) -> None:
    """A client that sends 600 commands (about 20 MiB of replies, 300x the reply budget) before
    reading gets every reply, in order: the face pauses at the budget and runs the rest as the
    client reads, and never holds more than the budget plus one reply."""
    r = served.client()
    r.set("big", "b" * 32 * 1024)
    r.close()
    count = 600
    commands = b"".join(
        b"*2\r\n$3\r\nGET\r\n$3\r\nbig\r\n" if i % 2 == 0 else b"*2\r\n$4\r\nINCR\r\n$5\r\nseq:n\r\n"
        for i in range(count)
    )
    with socket.create_connection(("127.0.0.1", served.port), timeout=30) as sock:
        sender = threading.Thread(target=sock.sendall, args=(commands,))
        sender.start()
        time.sleep(0.5)  # the face fills its budget and stops reading this client
        reader = hiredis.Reader()
        replies: list[object] = []
        while len(replies) < count:
            chunk = sock.recv(65536)
            assert chunk, "the face closed the connection"
            reader.feed(chunk)
            while (reply := reader.gets()) is not False:
                replies.append(reply)
        sender.join(timeout=30)
    assert replies[0::2] == [b"b" * 32 * 1024] * (count // 2)
    assert replies[1::2] == list(range(1, count // 2 + 1))  # run once each, in order
    assert served.face.peak_reply_bytes <= 64 * 1024 + 32 * 1024 + 64
    assert served.face.send_timeouts == 0

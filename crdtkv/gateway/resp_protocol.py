"""RESP frames in and out: commands parsed by hiredis, replies encoded for RESP2 or RESP3.

No I/O here. :class:`CommandReader` turns received bytes into commands (each a
list of byte strings) within a byte budget; the ``encode_*`` functions and
:func:`encode` turn replies into bytes for the protocol version a connection
chose with ``HELLO``.
"""

from __future__ import annotations

from typing import Any

import hiredis

from ..errors import MalformedRequest, RequestTooLarge
from .resp_status import Status

#: A command as received: its name and arguments, each a byte string.
Command = list[bytes]

OK = b"+OK\r\n"
PONG = b"+PONG\r\n"
NULL_RESP2 = b"$-1\r\n"
NULL_RESP3 = b"_\r\n"
EMPTY_ARRAY = b"*0\r\n"
ZERO = b":0\r\n"
ONE = b":1\r\n"
#: Integer replies of small values, encoded once.
SMALL_INTEGERS = [b":%d\r\n" % n for n in range(-2, 1024)]


class CommandReader:
    """Parse RESP commands from a byte stream, refusing frames over a byte budget.

    A command is an array of bulk strings (what every Redis client sends). The
    bytes of the frame being received are counted while it is incomplete, so a
    client declaring a huge bulk or array length is refused once
    ``max_frame_bytes`` have arrived, not after the whole declared length.
    """

    __slots__ = ("_max_arguments", "_max_frame", "_pending", "_reader", "failure")

    def __init__(self, max_frame_bytes: int, max_arguments: int) -> None:
        self._reader = hiredis.Reader()
        self._max_frame = max_frame_bytes
        self._max_arguments = max_arguments
        #: bytes received that belong to no complete command yet
        self._pending = 0
        #: why the stream cannot be read further, once it cannot (then feed no more)
        self.failure: MalformedRequest | None = None

    @property
    def pending_bytes(self) -> int:
        """Bytes received of the command not yet complete (0 between commands)."""
        return self._pending

    def feed(self, data: bytes) -> list[Command]:
        """The complete commands ``data`` ends, in order, up to the first bad frame.

        Bytes that are not RESP, or a frame that is not an array of bulk strings,
        set :attr:`failure` to a :class:`~crdtkv.errors.MalformedRequest`, and a
        frame over the budget to a :class:`~crdtkv.errors.RequestTooLarge`; the
        commands before it are still returned. After a failure the stream
        cannot continue (frame boundaries are lost): close the connection.
        """
        if self.failure is not None:
            return []
        try:
            return self._parse(data)
        except MalformedRequest as exc:
            self.failure = exc
            return exc.args[1]  # type: ignore[no-any-return]

    def _parse(self, data: bytes) -> list[Command]:
        reader = self._reader
        reader.feed(data)
        pending = self._pending + len(data)
        commands: list[Command] = []
        while True:
            try:
                frame = reader.gets()
            except hiredis.ProtocolError as exc:
                text = str(exc)
                raise MalformedRequest(
                    text if text.startswith("Protocol error") else f"Protocol error: {text}", commands
                ) from exc
            if frame is False:
                break
            if type(frame) is not list:
                if frame is None:  # a null array: nothing to do, like Redis
                    pending -= 5
                    continue
                raise MalformedRequest("Protocol error: expected an array of bulk strings", commands)
            count = len(frame)
            if count > self._max_arguments:
                raise RequestTooLarge(
                    f"Protocol error: {count} arguments; the limit is {self._max_arguments}", commands
                )
            size = 3 + len(str(count))
            for item in frame:
                if type(item) is not bytes:
                    raise MalformedRequest("Protocol error: expected an array of bulk strings", commands)
                length = len(item)
                size += length + (6 if length < 10 else 7 if length < 100 else 5 + len(str(length)))
            if size > self._max_frame:
                raise RequestTooLarge(
                    f"Protocol error: a {size}-byte command; the limit is {self._max_frame}", commands
                )
            pending -= size
            if count:
                commands.append(frame)
        # Frames spelled unusually (leading zeros in lengths) can leave a small
        # residue here; it never goes below zero.
        self._pending = pending if pending > 0 else 0
        if self._pending > self._max_frame:
            raise RequestTooLarge(
                f"Protocol error: a command of more than {self._max_frame} bytes (the limit)", commands
            )
        return commands


def encode_bulk(data: bytes) -> bytes:
    """A bulk string."""
    return b"$%d\r\n%b\r\n" % (len(data), data)


def encode_integer(value: int) -> bytes:
    """An integer reply."""
    if -2 <= value < 1022:
        return SMALL_INTEGERS[value + 2]
    return b":%d\r\n" % value


def encode_error(message: str) -> bytes:
    """An error reply; ``message`` starts with its code (``ERR``, ``WRONGTYPE``, ...)."""
    text = message.replace("\r", " ").replace("\n", " ")
    return b"-" + text.encode("utf-8", "replace") + b"\r\n"


def encode_simple(text: str) -> bytes:
    """A simple string reply (``+text``)."""
    return b"+" + text.replace("\r", " ").replace("\n", " ").encode("utf-8", "replace") + b"\r\n"


def null(protocol: int) -> bytes:
    """The null reply of ``protocol`` (2 or 3)."""
    return NULL_RESP3 if protocol == 3 else NULL_RESP2


def encode_array(items: list[bytes]) -> bytes:
    """An array of replies already encoded."""
    return b"*%d\r\n%b" % (len(items), b"".join(items))


def encode(value: Any, protocol: int) -> bytes:
    """Any reply built from Python values: str and bytes as bulk strings,
    :class:`Status` as a simple string, int, None, list, and dict (a map in
    RESP3, a flat array in RESP2)."""
    if isinstance(value, Status):
        return encode_simple(value)
    if isinstance(value, str):
        return encode_bulk(value.encode("utf-8"))
    if isinstance(value, bytes):
        return encode_bulk(value)
    if isinstance(value, bool):
        return encode_integer(int(value))
    if isinstance(value, int):
        return encode_integer(value)
    if value is None:
        return null(protocol)
    if isinstance(value, list):
        return encode_array([encode(item, protocol) for item in value])
    if isinstance(value, dict):
        parts = [encode(item, protocol) for pair in value.items() for item in pair]
        if protocol == 3:
            return b"%%%d\r\n%b" % (len(value), b"".join(parts))
        return encode_array(parts)
    raise TypeError(f"no RESP encoding for {type(value).__name__}")


__all__ = [
    "EMPTY_ARRAY",
    "NULL_RESP2",
    "NULL_RESP3",
    "OK",
    "ONE",
    "PONG",
    "ZERO",
    "Command",
    "CommandReader",
    "Status",
    "encode",
    "encode_array",
    "encode_bulk",
    "encode_error",
    "encode_integer",
    "encode_simple",
    "null",
]

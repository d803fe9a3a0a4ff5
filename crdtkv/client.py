"""``Client``: calls a running node's store over the node protocol (for the CLI and tools)."""

from __future__ import annotations

import contextlib
import ssl
import time
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Any

import anyio
import anyio.abc
from anyio.streams.memory import MemoryObjectSendStream

from . import errors
from .core.messages import ROLE_CLIENT
from .core.sync import Closed, Opened, ResponseReceived, Session, SyncSettings
from .errors import CrdtKvError, LinkClosed, ProtocolError, RemoteCallError
from .node import secret_bytes
from .store import KvStore
from .transport import Connection, Transport, TransportSettings, find_transport
from .watch import Change


class Client:
    """A client link to one node: ``async with Client(url, secret=...) as client``."""

    def __init__(
        self,
        url: str,
        *,
        store: str = "default",
        secret: bytes | str | None = None,
        timeout: float = 10.0,
        transports: dict[str, Transport] | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.url = url
        self._ssl = ssl_context
        self.timeout = timeout
        self._secret = secret_bytes(secret)
        self._state = KvStore.open(store)._state  # only its name, id and limits are used
        self._transport = find_transport(url, transports)
        self._connection: Connection | None = None
        self._session: Session | None = None
        self._next_id = 0
        self._group: anyio.abc.TaskGroup | None = None
        self._opened = anyio.Event()
        self._answers: dict[int, tuple[bool, Any]] = {}
        self._streams: dict[int, MemoryObjectSendStream[tuple[bool, Any]]] = {}
        self._lost: set[int] = set()
        self._abandoned: set[int] = set()
        self._arrived = anyio.Event()
        self._closed: Closed | None = None

    async def __aenter__(self) -> Client:
        with anyio.fail_after(self.timeout):
            self._connection = await self._transport.connect(
                self.url, TransportSettings(ssl_context=self._ssl)
            )
        self._session = Session(
            self._state,
            dialer=True,
            now=time.monotonic(),
            secret=self._secret,
            role=ROLE_CLIENT,
            settings=SyncSettings(handshake_timeout=self.timeout),
        )
        self._group = anyio.create_task_group()
        await self._group.__aenter__()
        self._group.start_soon(self._receive_loop)
        try:
            with anyio.fail_after(self.timeout):
                await self._opened.wait()
        except BaseException:
            await self.__aexit__(None, None, None)
            raise
        if self._closed is not None:
            await self.__aexit__(None, None, None)
            raise _closed_error(self._closed)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._session is not None and self._connection is not None and not self._session.closed:
            self._session.close()
            with anyio.move_on_after(1.0, shield=True), contextlib.suppress(LinkClosed):
                await self._flush()
        if self._group is not None:
            self._group.cancel_scope.cancel()
            await self._group.__aexit__(None, None, None)
            self._group = None
        if self._connection is not None:
            await self._connection.aclose()

    async def _flush(self) -> None:
        assert self._session is not None and self._connection is not None
        for data in self._session.outgoing(time.monotonic()):
            await self._connection.send(data)

    async def _receive_loop(self) -> None:
        assert self._session is not None and self._connection is not None
        try:
            await self._flush()
            while not self._session.closed:
                data = await self._connection.receive()
                for event in self._session.receive(data, time.monotonic()):
                    if isinstance(event, Opened):
                        self._opened.set()
                    elif isinstance(event, ResponseReceived):
                        answer = event.response
                        stream = self._streams.get(answer.id)
                        if stream is not None:
                            try:
                                stream.send_nowait((answer.ok, answer.value))
                            except anyio.WouldBlock:  # the consumer fell behind: tell it
                                self._lost.add(answer.id)
                            continue
                        if answer.id in self._abandoned:  # its caller timed out
                            self._abandoned.discard(answer.id)
                            continue
                        self._answers[answer.id] = (answer.ok, answer.value)
                        self._arrived.set()
                    elif isinstance(event, Closed):
                        self._closed = event
                await self._flush()
        except LinkClosed as exc:
            self._closed = self._closed or Closed(0, exc.reason, by_peer=True)
        finally:
            self._opened.set()
            self._arrived.set()

    async def call(self, op: str, *args: Any) -> Any:
        """Run ``op`` on the node's store; raise RemoteCallError if it refused."""
        session = self._session
        if session is None:
            raise errors.StoreClosed("the client is not connected")
        self._next_id += 1
        request_id = self._next_id
        session.request(request_id, op, list(args))
        await self._flush()
        try:
            with anyio.fail_after(self.timeout):
                while request_id not in self._answers:
                    if self._closed is not None:
                        raise _closed_error(self._closed)
                    self._arrived = anyio.Event()
                    await self._arrived.wait()
        except TimeoutError:
            self._abandoned.add(request_id)  # a late answer is dropped, not kept forever
            raise
        ok, value = self._answers.pop(request_id)
        if not ok:
            raise _refusal(value)
        return value

    async def watch(self, prefix: str = "", *, buffer: int = 10_000) -> AsyncIterator[Change]:
        """Changes under ``prefix`` at the node, as :class:`~crdtkv.watch.Change` objects.

        If this consumer falls more than ``buffer`` changes behind, the changes
        that did not fit are dropped and a ``Change(overflow=True)`` follows.
        """
        session = self._session
        if session is None:
            raise errors.StoreClosed("the client is not connected")
        self._next_id += 1
        request_id = self._next_id
        send, receive = anyio.create_memory_object_stream[tuple[bool, Any]](buffer)
        self._streams[request_id] = send
        session.request(request_id, "watch", [prefix])
        await self._flush()
        try:
            async with receive:
                while True:
                    try:
                        ok, value = receive.receive_nowait()
                    except anyio.WouldBlock:
                        if request_id in self._lost:  # drained after losing some: say so
                            self._lost.discard(request_id)
                            yield Change(None, None, None, overflow=True)
                            continue
                        ok, value = await receive.receive()
                    if not ok:
                        raise _refusal(value)
                    if value and value[0] == "change" and len(value) == 4:
                        yield Change(value[1], value[2], value[3])
                    elif value and value[0] == "overflow":
                        yield Change(None, None, None, overflow=True)
        finally:
            del self._streams[request_id]
            self._lost.discard(request_id)
            send.close()

    async def get(self, key: str) -> tuple[bool, Any]:
        """``(found, value)`` for ``key``."""
        found, value = await self.call("get", key)
        return bool(found), value

    async def put(self, key: str, value: Any, ttl: float | None = None) -> None:
        await self.call("put", key, value, ttl)

    async def incr(self, key: str, by: int = 1, ttl: float | None = None) -> int:
        result: int = await self.call("incr", key, by, ttl)
        return result

    async def delete(self, key: str) -> bool:
        return bool(await self.call("del", key))

    async def keys(self, prefix: str = "") -> list[str]:
        result: list[str] = await self.call("keys", prefix)
        return result

    async def digest(self) -> str:
        result: str = await self.call("digest")
        return result


def _refusal(value: Any) -> RemoteCallError:
    """The error a node's ``[error type, message]`` answer stands for."""
    kind, message = [*value, "", ""][:2] if isinstance(value, list) else ("Error", str(value))
    return RemoteCallError(str(kind), str(message))


def _closed_error(closed: Closed) -> CrdtKvError:
    if closed.code == 4001:
        return errors.AuthenticationFailed(f"the node refused the connection: {closed.reason}")
    return ProtocolError(f"the node closed the connection (code {closed.code}): {closed.reason}")

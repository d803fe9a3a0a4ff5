"""``BlockingClient``: the :class:`~crdtkv.client.Client` for synchronous code (WSGI apps, scripts).

One background thread runs an event loop (an anyio blocking portal) holding
one :class:`~crdtkv.client.Client`; each method hands its call to that loop
and blocks until the answer comes. Any number of threads may call one
``BlockingClient`` at once: their calls share the link and run concurrently.
It raises exactly what the async client raises, and reconnects the same way.
"""

from __future__ import annotations

import builtins
import ssl
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import AbstractContextManager
from types import TracebackType
from typing import Any

import anyio
import anyio.abc
from anyio.from_thread import BlockingPortal, start_blocking_portal

from .client import Client
from .cursor import Page
from .errors import NotConnected
from .ratelimit import Decision
from .store import Record
from .transport import Transport
from .watch import Change


class BlockingClient:
    """A synchronous client of one node: ``with BlockingClient(url, secret=...) as client``.

    Takes the arguments of :class:`~crdtkv.client.Client` (``timeout`` bounds
    connecting and each call, redialing included) and offers the same methods,
    blocking. Use it as a context manager, or call :meth:`open` and
    :meth:`close`. Thread-safe: share one per process (for example one per
    WSGI worker process) rather than opening one per request.
    """

    def __init__(
        self,
        url: str,
        *,
        store: str = "default",
        secret: bytes | str | None = None,
        timeout: float = 10.0,
        transports: dict[str, Transport] | None = None,
        ssl_context: ssl.SSLContext | None = None,
        reconnect: bool = True,
        reconnect_initial: float = 0.1,
        reconnect_factor: float = 1.618,
        reconnect_max: float = 5.0,
    ) -> None:
        # built here so bad arguments raise at once, in the caller's thread
        self._client = Client(
            url,
            store=store,
            secret=secret,
            timeout=timeout,
            transports=transports,
            ssl_context=ssl_context,
            reconnect=reconnect,
            reconnect_initial=reconnect_initial,
            reconnect_factor=reconnect_factor,
            reconnect_max=reconnect_max,
        )
        self.url = self._client.url
        #: serialises open and close
        self._opening = threading.Lock()
        self._portal_context: AbstractContextManager[BlockingPortal] | None = None
        self._portal: BlockingPortal | None = None
        #: set (in the loop) to make the holding task leave ``async with``
        self._stop: anyio.Event | None = None
        #: the holding task's future
        self._held: Future[None] | None = None

    # -- lifecycle ------------------------------------------------------------------------

    def open(self) -> BlockingClient:
        """Start the background loop and connect; raises what ``Client`` raises when connecting."""
        with self._opening:
            if self._portal is not None:
                return self
            context = start_blocking_portal()
            portal = context.__enter__()
            try:
                self._held, self._stop = portal.start_task(self._hold)
            except BaseException as exc:
                context.__exit__(type(exc), exc, exc.__traceback__)
                raise
            self._portal_context, self._portal = context, portal
        return self

    async def _hold(self, *, task_status: anyio.abc.TaskStatus[anyio.Event]) -> None:
        """Keep the client entered while the blocking client is open.

        One task enters and leaves the client (its task group must be left by
        the task that entered it); calls run as tasks of their own beside it.
        """
        stop = anyio.Event()
        async with self._client:
            task_status.started(stop)
            await stop.wait()

    def close(self) -> None:
        """Disconnect and stop the background loop (idempotent)."""
        with self._opening:
            portal, context = self._portal, self._portal_context
            self._portal = self._portal_context = None
            if portal is None or context is None:
                return
            try:
                stop = self._stop
                if stop is not None:
                    portal.call(stop.set)
                if self._held is not None:
                    self._held.result()  # the client has left `async with`
            finally:
                self._held = None
                context.__exit__(None, None, None)

    def __enter__(self) -> BlockingClient:
        return self.open()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        return self._portal is None

    @property
    def connections(self) -> int:
        """Links opened so far (1 once open; each reconnection adds one)."""
        return self._client.connections

    def _run(self, function: Callable[..., Any], *args: Any) -> Any:
        portal = self._portal
        if portal is None:
            raise NotConnected(f"the client of {self.url} is not open (use `with` or open())")
        try:
            return portal.call(function, *args)
        except RuntimeError as exc:
            if self._portal is None:  # closed by another thread meanwhile: the portal stopped
                raise NotConnected(f"the client of {self.url} was closed") from exc
            raise

    # -- the store's operations -----------------------------------------------------------

    def call(self, op: str, *args: Any) -> Any:
        """Run ``op`` on the node's store (see :meth:`Client.call <crdtkv.client.Client.call>`)."""
        return self._run(self._client.call, op, *args)

    def get(self, key: str, default: Any = None) -> Any:
        """The value at ``key`` at the node; ``default`` if missing, deleted or expired."""
        return self._run(self._client.get, key, default)

    def get_with_metadata(self, key: str) -> Record | None:
        """The value at ``key`` with its metadata, expiry and provenance; None if missing."""
        result: Record | None = self._run(self._client.get_with_metadata, key)
        return result

    def get_many(self, keys: builtins.list[str], default: Any = None) -> builtins.list[Any]:
        """The values of ``keys`` at the node, in their order: ``default`` for each one missing."""
        result: builtins.list[Any] = self._run(self._client.get_many, keys, default)
        return result

    def put(
        self,
        key: str,
        value: Any,
        ttl: float | None = None,
        *,
        expiration: float | None = None,
        metadata: Any = None,
    ) -> None:
        """Set ``key`` at the node (``ttl`` or ``expiration`` to live; ``metadata`` travels with it)."""

        async def put() -> None:
            await self._client.put(key, value, ttl, expiration=expiration, metadata=metadata)

        self._run(put)

    def incr(
        self, key: str, by: int = 1, ttl: float | None = None, *, expiration: float | None = None
    ) -> int:
        """Add ``by`` to the counter at ``key`` at the node; its new value there."""

        async def incr() -> int:
            return await self._client.incr(key, by, ttl, expiration=expiration)

        result: int = self._run(incr)
        return result

    def delete(self, key: str) -> bool:
        return bool(self._run(self._client.delete, key))

    def expire(self, key: str, ttl: float | None = None, *, expiration: float | None = None) -> bool:
        """Make ``key`` expire at the node; False if it is missing there."""

        async def expire() -> bool:
            return await self._client.expire(key, ttl, expiration=expiration)

        return bool(self._run(expire))

    def persist(self, key: str) -> bool:
        """Remove the expiry of ``key`` at the node; True if it had one."""
        return bool(self._run(self._client.persist, key))

    def ttl(self, key: str) -> float | None:
        """Seconds until ``key`` expires at the node; None when missing or never expiring."""
        result: float | None = self._run(self._client.ttl, key)
        return result

    def kind(self, key: str) -> str | None:
        """ "register", "counter" or "document" for ``key`` at the node; None when missing."""
        result: str | None = self._run(self._client.kind, key)
        return result

    def rate_limit(self, key: str, limit: int, window: float, cost: int = 1) -> Decision:
        """Admit or refuse one request at the node (see :meth:`KvStore.rate_limit`)."""
        result: Decision = self._run(self._client.rate_limit, key, limit, window, cost)
        return result

    def list(
        self, prefix: str = "", *, limit: int = 1000, cursor: str | None = None, detailed: bool = False
    ) -> Page:
        """One page of the node's live keys with ``prefix`` (see :meth:`Client.list`)."""

        async def page() -> Page:
            return await self._client.list(prefix, limit=limit, cursor=cursor, detailed=detailed)

        result: Page = self._run(page)
        return result

    def keys(self, prefix: str = "") -> builtins.list[str]:
        """Every live key with ``prefix`` at the node, sorted."""
        result: builtins.list[str] = self._run(self._client.keys, prefix)
        return result

    def snapshot(self) -> bytes:
        """The node's whole state as snapshot bytes."""
        result: bytes = self._run(self._client.snapshot)
        return result

    def digest(self) -> str:
        result: str = self._run(self._client.digest)
        return result

    def watch(self, prefix: str = "", *, buffer: int = 10_000) -> Iterator[Change]:
        """Changes under ``prefix`` at the node, blocking for each (see :meth:`Client.watch`).

        Close the iterator (or leave the ``for`` loop) to stop watching.
        """
        changes = self._client.watch(prefix, buffer=buffer)
        try:
            while True:
                try:
                    yield self._run(changes.__anext__)
                except StopAsyncIteration:
                    return
        finally:
            if self._portal is not None:
                self._run(changes.aclose)


__all__ = ["BlockingClient"]

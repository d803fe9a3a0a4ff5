"""The transport interface: how replicas move whole messages between processes.

A transport is tiny and anyio-shaped. A :class:`Connection` is an ordered,
reliable-while-open stream of whole messages (``bytes``), with one verb per
method. ``crdtkv`` finds transports by URL scheme through the
``crdtkv.transports`` entry-point group, so a third-party package can add one;
the transports shipped with crdtkv live in the top-level ``transports``
package. Transports depend on ``crdtkv``, never the reverse.

Errors: every method raises only :class:`~crdtkv.errors.LinkClosed` (the link
is gone, for any reason, including a message over the size limit or a failed
keepalive), :class:`~crdtkv.errors.ConnectFailed` from
:meth:`Transport.connect` and :class:`~crdtkv.errors.ListenFailed` from
:meth:`Transport.listen`. No library exception escapes.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Protocol, runtime_checkable
from urllib.parse import urlsplit

from .core.limits import KIB, MIB
from .errors import ConnectFailed, LinkClosed

ENTRY_POINT_GROUP = "crdtkv.transports"

log = logging.getLogger("crdtkv.transport")


@dataclass(frozen=True)
class TransportSettings:
    """Limits and timeouts every transport honours (where it applies)."""

    #: Largest message accepted; a larger one closes the link.
    max_message_bytes: int = 1 * MIB
    #: Messages buffered on receipt before the sender is slowed down.
    max_queue: int = 16
    #: Bytes buffered for sending before ``send`` waits for the peer to take them
    #: (a message being sent may go over; the memory transport buffers ``max_queue``
    #: messages of the receiving end instead).
    write_limit: int = 32 * KIB
    #: Transport-level keepalive (WebSocket ping); None disables it.
    ping_interval: float | None = 20.0
    ping_timeout: float | None = 20.0
    #: How long dialing may take.
    connect_timeout: float = 10.0
    #: How long a closing handshake may take before the link is dropped.
    close_timeout: float = 10.0
    #: TLS for dialing ``wss://`` (None: the system's default verification).
    ssl_context: ssl.SSLContext | None = None
    #: TLS for listening on ``wss://`` (a server context with a certificate).
    server_ssl_context: ssl.SSLContext | None = None


@runtime_checkable
class Connection(Protocol):
    """One open link: whole messages in, whole messages out."""

    @property
    def remote(self) -> str:
        """A human-readable description of the other end (for logs)."""
        ...

    async def send(self, message: bytes) -> None:
        """Send one message; waits while the link applies backpressure."""
        ...

    async def receive(self) -> bytes:
        """Receive the next message; raises LinkClosed once the link is gone."""
        ...

    async def aclose(self) -> None:
        """Close the link (idempotent; never raises)."""
        ...


class Listener(Protocol):
    """A listening endpoint, serving each accepted connection with the handler."""

    @property
    def url(self) -> str:
        """The URL peers can dial (with the real port if port 0 was asked for)."""
        ...

    async def aclose(self) -> None:
        """Stop accepting and close every connection it accepted (idempotent)."""
        ...


#: Serves one accepted connection; the transport closes it when this returns.
Handler = Callable[[Connection], Awaitable[None]]


class Transport(Protocol):
    """A way to dial and to listen for one or more URL schemes."""

    async def connect(self, url: str, settings: TransportSettings) -> Connection:
        """Dial ``url``; raises ConnectFailed."""
        ...

    async def listen(self, url: str, handler: Handler, settings: TransportSettings) -> Listener:
        """Start serving ``url`` in the background; returns once it accepts connections.

        Raises ListenFailed. An exception escaping ``handler`` is logged to
        ``crdtkv.transport`` and closes that link only.
        """
        ...


async def serve_link(handler: Handler, connection: Connection, where: str) -> None:
    """Run ``handler`` on one accepted link: its failure is logged and closes that link only.

    The error boundary every transport's listener puts around its handler.
    """
    try:
        await handler(connection)
    except LinkClosed as exc:
        log.info("link from %s ended in handler: %s", connection.remote, exc.reason)
    except Exception:
        log.exception("handler for %s on %s failed", connection.remote, where)
    finally:
        await connection.aclose()


def scheme_of(url: str) -> str:
    """The URL's scheme, lower-cased (``ws``, ``wss``, ``memory``...)."""
    return urlsplit(url).scheme.lower()


def transport_factory(scheme: str, url: str | None = None) -> Callable[..., Transport]:
    """What the plug-in registered for ``scheme`` makes transports with (its options are its own).

    Raises ConnectFailed if no installed plug-in serves ``scheme`` (``url``
    names the URL that needed it in the message).
    """
    for point in entry_points(group=ENTRY_POINT_GROUP):
        if point.name == scheme:
            try:
                factory: Callable[..., Transport] = point.load()
            except ImportError as exc:
                raise ConnectFailed(f"the transport for {scheme!r} failed to load: {exc}") from exc
            return factory
    where = f" in {url!r}" if url is not None else ""
    raise ConnectFailed(f"no transport for URL scheme {scheme!r}{where} (is it installed?)")


def find_transport(url: str, overrides: dict[str, Transport] | None = None) -> Transport:
    """The transport registered for ``url``'s scheme (``overrides`` first)."""
    scheme = scheme_of(url)
    if overrides and scheme in overrides:
        return overrides[scheme]
    return transport_factory(scheme, url)()

"""The one exception hierarchy of crdtkv.

Every error the package raises on purpose derives from :class:`CrdtKvError`.
Errors split by whose fault they are, as in h11: a *local* error means the
caller misused the API (a bad key, a value CBOR cannot carry, an ``incr`` on a
register); a *remote* error means bytes or stamps that came from elsewhere (a
peer, a snapshot file) are unacceptable. Where a built-in exception is the
natural match, the class derives from it too, so ``except ValueError`` keeps
working.
"""

from __future__ import annotations


class CrdtKvError(Exception):
    """Base class of every crdtkv error."""


# -- the caller's fault ------------------------------------------------------


class LocalError(CrdtKvError):
    """The caller used the API in a way it does not allow."""


class InvalidArgument(LocalError, ValueError):
    """An argument is outside what the call accepts."""


class InvalidArgumentType(InvalidArgument, TypeError):
    """An argument has the wrong type."""


class InvalidKey(InvalidArgument):
    """A key is empty, too long or not valid UTF-8."""


class InvalidKeyType(InvalidKey, TypeError):
    """A key is not a ``str``."""


class InvalidValue(InvalidArgument):
    """A value is too large, nested too deeply or otherwise not storable."""


class InvalidValueType(InvalidValue, TypeError):
    """A value (or something inside it) has a type CBOR values may not hold."""


class ValueTooLarge(InvalidValue):
    """A value or its metadata over its byte limit (``max_value_bytes``, ``max_metadata_bytes``)."""


class WrongType(LocalError, TypeError):
    """An operation does not apply to the kind of value the key holds.

    Like Redis ``WRONGTYPE``: ``incr`` on a key that holds a register value.
    """


class StaleDocument(LocalError, RuntimeError):
    """An edit went to a document root fetched before its document was reloaded.

    The edit is not recorded: fetch the root again from the ``Document``.
    """


class StoreClosed(LocalError, RuntimeError):
    """The store was closed and can no longer be used."""


class StoreMismatch(LocalError, ValueError):
    """State of another store (by name) was offered to ``merge``."""


# -- somebody else's fault -----------------------------------------------------


class RemoteError(CrdtKvError):
    """Data that came from outside the process is unacceptable."""


class DecodeError(RemoteError, ValueError):
    """Bytes are not a well-formed crdtkv message or snapshot.

    Raised for truncated or corrupted input, input over a size limit,
    CBOR outside the strict subset crdtkv accepts, and CBOR whose shape does
    not match the expected schema.
    """


class TooLarge(DecodeError):
    """Input is larger than the configured limit; it was not decoded."""


class ClockSkewError(RemoteError, ValueError):
    """A remote timestamp lies further in the future than ``max_clock_skew``.

    The whole batch carrying it is rejected, so one bad clock cannot push every
    replica's hybrid logical clock into the future.
    """


# -- storage ----------------------------------------------------------------------


class StorageError(CrdtKvError):
    """The storage backend failed; writes since the last commit are not durable yet."""


class CorruptionError(StorageError):
    """A store file fails its integrity checks; no data was loaded from it."""


class IncompatibleFile(StorageError, ValueError):
    """A file is not a crdtkv store, or one of another format version or replica."""


class FileLocked(StorageError):
    """Another live process holds the store file; nothing was read from it.

    ``path`` names the file and ``pid`` the holder's process id where it is known
    (None otherwise). A lock left by a process that died never blocks an open.
    """

    def __init__(self, message: str, path: str, pid: int | None = None) -> None:
        super().__init__(message)
        self.path = path
        self.pid = pid


# -- links and protocol ----------------------------------------------------------


class TransportError(CrdtKvError):
    """A transport could not carry a message."""


class ConnectFailed(TransportError, ConnectionError):
    """Dialing a peer failed (refused, unreachable, timed out, unknown scheme)."""


class ListenFailed(TransportError, OSError):
    """A transport could not listen (address in use, bad URL, missing TLS context)."""


class LinkClosed(TransportError, ConnectionError):
    """The link is closed; ``reason`` says why when it is known."""

    def __init__(self, reason: str = "link closed") -> None:
        super().__init__(reason)
        self.reason = reason


class NotConnected(TransportError):
    """A client call was made while the client has no open link to its node."""


class RequestTimeout(TransportError, TimeoutError):
    """No answer came within the client's timeout; the link may still be open."""


class RemoteCallError(RemoteError):
    """The node refused a request; ``kind`` names the error type it raised there."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind = kind


class ProtocolError(RemoteError):
    """A peer broke the replication protocol; its link is closed."""


class AuthenticationFailed(ProtocolError):
    """A peer or client failed the shared-secret challenge."""


class GatewayError(RemoteError):
    """A request on the HTTP or Redis-protocol face was refused; only its connection is affected."""


class MalformedRequest(GatewayError, ValueError):
    """Bytes on the HTTP or RESP port that are not a valid request; that connection closes."""


class RequestTooLarge(MalformedRequest):
    """A request, header or frame over its byte budget; that connection closes."""


class UnknownCommand(GatewayError, ValueError):
    """A Redis-protocol command crdtkv does not implement (the connection stays open)."""


class NotAuthenticated(GatewayError):
    """A data request on a face of a node with a secret, before authenticating."""


class NotFound(GatewayError, LookupError):
    """No HTTP route has this path, or the key asked for is missing (404)."""


class MethodNotAllowed(GatewayError):
    """The HTTP route exists but not with this method (405, with ``Allow``)."""

    def __init__(self, message: str, allow: tuple[str, ...]) -> None:
        super().__init__(message)
        self.allow = allow


class RequestTimedOut(GatewayError, TimeoutError):
    """A client took longer than ``HttpSettings.request_timeout`` to send one request (408)."""


class HeadersTooLarge(RequestTooLarge):
    """A request line and headers over ``HttpSettings.max_header_bytes`` (431)."""

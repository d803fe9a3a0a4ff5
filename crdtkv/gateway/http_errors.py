"""Errors of the HTTP face and the status code of every crdtkv error it answers.

An error response is JSON, ``{"error": "<crdtkv error class>", "message": "..."}``,
so a client in any language can branch on the class name. The few refusals that
only HTTP has (no such route, wrong method, a request too slow) get their own
:class:`~crdtkv.errors.GatewayError` subclasses here.
"""

from __future__ import annotations

import json

from ..errors import (
    CrdtKvError,
    DecodeError,
    GatewayError,
    InvalidArgument,
    MalformedRequest,
    NotAuthenticated,
    RequestTooLarge,
    StoreClosed,
    WrongType,
)


class NotFound(GatewayError, LookupError):
    """No route has this path, or the key asked for is missing (404)."""


class MethodNotAllowed(GatewayError):
    """The route exists but not with this method (405, with ``Allow``)."""

    def __init__(self, message: str, allow: tuple[str, ...]) -> None:
        super().__init__(message)
        self.allow = allow


class RequestTimedOut(GatewayError, TimeoutError):
    """A client took longer than ``HttpSettings.request_timeout`` to send one request (408)."""


class HeadersTooLarge(RequestTooLarge):
    """A request line and headers over ``HttpSettings.max_header_bytes`` (431)."""


#: most specific first: the first class an error is an instance of gives its status
_STATUS: tuple[tuple[type[CrdtKvError], int], ...] = (
    (HeadersTooLarge, 431),
    (RequestTooLarge, 413),
    (NotAuthenticated, 401),
    (NotFound, 404),
    (MethodNotAllowed, 405),
    (RequestTimedOut, 408),
    (WrongType, 409),
    (StoreClosed, 503),
    (MalformedRequest, 400),
    (InvalidArgument, 400),
    (DecodeError, 400),
)


def status_of(error: CrdtKvError) -> int:
    """The HTTP status that answers ``error`` (500 for a crdtkv error no rule covers)."""
    for cls, status in _STATUS:
        if isinstance(error, cls):
            return status
    return 500


def error_body(error: CrdtKvError) -> bytes:
    """The JSON body of an error response."""
    return json.dumps({"error": type(error).__name__, "message": str(error)}, separators=(",", ":")).encode()


__all__ = [
    "HeadersTooLarge",
    "MethodNotAllowed",
    "NotFound",
    "RequestTimedOut",
    "error_body",
    "status_of",
]

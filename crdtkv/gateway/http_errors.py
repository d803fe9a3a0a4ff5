"""Errors of the HTTP face and the status code of every crdtkv error it answers.

An error response is JSON, ``{"error": "<crdtkv error class>", "message": "..."}``,
so a client in any language can branch on the class name. The refusals that
only HTTP has (no such route, wrong method, a request too slow, headers too
large) are :class:`~crdtkv.errors.GatewayError` subclasses like every other.
"""

from __future__ import annotations

import json

from ..errors import (
    CrdtKvError,
    DecodeError,
    HeadersTooLarge,
    InvalidArgument,
    MalformedRequest,
    MethodNotAllowed,
    NotAuthenticated,
    NotFound,
    RequestTimedOut,
    RequestTooLarge,
    StoreClosed,
    ValueTooLarge,
    WrongType,
)

#: most specific first: the first class an error is an instance of gives its status
_STATUS: tuple[tuple[type[CrdtKvError], int], ...] = (
    (HeadersTooLarge, 431),
    (RequestTooLarge, 413),
    (ValueTooLarge, 413),
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


__all__ = ["error_body", "status_of"]

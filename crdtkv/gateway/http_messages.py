"""What the HTTP server and the routes exchange: a request read, a response to write."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

from ..errors import CrdtKvError
from .http_errors import error_body, status_of

#: A streamed body: called with a function that sends one chunk.
BodyStream = Callable[[Callable[[bytes], Awaitable[None]]], Awaitable[None]]

JSON = b"application/json"


@dataclass(slots=True)
class Request:
    """One request as the server read it."""

    #: the method, upper case (``"GET"``)
    method: str
    #: the request target as sent: path and query, still percent-encoded
    target: bytes
    #: header values by lower-case name (the last one of a repeated header)
    headers: dict[bytes, bytes]
    #: the whole body (read before :meth:`Handler.respond`)
    body: bytes = b""


@dataclass(slots=True)
class Response:
    """What a handler answers; ``stream`` instead of ``body`` for a body written as it comes."""

    status: int
    body: bytes = b""
    content_type: bytes | None = JSON
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    stream: BodyStream | None = None


class Handler(Protocol):
    """Turns requests into responses; never raises (an error is a response)."""

    def admit(self, request: Request) -> Response | None:
        """A refusal to send before the request's body is read (it is then not read), or None."""

    def respond(self, request: Request) -> Response:
        """The response to a whole request."""


def error_response(error: CrdtKvError, headers: list[tuple[bytes, bytes]] | None = None) -> Response:
    """The JSON error response for ``error`` (``{"error": class name, "message": ...}``)."""
    return Response(status_of(error), error_body(error), JSON, headers or [])


__all__ = ["JSON", "BodyStream", "Handler", "Request", "Response", "error_response"]

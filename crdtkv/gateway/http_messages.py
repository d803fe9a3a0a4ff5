"""What the HTTP server and the routes exchange: a request read, a response to write."""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

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


def json_bytes(value: Any) -> bytes:
    """``value`` as compact ASCII JSON (bytes as base64 text, non-finite floats as text)."""
    try:
        return json.dumps(value, separators=(",", ":"), allow_nan=False, default=_bytes_as_text).encode()
    except ValueError:  # NaN or an infinity somewhere inside
        return json.dumps(_finite(value), separators=(",", ":"), default=_bytes_as_text).encode()


def _bytes_as_text(value: object) -> str:
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    raise TypeError(f"{type(value).__name__} is not JSON")


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, list):
        return [_finite(item) for item in value]
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    return value


__all__ = ["JSON", "BodyStream", "Handler", "Request", "Response", "error_response", "json_bytes"]

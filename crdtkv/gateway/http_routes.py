"""The HTTP face's routes: each request mapped to one ``KvStore`` call (Workers KV's shapes).

Keys are percent-decoded from the path (``/v1/kv/a%2Fb`` and ``/v1/kv/a/b`` are
the key ``a/b``). A value is answered as ``text/plain; charset=utf-8`` (a
string), ``application/octet-stream`` (bytes) or ``application/json`` (anything
else; a counter is a JSON integer; bytes inside JSON are base64 text, and a
float that JSON cannot carry is the text ``"NaN"``, ``"Infinity"`` or
``"-Infinity"``). A ``PUT`` body is read by its ``Content-Type``:
``application/json`` (or ``*/*+json``) is a JSON value, ``text/*`` a string (in
its ``charset``, UTF-8 by default), anything else bytes. Every other answer,
errors included, is JSON. When the node has a secret, every route but ``/``,
``/healthz``, ``/readyz`` and ``/metrics`` needs ``Authorization: Bearer
<secret>``.
"""

from __future__ import annotations

import hmac
import json
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, unquote_to_bytes

from ..errors import (
    CrdtKvError,
    GatewayError,
    InvalidArgument,
    InvalidKey,
    InvalidValue,
    MalformedRequest,
    MethodNotAllowed,
    NotAuthenticated,
    NotFound,
)
from ..metrics import node_metrics
from ..status import node_status
from .http_messages import JSON, Request, Response, error_response
from .http_sse import EVENT_STREAM, stream_changes
from .jsonvalues import json_bytes
from .settings import HttpSettings

if TYPE_CHECKING:
    from ..node import Node
    from ..watch import Watch

log = logging.getLogger("crdtkv.http")

TEXT = b"text/plain; charset=utf-8"
OCTETS = b"application/octet-stream"
HTML = b"text/html; charset=utf-8"
#: Query parameters one request may carry.
MAX_PARAMETERS = 16
#: Keys one ``/v1/keys`` page lists when ``limit`` is not given (Workers KV's default).
DEFAULT_LIST_LIMIT = 1000
_UNAUTHORIZED_HEADERS = [(b"www-authenticate", b'Bearer realm="crdtkv"')]

Params = dict[str, str]
Action = Callable[[Request, str, Params], Response]


@dataclass(frozen=True, slots=True)
class Route:
    """One method of one path: what it does, the operation kind it counts as, and if it needs the secret."""

    action: Action
    #: the kind counted in ``node_metrics(node).operation("http", kind, result)``; None: not a data operation
    kind: str | None
    auth: bool = True


def seconds_text(seconds: float) -> bytes:
    """Epoch seconds for a header: an integer when whole, else to the millisecond."""
    whole = round(seconds)
    return str(whole if abs(seconds - whole) < 0.0005 else round(seconds, 3)).encode()


class HttpRoutes:
    """The crdtkv routes of the HTTP face of ``node`` (a :class:`~crdtkv.gateway.http_messages.Handler`)."""

    def __init__(self, node: Node, settings: HttpSettings) -> None:
        self.node = node
        self.store = node.store
        self.settings = settings
        self._metrics = node_metrics(node)
        self._watches: set[Watch] = set()
        self._page: bytes | None = None
        get = Route(self._get, "get")
        self._exact: dict[bytes, dict[str, Route]] = {
            b"/": {"GET": Route(self._status_page, None, auth=False)},
            b"/healthz": {"GET": Route(self._healthz, None, auth=False)},
            b"/readyz": {"GET": Route(self._readyz, None, auth=False)},
            b"/metrics": {"GET": Route(self._metrics_text, None, auth=False)},
            b"/v1/status": {"GET": Route(self._status, None)},
            b"/v1/keys": {"GET": Route(self._keys, "list")},
            b"/v1/watch": {"GET": Route(self._watch, "watch")},
        }
        self._prefixed: list[tuple[bytes, dict[str, Route]]] = [
            (
                b"/v1/kv/",
                {"GET": get, "PUT": Route(self._put, "put"), "DELETE": Route(self._delete, "delete")},
            ),
            (b"/v1/incr/", {"POST": Route(self._incr, "incr")}),
            (b"/v1/ratelimit/", {"POST": Route(self._rate_limit, "ratelimit")}),
        ]

    # -- the Handler protocol --------------------------------------------------------------

    def admit(self, request: Request) -> Response | None:
        """Refuse a request with a body before reading it: no route, wrong method or no secret."""
        try:
            self._find(request)
        except CrdtKvError as error:
            return self._error(error)
        return None

    def respond(self, request: Request) -> Response:
        """Run the request's route; every error becomes its JSON answer."""
        kind: str | None = None
        try:
            route, rest, query = self._find(request)
            kind = route.kind
            response = route.action(request, rest, self._params(query) if query else {})
            result = "refused" if response.status == 429 else "ok"
        except CrdtKvError as error:
            response = self._error(error)
            result = type(error).__name__
        except Exception:  # a bug: answer it, log it, keep the connection
            log.exception("http: %s %r failed", request.method, request.target)
            response = error_response(GatewayError("internal error; the node logged it"))
            result = "GatewayError"
        if kind is not None:
            self._metrics.operation("http", kind, result)
        return response

    # -- routing -------------------------------------------------------------------------

    def _find(self, request: Request) -> tuple[Route, str, bytes]:
        """The route of ``request``, the percent-decoded rest of its path, and its query."""
        path, _, query = request.target.partition(b"?")
        methods = self._exact.get(path)
        rest = ""
        if methods is None:
            for prefix, prefixed in self._prefixed:
                if path.startswith(prefix):
                    methods = prefixed
                    rest = _decode_key(path[len(prefix) :])
                    break
            else:
                raise NotFound(f"no route {path.decode('latin-1')!r}")
        route = methods.get(request.method)
        if route is None:
            if request.method == "HEAD" and "GET" in methods:
                route = methods["GET"]
            else:
                allow = (*methods, "HEAD") if "GET" in methods else tuple(methods)
                raise MethodNotAllowed(f"{request.method} is not allowed here; use {', '.join(allow)}", allow)
        if route.auth and self.node.secret is not None:
            self._authorize(request, self.node.secret)
        return route, rest, query

    @staticmethod
    def _authorize(request: Request, secret: bytes) -> None:
        given = request.headers.get(b"authorization")
        if given is None:
            raise NotAuthenticated("this node needs the header Authorization: Bearer <secret>")
        scheme, _, token = given.partition(b" ")
        # compare in constant time, whatever was given
        if not hmac.compare_digest(token.strip(), secret) or scheme.lower() != b"bearer":
            raise NotAuthenticated("wrong secret (Authorization: Bearer <secret>)")

    @staticmethod
    def _params(query: bytes) -> Params:
        try:
            pairs = parse_qsl(
                query.decode("ascii"), keep_blank_values=True, errors="strict", max_num_fields=MAX_PARAMETERS
            )
        except (UnicodeError, ValueError) as exc:
            raise MalformedRequest(f"bad query string: {exc}") from exc
        return dict(pairs)

    def _error(self, error: CrdtKvError) -> Response:
        if isinstance(error, MethodNotAllowed):
            return error_response(error, [(b"allow", ", ".join(error.allow).encode())])
        if isinstance(error, NotAuthenticated):
            return error_response(error, _UNAUTHORIZED_HEADERS)
        return error_response(error)

    # -- values ----------------------------------------------------------------------------

    def _get(self, request: Request, key: str, params: Params) -> Response:
        record = self.store.get_with_metadata(key)
        if record is None:
            raise NotFound(f"no key {key!r}")
        headers: list[tuple[bytes, bytes]] = []
        if record.metadata is not None:
            headers.append((b"x-crdtkv-metadata", json_bytes(record.metadata)))
        if record.expires_at is not None:
            headers.append((b"x-crdtkv-expiration", seconds_text(record.expires_at)))
        value = record.value
        if type(value) is str:
            return Response(200, value.encode("utf-8"), TEXT, headers)
        if type(value) is bytes:
            return Response(200, value, OCTETS, headers)
        return Response(200, json_bytes(value), JSON, headers)

    def _put(self, request: Request, key: str, params: Params) -> Response:
        metadata = None
        header = request.headers.get(b"x-crdtkv-metadata")
        if header is not None:
            metadata = _json(header, "the X-Crdtkv-Metadata header")
        self.store.put(
            key,
            self._body_value(request),
            ttl=_number(params, "ttl"),
            expiration=_number(params, "expiration"),
            metadata=metadata,
        )
        return Response(204, content_type=None)

    def _body_value(self, request: Request) -> Any:
        """The value a PUT body carries, read by its Content-Type."""
        body = request.body
        content_type, _, parameters = request.headers.get(b"content-type", b"").partition(b";")
        content_type = content_type.strip().lower()
        if content_type == b"application/json" or content_type.endswith(b"+json"):
            return _json(body, "the body")
        if content_type.startswith(b"text/"):
            charset = "utf-8"
            for parameter in parameters.split(b";"):
                name, _, text = parameter.partition(b"=")
                if name.strip().lower() == b"charset":
                    charset = text.strip().strip(b'"').decode("latin-1")
            try:
                return body.decode(charset)
            except (LookupError, UnicodeError) as exc:
                raise InvalidValue(f"the body is not text in {charset}: {exc}") from exc
        return body

    def _delete(self, request: Request, key: str, params: Params) -> Response:
        self.store.delete(key)
        return Response(204, content_type=None)

    def _incr(self, request: Request, key: str, params: Params) -> Response:
        by = _integer(params, "by")
        value = self.store.incr(
            key, 1 if by is None else by, ttl=_number(params, "ttl"), expiration=_number(params, "expiration")
        )
        return Response(200, b'{"value":%d}' % value)

    def _keys(self, request: Request, rest: str, params: Params) -> Response:
        limit = _integer(params, "limit")
        page = self.store.list(
            params.get("prefix", ""),
            limit=DEFAULT_LIST_LIMIT if limit is None else limit,
            cursor=params.get("cursor") or None,
            detailed=True,
        )
        details = page.details or []
        keys = [{"name": one.name, "expiration": one.expiration, "metadata": one.metadata} for one in details]
        return Response(
            200, json_bytes({"keys": keys, "list_complete": page.cursor is None, "cursor": page.cursor})
        )

    def _rate_limit(self, request: Request, key: str, params: Params) -> Response:
        limit, window, cost = _integer(params, "limit"), _number(params, "window"), _integer(params, "cost")
        if limit is None or window is None:
            raise InvalidArgument("ratelimit needs ?limit=REQUESTS&window=SECONDS")
        decision = self.store.rate_limit(key, limit, window, cost=1 if cost is None else cost)
        body = json_bytes(
            {
                "allowed": decision.allowed,
                "count": decision.count,
                "remaining": decision.remaining,
                "reset_after": decision.reset_after,
                "limit": decision.limit,
            }
        )
        if decision.allowed:
            return Response(200, body)
        return Response(429, body, headers=[(b"retry-after", str(math.ceil(decision.reset_after)).encode())])

    def _watch(self, request: Request, rest: str, params: Params) -> Response:
        headers = [(b"cache-control", b"no-store"), (b"x-accel-buffering", b"no")]
        if request.method == "HEAD":

            async def nothing(send: Callable[..., Any]) -> None:
                return None

            return Response(200, content_type=EVENT_STREAM, headers=headers, stream=nothing)
        budget = self.settings.max_watch_backlog_bytes
        # registered now, so every change after this answer is in the stream
        watch = self.store.watch(params.get("prefix", ""), buffer=budget, buffer_bytes=budget)
        watches = self._watches

        async def body(send: Callable[[bytes], Any]) -> None:
            watches.add(watch)
            try:
                await stream_changes(watch, send, self.settings.watch_heartbeat)
            finally:
                watches.discard(watch)
                watch.close()

        return Response(200, content_type=EVENT_STREAM, headers=headers, stream=body)

    @property
    def watchers(self) -> int:
        """``/v1/watch`` streams open now."""
        return len(self._watches)

    @property
    def watch_backlog_bytes(self) -> int:
        """Bytes of changes waiting for the ``/v1/watch`` streams."""
        return sum(watch.queued_bytes for watch in self._watches)

    # -- operations --------------------------------------------------------------------------

    def _healthz(self, request: Request, rest: str, params: Params) -> Response:
        return Response(200, b'{"status":"ok"}')

    def _readyz(self, request: Request, rest: str, params: Params) -> Response:
        if self.node.ready:
            return Response(200, b'{"ready":true}')
        return Response(503, b'{"ready":false}')

    def _metrics_text(self, request: Request, rest: str, params: Params) -> Response:
        metrics = node_metrics(self.node)
        return Response(200, metrics.render(), metrics.content_type.encode("ascii"))

    def _status(self, request: Request, rest: str, params: Params) -> Response:
        return Response(200, json_bytes(node_status(self.node)))

    def _status_page(self, request: Request, rest: str, params: Params) -> Response:
        if self._page is None:
            self._page = resources.files(__package__).joinpath("static", "status.html").read_bytes()
        return Response(200, self._page, HTML, [(b"cache-control", b"no-cache")])


def _decode_key(raw: bytes) -> str:
    try:
        return (unquote_to_bytes(raw) if b"%" in raw else raw).decode("utf-8")
    except UnicodeError as exc:
        raise InvalidKey(f"the key in the path is not UTF-8 once percent-decoded: {exc}") from exc


def _json(text: bytes, what: str) -> Any:
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:  # RecursionError: nested too deeply for the parser
        raise InvalidValue(f"{what} is not JSON: {exc}") from exc


def _number(params: Params, name: str) -> float | None:
    text = params.get(name)
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError as exc:
        raise InvalidArgument(f"{name} must be a number of seconds, not {text!r}") from exc
    if not math.isfinite(value):
        raise InvalidArgument(f"{name} must be finite, not {text!r}")
    return value


def _integer(params: Params, name: str) -> int | None:
    text = params.get(name)
    if text is None:
        return None
    try:
        return int(text)
    except ValueError as exc:
        raise InvalidArgument(f"{name} must be an integer, not {text[:40]!r}") from exc


__all__ = ["HttpRoutes", "Route", "seconds_text"]

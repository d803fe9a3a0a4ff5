"""Client requests against a node's store: one table from op name to call."""

from __future__ import annotations

from collections.abc import Callable
from itertools import islice
from typing import Any

from .errors import CrdtKvError
from .store import KvStore

#: Most keys one ``keys`` request returns (a response must fit in one message).
MAX_KEYS_PER_RESPONSE = 10_000

_MISSING = object()


def _get(store: KvStore, key: Any) -> Any:
    value = store.get(key, _MISSING)
    return [False, None] if value is _MISSING else [True, value]


def _put(store: KvStore, key: Any, value: Any, ttl: Any = None) -> None:
    store.put(key, value, ttl=ttl)


#: Key bytes one ``keys`` response may carry (well inside one message).
MAX_KEY_BYTES_PER_RESPONSE = 256 * 1024


def _keys(store: KvStore, prefix: Any = "") -> list[str]:
    keys: list[str] = []
    size = 0
    for key in islice(store.keys(prefix), MAX_KEYS_PER_RESPONSE):
        size += len(key.encode("utf-8")) + 3
        if size > MAX_KEY_BYTES_PER_RESPONSE:
            break
        keys.append(key)
    return keys


OPERATIONS: dict[str, Callable[..., Any]] = {
    "get": _get,
    "put": _put,
    "incr": lambda store, key, by=1, ttl=None: store.incr(key, by, ttl=ttl),
    "del": lambda store, key: store.delete(key),
    "keys": _keys,
    "digest": lambda store: store.digest(),
}

_ARITY = {"get": (1, 1), "put": (2, 3), "incr": (1, 3), "del": (1, 1), "keys": (0, 1), "digest": (0, 0)}


def execute(store: KvStore, op: str, args: list[Any]) -> tuple[bool, Any]:
    """Run one request; return ``(True, result)`` or ``(False, [error type, message])``."""
    call = OPERATIONS.get(op)
    if call is None:
        return False, ["InvalidArgument", f"unknown operation {op!r}"]
    low, high = _ARITY[op]
    if not low <= len(args) <= high:
        return False, ["InvalidArgument", f"{op} takes {low} to {high} arguments, got {len(args)}"]
    try:
        return True, call(store, *args)
    except CrdtKvError as exc:
        return False, [type(exc).__name__, str(exc)]

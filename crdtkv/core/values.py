"""Validation of keys and values, and their stored form.

Scalars (``str``, ``bytes``, ``int``, ``float``, ``bool``, ``None``) are
immutable and stored as they are. Lists and maps are stored as their CBOR
encoding (:class:`Packed`), so a caller mutating the object after ``put``
cannot change replicated state behind the store's back, and every ``get``
returns a fresh copy.
"""

from __future__ import annotations

from typing import Any, Final

import cbor2

from ..errors import DecodeError, InvalidKey, InvalidKeyType, InvalidValue, InvalidValueType, ValueTooLarge
from .cbor import strict_loads
from .limits import Limits

SCALAR_TYPES: Final = frozenset({str, bytes, int, float, bool, type(None)})


class Packed:
    """A list or map value held as its CBOR encoding."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Packed) and other.data == self.data

    def __hash__(self) -> int:
        return hash(self.data)

    def __repr__(self) -> str:
        return f"Packed({self.data!r})"


def check_key(key: object, limits: Limits) -> str:
    """Return ``key`` if it is a storable key, else raise a typed error."""
    if type(key) is not str:
        if isinstance(key, str):  # a str subclass: store the plain string
            key = str(key)
        else:
            raise InvalidKeyType(f"keys must be str, not {type(key).__name__}")
    assert isinstance(key, str)
    if key.isascii():
        size = len(key)
    else:
        try:
            size = len(key.encode("utf-8"))
        except UnicodeEncodeError as exc:
            raise InvalidKey(f"key {key!r} is not valid UTF-8: {exc.reason}") from exc
    if size == 0:
        raise InvalidKey("keys must not be empty")
    if size > limits.max_key_bytes:
        raise InvalidKey(f"key is {size} bytes; the limit (max_key_bytes) is {limits.max_key_bytes}")
    return key


def _too_large(size: int, limits: Limits) -> ValueTooLarge:
    return ValueTooLarge(f"value is {size} bytes; the limit (max_value_bytes) is {limits.max_value_bytes}")


def _check_tree(value: object, depth: int, limits: Limits) -> None:
    """Reject anything inside a list or map that is not a plain CBOR value."""
    if depth > limits.max_value_depth:
        raise InvalidValue(f"value nests deeper than max_value_depth ({limits.max_value_depth})")
    kind = type(value)
    if kind is list or kind is tuple:
        for item in value:  # type: ignore[attr-defined]
            _check_tree(item, depth + 1, limits)
    elif kind is dict:
        for item_key, item in value.items():  # type: ignore[attr-defined]
            if type(item_key) is not str:
                raise InvalidValueType(f"map keys inside values must be str, not {type(item_key).__name__}")
            if not item_key.isascii():
                try:
                    item_key.encode("utf-8")
                except UnicodeEncodeError as exc:
                    raise InvalidValue(f"map key inside value is not valid UTF-8: {exc.reason}") from exc
            _check_tree(item, depth + 1, limits)
    elif kind is str:
        if not value.isascii():  # type: ignore[attr-defined]
            try:
                value.encode("utf-8")  # type: ignore[attr-defined]
            except UnicodeEncodeError as exc:
                raise InvalidValue(f"string inside value is not valid UTF-8: {exc.reason}") from exc
    elif kind not in SCALAR_TYPES:
        raise InvalidValueType(
            f"values may hold str, bytes, int, float, bool, None, list and dict; not {kind.__name__}"
        )


def pack_value(value: object, limits: Limits) -> object:
    """Return the stored form of ``value`` after checking it.

    Raises :class:`InvalidValueType` or :class:`InvalidValue`.
    """
    kind = type(value)
    if kind is str:
        assert isinstance(value, str)
        if value.isascii():
            size = len(value)
        else:
            try:
                size = len(value.encode("utf-8"))
            except UnicodeEncodeError as exc:
                raise InvalidValue(f"string value is not valid UTF-8: {exc.reason}") from exc
        if size > limits.max_value_bytes:
            raise _too_large(size, limits)
        return value
    if kind is bytes:
        assert isinstance(value, bytes)
        if len(value) > limits.max_value_bytes:
            raise _too_large(len(value), limits)
        return value
    if kind is int:
        assert isinstance(value, int)
        size = (value.bit_length() + 7) // 8
        if size > limits.max_value_bytes:
            raise _too_large(size, limits)
        return value
    if kind is float or kind is bool or value is None:
        return value
    if kind is list or kind is tuple or kind is dict:
        _check_tree(value, 1, limits)
        data = cbor2.dumps(value, canonical=True)
        if len(data) > limits.max_value_bytes:
            raise _too_large(len(data), limits)
        return Packed(data)
    # Subclasses (an IntEnum, a str subclass...) are stored as their base type.
    base: type[Any]
    for base in (bool, int, float, str, bytes, list, tuple, dict):
        if isinstance(value, base):
            return pack_value(base(value), limits)
    raise InvalidValueType(
        f"values may be str, bytes, int, float, bool, None, list or dict; not {kind.__name__}"
    )


def unpack_value(stored: object) -> Any:
    """Return the caller-facing form of a stored value (a fresh copy for containers)."""
    if type(stored) is Packed:
        return cbor2.loads(stored.data)
    return stored


def packed_from_wire(data: bytes, limits: Limits) -> Packed:
    """Check a container value that arrived from elsewhere and wrap it."""
    if len(data) > limits.max_value_bytes:
        raise DecodeError(f"value is {len(data)} bytes; the limit is {limits.max_value_bytes}")
    tree = strict_loads(data, max_depth=limits.max_value_depth + 1)
    if type(tree) not in (list, dict):
        raise DecodeError("a packed value must hold a list or a map")
    try:
        _check_tree(tree, 1, limits)
    except (InvalidValue, InvalidKey) as exc:
        raise DecodeError(f"bad value from remote: {exc}") from exc
    if cbor2.dumps(tree, canonical=True) != data:
        raise DecodeError("a packed value is not in canonical CBOR form")
    return Packed(data)

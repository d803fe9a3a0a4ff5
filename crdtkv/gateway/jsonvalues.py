"""Stored values as JSON, the one way both faces show them.

Strict JSON any client parses: bytes (anywhere inside a value) as base64
text, and floats JSON cannot carry as the text ``"NaN"``, ``"Infinity"`` or
``"-Infinity"``. Compact and ASCII.
"""

from __future__ import annotations

import base64
import json
import math
from typing import Any


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


__all__ = ["json_bytes"]

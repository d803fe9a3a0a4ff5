"""How values are shown on a terminal: strings as they are, the rest as JSON."""

from __future__ import annotations

import base64
import json
from typing import Any


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return {"$base64": base64.b64encode(value).decode("ascii")}
    if isinstance(value, list):
        return [_jsonable(item) for item in value]
    if isinstance(value, dict):
        return {key: _jsonable(item) for key, item in value.items()}
    return value


def format_value(value: Any, *, as_json: bool = False) -> str:
    """A one-line rendering of a stored value (a counter prints as a decimal integer).

    Strings print as they are unless ``as_json``; everything else prints as
    JSON, bytes as ``{"$base64": ...}``.
    """
    if isinstance(value, str) and not as_json:
        return value
    return json.dumps(_jsonable(value), ensure_ascii=False, allow_nan=True)

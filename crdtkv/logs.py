"""Logging for ``crdtkv serve``: readable text, or one JSON object per line for log pipelines.

JSON lines carry ``time`` (UTC, ISO 8601 with milliseconds), ``level``,
``logger``, ``message`` and ``node`` (the replica id), then any extra fields
the call passed (``log.info(..., extra={"peer": url})``) and, for an error
with a traceback, ``exception``. Values JSON cannot hold are written as text.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any, Final, TextIO

#: Attributes every LogRecord has: anything else on a record is an extra field.
_STANDARD: Final = frozenset(
    logging.LogRecord("", 0, "", 0, "", None, None).__dict__.keys() | {"message", "asctime", "taskName"}
)


class JsonFormatter(logging.Formatter):
    """Formats each record as one line of JSON."""

    def __init__(self, node_id: str | None) -> None:
        super().__init__()
        self.node_id = node_id

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "node": self.node_id,
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_") and key not in data:
                data[key] = value
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            data["exception"] = record.exc_text
        if record.stack_info:
            data["stack"] = self.formatStack(record.stack_info)
        return json.dumps(data, default=str, ensure_ascii=False)


def configure_logging(
    node_id: str | None, log_format: str = "text", *, verbose: bool = False, stream: TextIO | None = None
) -> None:
    """Send the process's logs to ``stream`` (stderr) as text or JSON lines; DEBUG with ``verbose``."""
    handler = logging.StreamHandler(stream or sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter(node_id))
    else:
        handler.setFormatter(logging.Formatter(f"%(asctime)s {node_id} %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    if not verbose:
        logging.getLogger("websockets").setLevel(logging.WARNING)


__all__ = ["JsonFormatter", "configure_logging"]

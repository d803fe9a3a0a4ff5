"""The RESP simple-string marker, in a module of its own that stays interpreted.

A compiled build cannot compile a subclass of ``str``; keeping it here lets
the frame parser and encoders (:mod:`.resp_protocol`) be compiled.
"""

from __future__ import annotations


class Status(str):
    """A string sent as a RESP simple string (``+text``) rather than a bulk string."""

    __slots__ = ()


__all__ = ["Status"]

"""JSON numbers Kairos can hold: integers within 64 bits, and floats.

A JSON decoder reads ``1`` followed by 400 zeros as a Python ``int``; ``float()`` of it overflows, SQLite cannot
bind it and rules (CEL) have no such integer. Such a number is refused where JSON comes in (an event, a request
body), precisely, instead of failing later: the processor dead-lettered such events and paused, endpoints
answered 500. A decimal run of 19 digits is the shortest text of an integer beyond 64 bits, so the walk only
runs for text that has one.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, Final

__all__ = ["INT64_MAX", "INT64_MIN", "LONG_NUMBER", "MESSAGE", "first_path", "out_of_range"]

INT64_MIN: Final = -(2**63)
INT64_MAX: Final = 2**63 - 1
LONG_NUMBER: Final = re.compile(rb"[0-9]{19}")
MESSAGE: Final = f"integers are limited to 64 bits ({INT64_MIN} to {INT64_MAX}); send larger numbers as floats"


def out_of_range(node: Any) -> str | None:
    """The dotted path (``context.location.latitude``, ``items[2]``) of the first integer in ``node`` beyond
    64 bits, ``""`` when ``node`` itself is one, or None when there is none."""
    found = first_path(node, lambda v: type(v) is int and not INT64_MIN <= v <= INT64_MAX)
    return None if found is None else found[:200]


def first_path(node: Any, bad: Callable[[Any], bool], bad_key: Callable[[str], bool] | None = None) -> str | None:
    """The dotted path of the first value in a decoded JSON ``node`` (depth first, in order) for which ``bad``
    holds, or of the object holding the first key for which ``bad_key`` holds; ``""`` for the root; None."""
    return _first(node, bad, bad_key, "")


def _first(node: Any, bad: Callable[[Any], bool], bad_key: Callable[[str], bool] | None, path: str) -> str | None:
    if isinstance(node, dict):
        for key, value in node.items():
            if bad_key is not None and isinstance(key, str) and bad_key(key):
                return path
            found = _first(value, bad, bad_key, f"{path}.{key}" if path else str(key))
            if found is not None:
                return found
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found = _first(value, bad, bad_key, f"{path}[{i}]")
            if found is not None:
                return found
    elif bad(node):
        return path
    return None

"""JSON numbers Kairos can hold: integers within 64 bits, and floats.

A JSON decoder reads ``1`` followed by 400 zeros as a Python ``int``; ``float()`` of it overflows, SQLite cannot
bind it and rules (CEL) have no such integer. Such a number is refused where JSON comes in (an event, a request
body), precisely, instead of failing later: the processor dead-lettered such events and paused, endpoints
answered 500. A decimal run of 19 digits is the shortest text of an integer beyond 64 bits, so the walk only
runs for text that has one.
"""

from __future__ import annotations

import re
from typing import Any, Final

__all__ = ["INT64_MAX", "INT64_MIN", "LONG_NUMBER", "MESSAGE", "out_of_range"]

INT64_MIN: Final = -(2**63)
INT64_MAX: Final = 2**63 - 1
LONG_NUMBER: Final = re.compile(rb"[0-9]{19}")
MESSAGE: Final = f"integers are limited to 64 bits ({INT64_MIN} to {INT64_MAX}); send larger numbers as floats"


def out_of_range(node: Any, path: str = "") -> str | None:
    """The dotted path (``context.location.latitude``, ``items[2]``) of the first integer in ``node`` beyond
    64 bits, ``""`` when ``node`` itself is one, or None when there is none."""
    if type(node) is int:
        return path[:200] if not INT64_MIN <= node <= INT64_MAX else None
    if isinstance(node, dict):
        for key, value in node.items():
            found = out_of_range(value, f"{path}.{key}" if path else str(key))
            if found is not None:
                return found
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found = out_of_range(value, f"{path}[{i}]")
            if found is not None:
                return found
    return None

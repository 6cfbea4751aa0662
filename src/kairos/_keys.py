"""JSON objects with a key twice: refused where request bodies come in.

JSON leaves a repeated key's meaning open (RFC 8259 §4); decoders keep the last one, so ``{"rule": "a",
"rule": "b"}`` was stored as ``b`` without a word. Counting cheaply first: every key is a string followed by
``:``, so when the text holds no more ``"`` + ``:`` pairs than the decoded value holds keys, no key can repeat;
only otherwise (a repeat, or a ``":`` inside a string) is the text parsed again to find the key.
"""

from __future__ import annotations

import json
import re
from typing import Any, Final

__all__ = ["MESSAGE", "duplicate_key"]

MESSAGE: Final = "appears twice in one object; send each key once"

_SEPARATOR: Final = re.compile(rb'"[ \t\r\n]*:')
_SEPARATOR_TEXT: Final = re.compile(r'"[ \t\r\n]*:')


def duplicate_key(raw: bytes | str, decoded: Any) -> str | None:
    """The first key found twice in one object of the JSON text ``raw`` (``decoded`` is its decoded value),
    cut to 40 characters, or None."""
    pattern = _SEPARATOR if isinstance(raw, bytes) else _SEPARATOR_TEXT
    separators = len(pattern.findall(raw))  # type: ignore[arg-type]
    if separators <= _keys(decoded):
        return None
    found: list[str] = []

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        if not found:
            seen: set[str] = set()
            for key, _ in items:
                if key in seen:
                    found.append(key)
                    break
                seen.add(key)
        return dict(items)

    try:
        json.loads(raw, object_pairs_hook=pairs)
    except (ValueError, RecursionError):  # already decoded once: too deep for the json module only
        return None
    return found[0][:40] if found else None


def _keys(node: Any) -> int:
    count = 0
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            count += len(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return count

"""What a JSON document taken in whole (a request body, a command's BODY) must be once decoded, beyond valid
JSON: integers within 64 bits (:mod:`kairos._numbers`) and no key twice in one object (:mod:`kairos._keys`).
One check for the API and the CLI, so that a BODY is read as the request body it stands for."""

from __future__ import annotations

from typing import Any

from kairos._keys import MESSAGE as TWICE
from kairos._keys import duplicate_key
from kairos._numbers import LONG_NUMBER, MESSAGE, out_of_range
from kairos.errors import ValidationError

__all__ = ["check_document"]


def check_document(raw: bytes | str, value: Any, name: str, field: str) -> None:
    """Raise a :class:`ValidationError` if ``value`` (``raw`` decoded) holds an integer beyond 64 bits (on its
    path, or on ``field`` with ``name`` in the message when it is the whole document) or a key twice."""
    text = raw if isinstance(raw, bytes) else raw.encode("utf-8", "surrogatepass")
    if LONG_NUMBER.search(text) is not None and (where := out_of_range(value)) is not None:
        raise ValidationError(f"{where or name}: {MESSAGE}", field=where or field)
    if (twice := duplicate_key(raw, value)) is not None:
        raise ValidationError(f"the key {twice!r} {TWICE}", code="duplicate_key", field=field)

"""Durations as Kairos writes them: ``"30d"``, ``"12h"``, ``"15m"``, ``"90s"``, ``"250ms"``, ``"1d12h"``.

One grammar for rules (``duration("30d")``), computed-trait windows and cooldowns. CEL's own durations
stop at hours; a day here is 24 hours (durations are exact spans: no calendar, no daylight saving).
"""

from __future__ import annotations

import itertools
import re

__all__ = ["DURATION_HELP", "duration_ms"]

_UNIT_MS = {"d": 86_400_000, "h": 3_600_000, "m": 60_000, "s": 1_000, "ms": 1}
# "ms" before "m" so that "250ms" is not read as 250 minutes followed by "s".
_PART = re.compile(r"(\d+)(ms|d|h|m|s)")
_WHOLE = re.compile(r"(?:\d+(?:ms|d|h|m|s))+")
# Far beyond any window, and inside CEL's duration range (about 290 years), so a rewritten literal is valid.
_MAX_MS = 100 * 365 * 86_400_000

DURATION_HELP = 'a duration is whole numbers with units d, h, m, s or ms, largest first, e.g. "30d" or "1d12h"'


def duration_ms(text: str) -> int:
    """Milliseconds in ``text``; :class:`ValueError` with a clear message if it is not a duration.

    >>> duration_ms("30d"), duration_ms("1d12h"), duration_ms("90s"), duration_ms("250ms")
    (2592000000, 129600000, 90000, 250)
    >>> duration_ms("3x")
    Traceback (most recent call last):
    ...
    ValueError: "3x" is not a duration: a duration is whole numbers with units d, h, m, s or ms, ...
    """
    if not isinstance(text, str) or _WHOLE.fullmatch(text) is None:
        raise ValueError(f"{_quote(text)} is not a duration: {DURATION_HELP}")
    units = [unit for _, unit in _PART.findall(text)]
    order = list(_UNIT_MS)
    if any(order.index(a) >= order.index(b) for a, b in itertools.pairwise(units)):
        raise ValueError(f"{_quote(text)} is not a duration: {DURATION_HELP}")
    total = sum(int(amount) * _UNIT_MS[unit] for amount, unit in _PART.findall(text))
    if total > _MAX_MS:
        raise ValueError(f"{_quote(text)} is longer than 100 years")
    return total


def _quote(text: object) -> str:
    shown = repr(text) if not isinstance(text, str) else '"' + text[:40] + ('…"' if len(text) > 40 else '"')
    return shown

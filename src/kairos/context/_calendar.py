"""Time zones, countries and holidays: the calendar side of derived context.

Time zones come from the ``tzdata`` package only, never from the operating system's copy, so two machines
with the same Kairos install give the same local time for the same instant. Holidays come from the
``holidays`` package (``docs/decisions.md``). Both are looked up through small bounded caches of pure
functions: the same key always gives the same answer, so a cache cannot go stale.
"""

from __future__ import annotations

import functools
import importlib.resources
import re
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

import holidays
from holidays import registry

__all__ = ["country_code", "holiday", "is_zone", "locale_country", "weekend_days", "zone"]

_ZONE_SHAPE = re.compile(r"[A-Za-z0-9_+\-]+(?:/[A-Za-z0-9_+\-]+){0,2}")
_CODE = re.compile(r"[A-Za-z]{2}")
MAX_TEXT = 200  # longer text in a context field is not a zone, country or city: it is unknown


@functools.cache
def _zones() -> frozenset[str]:
    text = importlib.resources.files("tzdata").joinpath("zones").read_text(encoding="utf-8")
    return frozenset(text.split())


def is_zone(name: object) -> bool:
    """Whether ``name`` is an IANA time zone the installed ``tzdata`` knows (never raises)."""
    return isinstance(name, str) and len(name) <= 64 and name in _zones() and _ZONE_SHAPE.fullmatch(name) is not None


@functools.lru_cache(maxsize=1024)
def zone(name: str) -> ZoneInfo:
    """The zone ``name``, which :func:`is_zone` must have accepted, read from the ``tzdata`` package."""
    resource = importlib.resources.files("tzdata.zoneinfo").joinpath(*name.split("/"))
    with resource.open("rb") as f:
        return ZoneInfo.from_file(f, key=name)


@functools.cache
def _names() -> dict[str, str]:
    """Lower-case English country name (``united states``) and alpha-3 code → alpha-2 code."""
    out: dict[str, str] = {}
    for module, spec in registry.COUNTRIES.items():
        code, alpha3 = spec[1], spec[2]
        out[module.replace("_", " ")] = code
        out[re.sub(r"(?<!^)(?=[A-Z])", " ", spec[0]).lower()] = code
        out[alpha3.lower()] = code
    return out


def country_code(value: object) -> str | None:
    """An ISO 3166 alpha-2 code (upper case) from a code (``us``, ``USA``) or an English name as Segment's
    ``context.location.country`` carries it (``United States``); None when it is neither."""
    if not isinstance(value, str) or not value or len(value) > MAX_TEXT or "\x00" in value:
        return None
    return _country_code(value)


@functools.lru_cache(maxsize=4096)  # every event with a location asks; few distinct texts
def _country_code(value: str) -> str | None:
    text = value.strip()
    if _CODE.fullmatch(text):
        return text.upper()
    return _names().get(" ".join(text.lower().replace("_", " ").split()))


def locale_country(value: object) -> str | None:
    """The region of a locale such as ``en-US``, ``pt_BR`` or ``zh-Hant-TW``; None without one."""
    if not isinstance(value, str) or len(value) > 64 or "\x00" in value:
        return None
    return _locale_country(value)


@functools.lru_cache(maxsize=4096)  # every event with a locale asks; few distinct texts
def _locale_country(value: str) -> str | None:
    tags = re.split(r"[-_]", value.strip())
    regions = [t for t in tags[1:] if _CODE.fullmatch(t)]
    return regions[-1].upper() if regions else None


@functools.lru_cache(maxsize=512)
def _calendar(country: str, year: int) -> Any | None:
    """The ``holidays`` calendar of ``country`` for ``year`` in English where the library has it, else in
    the country's own language; None for a country it does not cover. Building one costs milliseconds."""
    try:
        plain = holidays.country_holidays(country)
        language = "en_US" if "en_US" in getattr(plain, "supported_languages", ()) else None
        return holidays.country_holidays(country, years=year, language=language)
    except (NotImplementedError, KeyError, ValueError):
        return None


def holiday(country: str | None, day: date) -> str | None:
    """The name of the public holiday on ``day`` in ``country`` (several are joined by ``; ``), or None."""
    if country is None:
        return None
    calendar = _calendar(country, day.year)
    if calendar is None:
        return None
    name = calendar.get(day)
    return str(name) if name else None


def weekend_days(country: str | None, year: int) -> frozenset[int]:
    """The weekend of ``country`` as ``datetime.weekday()`` numbers (Monday 0): Saturday and Sunday unless
    the ``holidays`` library says otherwise (Friday and Saturday in Israel or Saudi Arabia)."""
    calendar = _calendar(country, year) if country is not None else None
    days = getattr(calendar, "weekend", None)
    return frozenset(days) if days else frozenset({5, 6})


def local(ts: int, name: str) -> datetime | None:
    """Epoch ms ``ts`` as a wall-clock time in zone ``name``; None when it is out of range."""
    try:
        return datetime.fromtimestamp(ts / 1000, zone(name))
    except (OverflowError, OSError, ValueError):
        return None

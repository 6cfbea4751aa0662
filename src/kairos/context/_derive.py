"""What an event says about where, when and how the person is, and the context derived from it."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any, Literal

import msgspec

from kairos.context import _calendar
from kairos.context._agent import parse_agent
from kairos.pipeline.projection import Entry, Event

__all__ = [
    "DAYPARTS",
    "WEEKDAYS",
    "DerivedContext",
    "Observed",
    "SourceDefaults",
    "daypart",
    "derive",
    "observe",
]

Daypart = Literal["night", "morning", "afternoon", "evening"]
# (first hour, name): night 00-05, morning 06-11, afternoon 12-17, evening 18-23, local time.
DAYPARTS: tuple[tuple[int, Daypart], ...] = ((0, "night"), (6, "morning"), (12, "afternoon"), (18, "evening"))
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_CHANNEL = re.compile(r"[a-z][a-z0-9_]{0,31}")
_APP_DEVICES = frozenset({"ios", "android", "ipados", "tvos", "watchos", "android_tv", "harmonyos"})


class DerivedContext(msgspec.Struct, frozen=True, kw_only=True):
    """The derived context of one event: the vocabulary of ``docs/context.md``. Unknown values are None."""

    local_time: str | None = None  # ISO 8601 wall-clock time with its UTC offset, to the second
    local_hour: int | None = None  # 0-23
    daypart: Daypart | None = None
    weekday: str | None = None  # "monday" ... "sunday"
    weekend: bool | None = None
    holiday: str | None = None  # the public holiday's name in the person's country, else None
    timezone: str | None = None  # the IANA zone local_time is in (after the fallbacks)
    device_class: str | None = None  # mobile | tablet | desktop | bot
    os: str | None = None
    browser: str | None = None
    channel: str | None = None
    country: str | None = None  # ISO 3166 alpha-2 (after the fallbacks)
    city: str | None = None
    latitude: float | None = None
    longitude: float | None = None


class Observed(msgspec.Struct, frozen=True, kw_only=True):
    """What one event itself says (no fallback): also a profile's last-known context."""

    timezone: str | None = None
    device_class: str | None = None
    os: str | None = None
    browser: str | None = None
    channel: str | None = None
    country: str | None = None
    city: str | None = None
    latitude: float | None = None
    longitude: float | None = None


class SourceDefaults(msgspec.Struct, frozen=True, kw_only=True):
    """A source's configured context (``[context.sources.NAME]``, else ``[context]`` defaults)."""

    timezone: str | None = None
    country: str | None = None
    channel: str | None = None


def daypart(hour: int) -> Daypart:
    """The daypart of a local hour (0-23).

    >>> daypart(5), daypart(6), daypart(12), daypart(23)
    ('night', 'morning', 'afternoon', 'evening')
    """
    return next(name for first, name in reversed(DAYPARTS) if hour >= first)


def _dict(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, dict) else {}


def _text(value: Any) -> str | None:
    if not isinstance(value, str) or "\x00" in value or len(value) > _calendar.MAX_TEXT:
        return None
    return value.strip() or None


def _coordinate(value: Any, limit: float) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:  # an integer beyond floats, stored before collect refused them
        return None
    return number if math.isfinite(number) and -limit <= number <= limit else None


def channel_name(value: Any) -> str | None:
    """A channel as sent or configured, in lower_snake_case (``Call-Centre`` → ``call_centre``); None when it
    is not a short name."""
    if not isinstance(value, str) or len(value) > 64:
        return None
    name = re.sub(r"[\s\-]+", "_", value.strip().lower())
    return name if _CHANNEL.fullmatch(name) else None


def _channel(event: Event, context: Mapping[str, Any], configured: str | None) -> str | None:
    """The event's own ``context.channel``, else the source's configured channel, else what the event's shape
    shows: a screen or an app's context → ``app``, a page or a page context → ``web``."""
    sent = channel_name(context.get("channel"))
    if sent is not None:
        return sent
    if configured is not None:
        return configured
    device_type = _dict(context.get("device")).get("type")
    if event.type == "screen":
        return "app"
    if event.type == "page":
        return "web"
    if isinstance(context.get("app"), dict) or (
        isinstance(device_type, str) and device_type.strip().lower() in _APP_DEVICES
    ):
        return "app"
    return "web" if isinstance(context.get("page"), dict) else None


def observe(event: Event, channel: str | None = None) -> Observed:
    """What ``event`` says about the person's context; ``channel``: the source's configured channel."""
    context = _dict(event.context)
    location = _dict(context.get("location"))
    agent = parse_agent(context.get("userAgent"))
    timezone = context.get("timezone")
    country = _calendar.country_code(location.get("country"))
    if country is None:
        country = _calendar.locale_country(context.get("locale"))
    return Observed(
        timezone=timezone if _calendar.is_zone(timezone) else None,
        device_class=agent.device_class if agent else None,
        os=agent.os if agent else None,
        browser=agent.browser if agent else None,
        channel=_channel(event, context, channel),
        country=country,
        city=_text(location.get("city")),
        latitude=_coordinate(location.get("latitude"), 90.0),
        longitude=_coordinate(location.get("longitude"), 180.0),
    )


def _as_event(value: Mapping[str, Any]) -> Event:
    kind, context = value.get("type"), value.get("context")
    return Event(type=kind if isinstance(kind, str) else "", context=context if isinstance(context, dict) else None)


def derive(
    entry: Entry | Event | Mapping[str, Any],
    last_known: Observed | None = None,
    source_defaults: SourceDefaults | None = None,
    *,
    at: int | None = None,
) -> DerivedContext:
    """The derived context of an event (pure: the same inputs give the same answer; never raises on bad data).

    ``entry``: a log entry (its ``ts`` is the moment), or an event / a raw Segment event mapping with ``at``
    (epoch ms) as the moment, e.g. a decision request's context at the time of the request. The time zone is
    the event's ``context.timezone``, else ``last_known``'s, else the source's, else UTC; the country is the
    event's (``context.location.country``, else the region of ``context.locale``), else ``last_known``'s,
    else the source's; everything else comes from the event alone.

    >>> ctx = derive({"type": "page", "context": {"timezone": "Asia/Tokyo", "locale": "ja-JP"}},
    ...              at=1_782_487_800_000)  # 2026-06-26T15:30Z, a Friday in UTC
    >>> ctx.local_time, ctx.weekday, ctx.weekend, ctx.daypart, ctx.channel, ctx.country
    ('2026-06-27T00:30:00+09:00', 'saturday', True, 'night', 'web', 'JP')
    """
    ts: int | None = at
    if isinstance(entry, Entry):
        event = entry.event
        ts = entry.ts if at is None else at
    else:
        event = entry if isinstance(entry, Event) else _as_event(entry if isinstance(entry, Mapping) else {})
    last = last_known or Observed()
    source = source_defaults or SourceDefaults()
    seen = observe(event, channel_name(source.channel))
    zone = next((z for z in (seen.timezone, last.timezone, source.timezone) if z and _calendar.is_zone(z)), "UTC")
    country = seen.country or _calendar.country_code(last.country) or _calendar.country_code(source.country)
    base = DerivedContext(
        timezone=zone,
        device_class=seen.device_class,
        os=seen.os,
        browser=seen.browser,
        channel=seen.channel,
        country=country,
        city=seen.city,
        latitude=seen.latitude,
        longitude=seen.longitude,
    )
    local = _calendar.local(ts, zone) if isinstance(ts, int) and not isinstance(ts, bool) else None
    if local is None:
        return base
    weekday = local.weekday()
    return msgspec.structs.replace(
        base,
        local_time=local.isoformat(timespec="seconds"),
        local_hour=local.hour,
        daypart=daypart(local.hour),
        weekday=WEEKDAYS[weekday],
        weekend=weekday in _calendar.weekend_days(country, local.year),
        holiday=_calendar.holiday(country, local.date()),
    )

"""Derived context: local time across DST, holidays and weekends per country, fallbacks, user agents, channel,
hostile values; and the last-known context a profile keeps."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest

from kairos.config import load_settings
from kairos.context import (
    DerivedContext,
    Observed,
    SourceDefaults,
    daypart,
    derive,
    parse_agent,
    source_defaults,
)
from kairos.context._agent import MAX_AGENT, _parse
from kairos.pipeline import Entry, Event
from kairos.runtime import Kairos
from tests.conftest import Feed

IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.5 Mobile/15E148 Safari/604.1"
)
ANDROID = (
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/125.0.6422.113 Mobile Safari/537.36"
)
IPAD = (
    "Mozilla/5.0 (iPad; CPU OS 16_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/16.6 Mobile/15E148 Safari/604.1"
)
ANDROID_TABLET = (
    "Mozilla/5.0 (Linux; Android 13; SM-X700) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36"
)
WINDOWS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36"
)
MAC = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.4.1 Safari/605.1.15"
)
GOOGLEBOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"


def ms(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> int:
    """Epoch ms of a UTC wall-clock time."""
    return int(datetime(year, month, day, hour, minute, tzinfo=UTC).timestamp() * 1000)


def ctx(context: dict[str, Any] | None = None, at: int = 0, kind: str = "track", **kw: Any) -> DerivedContext:
    return derive({"type": kind, "context": context or {}}, at=at, **kw)


# -- time ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("utc", "local", "hour"),
    [
        # 29 March 2026: Paris springs from 02:00 CET to 03:00 CEST (01:00 UTC).
        (ms(2026, 3, 29, 0, 59), "2026-03-29T01:59:00+01:00", 1),
        (ms(2026, 3, 29, 1, 0), "2026-03-29T03:00:00+02:00", 3),
        # 25 October 2026: back from 03:00 CEST to 02:00 CET (01:00 UTC); 02:30 happens twice.
        (ms(2026, 10, 25, 0, 30), "2026-10-25T02:30:00+02:00", 2),
        (ms(2026, 10, 25, 1, 30), "2026-10-25T02:30:00+01:00", 2),
    ],
)
def test_local_time_across_daylight_saving_changes(utc: int, local: str, hour: int) -> None:
    c = ctx({"timezone": "Europe/Paris"}, at=utc)
    assert (c.local_time, c.local_hour, c.timezone) == (local, hour, "Europe/Paris")


def test_dayparts_cover_every_hour() -> None:
    parts = [daypart(h) for h in range(24)]
    assert parts == ["night"] * 6 + ["morning"] * 6 + ["afternoon"] * 6 + ["evening"] * 6


def test_weekend_begins_at_local_midnight() -> None:
    at = ms(2026, 6, 26, 15, 30)  # Friday 15:30 UTC
    tokyo = ctx({"timezone": "Asia/Tokyo"}, at=at)
    assert (tokyo.weekday, tokyo.weekend, tokyo.local_hour, tokyo.daypart) == ("saturday", True, 0, "night")
    utc = ctx({}, at=at)
    assert (utc.weekday, utc.weekend, utc.timezone) == ("friday", False, "UTC")
    la = ctx({"timezone": "America/Los_Angeles"}, at=ms(2026, 6, 29, 6, 59))  # Sunday 23:59 there
    assert (la.weekday, la.weekend) == ("sunday", True)
    assert ctx({"timezone": "America/Los_Angeles"}, at=ms(2026, 6, 29, 7, 0)).weekend is False


def test_the_weekend_is_the_countrys() -> None:
    friday = ms(2026, 6, 26, 12)
    assert ctx({"location": {"country": "IL"}}, at=friday).weekend is True  # Friday-Saturday in Israel
    assert ctx({"location": {"country": "FR"}}, at=friday).weekend is False


# -- holidays --------------------------------------------------------------------------------------------


def test_a_holiday_in_the_persons_country_only() -> None:
    july4 = ms(2026, 7, 4, 16)
    assert ctx({"locale": "en-US", "timezone": "America/New_York"}, at=july4).holiday == "Independence Day"
    assert ctx({"locale": "fr-FR", "timezone": "Europe/Paris"}, at=july4).holiday is None
    may1 = ms(2026, 5, 1, 10)
    assert ctx({"location": {"country": "France"}, "timezone": "Europe/Paris"}, at=may1).holiday == "Labor Day"
    assert ctx({"location": {"country": "US"}}, at=may1).holiday is None
    assert ctx({}, at=may1).holiday is None  # no country known: no holiday


def test_the_holiday_is_on_the_local_date() -> None:
    # 5 July 02:00 UTC is still 4 July in Los Angeles.
    at = ms(2026, 7, 5, 2)
    assert ctx({"timezone": "America/Los_Angeles", "locale": "en-US"}, at=at).holiday == "Independence Day"
    assert ctx({"locale": "en-US"}, at=at).holiday is None


# -- fallbacks -------------------------------------------------------------------------------------------


def test_time_zone_and_country_fall_back_event_then_profile_then_source_then_default() -> None:
    at = ms(2026, 7, 4, 12)
    last = Observed(timezone="Asia/Tokyo", country="JP")
    source = SourceDefaults(timezone="Europe/Paris", country="FR")
    own = ctx({"timezone": "America/New_York", "locale": "en-US"}, at=at, last_known=last, source_defaults=source)
    assert (own.timezone, own.country) == ("America/New_York", "US")
    profile = ctx({}, at=at, last_known=last, source_defaults=source)
    assert (profile.timezone, profile.country) == ("Asia/Tokyo", "JP")
    configured = ctx({}, at=at, last_known=Observed(), source_defaults=source)
    assert (configured.timezone, configured.country) == ("Europe/Paris", "FR")
    default = ctx({}, at=at)
    assert (default.timezone, default.country) == ("UTC", None)
    # An invalid zone anywhere in the chain is skipped, not an error.
    odd = ctx({"timezone": "Mars/Olympus"}, at=at, last_known=Observed(timezone="Nowhere"), source_defaults=source)
    assert odd.timezone == "Europe/Paris"


def test_source_defaults_come_from_the_settings() -> None:
    settings = load_settings(
        context={
            "default_timezone": "Europe/Oslo",
            "default_country": "no",
            "sources": {"pos": {"timezone": "Europe/Paris", "country": "FR", "channel": "store"}},
        }
    ).context
    assert source_defaults(settings, "pos") == SourceDefaults(timezone="Europe/Paris", country="FR", channel="store")
    assert source_defaults(settings, "web") == SourceDefaults(timezone="Europe/Oslo", country="NO")
    store = ctx({}, at=ms(2026, 5, 1, 9), source_defaults=source_defaults(settings, "pos"))
    assert (store.channel, store.holiday, store.local_hour) == ("store", "Labor Day", 11)


# -- user agents -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ua", "device", "os", "browser"),
    [
        (IPHONE, "mobile", "iOS", "Mobile Safari"),
        (ANDROID, "mobile", "Android", "Chrome Mobile"),
        (IPAD, "tablet", "iOS", "Mobile Safari"),
        (ANDROID_TABLET, "tablet", "Android", "Chrome"),
        (WINDOWS, "desktop", "Windows", "Chrome"),
        (MAC, "desktop", "Mac OS X", "Safari"),
        (GOOGLEBOT, "bot", None, "Googlebot"),
    ],
)
def test_user_agents(ua: str, device: str, os: str | None, browser: str) -> None:
    c = ctx({"userAgent": ua})
    assert (c.device_class, c.os, c.browser) == (device, os, browser)


@pytest.mark.parametrize("ua", ["", "   ", "garbage ###", "\x00" + IPHONE, 42, None, ["x"], {"a": 1}])
def test_unknown_user_agents_are_null(ua: Any) -> None:
    c = ctx({"userAgent": ua})
    assert (c.device_class, c.os, c.browser) == (None, None, None)


def test_a_huge_user_agent_is_cut_before_parsing_and_caching() -> None:
    huge = IPHONE + " " + "x" * 10_000
    assert parse_agent(huge) == parse_agent(IPHONE[:MAX_AGENT] if len(IPHONE) > MAX_AGENT else huge[:MAX_AGENT])
    assert parse_agent("y" * 10_000) is None


def test_parsing_is_cached() -> None:
    parse_agent(WINDOWS)
    hits = _parse.cache_info().hits
    parse_agent(WINDOWS)
    assert _parse.cache_info().hits == hits + 1


# -- channel and location --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "context", "configured", "channel"),
    [
        ("track", {"channel": "Call-Centre"}, "store", "call_centre"),  # sent wins over everything
        ("page", {}, "store", "store"),  # the source's setting wins over the event's shape
        ("page", {}, None, "web"),
        ("track", {"page": {"path": "/"}}, None, "web"),
        ("screen", {}, None, "app"),
        ("track", {"app": {"name": "Shop"}}, None, "app"),
        ("track", {"device": {"type": "android"}}, None, "app"),
        ("track", {"device": {"type": "ios"}}, None, "app"),
        ("track", {}, None, None),
        ("track", {"channel": "not a channel!"}, None, None),
        ("track", {"channel": 7}, None, None),
    ],
)
def test_channel(kind: str, context: dict[str, Any], configured: str | None, channel: str | None) -> None:
    assert ctx(context, kind=kind, source_defaults=SourceDefaults(channel=configured)).channel == channel


def test_location_fields() -> None:
    c = ctx({"location": {"country": "United States", "city": " Boston ", "latitude": 42.36, "longitude": -71.06}})
    assert (c.country, c.city, c.latitude, c.longitude) == ("US", "Boston", 42.36, -71.06)
    bad = ctx({"location": {"country": "Atlantis", "city": 5, "latitude": 91, "longitude": True}})
    assert (bad.country, bad.city, bad.latitude, bad.longitude) == (None, None, None, None)


# -- hostile values --------------------------------------------------------------------------------------

HOSTILE: list[Any] = [
    None,
    [],
    "context",
    {"timezone": "Mars/Olympus"},
    {"timezone": "../../etc/passwd"},
    {"timezone": "Europe/" + "x" * 100_000},
    {"timezone": 5, "locale": ["en"], "location": "Paris", "userAgent": {"a": 1}, "device": "ios", "app": 1},
    {"timezone": "Europe/Paris\x00", "locale": "\x00en-US", "location": {"city": "Pa\x00ris", "country": "\x00"}},
    {"location": {"latitude": float("nan"), "longitude": float("inf"), "country": "x" * 100_000}},
    {"locale": "en-" + "U" * 10_000, "channel": "c" * 10_000},
]


@pytest.mark.parametrize("context", HOSTILE)
def test_hostile_values_never_raise(context: Any) -> None:
    c = derive({"type": "track", "context": context}, at=ms(2026, 1, 1))
    assert c.local_time == "2026-01-01T00:00:00+00:00" and c.timezone == "UTC"
    assert (c.city, c.latitude, c.longitude, c.country) == (None, None, None, None)


@pytest.mark.parametrize("at", [None, 10**20, -(10**20), True, "2026-01-01"])
def test_an_unusable_time_leaves_the_calendar_null(at: Any) -> None:
    c = derive({"type": "page"}, at=at)
    assert (c.local_time, c.local_hour, c.weekday, c.weekend, c.holiday) == (None, None, None, None, None)
    assert c.channel == "web"


def test_derive_takes_a_log_entry_and_is_deterministic() -> None:
    event = msgspec.convert({"type": "page", "context": {"userAgent": IPHONE, "locale": "en-US"}}, Event)
    entry = Entry(1, "web", "observed", 0, ms(2026, 7, 4, 12), "m1", event)
    first = derive(entry)
    assert first == derive(entry) and first.holiday == "Independence Day" and first.device_class == "mobile"
    assert derive(entry, at=ms(2026, 7, 6, 12)).holiday is None  # `at` overrides the entry's time


# -- the last-known context of a profile -------------------------------------------------------------------


def test_a_profile_keeps_the_newest_context(feed: Feed, kairos: Kairos) -> None:
    paris = {"country": "FR", "city": "Paris", "latitude": 48.85, "longitude": 2.35}
    feed(
        {"type": "page", "userId": "u", "timestamp": "2026-01-01T10:05:00Z", "context": {"userAgent": IPHONE}},
        {  # older: loses
            "type": "track",
            "userId": "u",
            "event": "E",
            "timestamp": "2026-01-01T10:00:00Z",
            "context": {"userAgent": WINDOWS, "timezone": "Asia/Tokyo", "location": paris},
        },
        {"type": "track", "userId": "u", "event": "E", "timestamp": "2026-01-01T10:06:00Z", "context": {"x": 1}},
    )
    pk = kairos.resolve("user_id:u")
    assert pk is not None
    profile = kairos.profile(pk)
    assert profile is not None
    view = kairos.codec.view(profile)["context"]
    assert view == {
        "timezone": "Asia/Tokyo",  # only the older event said one
        "device_class": "mobile",
        "os": "iOS",
        "browser": "Mobile Safari",
        "channel": "web",
        "country": "FR",
        "city": "Paris",
        "latitude": 48.85,
        "longitude": 2.35,
    }

"""Derived context: what every event implies about when, where and how the person is.

:func:`derive` turns a log entry (or a decision request's event) into a :class:`DerivedContext`, the
vocabulary every moment condition reads as ``context`` (``docs/context.md``): local time, hour, daypart,
weekday, weekend and public holiday in the person's time zone and country; device class, operating system
and browser from the user agent; channel; country, city and coordinates. :class:`LastContext` keeps a
profile's last-known context (the fallback for events that do not say), as a projection.

Pure and deterministic given its inputs; unknown is None, hostile input is unknown, nothing raises. Kairos
fetches no external signal (weather, beacons): those arrive as events or in a decision request's context.
"""

from __future__ import annotations

from kairos.context._agent import Agent, parse_agent
from kairos.context._calendar import country_code, is_zone, locale_country
from kairos.context._derive import (
    DAYPARTS,
    WEEKDAYS,
    DerivedContext,
    Observed,
    SourceDefaults,
    channel_name,
    daypart,
    derive,
    observe,
)
from kairos.context.last import LastContext, last_known, source_defaults

__all__ = [
    "DAYPARTS",
    "WEEKDAYS",
    "Agent",
    "DerivedContext",
    "LastContext",
    "Observed",
    "SourceDefaults",
    "channel_name",
    "country_code",
    "daypart",
    "derive",
    "is_zone",
    "last_known",
    "locale_country",
    "observe",
    "parse_agent",
    "source_defaults",
]

"""A profile's last-known context, as a projection: the fallback for events that do not say.

Each field keeps the value of the newest event (event time, then log position) that observed it, so
replay, batch size and merge order give the same state; a merge keeps the newer of each field. Fields that
describe one thing move together, so that a profile never shows the city of one event with the coordinates
of another: the device class, operating system and browser come from one user agent; country, city and
coordinates from one ``context.location`` (a ``context.locale`` alone updates only the country).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from kairos.config import ContextSettings
from kairos.context._derive import Observed, SourceDefaults, channel_name, observe
from kairos.pipeline.projection import Context, Entry, Projection, fold
from kairos.store.schema import Column

__all__ = ["FIELDS", "LastContext", "last_known", "source_defaults"]

Stamped = tuple[Any, int, int]  # (value, event time in epoch ms, log position)
State = Mapping[str, Stamped]
FIELDS: tuple[str, ...] = Observed.__struct_fields__


def source_defaults(settings: ContextSettings, source: str) -> SourceDefaults:
    """The configured context of ``source``: its ``[context.sources.NAME]`` over the ``[context]`` defaults."""
    own = settings.sources.get(source)
    return SourceDefaults(
        timezone=(own.timezone if own else None) or settings.default_timezone,
        country=(own.country if own else None) or settings.default_country,
        channel=own.channel if own else None,
    )


def _newer(new: Stamped, old: Stamped | None) -> bool:
    return old is None or (new[1], new[2]) > (old[1], old[2])


def last_known(state: State) -> Observed:
    """The state as :func:`kairos.context.derive` takes it."""
    return Observed(**{name: state[name][0] for name in FIELDS if name in state})


class LastContext(Projection[State]):
    name = "last_context"
    columns = (Column("last_context", "json", default="'{}'"),)

    def __init__(self, settings: ContextSettings | None = None) -> None:
        self.settings = settings if settings is not None else ContextSettings()
        self._channels: dict[str, str | None] = {}  # source → its configured channel, looked up once

    def initial(self) -> State:
        return {}

    def apply(self, state: State, entry: Entry, ctx: Context) -> State:
        source = entry.source
        if source not in self._channels:
            self._channels[source] = channel_name(source_defaults(self.settings, source).channel)
        configured = self._channels[source]
        event = entry.event
        if not event.context and configured is None and event.type not in ("page", "screen"):
            return state  # the event says nothing about context (most server-side track calls)
        seen = observe(event, configured)
        pairs: list[tuple[str, Any]] = []
        if seen.timezone is not None:
            pairs.append(("timezone", seen.timezone))
        if seen.channel is not None:
            pairs.append(("channel", seen.channel))
        if seen.device_class is not None or seen.os is not None or seen.browser is not None:
            pairs += (("device_class", seen.device_class), ("os", seen.os), ("browser", seen.browser))
        if seen.city is not None or seen.latitude is not None or seen.longitude is not None:
            pairs += (
                ("country", seen.country),
                ("city", seen.city),
                ("latitude", seen.latitude),
                ("longitude", seen.longitude),
            )
        elif seen.country is not None:
            pairs.append(("country", seen.country))
        # fold() with _newer, written out: this runs for most events.
        ts, seq = entry.ts, entry.seq
        out: dict[str, Stamped] | None = None
        for name, value in pairs:
            old = state.get(name)
            if old is None or (ts, seq) > (old[1], old[2]):
                if out is None:
                    out = dict(state)
                out[name] = (value, ts, seq)
        return state if out is None else out

    def merge(self, winner: State, loser: State, ctx: Context) -> State:
        return fold(winner, loser, _newer)

    def encode(self, state: State) -> tuple[Any, ...]:
        return ({name: list(value) for name, value in state.items()},)

    def decode(self, values: Sequence[Any]) -> State:
        stored = values[0] or {}
        return {name: (v[0], int(v[1]), int(v[2])) for name, v in stored.items() if name in FIELDS}

    def view(self, state: State) -> dict[str, Any]:
        return {"context": {name: state[name][0] if name in state else None for name in FIELDS}}

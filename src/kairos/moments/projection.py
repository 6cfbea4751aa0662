"""Moments, as a projection: named patterns of events, segment changes and trait crossings, fired on time.

Patterns (``when``; :class:`~kairos.definitions.MomentDef`):

- ``event``: one event (optionally filtered by ``where``) is the moment;
- ``sequence``: events in this order, the last within ``within`` of the first (other events may come in
  between; a step restarts the pattern when it cannot go on in time);
- absence (``not_followed_by``): an event not followed by another within ``within``: a durable timer is set
  at the first event's time + ``within`` (moved by a repeat of the first event, cancelled by the second),
  and the moment fires when it is due ("abandoned cart");
- ``segment_entered`` / ``segment_exited``: the profile entered or left a segment (this event, a window
  that slid, a rule that reads ``now``);
- ``trait`` with ``crosses_above`` / ``crosses_below``: a trait's value went from below the threshold (or
  absent) to at or above it, or from at or above to below.

A moment fires only if its ``context`` condition holds (the derived context of the event, or the profile's
last known context for a moment fired by a timer or a change, and the profile), and not within ``cooldown``
of its last occurrence on this profile. An occurrence is a timeline item (``type`` ``moment``, ``name`` the
key, ``data``: the log positions of the events that caused it and the version), an outbox message
(``moment``) and a count per day (``moment_stats``).

A moment saved or changed applies from the next event on: moments are what happens now, so no backfill
fires old occurrences.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import Any

from kairos.config import ContextSettings
from kairos.context import DerivedContext, derive, last_known, source_defaults
from kairos.definitions import Catalog, MomentDef, Step
from kairos.pipeline.projection import Context, Entry, Projection, Timer
from kairos.profiles.computed import EventFilters
from kairos.profiles.timeline import record
from kairos.rules import Rule
from kairos.segments.membership import profile_variables
from kairos.store.schema import Column, Table

__all__ = ["MOMENT_STATS", "MomentState", "Moments"]

MOMENT_STATS = Table(
    "moment_stats",
    (Column("moment", "text"), Column("day", "int"), Column("fired", "int")),
    ("moment", "day"),
    counter=True,
)
DAY = 86_400_000
LAST_CONTEXT = "last_context"  # the projection that keeps the profile's last known context
MAX_RUNS = 8  # partial sequence matches kept per moment and profile
MAX_SEQS = 20  # log positions an occurrence lists


@dataclass(frozen=True, slots=True)
class MomentState:
    """One moment on one profile."""

    version: int
    runs: tuple[tuple[int, int, tuple[int, ...]], ...] = ()  # sequence: (first event ts, next step, seqs)
    pending: tuple[int, tuple[int, ...]] | None = None  # absence: (due, seqs of the first event)
    last: int | None = None  # time of the last occurrence (cool-down)


State = Mapping[str, MomentState]


@functools.lru_cache(maxsize=1024)
def _fresh(version: int) -> MomentState:
    """The state of a moment nothing happened to yet (immutable: one object per version)."""
    return MomentState(version)


def _timer(key: str) -> str:
    return f"absent:{key}"


def _name(entry: Entry) -> str | None:
    e = entry.event
    return e.event if e.type == "track" else e.name


class Moments(Projection[State]):
    name = "moments"
    columns = (Column("moments", "json", default="'{}'"),)
    tables = (MOMENT_STATS,)

    def __init__(
        self, catalog: Catalog, sources: Sequence[Projection[Any]], context: ContextSettings | None = None
    ) -> None:
        """``sources``: the projections whose state ``context`` conditions read (those before this one);
        ``context``: the ``[context]`` settings (sources' time zones, countries, channels)."""
        self.catalog = catalog
        self.sources = list(sources)
        self.context_settings = context if context is not None else ContextSettings()

    def initial(self) -> State:
        return {}

    # -- events ---------------------------------------------------------------------------------------
    def _matches(self, step: Step, name: str | None, filters: EventFilters) -> bool:
        if step.event != name:
            return False
        return step.where is None or filters.passes(step.where)

    def apply(self, state: State, entry: Entry, ctx: Context) -> State:
        catalog = self.catalog
        if not catalog.moments:
            return state
        name = _name(entry)
        defs = catalog.moments_by_event.get(name, []) if name is not None else []
        out = dict(state)
        filters = EventFilters(entry)
        for m in defs:
            old = out.get(m.key)
            ms = old if old is not None and old.version == m.version else _fresh(m.version)
            if m.pattern == "event":
                if self._matches(m.steps[0], name, filters):
                    ms = self._fire(m, ms, ctx, entry.ts, (entry.seq,), entry)
            elif m.pattern == "sequence":
                ms = self._sequence(m, ms, ctx, entry, name, filters)
            else:
                ms = self._absence(m, ms, ctx, entry, name, filters)
            if ms is not old and (old is not None or ms is not _fresh(m.version)):
                out[m.key] = ms  # not a fresh state that nothing happened to
        if catalog.moments_on_change:
            self._changes(out, ctx, entry.ts, (entry.seq,), entry)
        return self._settled(state, out)

    def _sequence(
        self, m: MomentDef, ms: MomentState, ctx: Context, entry: Entry, name: str | None, filters: EventFilters
    ) -> MomentState:
        assert m.within is not None
        runs = []
        fired: tuple[int, ...] | None = None
        for start, step, seqs in ms.runs:
            if entry.ts - start > m.within:
                continue  # out of time: dropped
            if fired is None and self._matches(m.steps[step], name, filters):
                if step + 1 == len(m.steps):
                    fired = (*seqs, entry.seq)
                    continue
                runs.append((start, step + 1, (*seqs, entry.seq)))
            else:
                runs.append((start, step, seqs))
        if fired is None and self._matches(m.steps[0], name, filters):
            runs.append((entry.ts, 1, (entry.seq,)))
        kept = tuple(sorted(set(runs))[-MAX_RUNS:])
        if kept != ms.runs:
            ms = MomentState(ms.version, kept, ms.pending, ms.last)
        if fired is not None:
            ms = self._fire(m, ms, ctx, entry.ts, fired, entry)
        return ms

    def _absence(
        self, m: MomentDef, ms: MomentState, ctx: Context, entry: Entry, name: str | None, filters: EventFilters
    ) -> MomentState:
        assert m.within is not None
        first, then = m.steps
        if ms.pending is not None and self._matches(then, name, filters):
            due, seqs = ms.pending
            if due - m.within <= entry.ts:  # it came after the first event: the moment will not happen
                ctx.cancel(_timer(m.key))
                return MomentState(ms.version, ms.runs, None, ms.last)
        if self._matches(first, name, filters):
            seqs = (*(ms.pending[1] if ms.pending else ()), entry.seq)[-MAX_SEQS:]
            due = entry.ts + m.within
            if ms.pending is not None:
                due = max(due, ms.pending[0])
            ctx.schedule(_timer(m.key), due)
            return MomentState(ms.version, ms.runs, (due, seqs), ms.last)
        return ms

    # -- changes and time ----------------------------------------------------------------------------
    def changed(self, state: State, ctx: Context) -> State:
        if not self.catalog.moments_on_change or ctx.backfill:
            return state
        out = dict(state)
        self._changes(out, ctx, ctx.time, (), None)
        return self._settled(state, out)

    def _changes(
        self, out: dict[str, MomentState], ctx: Context, ts: int, seqs: tuple[int, ...], entry: Entry | None
    ) -> None:
        """Segment enters and exits, trait crossings: the profile before and after this change."""
        before = ctx.before
        sections = ctx.profile.sections
        old_segments = before.get("segments")
        new_segments = sections.get("segments")
        traits_before: dict[str, Any] | None = None
        traits_after: dict[str, Any] | None = None
        for m in self.catalog.moments_on_change:
            happened = False
            if m.segment is not None:
                if old_segments is new_segments:
                    continue
                was = m.segment in (old_segments or {})
                now = m.segment in (new_segments or {})
                happened = (not was and now) if m.pattern == "segment_entered" else (was and not now)
            elif m.trait is not None:
                if not any(before.get(p.name, sections.get(p.name)) is not sections.get(p.name) for p in self.sources):
                    continue  # no trait source changed
                if traits_after is None:
                    watched = self.catalog.moment_traits
                    traits_before = self._traits(before, sections, watched, before_state=True)
                    traits_after = self._traits(before, sections, watched, before_state=False)
                assert traits_before is not None
                old, new = _number(traits_before.get(m.trait)), _number(traits_after.get(m.trait))
                if m.above is not None:
                    happened = new is not None and new >= m.above and (old is None or old < m.above)
                elif m.below is not None:
                    happened = new is not None and new < m.below and old is not None and old >= m.below
            if happened:
                ms = out.get(m.key)
                if ms is None or ms.version != m.version:
                    ms = MomentState(m.version)
                out[m.key] = self._fire(m, ms, ctx, ts, seqs, entry)

    def _traits(
        self, before: Mapping[str, Any], sections: Mapping[str, Any], watched: AbstractSet[str], before_state: bool
    ) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for p in self.sources:
            if p.provides_none_of(watched):
                continue
            section = (before if before_state else sections).get(p.name)
            if section is not None:
                out.update(p.traits(section))
        return out

    def wake(self, state: State, timer: Timer, ctx: Context) -> State:
        key = timer.key.removeprefix("absent:")
        m = self.catalog.moments.get(key)
        ms = state.get(key)
        if m is None or ms is None or ms.version != m.version or ms.pending is None:
            return state
        due, seqs = ms.pending
        ms = MomentState(ms.version, ms.runs, None, ms.last)
        ms = self._fire(m, ms, ctx, due, seqs, None)
        return {**state, key: ms}

    def merge(self, winner: State, loser: State, ctx: Context) -> State:
        if not loser:
            return winner
        out = dict(winner)
        for key, theirs in loser.items():
            m = self.catalog.moments.get(key)
            mine = out.get(key)
            if m is None or theirs.version != m.version:
                continue
            if mine is None or mine.version != m.version:
                out[key] = theirs
                continue
            runs = tuple(sorted(set(mine.runs) | set(theirs.runs))[-MAX_RUNS:])
            pending = mine.pending
            if theirs.pending is not None:
                # The timers of both moved to the winner; the earlier one stays (the batch keeps the earlier
                # timer under one key), so the earlier pending absence, with every first event, does too.
                if pending is None or theirs.pending[0] < pending[0]:
                    pending = (theirs.pending[0], tuple(sorted({*theirs.pending[1], *(pending[1] if pending else ())})))
                else:
                    pending = (pending[0], tuple(sorted({*pending[1], *theirs.pending[1]})))
                pending = (pending[0], pending[1][-MAX_SEQS:])
            lasts = [x for x in (mine.last, theirs.last) if x is not None]
            out[key] = MomentState(m.version, runs, pending, max(lasts) if lasts else None)
        return out

    # -- firing --------------------------------------------------------------------------------------
    def _fire(
        self, m: MomentDef, ms: MomentState, ctx: Context, ts: int, seqs: tuple[int, ...], entry: Entry | None
    ) -> MomentState:
        if m.cooldown and ms.last is not None and ts - ms.last < m.cooldown:
            return ms
        if m.context is not None and not m.context.evaluate(self._variables(ctx, entry, ts, m.context)):
            return ms
        data = {"seqs": list(seqs[-MAX_SEQS:]), "version": m.version}
        record(ctx, ts, "moment", m.key, data)
        ctx.emit("moment", {"moment": m.key, "version": m.version, "at": ts, "seqs": data["seqs"]})
        ctx.count(MOMENT_STATS, (m.key, ts // DAY), (1,))
        return MomentState(ms.version, ms.runs, ms.pending, ts)

    def _variables(self, ctx: Context, entry: Entry | None, ts: int, rule: Rule) -> dict[str, Any]:
        """What ``rule`` reads (only that: deriving the context or converting traits it does not read is
        wasted on every occurrence)."""
        refs = rule.references
        reads = refs.variables
        members = ctx.profile.sections.get("segments") or {}
        keys = None if refs.traits_dynamic else set(refs.traits)
        variables = profile_variables(ctx.profile, self.sources, members, ts, reads, keys)
        if "context" in reads:
            variables["context"] = self.context_of(ctx, entry, ts)
        if "event" in reads:
            e = entry.event if entry is not None else None
            variables["event"] = {
                "name": (_name(entry) or "") if entry is not None else "",
                "type": e.type if e is not None else "",
                "properties": (e.properties or {}) if e is not None else {},
            }
        return variables

    def context_of(self, ctx: Context, entry: Entry | None, ts: int) -> DerivedContext:
        """The derived context a ``context`` condition reads: the event's (with what the profile knew before
        it), or, for a moment no event caused, the profile's last known context at ``ts``."""
        if entry is not None:
            known = ctx.before.get(LAST_CONTEXT)
            defaults = source_defaults(self.context_settings, entry.source)
            return derive(entry, last_known(known) if known else None, defaults)
        known = ctx.profile.sections.get(LAST_CONTEXT)
        defaults = source_defaults(self.context_settings, "")
        return derive({}, last_known(known) if known else None, defaults, at=ts)

    @staticmethod
    def _settled(state: State, out: dict[str, MomentState]) -> State:
        return state if out == state else out

    # -- storage and reading -------------------------------------------------------------------------
    def encode(self, state: State) -> tuple[Any, ...]:
        return (
            {
                key: {
                    "v": ms.version,
                    "r": [[s, n, list(q)] for s, n, q in ms.runs],
                    "p": None if ms.pending is None else [ms.pending[0], list(ms.pending[1])],
                    "l": ms.last,
                }
                for key, ms in sorted(state.items())
            },
        )

    def decode(self, values: Sequence[Any]) -> State:
        out = {}
        for key, raw in (values[0] or {}).items():
            pending = raw["p"]
            out[key] = MomentState(
                raw["v"],
                tuple((s, n, tuple(q)) for s, n, q in raw["r"]),
                None if pending is None else (pending[0], tuple(pending[1])),
                raw["l"],
            )
        return out


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)

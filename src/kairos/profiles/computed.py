"""Computed traits, as a projection: aggregates over a profile's events, all time or in a sliding window.

Each definition (:class:`~kairos.definitions.TraitDef`) keeps a small partial aggregate per profile, never
the events themselves:

- all time: one partial (a count, a sum, a min, a sketch, ...);
- in a window: the newest ``EXACT`` events as exact partials, keyed by event time, and older ones in buckets
  of a fixed grid (``window / GRID``). An exact partial leaves the window exactly when it is due (a durable
  timer wakes the profile); a bucket leaves when its end is due, at most one grid step late. Bounded state,
  and a count of 2 orders in 30 days drops to 1 exactly 30 days after the first order.

Every partial is a commutative monoid (merging two profiles combines them, in any order), sums are exact
decimals, and ``distinct_count`` is a k-minimum-values sketch (exact below ``KMV`` distinct values, an
estimate with ~1/sqrt(KMV) relative error beyond): state is a function of the set of events, so replay,
batch sizes and merge order give equal state.

The value shows in the profile's ``traits`` under the definition's key (``trait_meta``: kind ``observed``,
source ``computed``); a definition that changes version is recomputed from the profile's events by a
backfill job (:meth:`ComputedTraits.refresh`).
"""

from __future__ import annotations

import hashlib
import heapq
import itertools
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Context as DecimalContext
from decimal import Decimal, InvalidOperation
from operator import itemgetter
from typing import Any

import msgspec

from kairos.collect import iso
from kairos.definitions import Catalog, TraitDef
from kairos.pipeline.projection import Context, Entry, Projection, Timer
from kairos.rules import Bindings, Rule, Scope
from kairos.store.schema import Column

__all__ = ["ComputedTraits", "KeyState"]

EXACT = 64  # newest events kept exactly per windowed trait
GRID = 128  # buckets per window for older events
KMV = 256  # distinct_count sketch size
MEMO = 65_536  # trait values remembered (by KeyState) before the memo starts again
MOST_FREQUENT_CAP = 1000  # most_frequent: distinct values counted per profile
TIMER = "window"
_DEC = DecimalContext(prec=60)
# Values from 1e291 up do not count: far beyond any amount, and a sum of them must stay a finite float
# (and inside the decimal context, whose overflow would raise and dead-letter the event).
_MAX_ADJUSTED = 290
_json = msgspec.json.Encoder()


@dataclass(frozen=True, slots=True)
class KeyState:
    """One definition's state on one profile. ``total`` (all time) or ``exact`` + ``buckets`` (window)."""

    version: int
    total: Any = None
    exact: tuple[tuple[int, int, Any], ...] = ()  # (ts, seq, partial), oldest first
    buckets: tuple[tuple[int, Any], ...] = ()  # (bucket index, partial), oldest first
    updated_at: int = 0  # event time of the last change


State = Mapping[str, KeyState]


# -- partial aggregates -----------------------------------------------------------------------------------
def _number(value: Any) -> Decimal | None:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        d = Decimal(value) if not isinstance(value, float) else Decimal(repr(value))
    except (InvalidOperation, ValueError):
        return None
    return d if d.is_finite() and d.adjusted() <= _MAX_ADJUSTED else None


def _hash(value: Any) -> int:
    return int.from_bytes(hashlib.blake2b(_json.encode(value), digest_size=8).digest(), "big")


def unit(aggregate: str, value: Any, ts: int, seq: int) -> Any:
    """The partial of one event (None: the event does not count, e.g. a sum over a non-number)."""
    if aggregate == "count":
        return 1
    if aggregate in ("sum", "avg", "min", "max"):
        n = _number(value)
        if n is None:
            return None
        return (1, n) if aggregate == "avg" else n
    if aggregate in ("first", "last"):
        return (ts, seq, value)
    if aggregate == "distinct_count":
        return (_hash(value),)
    if aggregate == "most_frequent":
        if isinstance(value, dict | list):
            return None
        return {_json.encode(value).decode(): 1}
    raise ValueError(aggregate)


def combine(aggregate: str, a: Any, b: Any) -> Any:
    if a is None:
        return b
    if b is None:
        return a
    if aggregate == "count":
        return a + b
    if aggregate == "sum":
        return _DEC.add(a, b)
    if aggregate == "avg":
        return (a[0] + b[0], _DEC.add(a[1], b[1]))
    if aggregate == "min":
        return min(a, b)
    if aggregate == "max":
        return max(a, b)
    if aggregate == "first":
        return min(a, b, key=lambda x: (x[0], x[1]))
    if aggregate == "last":
        return max(a, b, key=lambda x: (x[0], x[1]))
    if aggregate == "distinct_count":
        return tuple(sorted(set(a) | set(b))[:KMV])
    if aggregate == "most_frequent":
        out = dict(a)
        for k, n in b.items():
            out[k] = out.get(k, 0) + n
        if len(out) > MOST_FREQUENT_CAP:  # keep the most frequent (ties: smallest value)
            out = dict(heapq.nsmallest(MOST_FREQUENT_CAP, out.items(), key=lambda kv: (-kv[1], kv[0])))
        return out
    raise ValueError(aggregate)


def _plain(d: Decimal) -> int | float:
    return int(d) if d == d.to_integral_value() and abs(d) < 2**63 else float(d)


def result(aggregate: str, p: Any) -> Any:
    """The trait value of a partial (``None`` when nothing counted: count and sum say 0)."""
    if p is None:
        return 0 if aggregate in ("count", "sum", "distinct_count") else None
    if aggregate == "count":
        return p
    if aggregate in ("sum", "min", "max"):
        return _plain(p)
    if aggregate == "avg":
        return float(_DEC.divide(p[1], Decimal(p[0])))
    if aggregate in ("first", "last"):
        return p[2]
    if aggregate == "distinct_count":
        if len(p) < KMV:
            return len(p)
        return round((KMV - 1) / ((p[-1] + 1) / 2**64))  # the k-minimum-values estimate
    if aggregate == "most_frequent":
        if not p:
            return None
        best = min(p.items(), key=lambda kv: (-kv[1], kv[0]))[0]
        return msgspec.json.decode(best)
    raise ValueError(aggregate)


def _to_json(aggregate: str, p: Any) -> Any:
    if p is None:
        return None
    if aggregate in ("sum", "min", "max"):
        return str(p)
    if aggregate == "avg":
        return [p[0], str(p[1])]
    if aggregate in ("first", "last", "distinct_count"):
        return list(p)
    return p


def _from_json(aggregate: str, v: Any) -> Any:
    if v is None:
        return None
    if aggregate in ("sum", "min", "max"):
        return Decimal(v)
    if aggregate == "avg":
        return (v[0], Decimal(v[1]))
    if aggregate in ("first", "last", "distinct_count"):
        return tuple(v)
    return v


# -- windows ----------------------------------------------------------------------------------------------
def grid(window: int) -> int:
    return max(1000, window // GRID)


_second, _third = itemgetter(1), itemgetter(2)


def _order(x: tuple[int, int, Any]) -> tuple[int, int]:
    return (x[0], x[1])


def _canonical(
    d: TraitDef,
    ks: KeyState,
    exact: list[tuple[int, int, Any]],
    buckets: tuple[tuple[int, Any], ...],
    ordered: bool = False,
) -> KeyState:
    """Keep the newest ``EXACT`` exact partials; older ones go to their bucket (``buckets``: sorted). A
    function of the set of events, whatever order they came in (and merges in). ``ordered``: ``exact`` is
    sorted already."""
    if not ordered:
        exact.sort(key=_order)
    if len(exact) > EXACT:
        assert d.window is not None
        g = grid(d.window)
        merged = dict(buckets)
        for ts, _seq, p in exact[: len(exact) - EXACT]:
            b = ts // g
            merged[b] = combine(d.aggregate, merged.get(b), p)
        exact = exact[len(exact) - EXACT :]
        buckets = tuple(sorted(merged.items()))
    return KeyState(ks.version, None, tuple(exact), buckets, ks.updated_at)


def expire(d: TraitDef, ks: KeyState, now: int) -> KeyState:
    """Drop what left the window at ``now``: an exact partial at ``ts + window``, a bucket at its end +
    window. Returns ``ks`` itself when nothing left."""
    if d.window is None:
        return ks
    cutoff = now - d.window
    g = grid(d.window)
    exact = ks.exact
    buckets = ks.buckets
    if exact and exact[0][0] <= cutoff:
        exact = tuple(x for x in exact if x[0] > cutoff)
    if buckets and (buckets[0][0] + 1) * g <= cutoff:
        buckets = tuple(b for b in buckets if (b[0] + 1) * g > cutoff)
    if exact is ks.exact and buckets is ks.buckets:
        return ks
    return KeyState(ks.version, None, exact, buckets, ks.updated_at)


def next_expiry(d: TraitDef, ks: KeyState) -> int | None:
    if d.window is None:
        return None
    due = [ks.exact[0][0] + d.window] if ks.exact else []
    if ks.buckets:
        due.append((ks.buckets[0][0] + 1) * grid(d.window) + d.window)
    return min(due) if due else None


def partial(d: TraitDef, ks: KeyState) -> Any:
    if d.window is None:
        return ks.total
    if not ks.exact and not ks.buckets:
        return None
    # Rules read a window's value on every event that changes it: the common aggregates in C-level passes.
    if d.aggregate == "count":
        return sum(map(_third, ks.exact)) + sum(map(_second, ks.buckets))
    if d.aggregate in ("min", "max"):
        pick = min if d.aggregate == "min" else max
        return pick(itertools.chain(map(_third, ks.exact), map(_second, ks.buckets)))
    p = None
    for _b, q in ks.buckets:
        p = combine(d.aggregate, p, q)
    for _ts, _seq, q in ks.exact:
        p = combine(d.aggregate, p, q)
    return p


def add(d: TraitDef, ks: KeyState, p: Any, ts: int, seq: int, now: int) -> KeyState:
    if d.window is None:
        return KeyState(ks.version, combine(d.aggregate, ks.total, p), (), (), max(ks.updated_at, ts))
    if ts <= now - d.window:
        return ks  # already out of the window (a late or imported event)
    exact = ks.exact
    if seq in map(_second, exact):  # applied already (C-level scan: this runs on every event)
        return ks
    # Events come in log order, mostly in time order too: the newest goes last without sorting.
    ordered = not exact or (ts, seq) >= _order(exact[-1])
    out = _canonical(d, ks, [*exact, (ts, seq, p)], ks.buckets, ordered)
    return expire(d, KeyState(out.version, None, out.exact, out.buckets, max(ks.updated_at, ts)), now)


def merge_key(d: TraitDef, a: KeyState, b: KeyState, now: int) -> KeyState:
    updated = max(a.updated_at, b.updated_at)
    if d.window is None:
        return KeyState(a.version, combine(d.aggregate, a.total, b.total), (), (), updated)
    buckets = dict(a.buckets)
    for i, q in b.buckets:
        buckets[i] = combine(d.aggregate, buckets.get(i), q)
    seen = {(t, s) for t, s, _ in a.exact}
    exact = [*a.exact, *(x for x in b.exact if (x[0], x[1]) not in seen)]
    out = _canonical(d, KeyState(a.version, None, (), (), updated), exact, tuple(sorted(buckets.items())))
    return expire(d, out, now)


def _property(event_props: Mapping[str, Any] | None, path: tuple[str, ...]) -> Any:
    value: Any = event_props
    for part in path:
        if isinstance(value, dict):
            value = value.get(part)
        elif isinstance(value, list) and part.isascii() and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return None
    return value


def when(entry: Entry) -> int:
    """When an event counts as having happened: its time, but never after Kairos received it (a client
    clock set in the future, with no ``sentAt`` to correct it, must not keep an order in a 7-day window for
    weeks). Both times are in the log, so replay places it alike."""
    return min(entry.ts, entry.received_at)


def _event_name(entry: Entry) -> str | None:
    e = entry.event
    return e.event if e.type == "track" else e.name


def event_bindings(entry: Entry, reads: Collection[str] | None = None) -> Bindings | dict[str, Any]:
    """:func:`event_variables` (only ``reads``, when given) converted once for every ``where`` filter that
    reads this event (a value no rule can read leaves the plain mapping, on which each filter answers false)."""
    variables = event_variables(entry, reads)
    try:
        return Scope.EVENT.bind(variables)
    except (TypeError, ValueError):
        return variables


class EventFilters:
    """``where`` filters over one event: the variables a filter reads are converted once, when a filter
    first needs them, and each distinct filter is evaluated once (two traits counting
    ``event_type == "page"`` ask once)."""

    __slots__ = ("_answers", "_bindings", "entry")

    def __init__(self, entry: Entry) -> None:
        self.entry = entry
        self._bindings: dict[frozenset[str], Bindings | dict[str, Any]] = {}
        self._answers: dict[str, bool] = {}

    def passes(self, rule: Rule) -> bool:
        answer = self._answers.get(rule.source)
        if answer is None:
            # Bound per set of variables read: `event_type == "page"` on every event converts no properties.
            reads = rule.references.variables
            bindings = self._bindings.get(reads)
            if bindings is None:
                bindings = self._bindings[reads] = event_bindings(self.entry, reads)
            answer = self._answers[rule.source] = rule.evaluate(bindings)
        return answer


_EVENT_VARIABLES = frozenset(("event", "event_type", "properties", "context", "traits", "timestamp"))


def event_variables(entry: Entry, reads: Collection[str] | None = None) -> dict[str, Any]:
    """What a ``where`` filter sees of an event (only the variables ``reads``, when given)."""
    e = entry.event
    out: dict[str, Any] = {}
    wanted = _EVENT_VARIABLES if reads is None else reads
    if "event" in wanted:
        out["event"] = _event_name(entry) or ""
    if "event_type" in wanted:
        out["event_type"] = e.type
    if "properties" in wanted:
        out["properties"] = e.properties or {}
    if "context" in wanted:
        out["context"] = e.context or {}
    if "traits" in wanted:
        out["traits"] = e.traits or {}
    if "timestamp" in wanted:
        out["timestamp"] = datetime.fromtimestamp(entry.ts / 1000, UTC)
    return out


class ComputedTraits(Projection[State]):
    """Every computed trait definition of the catalog, on every profile."""

    name = "computed"
    columns = (Column("computed", "json", default="'{}'"),)
    definition_kind = "trait"
    needs_history = True

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self._values: dict[int, tuple[KeyState, TraitDef, Any]] = {}  # id(KeyState) → (it, its definition, value)

    def initial(self) -> State:
        return {}

    # -- applying ------------------------------------------------------------------------------------
    def _counts(self, d: TraitDef, entry: Entry, filters: EventFilters) -> Any:
        """The event's partial for ``d`` (None if it does not count)."""
        if d.where is not None and not filters.passes(d.where):
            return None
        value = None
        if d.property is not None:
            value = _property(entry.event.properties, d.property)
            if value is None:
                return None
        return unit(d.aggregate, value, when(entry), entry.seq)

    def apply(self, state: State, entry: Entry, ctx: Context) -> State:
        by_event = self.catalog.traits_by_event
        if not by_event:
            return state
        defs = by_event.get(_event_name(entry), [])
        if None in by_event:
            defs = [*defs, *by_event[None]]
        if not defs:
            return state
        out: dict[str, KeyState] | None = None
        filters = EventFilters(entry)
        windowed = False
        for d in defs:
            p = self._counts(d, entry, filters)
            if p is None:
                continue
            ks = state.get(d.key)
            if ks is None or ks.version != d.version:
                ks = KeyState(d.version)
            new = add(d, ks, p, when(entry), entry.seq, ctx.now)
            if new is not ks or d.key not in state:
                if out is None:
                    out = dict(state)
                out[d.key] = new
                windowed = windowed or d.window is not None
        if out is None:
            return state
        if windowed:
            self._schedule(out, ctx)
        return out

    def merge(self, winner: State, loser: State, ctx: Context) -> State:
        if not loser:
            return winner
        out = dict(winner)
        for key, ks in loser.items():
            d = self.catalog.traits.get(key)
            mine = out.get(key)
            if d is None or ks.version != d.version:
                continue  # a deleted or outdated definition: its backfill recomputes the winner
            if mine is None or mine.version != d.version:
                out[key] = expire(d, ks, ctx.now)
            else:
                out[key] = merge_key(d, mine, ks, ctx.now)
        self._schedule(out, ctx)
        return out

    def wake(self, state: State, timer: Timer, ctx: Context) -> State:
        out = self._expire_all(state, ctx.now)
        self._schedule(out, ctx)
        return out

    def refresh(self, state: State, ctx: Context, keys: set[str], history: Sequence[Entry] | None) -> State:
        """Recompute definitions ``keys`` from the profile's events (``history``); drop deleted ones."""
        out = {k: v for k, v in state.items() if k not in keys}
        defs = [d for k in sorted(keys) if (d := self.catalog.traits.get(k)) is not None]
        for entry in history or ():
            name = _event_name(entry)
            filters = EventFilters(entry)
            for d in defs:
                if d.event is not None and d.event != name:
                    continue
                p = self._counts(d, entry, filters)
                if p is None:
                    continue
                ks = out.get(d.key) or KeyState(d.version)
                out[d.key] = add(d, ks, p, when(entry), entry.seq, ctx.now)
        self._schedule(out, ctx)
        return out if out != state else state

    def _expire_all(self, state: State, now: int) -> State:
        out: dict[str, KeyState] | None = None
        for key, ks in state.items():
            d = self.catalog.traits.get(key)
            if d is None or d.window is None or d.version != ks.version:
                continue
            new = expire(d, ks, now)
            if new is not ks:
                if out is None:
                    out = dict(state)
                out[key] = new
        return state if out is None else out

    def _schedule(self, state: State, ctx: Context) -> None:
        due = [
            t
            for key, ks in state.items()
            if (d := self.catalog.traits.get(key)) is not None and d.version == ks.version
            if (t := next_expiry(d, ks)) is not None
        ]
        current = ctx.timers().get(TIMER)
        if not due:
            if current is not None:
                ctx.cancel(TIMER)
            return
        when = min(due)
        if current is None or current.due_at != when:
            ctx.schedule(TIMER, when)

    # -- reading -------------------------------------------------------------------------------------
    def trait_names(self) -> Collection[str]:
        return self.catalog.traits.keys()

    def trait_changes(self, old: State, new: State) -> Collection[str]:
        # Copied on write: an unchanged definition keeps the very same KeyState object.
        return {k for k in old.keys() | new.keys() if old.get(k) is not new.get(k)}

    def traits(self, state: State) -> Mapping[str, Any]:
        out: dict[str, Any] = {}
        memo = self._values
        for key, d in self.catalog.traits.items():
            ks = state.get(key)
            if ks is not None and ks.version == d.version:
                # A window's value combines up to EXACT partials and its buckets, and rules read the traits on
                # every event: the value of an unchanged KeyState (copied on write) is remembered.
                hit = memo.get(id(ks))
                if hit is not None and hit[0] is ks and hit[1] is d:
                    value = hit[2]
                else:
                    value = result(d.aggregate, partial(d, ks))
                    if len(memo) >= MEMO:
                        memo.clear()
                    memo[id(ks)] = (ks, d, value)
            else:
                value = result(d.aggregate, None)
            if value is not None:
                out[key] = value
        return out

    def view(self, state: State) -> dict[str, Any]:
        values = self.traits(state)
        meta = {}
        for key in values:
            ks = state.get(key)
            updated = ks.updated_at if ks is not None else 0
            meta[key] = {"kind": "observed", "source": "computed", "updated_at": iso(updated) if updated else None}
        return {"traits": values, "trait_meta": meta}

    # -- storage -------------------------------------------------------------------------------------
    def encode(self, state: State) -> tuple[Any, ...]:
        out = {}
        for key, ks in state.items():
            agg = self._aggregate(key, ks.version)
            if agg is None:
                continue  # outdated (its definition changed or went): nothing worth keeping
            out[key] = {
                "v": ks.version,
                "u": ks.updated_at,
                "t": _to_json(agg, ks.total),
                "e": [[t, s, _to_json(agg, p)] for t, s, p in ks.exact],
                "b": [[i, _to_json(agg, p)] for i, p in ks.buckets],
            }
        return (out,)

    def decode(self, values: Sequence[Any]) -> State:
        out = {}
        for key, raw in (values[0] or {}).items():
            agg = self._aggregate(key, raw["v"])
            if agg is None:
                continue  # written for a definition that changed or went since: the backfill recomputes it
            out[key] = KeyState(
                raw["v"],
                _from_json(agg, raw["t"]),
                tuple((t, s, _from_json(agg, p)) for t, s, p in raw["e"]),
                tuple((i, _from_json(agg, p)) for i, p in raw["b"]),
                raw["u"],
            )
        return out

    def _aggregate(self, key: str, version: int) -> str | None:
        d = self.catalog.traits.get(key)
        return None if d is None or d.version != version else d.aggregate

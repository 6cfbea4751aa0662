"""Segments, as a projection: which segment rules each profile satisfies, kept current on every change.

A rule (Google's CEL, :mod:`kairos.rules`) is evaluated

- when an event changes something it reads (a trait it names, the consents, the profile's counters, ...):
  rules whose inputs did not change are not evaluated;
- when the profile changes without an event: a computed trait's window slid (``changed``), two profiles
  merged (``merge``: the merged profile is evaluated on the union, the loser's memberships end);
- when time alone changes the answer: for a rule that reads ``now``, the time of its next change is found by
  probing future times (a ladder from one minute to two years, then bisection to the second) and a durable
  timer wakes the profile then;
- for every profile when a rule is created, changed or deleted (a backfill job, ``refresh``).

Every enter and exit is a timeline item (``segment_entered`` / ``segment_exited``, ``name`` = the segment
key, ``data`` = the rule version), an outbox message, and a count in ``segment_stats`` (per segment and day:
entered, exited) from which ``size`` and ``size_history`` are read.
"""

from __future__ import annotations

import heapq
from collections.abc import Collection, Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import Any

from kairos.definitions import Catalog, SegmentDef
from kairos.pipeline.projection import Context, Entry, ProfileState, Projection, Timer
from kairos.profiles.consents import Consents
from kairos.profiles.timeline import record
from kairos.rules import Bindings, Rule, Scope
from kairos.store.schema import Column, Index, Table

__all__ = ["SEGMENT_STATS", "Segments", "profile_variables"]

SEGMENT_STATS = Table(
    "segment_stats",
    (Column("segment", "text"), Column("day", "int"), Column("entered", "int"), Column("exited", "int")),
    ("segment", "day"),
    counter=True,
)
DAY = 86_400_000
TIMER = "now"
_S, _M, _H, _D = 1000, 60_000, 3_600_000, 86_400_000
# Future offsets at which a rule reading ``now`` is probed for its next change.
LADDER = (
    _M, 5 * _M, 15 * _M, _H, 3 * _H, 6 * _H, 12 * _H, _D, 2 * _D, 4 * _D, 7 * _D, 14 * _D, 30 * _D, 60 * _D,
    91 * _D, 182 * _D, 365 * _D, 730 * _D,
)  # fmt: skip

Members = Mapping[str, tuple[int, int]]  # segment key → (rule version, since: epoch ms)
NEVER = 2**62  # a timer that only carries hints (no rule changes within reach)
MEMO = 65_536  # remembered answers over all rules (~20 MB at most); a rule's share is cleared when full
_ANSWERS = {(h, e): (h, e) for h in (True, False) for e in (True, False)}  # shared, not one tuple per entry
_ABSENT = object()  # a key the profile does not have


@dataclass(frozen=True, slots=True)
class Inputs:
    """What an event changed: sections, trait keys (any source), counters' fields, identifiers."""

    changed: set[str]
    keys: set[str]
    fields: set[str]
    identities: bool


def profile_variables(
    profile: ProfileState,
    sources: Sequence[Projection[Any]],
    members: Members,
    now: int,
    reads: Collection[str] | None = None,
    trait_keys: AbstractSet[str] | None = None,
) -> dict[str, Any]:
    """What a segment rule sees of a profile (the variables of :data:`kairos.rules.Scope.SEGMENT`).

    ``reads``: the variables the rules to evaluate read (``References.variables``), ``trait_keys``: the traits
    they read (None: any); only those are made (a rule cannot tell a variable or a trait it does not read),
    and each costs: rules convert every trait they are given on first use. Times are epoch milliseconds, which
    the rules' conversion reads directly (a datetime costs a round trip)."""
    sections = profile.sections
    out: dict[str, Any] = {"segments": sorted(members), "now": now}
    if reads is None or "traits" in reads:
        traits: dict[str, Any] = {}
        for p in sources:
            if trait_keys is not None and p.provides_none_of(trait_keys):
                continue
            section = sections.get(p.name)
            traits.update(p.traits(section if section is not None else p.initial()))
        out["traits"] = traits if trait_keys is None else {k: traits[k] for k in trait_keys if k in traits}
    if reads is None or "identities" in reads:
        identities: dict[str, list[str]] = {}
        for kind, value in sorted(profile.identities):
            identities.setdefault(kind, []).append(value)
        out["identities"] = identities
    if reads is None or "consents" in reads:
        policy = next((p.policy for p in sources if isinstance(p, Consents)), None)
        if policy is not None:
            out["consents"] = policy.effective(profile)
        else:  # no consents projection: the person's word only
            out["consents"] = {purpose: bool(c["granted"]) for purpose, c in (sections.get("consents") or {}).items()}
    if reads is None or "profile" in reads:
        counts = sections.get("counters")
        if counts is not None and counts.event_count:
            out["profile"] = {
                "created_at": counts.created_at,
                "updated_at": counts.updated_at,
                "event_count": counts.event_count,
            }
        else:
            out["profile"] = {"created_at": now, "updated_at": now, "event_count": 0}
    return out


def _memo_key(
    plan: tuple[tuple[str, str], ...], variables: Mapping[str, Any], members: Members
) -> tuple[Any, ...] | None:
    """The values a rule reads (``SegmentDef.memo``), typed (1, 1.0 and true differ to a rule), as a key of its
    remembered answers; None when one is not a plain value (such a rule is evaluated)."""
    out: list[Any] = []
    for variable, key in plan:
        if variable == "segments":
            out.append(key in members)
            continue
        value = variables[variable].get(key, _ABSENT)
        kind = type(value)
        if kind is str or kind is int or kind is bool or value is None or value is _ABSENT:
            out.append((kind, value))
        elif kind is float:
            out.append((kind, value.hex()))  # -0.0 and nan stay apart
        elif kind is list and all(type(v) is str for v in value):  # identities of a type
            out.append(tuple(value))
        else:
            return None
    return tuple(out)


def _trait_keys(keys: set[str] | None, s: SegmentDef) -> set[str] | None:
    """The trait keys rules read, with ``s``'s (None: any trait, a rule names one at run time)."""
    return None if keys is None or s.traits_dynamic else keys | s.traits


def _reads_of(defs: Iterable[SegmentDef]) -> tuple[set[str], set[str] | None]:
    """The variables and the trait keys (None: any) that the rules of ``defs`` read together."""
    need: set[str] = set()
    keys: set[str] | None = set()
    for s in defs:
        need |= s.reads
        keys = _trait_keys(keys, s)
    return need, keys


def _bind(variables: dict[str, Any]) -> Bindings | dict[str, Any]:
    try:
        return Scope.SEGMENT.bind(variables)
    except (TypeError, ValueError):
        return variables


class Segments(Projection[Members]):
    name = "segments"
    columns = (Column("segments", "json", default="'{}'"),)
    indexes = (Index("profiles_segments", ("segments",), gin=True),)
    tables = (SEGMENT_STATS,)
    definition_kind = "segment"

    def __init__(self, catalog: Catalog, sources: Sequence[Projection[Any]]) -> None:
        """``sources``: the projections (run before this one) whose state rules read."""
        self.catalog = catalog
        self.sources = [p for p in sources if p.name not in ("segments",)]
        # Per rule (SegmentDef.memo): its answer and whether it was an error, by the values it read.
        self._memos: dict[Rule, dict[tuple[Any, ...], tuple[bool, bool]]] = {}

    def _memo(self, s: SegmentDef) -> dict[tuple[Any, ...], tuple[bool, bool]]:
        memo = self._memos.get(s.rule)
        if memo is None:
            if len(self._memos) > 2 * len(self.catalog.segments):  # rules of changed or deleted definitions
                self._memos.clear()
            memo = self._memos[s.rule] = {}
        return memo

    def initial(self) -> Members:
        return {}

    # -- when to evaluate ---------------------------------------------------------------------------
    def _changed_inputs(self, ctx: Context) -> Inputs | None:
        """What changed since before the event (or timer); None: everything (a new profile)."""
        before = ctx.before
        sections = ctx.profile.sections
        counts = before.get("counters")
        if counts is None or not getattr(counts, "event_count", 0):
            return None
        changed = {name for name, old in before.items() if sections.get(name) is not old}
        keys: set[str] = set()
        for p in self.sources:
            if p.name in changed and p.name in before:
                keys.update(p.trait_changes(before[p.name], sections[p.name]))
        fields: set[str] = set()
        if "counters" in changed:
            new_counts = sections["counters"]
            fields = {
                f for f in ("created_at", "updated_at", "event_count") if getattr(counts, f) != getattr(new_counts, f)
            }
        # Identifiers change in place (only by being added while an event is applied; a merge evaluates all).
        return Inputs(changed, keys, fields, ctx.profile.identities_seq == ctx.seq)

    def _positions(self, inputs: Inputs, moved: set[str]) -> list[int]:
        """The positions of the rules an event's changes (and memberships moved before) may change, sorted
        (a heap): by look-up in the catalog's :class:`~kairos.definitions.SegmentIndex`."""
        index = self.catalog.segment_index
        found: set[int] = set()
        if inputs.keys:
            found.update(index.traits_dynamic)
            for key in inputs.keys:
                found.update(index.by_trait.get(key, ()))
        if inputs.fields:
            found.update(index.profile_any)
            for name in inputs.fields:
                found.update(index.by_field.get(name, ()))
        if "consents" in inputs.changed:
            found.update(index.consents)
        if inputs.identities:
            found.update(index.identities)
        if moved:
            found.update(index.segments_dynamic)
            for key in moved:
                found.update(index.by_segment.get(key, ()))
        return sorted(found)

    @staticmethod
    def _wanted(s: SegmentDef, only: set[str] | None, moved: set[str]) -> bool:
        """With no inputs (a new or merged profile, a timer, a changed definition): every rule, or those in
        ``only`` and the rules that read a membership already moved."""
        return only is None or s.key in only or (bool(moved) and not s.segments.isdisjoint(moved))

    # -- the projection -----------------------------------------------------------------------------
    def apply(self, state: Members, entry: Entry, ctx: Context) -> Members:
        if not self.catalog.segments:
            return state
        inputs = self._changed_inputs(ctx)
        return self._evaluate(state, ctx, entry.ts, inputs)

    def changed(self, state: Members, ctx: Context) -> Members:
        if not self.catalog.segments and not state:
            return state
        inputs = self._changed_inputs(ctx)
        traits = ctx.refreshed.get("trait")
        if traits and inputs is not None:
            # A computed trait's definition changed (or went): its value may have for everyone, though the
            # state shows no change (a value of the old version already reads as absent).
            inputs = Inputs(inputs.changed, inputs.keys | traits, inputs.fields, inputs.identities)
        return self._evaluate(state, ctx, ctx.time, inputs)

    def merge(self, winner: Members, loser: Members, ctx: Context) -> Members:
        merged = ctx.merged
        for key in sorted(loser):
            self._exit(ctx, key, loser[key][0], ctx.time, merged.id if merged is not None else None)
        if not self.catalog.segments:
            return winner
        return self._evaluate(winner, ctx, ctx.time, None)

    def wake(self, state: Members, timer: Timer, ctx: Context) -> Members:
        keys = {s.key for s in self.catalog.segments if s.uses_now}
        return self._evaluate(state, ctx, timer.due_at, None, only=keys)  # settle() sets the next timer

    def refresh(self, state: Members, ctx: Context, keys: set[str], history: Sequence[Entry] | None) -> Members:
        return self._evaluate(state, ctx, ctx.time, None, only=keys)

    def _evaluate(
        self,
        state: Members,
        ctx: Context,
        ts: int,
        inputs: Inputs | None,
        only: set[str] | None = None,
    ) -> Members:
        """Evaluate the rules whose inputs changed (``inputs`` None: all, or those in ``only``), in
        dependency order, recording enters and exits; drop memberships of deleted or changed rules."""
        out = dict(state)
        moved: set[str] = set()
        now = ctx.now
        segments = self.catalog.segments
        for key, (version, _since) in list(out.items()):  # a rule deleted, or changed since it was met
            s = self.catalog.segment(key)
            if s is None or (s.version != version and (only is None or key in only)):
                if s is None or not self._holds(s, ctx, out, now):
                    del out[key]
                    moved.add(key)
                    self._exit(ctx, key, version, ts)
                else:
                    out[key] = (s.version, out[key][1])
        # Which rules to evaluate, by position in evaluation order (a rule comes after the segments it reads):
        # those whose inputs changed, then, as memberships move, the later rules that read them.
        index = self.catalog.segment_index
        if inputs is None:
            heap = [i for i, s in enumerate(segments) if self._wanted(s, only, moved)]
            readers: tuple[int, ...] = ()  # with no inputs, a moved segment wakes only its static readers
        else:
            heap = self._positions(inputs, moved)
            readers = index.segments_dynamic
        queued = set(heap)
        # The variables the wanted rules read are computed once, again only when a rule reads more. They are
        # converted (Scope.bind) only for a rule whose answer is not remembered, and again only when a
        # membership moved and a rule reads `segments`; a value no rule can read (bind refuses it) leaves the
        # plain mapping, on which each rule answers false.
        variables: dict[str, Any] | None = None
        bindings: Bindings | dict[str, Any] | None = None
        need, keys = _reads_of(segments[i] for i in heap)
        stale = False  # a membership moved since the bindings were made: `segments` is to be bound again
        while heap:
            i = heapq.heappop(heap)
            s = segments[i]
            if (
                variables is None
                or not s.reads <= need
                or (keys is not None and (s.traits_dynamic or not s.traits <= keys))
            ):
                need |= s.reads
                keys = _trait_keys(keys, s)
                variables = profile_variables(ctx.profile, self.sources, out, now, need, keys)
                bindings = None
                stale = False
            memo_key = None if s.memo is None else _memo_key(s.memo, variables, out)
            known = None if memo_key is None else self._memo(s).get(memo_key)
            if known is not None:
                holds = known[0]
                if known[1]:
                    s.rule.errors += 1  # counted as the evaluation it stands for would have
            else:
                if bindings is None:
                    if stale:
                        variables["segments"] = sorted(out)
                        stale = False
                    bindings = _bind(variables)
                elif stale and "segments" in s.reads:
                    # Only for a rule that reads it: new bindings convert every variable again on first use.
                    if variables["segments"] != (members := sorted(out)):
                        variables["segments"] = members
                        bindings = (
                            bindings.replace({"segments": members}) if isinstance(bindings, Bindings) else variables
                        )
                    stale = False
                errors = s.rule.errors
                holds = s.rule.evaluate(bindings)
                if memo_key is not None:
                    memo = self._memo(s)
                    if len(memo) >= max(256, MEMO // len(segments)):
                        memo.clear()
                    memo[memo_key] = _ANSWERS[holds, s.rule.errors != errors]
            if holds != (s.key in out):
                moved.add(s.key)
                stale = True
                if holds:
                    out[s.key] = (s.version, ts)
                    self._enter(ctx, s.key, s.version, ts)
                else:
                    del out[s.key]
                    self._exit(ctx, s.key, s.version, ts)
                for j in (*readers, *index.by_segment.get(s.key, ())):
                    if j > i and j not in queued:
                        queued.add(j)
                        heapq.heappush(heap, j)
        return state if out == state else out

    def settle(self, state: Members, ctx: Context) -> Members:
        """When each rule reading ``now`` next changes its answer for this profile, as it ends the batch: the
        ``now`` timer is set at the earliest. Its payload keeps every such rule's next change, the first guess
        next time. (Within a batch such a timer cannot fire: it is after the batch's clock, which is after
        every event of the batch was received; so computing it once per batch is exact.)"""
        timed = [s for s in self.catalog.segments if s.uses_now]
        pending = ctx.timers().get(TIMER)
        if not timed:
            if pending is not None:
                ctx.cancel(TIMER)
            return state
        hints: dict[str, Any] = dict(pending.payload or {}) if pending is not None else {}
        now = ctx.now
        counts = ctx.profile.sections.get("counters")
        times = (counts.created_at, counts.updated_at) if counts is not None and counts.event_count else ()
        base = times[1] if times else now
        need, keys = _reads_of(timed)
        bindings = _bind(profile_variables(ctx.profile, self.sources, state, now, need, keys))
        flips: dict[str, Any] = {}
        for s in timed:
            holds = s.key in state
            flips[s.key] = [self._next_flip(s, bindings, now, holds, hints.get(s.key), base, times), base]
        due = [f[0] for f in flips.values() if f[0] is not None]
        self._schedule(ctx, min(due) if due else None, flips)
        return state

    def _holds(self, s: SegmentDef, ctx: Context, members: Members, now: int) -> bool:
        return s.rule.evaluate(profile_variables(ctx.profile, self.sources, members, now))

    def _next_flip(
        self,
        s: SegmentDef,
        variables: Bindings | dict[str, Any],
        now: int,
        holds: bool,
        hint: Any,
        ts: int,
        times: tuple[int, ...] = (),
    ) -> int | None:
        """The first time after ``now`` at which the rule's answer changes, if within the ladder's reach.

        ``hint`` is ``[flip, ts]`` found the last time, at the time ``ts`` of what was applied then: most
        rules reading ``now`` compare it with a profile time, so the next change is where it was
        (``profile.created_at``) or moved as much as the events' time did (``profile.updated_at``). The
        profile's times plus or minus the rule's durations are tried too. A guess that checks out (the
        answer is unchanged a second before it and changed at it) costs two evaluations instead of the
        ladder's twenty or more; like the ladder, it takes answers to be monotonic in time."""
        if isinstance(variables, Bindings):
            # Each probe binds only what this rule reads, with its own `now`: a small activation.
            base = variables

            def at(t: int) -> bool:
                return s.rule.evaluate(base.replace({"now": t}, only=s.reads))

        else:
            probe = dict(variables)

            def at(t: int) -> bool:
                probe["now"] = t
                return s.rule.evaluate(probe)

        horizon = now + LADDER[-1]
        guesses: list[int] = []
        if isinstance(hint, list) and len(hint) == 2 and isinstance(hint[1], int):
            flip, then = hint
            if isinstance(flip, int):
                guesses += (flip + ts - then, flip)  # moved with the profile's time first: the usual case
        # A guess that checks out needs no probe at the end of reach: taken as monotonic in time, the rule
        # changes its answer once.
        for guess in dict.fromkeys(guesses):
            if now < guess <= horizon and at(guess) != holds and at(guess - _S) == holds:
                return int(guess)
        if at(horizon) == holds:  # the same answer at the end of reach: no change before (monotonic in time)
            return None
        edges = (x + sign * d + edge for x in times for d in s.rule.durations for sign in (1, -1) for edge in (1, 0))
        for guess in dict.fromkeys(sorted(edges)):
            if guess not in guesses and now < guess <= horizon and at(guess) != holds and at(guess - _S) == holds:
                return int(guess)
        lo = now
        for step in LADDER:
            hi = now + step
            if at(hi) != holds:
                while hi - lo > _S:
                    mid = (lo + hi) // 2
                    if at(mid) != holds:
                        hi = mid
                    else:
                        lo = mid
                return hi
            lo = hi
        return None

    def _schedule(self, ctx: Context, when: int | None, flips: dict[str, Any]) -> None:
        """The timer of the earliest next change; its payload keeps every rule's (the next guesses)."""
        pending = ctx.timers().get(TIMER)
        if when is None and not any(f[0] is None for f in flips.values()):
            if pending is not None:
                ctx.cancel(TIMER)
        elif pending is None or pending.due_at != when or pending.payload != flips:
            ctx.schedule(TIMER, when if when is not None else NEVER, flips)

    def _enter(self, ctx: Context, key: str, version: int, ts: int) -> None:
        record(ctx, ts, "segment_entered", key, {"version": version})
        ctx.emit("segment_entered", {"segment": key, "version": version, "at": ts})
        ctx.count(SEGMENT_STATS, (key, ts // DAY), (1, 0))

    def _exit(self, ctx: Context, key: str, version: int, ts: int, profile_id: str | None = None) -> None:
        if profile_id is None:
            record(ctx, ts, "segment_exited", key, {"version": version})
            ctx.emit("segment_exited", {"segment": key, "version": version, "at": ts})
        else:  # the loser of a merge: its membership ends with it (its timeline now belongs to the winner)
            record(ctx, ts, "segment_exited", key, {"version": version, "merged_profile_id": profile_id})
            payload = {"segment": key, "version": version, "at": ts, "profile_id": profile_id}
            ctx.emit("segment_exited", {**payload, "merged_into": ctx.profile.id})
        ctx.count(SEGMENT_STATS, (key, ts // DAY), (0, 1))

    # -- storage and reading -------------------------------------------------------------------------
    def encode(self, state: Members) -> tuple[Any, ...]:
        return ({k: [v, since] for k, (v, since) in sorted(state.items())},)

    def decode(self, values: Sequence[Any]) -> Members:
        return {k: (int(v[0]), int(v[1])) for k, v in (values[0] or {}).items()}

    def view(self, state: Members) -> dict[str, Any]:
        return {"segments": sorted(state)}

"""What people define: computed traits and segments, validated, compiled, and kept as one catalog.

A definition is stored as JSON (``kairos.store.schema.DEFINITIONS``) by the API, the CLI or ``kairos.toml``,
and compiled here into what the processor runs: :class:`TraitDef` (an aggregate over events) and
:class:`SegmentDef` (a rule over the profile). The :class:`Catalog` holds the compiled set the projections
read; the processor swaps its contents when the stored revision moves, so a definition saved through the API
takes effect in the processor within one batch, and a backfill job brings existing profiles to it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from kairos.errors import DefinitionsChanged, ValidationError, unknown_field
from kairos.rules import References, Rule, RuleError, Scope, compile_rule
from kairos.store import AdminStore, Definition

__all__ = [
    "AGGREGATES",
    "KINDS",
    "Catalog",
    "MomentDef",
    "SegmentDef",
    "SegmentIndex",
    "Step",
    "TraitDef",
    "catalog_of",
    "check_key",
    "checked_write",
    "compile_definition",
    "load",
    "moment_body",
    "segment_body",
    "trait_body",
    "window_ms",
]

KINDS = ("trait", "segment", "moment")
WRITE_ATTEMPTS = 10  # checked writes a burst of concurrent definition changes may make wait; then a 503
_T = TypeVar("_T")
Kind = Literal["trait", "segment", "moment"]
AGGREGATES = ("count", "sum", "min", "max", "avg", "first", "last", "distinct_count", "most_frequent")
# Aggregates that read ``property`` (count counts events; with a property, those that carry it).
NEEDS_PROPERTY = frozenset(AGGREGATES) - {"count"}
_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
_WINDOW = re.compile(r"([1-9][0-9]{0,6})([mhd])")
_UNIT_MS = {"m": 60_000, "h": 3_600_000, "d": 86_400_000}
MAX_WINDOW_MS = 3660 * 86_400_000  # ten years
MAX_TEXT = 1000


def check_key(key: str, kind: str) -> str:
    """Keys are identifiers, so rules can write ``traits.orders_30d`` and ``"vip" in segments``."""
    if not isinstance(key, str) or not _KEY.fullmatch(key):
        article = "an" if kind[:1] in ("a", "e", "i", "o", "u") else "a"
        message = f"{article} {kind} key is 1-64 ASCII letters, digits or '_', not starting with a digit"
        raise ValidationError(message, code="invalid_key", field="key")
    return key


def checked_write(write: Callable[[], _T]) -> _T:
    """Run ``write`` (it reads the definitions' revision, checks against the definitions, then writes with
    ``expect_revision``) until no other write came between: checked and written apart, two racing PUTs could
    each pass a check the other breaks (a cycle of segments, the catalogue's size, which of them created the
    key). After ``WRITE_ATTEMPTS`` a :class:`~kairos.errors.DefinitionsChanged` (503) goes out."""
    for _ in range(WRITE_ATTEMPTS - 1):
        try:
            return write()
        except DefinitionsChanged:
            continue
    return write()


def window_ms(text: str, field: str = "window") -> int:
    """``"30d"``, ``"12h"``, ``"15m"`` → milliseconds.

    >>> window_ms("30d")
    2592000000
    """
    m = _WINDOW.fullmatch(text) if isinstance(text, str) else None
    if m is None:
        raise ValidationError(
            f"{field} is a whole number of minutes, hours or days: e.g. '15m', '12h', '30d'",
            code="invalid_field",
            field=field,
        )
    ms = int(m.group(1)) * _UNIT_MS[m.group(2)]
    if ms > MAX_WINDOW_MS:
        raise ValidationError(f"{field} is at most 3660d", code="invalid_field", field=field)
    return ms


def _text(
    body: Mapping[str, Any], name: str, required: bool = False, limit: int = MAX_TEXT, path: str | None = None
) -> str | None:
    """``body[name]`` as a string, checked; errors name the field ``path`` (default: ``name``)."""
    value = body.get(name)
    name = path or name
    if value is None:
        if required:
            raise ValidationError(f"{name} is required", code="missing_field", field=name)
        return None
    if not isinstance(value, str):
        raise ValidationError(f"{name} must be a string", code="invalid_field", field=name)
    if "\x00" in value:
        raise ValidationError(f"{name} must not contain NUL", code="invalid_field", field=name)
    try:
        value.encode()
    except UnicodeEncodeError:  # a lone surrogate ("\ud800" in JSON): no store or rule engine takes it
        raise ValidationError(f"{name} must be valid Unicode text", code="invalid_field", field=name) from None
    if len(value) > limit:
        raise ValidationError(f"{name} is at most {limit} characters", code="too_large", field=name)
    if not value.strip() and required:
        raise ValidationError(f"{name} must not be empty", code="invalid_field", field=name)
    return value


def _only(body: Any, allowed: Iterable[str]) -> Mapping[str, Any]:
    if not isinstance(body, dict):
        raise ValidationError("the body must be a JSON object", code="invalid_body", field="body")
    extra = sorted(set(body) - set(allowed))
    if extra:
        raise unknown_field(extra[0])
    return body


def _rule(source: str, scope: Scope, field: str) -> Rule:
    try:
        return compile_rule(source, scope)
    except RuleError as exc:
        exc.field = field
        raise


def trait_body(body: Any) -> dict[str, Any]:
    """A computed trait's definition, validated and normalized (what is stored)."""
    body = _only(body, ("aggregate", "event", "where", "property", "window", "description"))
    aggregate = _text(body, "aggregate", required=True)
    if aggregate not in AGGREGATES:
        raise ValidationError(
            f"aggregate must be one of {', '.join(AGGREGATES)}", code="invalid_field", field="aggregate"
        )
    out: dict[str, Any] = {"aggregate": aggregate}
    event = _text(body, "event", limit=200)
    if event is not None:
        if not event.strip():  # collect refuses blank event names: such a trait would count nothing, ever
            raise ValidationError(
                "event must not be empty (leave it out to count every event)", code="invalid_field", field="event"
            )
        out["event"] = event
    where = _text(body, "where", limit=4096)
    if where is not None:
        _rule(where, Scope.EVENT, "where")
        out["where"] = where
    prop = _text(body, "property", limit=200)
    if prop is not None:
        if not all(part.strip() for part in prop.split(".")):  # "a..b", "   ": no property has such a path
            raise ValidationError(
                "property is a dotted path into the event's properties", code="invalid_field", field="property"
            )
        out["property"] = prop
    elif aggregate in NEEDS_PROPERTY:
        raise ValidationError(f"aggregate {aggregate} needs a property", code="missing_field", field="property")
    window = _text(body, "window", limit=20)
    if window is not None:
        window_ms(window)
        out["window"] = window
    description = _text(body, "description")
    if description is not None:
        out["description"] = description
    return out


def segment_body(body: Any) -> dict[str, Any]:
    """A segment's definition, validated (its rule compiled and type-checked) and normalized."""
    body = _only(body, ("rule", "description"))
    rule = _text(body, "rule", required=True, limit=4096)
    assert rule is not None
    _rule(rule, Scope.SEGMENT, "rule")
    out: dict[str, Any] = {"rule": rule}
    description = _text(body, "description")
    if description is not None:
        out["description"] = description
    return out


def _step(value: Any, field: str) -> dict[str, Any]:
    """One event of a moment's pattern: ``{"event": NAME, "where"?: RULE}``."""
    if not isinstance(value, dict):
        raise ValidationError(f"{field} must be an object with an event", code="invalid_field", field=field)
    extra = sorted(set(value) - {"event", "where"})
    if extra:
        raise unknown_field(extra[0], f"{field}.")
    name = _text(value, "event", required=True, limit=200, path=f"{field}.event")
    out: dict[str, Any] = {"event": name}
    where = _text(value, "where", limit=4096, path=f"{field}.where")
    if where is not None:
        _rule(where, Scope.EVENT, f"{field}.where")
        out["where"] = where
    return out


MOMENT_PATTERNS = (
    "event",
    "sequence",
    "not_followed_by",
    "segment_entered",
    "segment_exited",
    "trait",
)


def moment_body(body: Any) -> dict[str, Any]:
    """A moment's definition, validated and normalized: ``{"when": PATTERN, "context"?, "cooldown"?,
    "description"?}`` (the patterns are listed in docs/moments.md)."""
    body = _only(body, ("when", "context", "cooldown", "description"))
    when = body.get("when")
    if not isinstance(when, dict) or not when:
        raise ValidationError(
            "when must be an object: a pattern", code="missing_field" if when is None else "invalid_field", field="when"
        )
    out: dict[str, Any] = {}
    if "sequence" in when:
        _only_when(when, ("sequence", "within"))
        steps = when["sequence"]
        if not isinstance(steps, list) or not 2 <= len(steps) <= 10:
            raise ValidationError(
                "when.sequence is a list of 2 to 10 events", code="invalid_field", field="when.sequence"
            )
        pattern: dict[str, Any] = {"sequence": [_step(x, f"when.sequence.{i}") for i, x in enumerate(steps)]}
        pattern["within"] = _within(when)
    elif "not_followed_by" in when:
        _only_when(when, ("event", "where", "not_followed_by", "within"))
        pattern = _step({k: when[k] for k in ("event", "where") if k in when}, "when")
        pattern["not_followed_by"] = _step(when["not_followed_by"], "when.not_followed_by")
        pattern["within"] = _within(when)
    elif "event" in when:
        _only_when(when, ("event", "where"))
        pattern = _step(when, "when")
    elif "segment_entered" in when or "segment_exited" in when:
        name = "segment_entered" if "segment_entered" in when else "segment_exited"
        _only_when(when, (name,))
        pattern = {name: _key_in(when, name, "segment")}
    elif "trait" in when:
        directions = [d for d in ("crosses_above", "crosses_below") if d in when]
        _only_when(when, ("trait", *directions))
        if len(directions) != 1:
            raise ValidationError(
                "a trait pattern has one of crosses_above, crosses_below", code="invalid_field", field="when"
            )
        threshold = when[directions[0]]
        if (
            isinstance(threshold, bool)
            or not isinstance(threshold, int | float)
            or threshold != threshold
            or abs(threshold) > 1e15
        ):
            raise ValidationError(
                f"when.{directions[0]} must be a number", code="invalid_field", field=f"when.{directions[0]}"
            )
        pattern = {
            "trait": _key_in(when, "trait", "trait"),
            directions[0]: threshold,
        }
    else:
        raise ValidationError(
            f"when is one of the patterns: {', '.join(MOMENT_PATTERNS)}", code="invalid_field", field="when"
        )
    out["when"] = pattern
    context = _text(body, "context", limit=4096)
    if context is not None:
        _rule(context, Scope.MOMENT, "context")
        out["context"] = context
    cooldown = _text(body, "cooldown", limit=20)
    if cooldown is not None:
        window_ms(cooldown, "cooldown")
        out["cooldown"] = cooldown
    description = _text(body, "description")
    if description is not None:
        out["description"] = description
    return out


def _key_in(when: Mapping[str, Any], name: str, kind: str) -> str:
    key = _text(when, name, required=True, limit=64, path=f"when.{name}") or ""
    try:
        return check_key(key, kind)
    except ValidationError as exc:
        exc.field = f"when.{name}"
        raise


def _only_when(when: Mapping[str, Any], allowed: Sequence[str]) -> None:
    extra = sorted(set(when) - set(allowed))
    if extra:
        raise unknown_field(extra[0], "when.", " in this pattern")


def _within(when: Mapping[str, Any]) -> str:
    within = _text(when, "within", required=True, limit=20, path="when.within")
    assert within is not None
    window_ms(within, "when.within")
    return within


@dataclass(frozen=True, slots=True)
class Step:
    event: str
    where: Rule | None


@dataclass(frozen=True, slots=True)
class MomentDef:
    key: str
    version: int
    pattern: str  # event | sequence | absence | segment_entered | segment_exited | trait
    steps: tuple[Step, ...]  # event: (A,); sequence: (A, B, ...); absence: (A, B)
    within: int | None  # ms
    segment: str | None
    trait: str | None
    above: float | None  # crosses_above threshold
    below: float | None  # crosses_below threshold
    context: Rule | None
    cooldown: int  # ms; 0: none


@dataclass(frozen=True, slots=True)
class TraitDef:
    key: str
    version: int
    aggregate: str
    event: str | None
    where: Rule | None
    property: tuple[str, ...] | None
    window: int | None  # ms


@dataclass(frozen=True, slots=True)
class SegmentDef:
    key: str
    version: int
    rule: Rule
    after: tuple[str, ...]  # segments its rule reads (evaluated before it)
    # What the rule reads, flattened from ``rule.references`` once (the processor asks on every event).
    traits: frozenset[str] = frozenset()
    traits_dynamic: bool = False
    segments: frozenset[str] = frozenset()
    segments_dynamic: bool = False
    identities: bool = False
    consents: bool = False
    profile: frozenset[str] = frozenset()
    uses_now: bool = False
    reads: frozenset[str] = frozenset()  # variables
    # Every value the rule reads, as (variable, key), when that is all it reads (no `now`, no key named at run
    # time): its answer is then a function of those values, which the segments projection remembers.
    memo: tuple[tuple[str, str], ...] | None = None


@dataclass(frozen=True, slots=True)
class SegmentIndex:
    """Which segments (positions in evaluation order) read each input, so that an event's changes find the
    rules to evaluate by look-up instead of asking every rule."""

    by_trait: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    traits_dynamic: tuple[int, ...] = ()  # read a trait named at run time: any trait change
    by_field: Mapping[str, tuple[int, ...]] = field(default_factory=dict)  # profile.created_at, ...
    profile_any: tuple[int, ...] = ()
    consents: tuple[int, ...] = ()
    identities: tuple[int, ...] = ()
    by_segment: Mapping[str, tuple[int, ...]] = field(default_factory=dict)  # the segments that read it
    segments_dynamic: tuple[int, ...] = ()

    @classmethod
    def of(cls, ordered: Sequence[SegmentDef]) -> SegmentIndex:
        by_trait: dict[str, list[int]] = {}
        by_field: dict[str, list[int]] = {}
        by_segment: dict[str, list[int]] = {}
        for i, s in enumerate(ordered):
            for key in s.traits:
                by_trait.setdefault(key, []).append(i)
            for name in s.profile - {"*"}:
                by_field.setdefault(name, []).append(i)
            for key in s.segments:
                by_segment.setdefault(key, []).append(i)

        def where(test: Any) -> tuple[int, ...]:
            return tuple(i for i, s in enumerate(ordered) if test(s))

        return cls(
            {k: tuple(v) for k, v in by_trait.items()},
            where(lambda s: s.traits_dynamic),
            {k: tuple(v) for k, v in by_field.items()},
            where(lambda s: "*" in s.profile),
            where(lambda s: s.consents),
            where(lambda s: s.identities),
            {k: tuple(v) for k, v in by_segment.items()},
            where(lambda s: s.segments_dynamic),
        )


def _compile_step(raw: Mapping[str, Any]) -> Step:
    where = raw.get("where")
    return Step(raw["event"], compile_rule(where, Scope.EVENT) if where else None)


def compile_moment(d: Definition) -> MomentDef:
    when = d.body["when"]
    steps: tuple[Step, ...] = ()
    within = window_ms(when["within"]) if "within" in when else None
    segment = trait = None
    above = below = None
    if "sequence" in when:
        pattern = "sequence"
        steps = tuple(_compile_step(x) for x in when["sequence"])
    elif "not_followed_by" in when:
        pattern = "absence"
        steps = (_compile_step(when), _compile_step(when["not_followed_by"]))
    elif "event" in when:
        pattern = "event"
        steps = (_compile_step(when),)
    elif "segment_entered" in when or "segment_exited" in when:
        pattern = "segment_entered" if "segment_entered" in when else "segment_exited"
        segment = when[pattern]
    else:
        pattern = "trait"
        trait = when["trait"]
        above = when.get("crosses_above")
        below = when.get("crosses_below")
    context = d.body.get("context")
    return MomentDef(
        d.key,
        d.version,
        pattern,
        steps,
        within,
        segment,
        trait,
        above,
        below,
        compile_rule(context, Scope.MOMENT) if context else None,
        window_ms(d.body["cooldown"], "cooldown") if d.body.get("cooldown") else 0,
    )


def compile_definition(d: Definition) -> TraitDef | SegmentDef | MomentDef:
    if d.kind == "moment":
        return compile_moment(d)
    body = d.body
    if d.kind == "trait":
        where = body.get("where")
        prop = body.get("property")
        return TraitDef(
            d.key,
            d.version,
            body["aggregate"],
            body.get("event"),
            compile_rule(where, Scope.EVENT) if where else None,
            tuple(prop.split(".")) if prop else None,
            window_ms(body["window"]) if body.get("window") else None,
        )
    rule = compile_rule(body["rule"], Scope.SEGMENT)
    refs = rule.references
    return SegmentDef(
        d.key,
        d.version,
        rule,
        tuple(sorted(refs.segments)),
        traits=refs.traits,
        traits_dynamic=refs.traits_dynamic,
        segments=refs.segments,
        segments_dynamic=refs.segments_dynamic,
        identities="identities" in refs.variables,
        consents="consents" in refs.variables,
        profile=refs.profile | (frozenset({"*"}) if "profile" in refs.dynamic else frozenset()),
        uses_now=refs.uses_now,
        reads=refs.variables,
        memo=_memo_plan(refs),
    )


_MEMO_VARIABLES = frozenset(("traits", "profile", "consents", "segments", "identities"))


def _memo_plan(refs: References) -> tuple[tuple[str, str], ...] | None:
    """The (variable, key) pairs a segment rule reads, if they are all it reads (see ``SegmentDef.memo``)."""
    if refs.uses_now or refs.dynamic or not refs.variables <= _MEMO_VARIABLES:
        return None
    if any(not refs.keys.get(name) for name in refs.variables):
        return None  # read whole (not expected of a keyed variable outside `dynamic`): not remembered
    return tuple(sorted((name, key) for name in refs.variables for key in refs.keys.get(name, ())))


def segment_order(segments: Mapping[str, SegmentDef]) -> list[SegmentDef]:
    """Segments in an order where every segment comes after those its rule reads; a cycle is an error.

    A rule that names the segments it reads only at run time (``segments.exists(s, ...)``) may read any: it
    comes after every segment that does not itself depend on such a rule."""
    done: dict[str, bool] = {}  # key → finished (False: on the current path)
    out: list[SegmentDef] = []
    downstream = {k for k, s in segments.items() if s.segments_dynamic}
    grew = True
    while grew:
        more = {k for k, s in segments.items() if k not in downstream and not downstream.isdisjoint(s.after)}
        downstream |= more
        grew = bool(more)
    upstream = tuple(k for k in sorted(segments) if k not in downstream)

    def deps(key: str) -> tuple[str, ...]:
        s = segments[key]
        return (*s.after, *upstream) if s.segments_dynamic else s.after

    def visit(key: str, path: tuple[str, ...]) -> None:
        state = done.get(key)
        if state is True or key not in segments:
            return
        if state is False:
            cycle = " → ".join((*path[path.index(key) :], key))
            raise ValidationError(
                f"segments may not refer to each other in a cycle: {cycle}", code="cycle", field="rule"
            )
        done[key] = False
        for dep in deps(key):
            visit(dep, (*path, key))
        done[key] = True
        out.append(segments[key])

    for key in sorted(segments):
        visit(key, ())
    return out


@dataclass
class Catalog:
    """The compiled definitions the processor runs. Projections hold the catalog object and read it on
    every event, so the processor swaps its content (``replace``) without rebuilding them."""

    revision: int = -1
    traits: dict[str, TraitDef] = field(default_factory=dict)
    segments: list[SegmentDef] = field(default_factory=list)  # in evaluation order
    segment_index: SegmentIndex = field(default_factory=SegmentIndex)
    _segments_by_key: dict[str, SegmentDef] = field(default_factory=dict, repr=False)
    # Traits by the event name they count (None: every event), for the per-event fast path.
    traits_by_event: dict[str | None, list[TraitDef]] = field(default_factory=dict)
    moments: dict[str, MomentDef] = field(default_factory=dict)
    # Moments by the event names their patterns read, and those that react to segments and traits.
    moments_by_event: dict[str, list[MomentDef]] = field(default_factory=dict)
    moments_on_change: list[MomentDef] = field(default_factory=list)
    moment_traits: frozenset[str] = frozenset()  # the traits those moments watch
    errors: list[str] = field(default_factory=list)  # "kind:key: message" of definitions that failed to compile

    @classmethod
    def of(cls, definitions: Sequence[Definition], revision: int = 0) -> Catalog:
        catalog = cls()
        catalog.replace(definitions, revision)
        return catalog

    def replace(self, definitions: Sequence[Definition], revision: int) -> None:
        traits: dict[str, TraitDef] = {}
        segments: dict[str, SegmentDef] = {}
        moments: dict[str, MomentDef] = {}
        errors = []
        for d in definitions:
            if d.deleted:
                continue
            try:  # validated when saved; a library upgrade could still refuse one: skip it, say so
                compiled = compile_definition(d)
            except (RuleError, ValidationError, KeyError, TypeError) as exc:
                errors.append(f"{d.kind}:{d.key}: {type(exc).__name__}")
                continue
            if isinstance(compiled, TraitDef):
                traits[d.key] = compiled
            elif isinstance(compiled, MomentDef):
                moments[d.key] = compiled
            else:
                segments[d.key] = compiled
        by_event: dict[str | None, list[TraitDef]] = {}
        for t in traits.values():
            by_event.setdefault(t.event, []).append(t)
        ordered: list[SegmentDef] = []
        while True:  # refused when saved; if one is stored anyway, only the segments in it are left out
            try:
                ordered = segment_order(segments)
                break
            except ValidationError as exc:
                cycle = set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", exc.message.partition(":")[2]))
                errors.append(f"segment: a cycle ({', '.join(sorted(cycle))}) left out")
                segments = {k: v for k, v in segments.items() if k not in cycle}
        self.traits = traits
        self.traits_by_event = by_event
        self.segments = ordered
        self.segment_index = SegmentIndex.of(ordered)
        self._segments_by_key = {s.key: s for s in ordered}
        self.moments = moments
        by_name: dict[str, list[MomentDef]] = {}
        for m in moments.values():
            for name in dict.fromkeys(step.event for step in m.steps):
                by_name.setdefault(name, []).append(m)
        self.moments_by_event = by_name
        self.moments_on_change = [m for m in moments.values() if not m.steps]
        self.moment_traits = frozenset(m.trait for m in self.moments_on_change if m.trait is not None)
        self.errors = errors
        self.revision = revision

    def segment(self, key: str) -> SegmentDef | None:
        return self._segments_by_key.get(key)

    @property
    def versions(self) -> dict[tuple[str, str], int]:
        out = {("trait", k): t.version for k, t in self.traits.items()}
        out.update({("segment", s.key): s.version for s in self.segments})
        return out


def catalog_of(projections: Iterable[object]) -> Catalog | None:
    """The catalog the projections run (they share one), if any does."""
    return next((c for p in projections if isinstance(c := getattr(p, "catalog", None), Catalog)), None)


def load(admin: AdminStore, catalog: Catalog) -> bool:
    """Bring ``catalog`` to the stored definitions if they changed; True when they did."""
    revision = admin.definitions_revision()
    if revision == catalog.revision:
        return False
    catalog.replace([d for d in admin.definitions() if d.kind in KINDS], revision)
    return True

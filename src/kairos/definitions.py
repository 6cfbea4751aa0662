"""What people define: computed traits and segments, validated, compiled, and kept as one catalog.

A definition is stored as JSON (``kairos.store.schema.DEFINITIONS``) by the API, the CLI or ``kairos.toml``,
and compiled here into what the processor runs: :class:`TraitDef` (an aggregate over events) and
:class:`SegmentDef` (a rule over the profile). The :class:`Catalog` holds the compiled set the projections
read; the processor swaps its contents when the stored revision moves, so a definition saved through the API
takes effect in the processor within one batch, and a backfill job brings existing profiles to it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from kairos.errors import ValidationError
from kairos.rules import Rule, RuleError, Scope, compile_rule
from kairos.store import AdminStore, Definition

__all__ = [
    "AGGREGATES",
    "KINDS",
    "Catalog",
    "SegmentDef",
    "TraitDef",
    "catalog_of",
    "check_key",
    "compile_definition",
    "load",
    "segment_body",
    "trait_body",
    "window_ms",
]

KINDS = ("trait", "segment")
Kind = Literal["trait", "segment"]
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
        raise ValidationError(
            f"a {kind} key is 1-64 letters, digits or '_', not starting with a digit", code="invalid_key", field="key"
        )
    return key


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


def _text(body: Mapping[str, Any], name: str, required: bool = False, limit: int = MAX_TEXT) -> str | None:
    value = body.get(name)
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
        raise ValidationError("the body must be a JSON object", code="invalid_body")
    extra = sorted(set(body) - set(allowed))
    if extra:
        raise ValidationError(f"unknown field {extra[0]!r}", code="unknown_field", field=str(extra[0]))
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
        if not all(part for part in prop.split(".")):
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


def compile_definition(d: Definition) -> TraitDef | SegmentDef:
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
    return SegmentDef(d.key, d.version, rule, tuple(sorted(rule.references.segments)))


def segment_order(segments: Mapping[str, SegmentDef]) -> list[SegmentDef]:
    """Segments in an order where every segment comes after those its rule reads; a cycle is an error."""
    done: dict[str, bool] = {}  # key → finished (False: on the current path)
    out: list[SegmentDef] = []

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
        for dep in segments[key].after:
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
    # Traits by the event name they count (None: every event), for the per-event fast path.
    traits_by_event: dict[str | None, list[TraitDef]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)  # "kind:key: message" of definitions that failed to compile

    @classmethod
    def of(cls, definitions: Sequence[Definition], revision: int = 0) -> Catalog:
        catalog = cls()
        catalog.replace(definitions, revision)
        return catalog

    def replace(self, definitions: Sequence[Definition], revision: int) -> None:
        traits: dict[str, TraitDef] = {}
        segments: dict[str, SegmentDef] = {}
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
            else:
                segments[d.key] = compiled
        by_event: dict[str | None, list[TraitDef]] = {}
        for t in traits.values():
            by_event.setdefault(t.event, []).append(t)
        try:
            ordered = segment_order(segments)
        except ValidationError:  # refused when saved; kept out rather than stopping the processor
            errors.append("segment: a cycle; segments skipped")
            ordered = []
        self.traits = traits
        self.traits_by_event = by_event
        self.segments = ordered
        self.errors = errors
        self.revision = revision

    def segment(self, key: str) -> SegmentDef | None:
        return next((s for s in self.segments if s.key == key), None)

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

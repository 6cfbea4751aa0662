"""The offer catalogue: what a decision may show, validated once and stored as definitions of kind ``offer``.

An offer's body (``PUT /v1/offers/{key}``)::

    {"name": "Summer sale",                                   # required
     "content": {"web": {"title": "..."}, "email": {...}},    # channel -> any JSON: what the channel shows
     "channels": ["web", "email"],                            # none: every channel its content names (or any)
     "placements": ["home_banner"],                           # none: any placement
     "attributes": {"category": "shoes", "price_tier": "mid"},# what the learner generalises over
     "eligibility": '"vip" in segments && context.daypart == "evening"',   # CEL (Scope.OFFER); none: everyone
     "purpose": "personalization",                            # the consent purpose showing it serves
     "contact_policy": {"max_impressions": 3, "window": "7d", "suppress_after_ignored": 5, "suppress_for": "30d"},
     "active_from": "2026-06-01T00:00:00Z", "active_to": "2026-09-01T00:00:00Z",
     "value": 12.5, "weight": 1.0,                            # arbitration: estimate * value * weight
     "budget": {"impressions": 10000},
     "description": "..."}

Every field but ``name`` is optional. Stored normalized (defaults filled in), so ``GET`` shows what applies.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kairos.definitions import check_key, window_ms
from kairos.errors import NotFoundError, ValidationError, unknown_field
from kairos.rules import MAX_RULE_LENGTH, Rule, RuleError, Scope, compile_rule
from kairos.store import AdminStore, Definition

__all__ = ["KIND", "ContactPolicy", "Offer", "OfferCatalog", "compile_offer", "offer_body"]

KIND = "offer"
MAX_LIST = 50
MAX_ATTRIBUTES = 50
MAX_VALUE = 1e12
MAX_WEIGHT = 1e6
DEFAULT_PURPOSE = "personalization"
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:-]{0,63}")  # channels, placements, purposes, attribute keys
_FIELDS = (
    "name",
    "content",
    "channels",
    "placements",
    "attributes",
    "eligibility",
    "purpose",
    "contact_policy",
    "active_from",
    "active_to",
    "value",
    "weight",
    "budget",
    "description",
)
_POLICY_FIELDS = ("max_impressions", "window", "suppress_after_ignored", "suppress_for")


def _bad(message: str, field: str, code: str = "invalid_field") -> ValidationError:
    return ValidationError(message, code=code, field=field)


def _string(value: Any, field: str, limit: int, required: bool = False) -> str | None:
    if value is None:
        if required:
            raise _bad(f"{field} is required", field, "missing_field")
        return None
    if not isinstance(value, str):
        raise _bad(f"{field} must be a string", field)
    if "\x00" in value:
        raise _bad(f"{field} must not contain NUL", field)
    try:
        value.encode()
    except UnicodeEncodeError:
        raise _bad(f"{field} must be valid Unicode text", field) from None
    if len(value) > limit:
        raise _bad(f"{field} is at most {limit} characters", field, "too_large")
    if required and not value.strip():
        raise _bad(f"{field} must not be empty", field)
    return value


def _name(value: Any, field: str) -> str:
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise _bad(f"{field} is 1-64 ASCII letters, digits, '_', '.', ':' or '-'", field)
    return value


def _names(value: Any, field: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or len(value) > MAX_LIST:
        raise _bad(f"{field} is a list of at most {MAX_LIST} names", field)
    return sorted({_name(v, f"{field}.{i}") for i, v in enumerate(value)})


def _number(value: Any, field: str, default: float, limit: float) -> float:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _bad(f"{field} must be a number", field)
    if not 0 <= value <= limit:
        raise _bad(f"{field} is from 0 to {limit:g}", field)
    return float(value)


def _count(value: Any, field: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 1_000_000_000:
        raise _bad(f"{field} must be a whole number from 1 to 1000000000", field)
    return value


def _time(value: Any, field: str) -> str | None:
    text = _string(value, field, 64)
    if text is None:
        return None
    try:
        at = dt.datetime.fromisoformat(text)
    except ValueError:
        raise _bad(f"{field} must be an ISO 8601 time such as 2026-06-01T00:00:00Z", field) from None
    if at.tzinfo is None:
        at = at.replace(tzinfo=dt.UTC)
    try:
        return at.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
    except OverflowError:  # 0001-01-01T00:00+14:00 is in year 0 in UTC
        raise _bad(f"{field} is outside the years 1 to 9999 in UTC", field) from None


def _ms(iso: str | None) -> int | None:
    return None if iso is None else int(dt.datetime.fromisoformat(iso).timestamp() * 1000)


def _attributes(value: Any) -> dict[str, str | float | bool]:
    if value is None:
        return {}
    if not isinstance(value, dict) or len(value) > MAX_ATTRIBUTES:
        raise _bad(f"attributes is an object of at most {MAX_ATTRIBUTES} names", "attributes")
    out: dict[str, str | float | bool] = {}
    for name, item in value.items():
        field = f"attributes.{name}" if isinstance(name, str) and len(name) <= 64 else "attributes"
        _name(name, field)
        if isinstance(item, bool):
            out[name] = item
        elif isinstance(item, int | float):
            if not math.isfinite(item) or abs(item) > MAX_VALUE:
                raise _bad(f"{field} must be a finite number of at most {MAX_VALUE:g}", field)
            out[name] = float(item) if isinstance(item, float) else item
        else:
            text = _string(item, field, 200)
            if text is None:
                raise _bad(f"{field} is a string, a number or true/false", field)
            out[name] = text
    return dict(sorted(out.items()))


def _contact_policy(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _bad("contact_policy must be an object", "contact_policy")
    extra = sorted(set(value) - set(_POLICY_FIELDS))
    if extra:
        raise unknown_field(extra[0], "contact_policy.")
    out: dict[str, Any] = {}
    for name in ("max_impressions", "suppress_after_ignored"):
        n = _count(value.get(name), f"contact_policy.{name}")
        if n is not None:
            out[name] = n
    for name in ("window", "suppress_for"):
        text = _string(value.get(name), f"contact_policy.{name}", 20)
        if text is not None:
            window_ms(text, f"contact_policy.{name}")
            out[name] = text
    if "max_impressions" in out and "window" not in out:
        raise _bad("contact_policy.max_impressions needs a window", "contact_policy.window", "missing_field")
    if "suppress_after_ignored" in out and "suppress_for" not in out:
        raise _bad(
            "contact_policy.suppress_after_ignored needs suppress_for", "contact_policy.suppress_for", "missing_field"
        )
    return out


def offer_body(body: Any) -> dict[str, Any]:
    """An offer, validated (its eligibility compiled and type-checked) and normalized: what is stored."""
    if not isinstance(body, dict):
        raise ValidationError("the body must be a JSON object", code="invalid_body", field="body")
    extra = sorted(set(body) - set(_FIELDS))
    if extra:
        raise unknown_field(extra[0])
    out: dict[str, Any] = {"name": _string(body.get("name"), "name", 200, required=True)}
    content = body.get("content", {})
    if not isinstance(content, dict):
        raise _bad("content is an object: channel -> what that channel shows", "content")
    for channel in content:
        _name(channel, "content")
    out["content"] = content
    out["channels"] = _names(body.get("channels"), "channels")
    out["placements"] = _names(body.get("placements"), "placements")
    out["attributes"] = _attributes(body.get("attributes"))
    eligibility = _string(body.get("eligibility"), "eligibility", MAX_RULE_LENGTH)
    if eligibility is not None:
        try:
            compile_rule(eligibility, Scope.OFFER)
        except RuleError as exc:
            exc.field = "eligibility"
            raise
        out["eligibility"] = eligibility
    out["purpose"] = _name(body.get("purpose", DEFAULT_PURPOSE), "purpose")
    out["contact_policy"] = _contact_policy(body.get("contact_policy"))
    for name in ("active_from", "active_to"):
        at = _time(body.get(name), name)
        if at is not None:
            out[name] = at
    if "active_from" in out and "active_to" in out and _ms(out["active_from"]) >= _ms(out["active_to"]):  # type: ignore[operator]
        raise _bad("active_to must be after active_from", "active_to")
    out["value"] = _number(body.get("value"), "value", 1.0, MAX_VALUE)
    out["weight"] = _number(body.get("weight"), "weight", 1.0, MAX_WEIGHT)
    budget = body.get("budget")
    if budget is not None:
        if not isinstance(budget, dict) or set(budget) - {"impressions"}:
            raise _bad('budget is {"impressions": N}', "budget")
        impressions = _count(budget.get("impressions"), "budget.impressions")
        out["budget"] = {} if impressions is None else {"impressions": impressions}
    description = _string(body.get("description"), "description", 1000)
    if description is not None:
        out["description"] = description
    return out


@dataclass(frozen=True, slots=True)
class ContactPolicy:
    max_impressions: int | None = None
    window: int | None = None  # ms
    suppress_after_ignored: int | None = None
    suppress_for: int | None = None  # ms

    @property
    def empty(self) -> bool:
        return self.max_impressions is None and self.suppress_after_ignored is None


@dataclass(frozen=True, slots=True)
class Offer:
    """A stored offer, ready for the decision path."""

    key: str
    version: int
    name: str
    content: Mapping[str, Any]
    channels: frozenset[str]
    placements: frozenset[str]
    attributes: Mapping[str, str | float | bool]
    eligibility: Rule | None
    purpose: str
    contact: ContactPolicy
    active_from: int | None
    active_to: int | None
    value: float
    weight: float
    budget: int | None  # impressions
    order: int = 0  # position in the baseline's priority order (set by the catalogue)

    @property
    def priority(self) -> float:
        return self.value * self.weight

    def serves(self, channel: str) -> bool:
        """Whether the offer may be shown on ``channel``: listed in ``channels``; without them, named in its
        content or served by ``content.default`` (or any channel when it has no content)."""
        if self.channels:
            return channel in self.channels
        return not self.content or channel in self.content or "default" in self.content

    def content_for(self, channel: str) -> Any:
        return self.content.get(channel, self.content.get("default"))


def compile_offer(d: Definition) -> Offer:
    body = d.body
    policy = body.get("contact_policy") or {}
    eligibility = body.get("eligibility")
    return Offer(
        key=d.key,
        version=d.version,
        name=body["name"],
        content=body.get("content") or {},
        channels=frozenset(body.get("channels") or ()),
        placements=frozenset(body.get("placements") or ()),
        attributes=body.get("attributes") or {},
        eligibility=compile_rule(eligibility, Scope.OFFER) if eligibility else None,
        purpose=body.get("purpose", DEFAULT_PURPOSE),
        contact=ContactPolicy(
            policy.get("max_impressions"),
            window_ms(policy["window"]) if "window" in policy else None,
            policy.get("suppress_after_ignored"),
            window_ms(policy["suppress_for"]) if "suppress_for" in policy else None,
        ),
        active_from=_ms(body.get("active_from")),
        active_to=_ms(body.get("active_to")),
        value=float(body.get("value", 1.0)),
        weight=float(body.get("weight", 1.0)),
        budget=(body.get("budget") or {}).get("impressions"),
    )


class OfferCatalog:
    """The compiled offers, in the baseline's priority order (value * weight, highest first; then key), kept
    current from the store: :meth:`current` reloads when the definitions' revision moved, at most every
    ``max_age`` seconds, so a decision costs no query when nothing changed."""

    def __init__(self, admin: AdminStore) -> None:
        self.admin = admin
        self.revision = -1
        self.offers: tuple[Offer, ...] = ()
        self.by_key: dict[str, Offer] = {}
        self.errors: list[str] = []
        self._checked = -math.inf

    def current(self, now_monotonic: float, max_age: float = 1.0) -> tuple[Offer, ...]:
        if now_monotonic - self._checked >= max_age:
            self._checked = now_monotonic
            revision = self.admin.definitions_revision()
            if revision != self.revision:
                self.reload(revision)
        return self.offers

    def reload(self, revision: int | None = None) -> None:
        revision = self.admin.definitions_revision() if revision is None else revision
        offers, errors = [], []
        for d in self.admin.definitions(KIND):
            try:
                offers.append(compile_offer(d))
            except (RuleError, ValidationError, KeyError, TypeError, ValueError) as exc:
                errors.append(f"offer:{d.key}: {type(exc).__name__}")
        offers.sort(key=lambda o: (-o.priority, o.key))
        ordered = tuple(
            Offer(**{**{f: getattr(o, f) for f in Offer.__dataclass_fields__}, "order": i})
            for i, o in enumerate(offers)
        )
        self.offers = ordered
        self.by_key = {o.key: o for o in ordered}
        self.errors = errors
        self.revision = revision

    def get(self, key: str) -> Offer:
        check_key(key, KIND)
        found = self.by_key.get(key)
        if found is None:
            raise NotFoundError(f"no offer named {key!r}", field="key")
        return found

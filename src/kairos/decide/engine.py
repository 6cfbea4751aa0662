"""The decision path: ``POST /v1/decide`` from request to logged answer, in milliseconds.

Steps, in order (each documented in ``docs/decide.md``):

1. **Who.** The profile is resolved by id or any identity and read from the profile cache: the decision never
   waits on the processor. Someone Kairos does not know gets a context-only answer; the decision remembers a
   digest of the identity so a reward or a conversion can find it later.
2. **Group.** A person who denied ``personalization`` gets the baseline (offers in priority order) and is not
   learned from; a configured share of people (by a stable hash) is the control group, also served by the
   baseline, so that uplift is measured.
3. **Eligible offers.** Channel and placement, active dates, budget, the consent its purpose needs, the contact
   policy (impressions in a window, suppression after ignored impressions) and its eligibility rule.
4. **Rank.** The policy scores each candidate (features: request, derived context, profile, segments, stated
   preferences, offer attributes, and their interactions), arbitrates by ``estimate * value * weight`` and
   explores with a logged propensity.
5. **Log and answer.** The decision is written to the decision log (``store.decisions``) before the answer
   goes out, so every reward finds its decision.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import math
import os
import random
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec
from cachetools import TTLCache

from kairos.consent import ConsentPolicy
from kairos.context import Observed, derive, source_defaults
from kairos.decide.attribution import subject_of
from kairos.decide.contact import ContactHistory
from kairos.decide.control import in_control
from kairos.decide.features import PersonFeatures, action_of, person_features, shared_features
from kairos.decide.learning import PolicyHolder, encode_record
from kairos.decide.offers import Offer, OfferCatalog
from kairos.decide.offpolicy import greedy as _greedy
from kairos.decide.policy import Policy, Scoring
from kairos.decide.records import Action, DecisionItem, DecisionRecord, Features, Group
from kairos.errors import ValidationError, unknown_field
from kairos.privacy.keys import feature_label, privacy_secret
from kairos.rules import Scope
from kairos.runtime import Kairos
from kairos.store import DecisionRow

__all__ = ["BEHAVIOUR", "DecideRequest", "Decider", "Decision", "decide_request"]

MAX_LIMIT = 20
_PEOPLE = 4096
_PEOPLE_SECONDS = 5.0  # at most this long; the profile cache replaces a view every few seconds anyway
_UNRESOLVED: Any = object()
MAX_CONTEXT_KEYS = 64
MAX_CONTEXT_DEPTH = 16  # nested objects and arrays in ``context``: eligibility rules convert it recursively
BEHAVIOUR = ("request", "context", "profile", "segments", "moments")  # the person's own behaviour and context
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.:-")
# Variables of an eligibility rule that read the person or the moment (not the offer's own settings).
_PERSONAL_VARIABLES = frozenset({"traits", "identities", "segments", "profile", "moments", "context", "request"})


@dataclass(frozen=True, slots=True)
class DecideRequest:
    profile: str
    channel: str  # a channel name, or "auto"
    placement: str | None
    context: Mapping[str, Any]
    limit: int


def _name(value: Any, field: str, required: bool = True) -> str | None:
    if value is None and not required:
        return None
    if not isinstance(value, str) or not 1 <= len(value) <= 64 or not set(value) <= _NAME_CHARS:
        raise ValidationError(f"{field} is 1-64 ASCII letters, digits, '_', '.', ':' or '-'", field=field)
    return value


def _check_context(context: dict[str, Any]) -> None:
    """Refuse what no rule can read: a NUL in a key or a text (``rules._rule._json`` raises on it), and nesting
    deeper than :data:`MAX_CONTEXT_DEPTH` (its recursive conversion would overflow the stack). Iterative."""
    stack: list[tuple[Any, int]] = [(context, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, str):
            if "\x00" in value:
                raise ValidationError("context holds a NUL character (\\u0000)", field="context")
            continue
        if not isinstance(value, dict | list):
            continue
        if depth > MAX_CONTEXT_DEPTH:
            raise ValidationError(
                f"context nests objects and arrays at most {MAX_CONTEXT_DEPTH} deep", code="too_large", field="context"
            )
        if isinstance(value, dict):
            for key, item in value.items():
                if "\x00" in key:
                    raise ValidationError("context holds a NUL character (\\u0000)", field="context")
                stack.append((item, depth + 1))
        else:
            stack.extend((item, depth + 1) for item in value)


def decide_request(body: Any) -> DecideRequest:
    """A decide request, validated: every error names its field."""
    if not isinstance(body, dict):
        raise ValidationError("the body must be a JSON object", code="invalid_body", field="body")
    extra = sorted(set(body) - {"profile", "channel", "placement", "context", "limit"})
    if extra:
        raise unknown_field(extra[0])
    ref = body.get("profile")
    if ref is None:
        raise ValidationError("profile is required: an id or type:value", code="missing_field", field="profile")
    if not isinstance(ref, str):
        raise ValidationError("profile must be a string: an id or type:value", code="invalid_ref", field="profile")
    if not 1 <= len(ref) <= 600 or "\x00" in ref or not ref.strip():
        raise ValidationError("profile is 1 to 600 characters, without NUL", code="invalid_ref", field="profile")
    try:
        ref.encode()
    except UnicodeEncodeError:
        raise ValidationError("profile must be valid Unicode text", code="invalid_ref", field="profile") from None
    if body.get("channel") is None:
        raise ValidationError('channel is required (or "auto")', code="missing_field", field="channel")
    channel = _name(body.get("channel"), "channel")
    placement = _name(body.get("placement"), "placement", required=False)
    context = body.get("context", {})
    if context is None:
        context = {}
    if not isinstance(context, dict):
        raise ValidationError("context must be an object", field="context")
    if len(context) > MAX_CONTEXT_KEYS:
        raise ValidationError(f"context has at most {MAX_CONTEXT_KEYS} keys", code="too_large", field="context")
    _check_context(context)
    limit = body.get("limit", 1)
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise ValidationError(f"limit is a whole number from 1 to {MAX_LIMIT}", field="limit")
    assert channel is not None
    return DecideRequest(ref, channel, placement, context, limit)


class _Entropy:
    """``os.urandom`` bytes drawn 4 KB at a time: the same bytes, one system call per 400 decisions."""

    def __init__(self, block: int = 4096) -> None:
        self.block = block
        self._lock = threading.Lock()
        self._buffer = b""
        self._at = 0

    def take(self, n: int) -> bytes:
        with self._lock:
            if self._at + n > len(self._buffer):
                self._buffer, self._at = os.urandom(max(n, self.block)), 0
            self._at += n
            return self._buffer[self._at - n : self._at]


_entropy = _Entropy()


def _decision_id(now_ms: int) -> str:
    """A UUIDv7 (time-ordered: the decision log's unique index stays append-friendly)."""
    random_bits = int.from_bytes(_entropy.take(10), "big")
    # version 7 in the top 4 bits of the 7th byte, variant 0b10 in the top 2 bits of the 9th
    value = (now_ms & 0xFFFF_FFFF_FFFF) << 80 | random_bits & ~(0xF << 76 | 0x3 << 62) | 0x7 << 76 | 0x2 << 62
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _iso_ms(value: Any) -> int | None:
    if not isinstance(value, str):
        return None
    try:
        return int(dt.datetime.fromisoformat(value).timestamp() * 1000)
    except ValueError:
        return None


@dataclass(slots=True)
class Person:
    pk: int | None
    view: Mapping[str, Any] | None
    subjects: list[str]  # the profile id and a digest of each identity: what the decision log knows them by
    # What the view gives every decision, made once per view (the profile cache hands out the same object
    # until the profile changes or its entry expires).
    last_known: Observed | None = None
    features: PersonFeatures | None = None
    stated: frozenset[str] = frozenset()  # the names of their stated traits


@dataclass(slots=True)
class Decision:
    answer: dict[str, Any]
    row: DecisionRow
    record: DecisionRecord = field(repr=False)


class Decider:
    def __init__(self, kairos: Kairos, holder: PolicyHolder | None = None) -> None:
        self.kairos = kairos
        self.settings = kairos.settings.decide
        self.catalog = OfferCatalog(kairos.store.admin)
        self.holder = holder or PolicyHolder(kairos.store.decisions, self.settings)
        self._refs: TTLCache[str, int | None] = TTLCache(maxsize=100_000, ttl=5.0)
        self._people: dict[int, Person] = {}  # by profile key, good while the profile cache's view is the same
        self._people_until = -math.inf
        self._catalog_facts: _Catalog | None = None
        # Text features are named by a keyed hash of their value (kairos.decide.features), and traits named
        # after an identity type are never features: no trait value in clear in a model or the decision log.
        self._label = feature_label(privacy_secret(kairos))
        self._identity_types = frozenset(kairos.processor.identifiers.types)
        self._actions: dict[tuple[str, int], Action] = {}
        self._defaults = source_defaults(kairos.settings.context, "")
        # A decision is CPU work (about 0.15 ms) plus reads that an embedded SQLite store answers from memory:
        # on the event loop it saves a thread hop and a GIL hand-over each time (measured: 1.17 -> 0.97 ms of
        # server CPU per request). A networked store's reads would hold the loop: those go to a thread.
        self.on_loop = kairos.store.name == "sqlite"

    # -- who -----------------------------------------------------------------------------------------
    def person(self, ref: str) -> Person:
        kairos = self.kairos
        now = time.monotonic()
        if now >= self._people_until:  # views the profile cache dropped (an erased person's) go with them
            self._people, self._people_until = {}, now + _PEOPLE_SECONDS
        pk = self._refs.get(ref, _UNRESOLVED)
        if pk is _UNRESOLVED:
            try:
                pk = kairos.resolve(ref)  # an unknown identity type is a 400 here, on the body's field
            except ValidationError as exc:
                exc.field = "profile"
                raise
            self._refs[ref] = pk
        view = kairos.view(pk) if pk is not None else None
        if view is None and pk is not None:  # erased (or merged) since it was cached: ask the store again
            self._refs.pop(ref, None)
            pk = kairos.resolve(ref)
            view = kairos.view(pk) if pk is not None else None
        if view is None:
            kind, _, value = ref.partition(":")
            usable = kairos.processor.identifiers.usable(kind, value) if value else None
            return Person(None, None, [subject_of(kind, usable if usable is not None else value or ref)])
        known = self._people.get(pk)
        if known is not None and known.view is view:
            return known
        subjects = [view["id"], *(subject_of(i["type"], i["value"]) for i in view.get("identities") or ())]
        person = Person(pk, view, subjects)
        # Of someone who denied personalization nothing is derived (their answer does not use it).
        if kairos.consent_policy.allows(view, "personalization"):
            person.last_known = _last_known(view)
            person.features = person_features(view, label=self._label, exclude=self._identity_types)
            person.stated = frozenset(
                name for name, meta in (view.get("trait_meta") or {}).items() if (meta or {}).get("kind") == "stated"
            )
        if len(self._people) >= _PEOPLE:
            self._people = {}
        self._people[pk] = person
        return person

    # -- the decision --------------------------------------------------------------------------------
    def decide(self, req: DecideRequest) -> Decision:
        kairos = self.kairos
        now = kairos.clock.now()
        person = self.person(req.profile)
        offers = self.catalog.current(time.monotonic())
        current = self.holder.current()
        policy = current.policy
        view = person.view
        personalized = view is None or kairos.consent_policy.allows(view, "personalization")
        group: Group = "policy"
        if not personalized:
            group = "not_personalized"
        elif in_control(person.subjects[0], self.settings.control_share, self.settings.control_salt):
            group = "control"
        decision_id = _decision_id(now)
        rng = random.Random(int.from_bytes(hashlib.blake2b(decision_id.encode(), digest_size=8).digest(), "big"))
        facts = self._facts(offers)
        history = (
            ContactHistory.load(kairos.store.decisions, self.settings, person.subjects, offers, now)
            if facts.history
            else ContactHistory()
        )
        moments = self._moments(person) if personalized and facts.moments else {}

        channels = [req.channel] if req.channel != "auto" else self._channels(offers, view)
        if not channels and req.channel == "auto":
            # No offer names a channel (they serve any, e.g. through content.default): the person's last
            # known channel if there is one, else "auto" itself, which such offers serve.
            last = ((view or {}).get("context") or {}).get("channel")
            channels = [last if isinstance(last, str) and last and self._consented(last, view) else "auto"]
        best: _Plan | None = None
        best_score = -math.inf
        stated_channel = False
        for channel in channels:
            plan = self._plan(req, channel, offers, person, personalized, history, moments, now)
            if req.channel == "auto" and view is not None and self._preferred(view) == channel and plan.eligible:
                best, stated_channel = plan, True
                break
            score = self._top_score(policy, plan) if len(channels) > 1 else 0.0
            if best is None or score > best_score:
                best, best_score = plan, score
        assert best is not None or not channels
        if best is None:  # "auto" and no channel at all is consented
            best = _Plan(req.channel, [], {}, {})
        actions = [self._action(o) for o in best.eligible]
        weights = [o.priority for o in best.eligible]
        items: list[DecisionItem] = []
        explanations: list[list[tuple[str, float]]] = []
        interaction = customization = False
        if actions:
            if group == "policy":
                scoring = self._scoring(policy, best)
                ranked = scoring.rank(req.limit, rng=rng, weights=weights)
                for slot, (i, p, explored, estimate) in enumerate(
                    zip(ranked.order, ranked.propensities, ranked.explored, ranked.estimates, strict=True)
                ):
                    items.append(DecisionItem(actions[i].key, slot, p, explored, estimate, estimate * weights[i]))
                explanations = scoring.explain_many(ranked.order, 3)
                means = list(ranked.means) if len(ranked.means) == len(actions) else None
                interaction, customization = self._shaped(scoring, best, weights, items, person.stated, means)
                customization = customization or stated_channel
            else:
                for slot, offer in enumerate(best.eligible[: req.limit]):
                    items.append(DecisionItem(offer.key, slot, 1.0, False, 0.0, offer.priority))
        record = DecisionRecord(
            id=decision_id,
            at=now,
            subject=person.subjects[0],
            channel=best.channel,
            placement=req.placement,
            group=group,
            policy=self.holder.name if group == "policy" else "priority",
            policy_version=current.version,
            shared=best.shared,
            candidates=tuple(actions),
            weights=tuple(weights),
            items=tuple(items),
            interaction=interaction,
            customization=customization,
            profile_pk=person.pk,
        )
        row = DecisionRow(
            0,
            decision_id,
            now,
            record.subject,
            best.channel,
            req.placement,
            group,
            record.policy,
            current.version,
            [i.offer for i in items],
            interaction,
            customization,
            now + int(self.settings.reward_wait_seconds * 1000),
            False,
            encode_record(record),
        )
        by_key = {o.key: o for o in best.eligible}
        answer = {
            "decision_id": decision_id,
            "profile_id": view["id"] if view is not None else None,
            "channel": best.channel,
            "placement": req.placement,
            "group": group,
            "policy": record.policy,
            "policy_version": current.version,
            "items": [
                self._item(best, by_key[item.offer], item, group, explanations[slot] if explanations else [])
                for slot, item in enumerate(items)
            ],
        }
        return Decision(answer, row, record)

    def forget(self) -> None:
        """Drop every cached reference → profile key and what was derived from profile views (an erasure
        removed someone: nothing of them stays in this process)."""
        self._refs.clear()
        self._people = {}

    def start(self) -> None:
        """Serving: newer policy snapshots are loaded in the background from now on."""
        self.holder.start()

    def close(self) -> None:
        self.holder.close()

    def record(self, decision: Decision) -> None:
        self.kairos.store.decisions.record(decision.row)

    # -- steps ---------------------------------------------------------------------------------------
    def _channels(self, offers: Sequence[Offer], view: Mapping[str, Any] | None) -> list[str]:
        """``channel: "auto"``: the channels some offer serves whose purpose the person consented to."""
        names = sorted({c for o in offers for c in (o.channels or o.content.keys()) if c != "default"})
        return [c for c in names if self._consented(c, view)]

    def _consented(self, channel: str, view: Mapping[str, Any] | None) -> bool:
        """The person allows the purpose ``channel`` needs (``decide.channel_purposes``), if it needs one."""
        purpose = self.settings.channel_purposes.get(channel)
        return purpose is None or self.kairos.consent_policy.allows(view, purpose)

    def _preferred(self, view: Mapping[str, Any]) -> str | None:
        name = self.settings.preferred_channel_trait
        value = (view.get("traits") or {}).get(name)
        meta = (view.get("trait_meta") or {}).get(name) or {}
        return value if isinstance(value, str) and meta.get("kind") == "stated" else None

    def _facts(self, offers: tuple[Offer, ...]) -> _Catalog:
        """What the catalogue's offers need of every decision, worked out once per catalogue."""
        found = self._catalog_facts
        if found is None or found.offers is not offers:
            found = self._catalog_facts = _Catalog(
                offers,
                history=any(o.budget is not None or not o.contact.empty for o in offers),
                moments=any(o.eligibility and "moments" in o.eligibility.references.variables for o in offers),
            )
        return found

    def _moments(self, person: Person) -> dict[str, int]:
        """Moment key → when it last occurred (some eligibility rule reads ``moments``)."""
        if person.pk is None:
            return {}
        out: dict[str, int] = {}
        for row in self.kairos.store.state.timeline(person.pk, 50, None, type="moment"):
            if row.name is not None:
                out.setdefault(row.name, row.ts)
        return out

    def _plan(
        self,
        req: DecideRequest,
        channel: str,
        offers: Sequence[Offer],
        person: Person,
        personalized: bool,
        history: ContactHistory,
        moments: Mapping[str, int],
        now: int,
    ) -> _Plan:
        """The offers ``person`` may see on ``channel``, and the shared features: their profile's only when
        ``personalized`` (the offers' purposes are checked against their own consents in any case)."""
        view = person.view if personalized else None
        consented = person.view
        ctx = derive(
            {"type": "track", "context": dict(req.context)},
            person.last_known if view is not None else None,
            self._defaults,
            at=now,
        )
        ctx = msgspec.structs.replace(ctx, channel=channel)
        fields = msgspec.structs.asdict(ctx)
        names: dict[str, str] = {}
        shared = shared_features(
            request=req.context,
            context=fields,
            view=view,
            moments=moments,
            label=self._label,
            names=names,
            exclude=self._identity_types,
            person=person.features,
        )
        consents = self.kairos.consent_policy
        bindings = None
        eligible: list[Offer] = []
        reasons: dict[str, list[str]] = {}
        for offer in offers:
            if not offer.serves(channel) or (offer.placements and req.placement not in offer.placements):
                continue
            if (offer.active_from is not None and now < offer.active_from) or (
                offer.active_to is not None and now >= offer.active_to
            ):
                continue
            if offer.budget is not None and history.impressions_total(offer.key) >= offer.budget:
                continue
            # A ``personalization`` offer stays in the baseline answer of someone who denied personalization: the
            # baseline does not use their data (group ``not_personalized``).
            if offer.purpose != "personalization" and not consents.allows(consented, offer.purpose):
                continue
            if history.blocked(offer, now):
                continue
            if offer.eligibility is not None:
                if bindings is None:
                    bindings = Scope.OFFER.bind(_variables(view, fields, req, channel, moments, now, consents))
                if not offer.eligibility.evaluate(bindings):
                    continue
                refs = offer.eligibility.references
                members = set((view or {}).get("segments") or ())
                reasons[offer.key] = sorted(refs.segments & members)
            eligible.append(offer)
        return _Plan(channel, eligible, shared, reasons, names)

    def _top_score(self, policy: Policy, plan: _Plan) -> float:
        """The best arbitration score a channel's plan offers (``channel: "auto"`` compares them)."""
        if not plan.eligible:
            return -math.inf
        estimates = self._scoring(policy, plan).estimate()
        return max(e * o.priority for e, o in zip(estimates, plan.eligible, strict=True))

    def _scoring(self, policy: Policy, plan: _Plan) -> Scoring:
        """The policy's scoring of a plan's candidates, made once (``"auto"`` compares channels with it)."""
        if plan.scoring is None:
            plan.scoring = policy.scoring(plan.shared, [self._action(o) for o in plan.eligible])
        return plan.scoring

    def _action(self, offer: Offer) -> Action:
        key = (offer.key, offer.version)
        found = self._actions.get(key)
        if found is None:
            if len(self._actions) > 4 * self.settings.max_offers:
                self._actions.clear()
            found = self._actions[key] = action_of(offer.key, offer.attributes)
        return found

    def _shaped(
        self,
        scoring: Scoring,
        plan: _Plan,
        weights: Sequence[float],
        items: Sequence[DecisionItem],
        stated: frozenset[str],
        means: list[float] | None,
    ) -> tuple[bool, bool]:
        """Whether the person's own behaviour or context (interaction) and their stated input (customization)
        shaped the answer: the greedy pick changes without them, or a shown offer's eligibility read them."""
        top = _greedy(means if means is not None else scoring.estimate(), weights)
        interaction = _greedy(scoring.estimate(BEHAVIOUR), weights) != top
        customization = "stated" in plan.shared and (_greedy(scoring.estimate(("stated",)), weights) != top)
        for item in items:
            offer = next(o for o in plan.eligible if o.key == item.offer)
            if offer.eligibility is None:
                continue
            refs = offer.eligibility.references
            if refs.variables & _PERSONAL_VARIABLES and (refs.variables - {"traits"} or refs.traits - stated):
                interaction = True
            if refs.traits & stated or (refs.traits_dynamic and stated):
                customization = True
        return interaction, customization

    def _item(
        self,
        plan: _Plan,
        offer: Offer,
        item: DecisionItem,
        group: Group,
        explanation: list[tuple[str, float]],
    ) -> dict[str, Any]:
        reasons: dict[str, Any] = {
            "group": group,
            "eligibility": offer.eligibility.source if offer.eligibility is not None else None,
            "segments": plan.reasons.get(offer.key, []),
            "explored": item.explored,
        }
        if group == "policy":
            reasons["features"] = [
                {"feature": _clear(name, plan.names), "weight": round(weight, 4)} for name, weight in explanation
            ]
        else:
            reasons["features"] = []
            reasons["baseline"] = "priority order (value * weight)"
        return {
            "offer_id": offer.key,
            "name": offer.name,
            "content": offer.content_for(plan.channel),
            "score": round(item.score, 6),
            "propensity": round(item.propensity, 6),
            "explored": item.explored,
            "reasons": reasons,
        }


@dataclass(frozen=True, slots=True)
class _Catalog:
    offers: tuple[Offer, ...]
    history: bool  # some offer has a contact policy or a budget: the person's history is read
    moments: bool  # some eligibility rule reads ``moments``: the person's recent moments are read


@dataclass(slots=True)
class _Plan:
    channel: str
    eligible: list[Offer]
    shared: Features
    reasons: dict[str, list[str]]
    names: dict[str, str] = dataclasses.field(default_factory=dict)  # hashed text feature → its clear name
    scoring: Scoring | None = None  # the policy's, once asked


def _clear(name: str, names: Mapping[str, str]) -> str:
    """An explanation's feature (``profile:plan=#1f0c x offer:id=summer``) with its hashed text features
    named in clear again, from this decision's own features."""
    parts = []
    for part in name.split(" x "):
        namespace, sep, feature = part.partition(":")
        parts.append(f"{namespace}{sep}{names.get(feature, feature)}")
    return " x ".join(parts)


def _last_known(view: Mapping[str, Any] | None) -> Observed | None:
    if view is None:
        return None
    context = view.get("context") or {}
    return Observed(**{k: v for k, v in context.items() if k in Observed.__struct_fields__ and v is not None})


def _variables(
    view: Mapping[str, Any] | None,
    context: Mapping[str, Any],
    req: DecideRequest,
    channel: str,
    moments: Mapping[str, int],
    now: int,
    consents: ConsentPolicy,
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "context": context,
        "request": dict(req.context),
        "moments": dict(moments),
        "channel": channel,
        "placement": req.placement or "",
        "now": now,
    }
    if view is not None:
        out["traits"] = view.get("traits") or {}
        out["segments"] = view.get("segments") or []
        out["identities"] = [(i["type"], i["value"]) for i in view.get("identities") or ()]
        out["consents"] = consents.effective(view)
        out["profile"] = {
            "created_at": _iso_ms(view.get("created_at")),
            "updated_at": _iso_ms(view.get("updated_at")),
            "event_count": view.get("event_count") or 0,
        }
    return out

"""What the preference centre shows a person: their data by where it came from, their consents, the places
their data went, the offers they saw and why, and the preferences they can state.

:func:`page` gathers it all for one profile into plain values that the templates render (escaped by Jinja2's
autoescape: every value here is the person's own data or a business's configuration, never markup).
Identities are masked unless ``privacy.mask_identities = false``::

    >>> mask("email", "jane.doe@example.com"), mask("phone", "+14155550123"), mask("user_id", "u1")
    ('j•••@example.com', '••••••••0123', 'u•')
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from kairos.collect import iso
from kairos.config import PreferenceSettings
from kairos.context import DAYPARTS
from kairos.decide.attribution import subject_of
from kairos.decide.learning import decode_record
from kairos.decide.offers import OfferCatalog
from kairos.decide.records import DecisionRecord
from kairos.privacy.consents import Via
from kairos.privacy.keys import feature_label, privacy_secret

__all__ = ["KIND_TITLES", "Page", "consent_rows", "erase_all", "export_all", "mask", "page", "record_choices", "why"]

# The order and words of the four kinds of data, as the person reads them.
KIND_TITLES: dict[str, tuple[str, str]] = {
    "stated": ("What you told us", "Details you gave us yourself, such as your preferences."),
    "observed": ("What we saw you do", "Details that come from how you used our sites, apps and shops."),
    "inferred": ("What we worked out", "Estimates our models made from the rest of your data."),
    "third_party": ("What others told us", "Details we received from partners."),
}
OFFER_WINDOW_MS = 90 * 86_400_000  # offers shown in the last 90 days
MAX_OFFERS = 20
BULLET = "•"
# Kairos' own sources, in the person's words; a business's sources show by their names (web, pos, crm).
SOURCE_NAMES = {
    "kairos-preference-centre": "this page",
    "kairos-api": "our service team",
    "computed": "our calculations",
}


def _source(name: str | None) -> str | None:
    return SOURCE_NAMES.get(name, name) if name else name


def mask(kind: str, value: str) -> str:
    """``value`` with most of it hidden: the first character of an e-mail's local part and its domain, the
    last four digits of a phone number, the first character of anything else."""
    if kind == "email" and "@" in value:
        local, _, domain = value.rpartition("@")
        return f"{local[:1]}{BULLET * 3}@{domain}"
    if kind == "phone" and len(value) > 4:
        return BULLET * (len(value) - 4) + value[-4:]
    return value[:1] + BULLET * min(max(len(value) - 1, 1), 12)


def _text(value: Any) -> str:
    """A trait value as the person reads it (lists joined; JSON objects shown compactly)."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if value is None:
        return "—"
    if isinstance(value, list):
        return ", ".join(_text(v) for v in value)
    if isinstance(value, dict):
        return ", ".join(f"{k}: {_text(v)}" for k, v in value.items())
    return str(value)


@dataclass(slots=True)
class Page:
    """Everything one rendering of the centre shows (plain data: the templates do the rest)."""

    profile_id: str
    identities: list[dict[str, str]]
    groups: list[dict[str, Any]]
    segments: list[str]
    consents: list[dict[str, Any]]
    preferences: list[dict[str, Any]]
    destinations: list[dict[str, Any]]
    offers: list[dict[str, Any]]
    uses: list[dict[str, Any]]
    errors: dict[str, str] = field(default_factory=dict)


def page(kairos: Any, pk: int, view: Mapping[str, Any], *, errors: Mapping[str, str] | None = None) -> Page:
    """The centre of profile ``pk`` (whose current ``view`` the caller read)."""
    settings = kairos.settings.privacy
    masked = settings.mask_identities
    identities = [
        {"type": i["type"].replace("_", " "), "value": mask(i["type"], i["value"]) if masked else i["value"]}
        for i in view.get("identities") or ()
    ]
    return Page(
        profile_id=view["id"],
        identities=identities,
        groups=_groups(view, set(kairos.settings.identity.resolved_types()) if masked else set()),
        segments=list(view.get("segments") or ()),
        consents=consent_rows(kairos, view),
        preferences=preference_fields(settings.preferences, view, errors or {}),
        destinations=destinations(kairos, view),
        offers=offers(kairos, view),
        uses=_uses(kairos, pk),
        errors=dict(errors or {}),
    )


def _groups(view: Mapping[str, Any], masked: set[str]) -> list[dict[str, Any]]:
    """Traits by kind; a trait named like an identity type (``email``, ``phone``) is masked as identities are."""
    traits = view.get("traits") or {}
    meta = view.get("trait_meta") or {}
    by_kind: dict[str, list[dict[str, str]]] = {kind: [] for kind in KIND_TITLES}
    for name in sorted(traits):
        m = meta.get(name) or {}
        kind = str(m.get("kind")) if m.get("kind") in by_kind else "observed"
        source = m.get("source") or "unknown"
        by_kind[kind].append(
            {
                "name": name.replace("_", " "),
                "value": mask(name, _text(traits[name])) if name in masked else _text(traits[name]),
                "source": _source(source) or "unknown",
                "updated_at": m.get("updated_at") or "",
            }
        )
    return [
        {"kind": kind, "title": KIND_TITLES[kind][0], "explain": KIND_TITLES[kind][1], "items": items}
        for kind, items in by_kind.items()
    ]


# -- consents -------------------------------------------------------------------------------------------
def consent_rows(kairos: Any, view: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per configured purpose: its title and text, whether it is on, and whether that is the default
    or the person's own word (when and through which source)."""
    state = consent_state(kairos, view)
    rows = []
    for key, purpose in kairos.settings.consent.purposes.items():
        s = state.get(key) or {}
        stated = bool(s.get("stated"))
        rows.append(
            {
                "key": key,
                "title": purpose.title,
                "text": purpose.text,
                "version": purpose.version,
                "granted": bool(s.get("granted")),
                "stated": stated,
                "default": purpose.default,
                "source": _source(s.get("source")) if stated else None,
                "updated_at": s.get("updated_at") if stated else None,
            }
        )
    return rows


def consent_state(kairos: Any, view: Mapping[str, Any]) -> Mapping[str, Mapping[str, Any]]:
    """Purpose → ``{granted, stated, source, updated_at, text_version}``: the consent policy's reading of the
    profile (defaults applied), the one call site of :meth:`kairos.consent.ConsentPolicy.state`."""
    result: Mapping[str, Mapping[str, Any]] = kairos.consent_policy.state(view)
    return result


# -- stated preferences ---------------------------------------------------------------------------------
def preference_fields(
    prefs: Mapping[str, PreferenceSettings], view: Mapping[str, Any], errors: Mapping[str, str]
) -> list[dict[str, Any]]:
    traits = view.get("traits") or {}
    meta = view.get("trait_meta") or {}
    out = []
    for key, pref in prefs.items():
        current = traits.get(key)
        chosen = set(current) if isinstance(current, list) else {current}
        out.append(
            {
                "key": key,
                "label": pref.label,
                "type": pref.type,
                "help": pref.help,
                "max_length": pref.max_length,
                "value": current if isinstance(current, str) else "",
                "options": [
                    {"value": o, "label": pref.option_labels.get(o, o), "checked": o in chosen} for o in pref.options
                ],
                "stated": (meta.get(key) or {}).get("kind") == "stated",
                "error": errors.get(key),
            }
        )
    return out


# -- where the data went --------------------------------------------------------------------------------
def destinations(kairos: Any, view: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Each destination that received data about the person: how often, first and last time (latest first)."""
    ids = [view["id"], *(view.get("merged_ids") or ())]
    return [
        {"destination": d, "count": n, "first": iso(first), "last": iso(last)}
        for d, n, first, last in kairos.store.deliveries.received_by(ids)
    ]


USE_TEXT = {
    "decision": "Choosing what to show you",
    "delivery": "Sent to another system",
    "stream": "Sent to another system",
    "export": "A copy of your data was made",
    "segment_export": "Included in a list of customers",
}


def _uses(kairos: Any, pk: int) -> list[dict[str, Any]]:
    """The data-use ledger in the person's words (the one call site of :func:`kairos.privacy.uses.data_uses`)."""
    from kairos.privacy.uses import data_uses

    purposes = kairos.settings.consent.purposes
    out = []
    for use in data_uses(kairos, pk, limit=100):
        purpose = purposes.get(use.get("purpose") or "")
        out.append(
            {
                "at": use.get("at"),
                "purpose_title": purpose.title if purpose is not None else (use.get("purpose") or "—"),
                "use_text": USE_TEXT.get(use.get("use") or "", use.get("use") or "—"),
                "recipient": use.get("recipient"),
            }
        )
    return out


# -- what the forms do: the one call site of each privacy operation --------------------------------------
VIA: Via = "preference-centre"


def record_choices(
    kairos: Any, pk: int, *, consents: Mapping[str, bool] | None = None, traits: Mapping[str, Any] | None = None
) -> int:
    """Append the person's new consents and/or stated preferences to the log (one event); its log seq."""
    from kairos.privacy.consents import record

    return record(kairos, pk, consents=consents, traits=traits, via=VIA)


def export_all(kairos: Any, pk: int) -> dict[str, Any]:
    """Everything held about the person (the "Download my data" file); the export joins the data-use ledger
    itself, and the audit log here, with the person as the actor (no API key asked for it)."""
    from kairos import audit
    from kairos.privacy.export import export

    data: dict[str, Any] = export(kairos, pk)
    audit.record(kairos, None, "privacy.export", str(data.get("export_id", "")), 200, actor=VIA)
    return data


def erase_all(kairos: Any, pk: int) -> str:
    """Ask for the person's erasure (not suppression: they may come back as a new customer); the request's
    status. The processor carries it out and audits its completion."""
    from kairos import audit
    from kairos.privacy.erasure import request_erasure

    request = request_erasure(kairos, pk, suppress=False)
    audit.record(kairos, None, "privacy.erase", request.id, 202, actor=VIA)
    return str(request.status)


# -- offers and why -------------------------------------------------------------------------------------
def offers(kairos: Any, view: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The offers shown to the person lately, newest first, each with why in plain words."""
    subjects = [
        view["id"],
        *(view.get("merged_ids") or ()),
        *(subject_of(i["type"], i["value"]) for i in view.get("identities") or ()),
    ]
    since = kairos.clock.now() - OFFER_WINDOW_MS
    rows, _ = kairos.store.decisions.history(subjects, since, MAX_OFFERS)
    if not rows:
        return []
    catalog = OfferCatalog(kairos.store.admin)
    catalog.reload()
    labels = {key: pref.label for key, pref in kairos.settings.privacy.preferences.items()}
    clear = clear_names(kairos, view)
    out = []
    for row in rows:
        record = decode_record(row.record)
        for item in record.items:
            offer = catalog.by_key.get(item.offer)
            out.append(
                {
                    "name": offer.name if offer is not None else item.offer,
                    "at": iso(record.at),
                    "channel": record.channel,
                    "why": why(record, item.explored, labels, clear),
                }
            )
    return out[:MAX_OFFERS]


def why(
    record: DecisionRecord, explored: bool, labels: Mapping[str, str], clear: Mapping[str, str] | None = None
) -> list[str]:
    """Plain sentences saying why an offer was shown, from what the decision log kept about the decision.

    The log names text features by a keyed hash of their value (``preferred_channel=#3f2a…``); ``clear`` maps
    those the person's data can still name back to ``name=value``; a value it cannot name is left out."""
    clear = clear or {}
    if record.group == "not_personalized":
        return ["You have not allowed a personalised experience, so you saw what everyone sees."]
    if record.group == "control":
        return ["You were in a small group chosen at random that sees our offers in the same order as everyone."]
    reasons: list[str] = []
    stated = _names(record.shared.get("stated") or {}, clear)
    for name, value in stated:
        label = labels.get(name, name.replace("_", " "))
        reasons.append(f"You told us: {label} — {value}." if value else f"You told us about {label}.")
    segments = [name for name, _ in _names(record.shared.get("segments") or {}, clear)]
    if segments:
        reasons.append(
            "You are in these groups of customers: " + ", ".join(s.replace("_", " ") for s in segments) + "."
        )
    if record.interaction and record.shared.get("profile"):
        reasons.append("What you did recently, such as your visits and purchases.")
    context = dict(_names(record.shared.get("context") or {}, clear))
    moment = [f"on {record.channel}"] if record.channel and record.channel != "auto" else []
    if context.get("daypart"):
        moment.append(f"in the {context['daypart']}")
    if moment:
        reasons.append("When and where you were: " + " ".join(moment) + ".")
    if explored:
        reasons.append("We also try other offers now and then, to learn what people like; this was one.")
    if not reasons:
        reasons.append("It is one of the offers we show to everyone.")
    return reasons


def _names(features: Mapping[str, float], clear: Mapping[str, str]) -> Sequence[tuple[str, str]]:
    """``{"tier=gold": 1.0, "orders": 1.3}`` → ``[("orders", ""), ("tier", "gold")]``; a hashed value that
    ``clear`` does not name back becomes ``""``."""
    out = []
    for feature in sorted(features):
        name, _, value = clear.get(feature, feature).partition("=")
        out.append((name, "" if value.startswith("#") else value))
    return out


def clear_names(kairos: Any, view: Mapping[str, Any]) -> dict[str, str]:
    """Hashed feature name → ``name=value`` for the values a decision about this person may have seen and the
    person may read: their text traits as they are now, and the parts of the day."""
    label = feature_label(privacy_secret(kairos))
    out = {}
    for name, value in (view.get("traits") or {}).items():
        if isinstance(value, str) and 0 < len(value) <= 200:
            out[label(name, value)] = f"{name}={value}"
    for _, daypart in DAYPARTS:
        out[label("daypart", daypart)] = f"daypart={daypart}"
    return out

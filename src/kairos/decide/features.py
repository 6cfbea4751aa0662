"""What a decision's learner sees: features from the request, the derived context, the profile and the offer.

Shared features (the same for every candidate) are namespaced (:data:`kairos.decide.records.SHARED_NAMESPACES`)::

    >>> shared = shared_features(
    ...     request={"weather": "rain", "basket_value": 42.0, "userAgent": "ignored"},
    ...     context={"daypart": "evening", "weekend": True, "channel": "web", "device_class": "mobile"},
    ...     view={"traits": {"orders_30d": 3, "plan": "pro", "email": "jane@example.com", "size": "M"},
    ...           "trait_meta": {"orders_30d": {"kind": "observed", "source": "computed"},
    ...                          "plan": {"kind": "observed", "source": "crm"},
    ...                          "email": {"kind": "stated", "source": "web"},
    ...                          "size": {"kind": "stated", "source": "preferences"}},
    ...           "segments": ["vip"]})
    >>> dict(shared["request"]), dict(shared["segments"]), dict(shared["stated"])
    ({'basket_value': 3.761, 'weather=rain': 1.0}, {'vip': 1.0}, {'size=M': 1.0})
    >>> sorted(shared["context"]), dict(shared["profile"])
    (['channel=web', 'daypart=evening', 'device_class=mobile', 'weekend'], {'orders_30d': 1.386, 'plan=pro': 1.0})

Numbers enter as ``sign(x) * log(1 + |x|)`` (a revenue of 10,000 must not outweigh everything else), rounded
so that a snapshot does not depend on float noise. Text enters as ``name=value`` when it is short; identities
and free text (``email``, ``name``, long values, a trait named after an identity type) never become features: a
feature per person would be memorisation, not learning, and personal data does not belong in a model.

The decision path also gives a ``label``: text features are then named by a keyed hash of their value
(``plan=#3f2a...``, :func:`kairos.privacy.keys.feature_label`), so that no trait value is stored in clear in a
policy snapshot (an aggregate that outlives a person's erasure) or in the decision log; ``names`` receives the
clear name of each, for the decision's own explanation::

    >>> names: dict[str, str] = {}
    >>> shared_features(view={"traits": {"plan": "pro"}}, label=lambda n, v: f"{n}=#{len(v)}", names=names)
    {'profile': {'plan=#3': 1.0}}
    >>> names
    {'plan=#3': 'plan=pro'}
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from kairos.decide.records import ACTION_NAMESPACE, Action, Features

__all__ = [
    "MAX_TEXT",
    "Label",
    "PersonFeatures",
    "action_of",
    "number",
    "person_features",
    "shared_features",
    "without",
]

Label = Callable[[str, str], str]  # (name, text value) → the text feature's name

MAX_TEXT = 40  # longer text is not a category
MAX_PER_NAMESPACE = 64
# Traits that name or reach a person: never features, whatever their kind.
PERSONAL = frozenset(
    {
        "email",
        "phone",
        "name",
        "first_name",
        "firstname",
        "last_name",
        "lastname",
        "full_name",
        "username",
        "address",
        "street",
        "postal_code",
        "zip",
        "birthday",
        "ip",
        "user_id",
        "anonymous_id",
        "id",
    }
)
# Keys of a request's context that say how to derive context, not what it is (read by ``derive``).
_DERIVE_ONLY = frozenset({"timezone", "userAgent", "user_agent", "locale", "location", "ip", "page", "library"})
# Derived context fields that become features (local_time, coordinates and city are too fine-grained).
_CONTEXT_FIELDS = ("daypart", "weekday", "weekend", "holiday", "device_class", "os", "channel", "country")


def number(value: float) -> float:
    """``sign(x) * log(1 + |x|)``, rounded to 3 places; 0.0 for what is not finite.

    >>> number(0), number(1), number(-9999.0), number(float("nan"))
    (0.0, 0.693, -9.21, 0.0)
    """
    if not math.isfinite(value):
        return 0.0
    return round(math.copysign(math.log1p(abs(value)), value), 3)


def _put(
    out: dict[str, float], name: str, value: Any, label: Label | None = None, names: dict[str, str] | None = None
) -> None:
    """Add ``name``'s value as a feature, if it is one (scalars only; bools as presence)."""
    if len(out) >= MAX_PER_NAMESPACE or not name or len(name) > 64 or "\x00" in name:
        return
    if value is True:
        out[name] = 1.0
    elif value is False or value is None:
        return
    elif isinstance(value, int | float):
        if abs(value) <= 1e15:
            out[name] = number(float(value))
    elif isinstance(value, str) and 0 < len(value) <= MAX_TEXT and "\x00" not in value:
        key = f"{name}={value}" if label is None else label(name, value)
        out[key] = 1.0
        if names is not None and label is not None:
            names[key] = f"{name}={value}"


@dataclass(frozen=True, slots=True)
class PersonFeatures:
    """The shared features a profile view gives (the same for every decision until the view changes), and
    the clear names of its hashed text features."""

    profile: Mapping[str, float]
    segments: Mapping[str, float]
    stated: Mapping[str, float]
    names: Mapping[str, str]


def person_features(
    view: Mapping[str, Any], *, label: Label | None = None, exclude: Iterable[str] = ()
) -> PersonFeatures:
    """The ``profile``, ``segments`` and ``stated`` namespaces of :func:`shared_features` for ``view``."""
    excluded = PERSONAL | {n.lower() for n in exclude}
    names: dict[str, str] = {}
    profile: dict[str, float] = {}
    stated: dict[str, float] = {}
    meta = view.get("trait_meta") or {}
    for name, value in sorted((view.get("traits") or {}).items()):
        if name.lower() in excluded:
            continue
        kind = (meta.get(name) or {}).get("kind")
        _put(stated if kind == "stated" else profile, name, value, label, names)
    segments = {key: 1.0 for key in sorted(view.get("segments") or ())[:MAX_PER_NAMESPACE]}
    return PersonFeatures(profile, segments, stated, names)


def shared_features(
    *,
    request: Mapping[str, Any] | None = None,
    context: Mapping[str, Any] | None = None,
    view: Mapping[str, Any] | None = None,
    moments: Iterable[str] = (),
    label: Label | None = None,
    names: dict[str, str] | None = None,
    exclude: Iterable[str] = (),
    person: PersonFeatures | None = None,
) -> dict[str, dict[str, float]]:
    """The shared features of one decision; ``view``: the profile as the profile API shows it (None: unknown
    or not personalized), ``context``: the derived context's fields, ``moments``: recent moment keys;
    ``label``/``names``: see the module docstring; ``exclude``: trait names that are never features (the
    configured identity types); ``person``: :func:`person_features` of ``view`` made earlier with the same
    ``label`` and ``exclude`` (the decision path keeps it while the view does not change)."""
    out: dict[str, dict[str, float]] = {}
    req: dict[str, float] = {}
    for name, value in sorted((request or {}).items()):
        if name not in _DERIVE_ONLY:
            _put(req, name, value, label, names)
    ctx: dict[str, float] = {}
    for name in _CONTEXT_FIELDS:
        value = (context or {}).get(name)
        _put(ctx, name, True if name == "holiday" and value else value, label, names)
    profile: Mapping[str, float] = {}
    stated: Mapping[str, float] = {}
    segments: Mapping[str, float] = {}
    if view is not None:
        if person is None:
            person = person_features(view, label=label, exclude=exclude)
        profile, segments, stated = person.profile, person.segments, person.stated
        if names is not None and label is not None:
            names.update(person.names)
    recent = {key: 1.0 for key in sorted(set(moments))[:MAX_PER_NAMESPACE]}
    namespaces: tuple[tuple[str, Mapping[str, float]], ...] = (
        ("request", req),
        ("context", ctx),
        ("profile", profile),
        ("segments", segments),
        ("stated", stated),
        ("moments", recent),
    )
    for namespace, features in namespaces:
        if features:
            out[namespace] = dict(features)
    return out


def without(shared: Features, namespaces: Iterable[str]) -> Features:
    """``shared`` with ``namespaces`` removed: how the answer would be for someone else."""
    drop = set(namespaces)
    return {ns: f for ns, f in shared.items() if ns not in drop}


def action_of(key: str, attributes: Mapping[str, Any]) -> Action:
    """The candidate for an offer: its id and its attributes."""
    features: dict[str, float] = {f"id={key}": 1.0}
    for name, value in sorted(attributes.items()):
        _put(features, name, value)
    return Action(key, {ACTION_NAMESPACE: features})

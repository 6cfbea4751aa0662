"""What the person (or the business on their behalf) says through Kairos itself: consents and stated traits.

The consent API and the preference centre do not write state directly: they append one event to the log, from
a built-in source (``kairos-api``, ``kairos-preference-centre``, ...) whose traits are ``stated``, and the
processor applies it like any other (:mod:`kairos.profiles.consents` records it in the consent ledger with the
text version the person was shown). So a replay rebuilds it, a merge combines it by the same rules, and the
timeline shows it. The event names the person by their user id or anonymous id (see :func:`_subject`).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Literal

from kairos.consent import ConsentPolicy
from kairos.errors import NotFoundError, ValidationError
from kairos.runtime import Kairos

__all__ = ["CONSENT_EVENT", "Via", "check_choices", "record", "wait_applied"]

Via = Literal["api", "preference-centre", "import"]
CONSENT_EVENT = "Consent Updated"
MAX_TRAITS = 50


def _subject(kairos: Kairos, pk: int) -> dict[str, Any]:
    """The fields that make the processor attribute the event to profile ``pk``: its user id or anonymous id
    (collect requires one), else its strongest identifier in ``context.externalIds`` beside an anonymous id
    derived from the profile id."""
    profile = kairos.profile(pk)
    if profile is None or not profile.identities:
        raise NotFoundError("no such profile", code="profile_not_found", field="profile")
    ids = dict(sorted(profile.identities))
    if "user_id" in ids:
        return {"userId": ids["user_id"]}
    if "anonymous_id" in ids:
        return {"anonymousId": ids["anonymous_id"]}
    kind, value = kairos.processor.identifiers.sort(profile.identities)[0]
    return {"anonymousId": f"kairos-{profile.id}", "externalIds": [{"type": kind, "id": value}]}


def check_choices(policy: ConsentPolicy, choices: Mapping[str, Any]) -> None:
    """Each key a configured purpose and each value true or false, else a precise 400 naming the key."""
    for purpose, granted in choices.items():
        policy.check(purpose, field=purpose[:100])
        if not isinstance(granted, bool):
            raise ValidationError("a consent is true or false", code="invalid_type", field=purpose)


def record(
    kairos: Kairos,
    pk: int,
    *,
    consents: Mapping[str, bool] | None = None,
    traits: Mapping[str, Any] | None = None,
    via: Via,
) -> int:
    """Append the person's choices (consents per configured purpose, and/or ``stated`` traits) as one event;
    return its log position. Purposes must be configured; the versions of their texts are recorded."""
    policy = kairos.consent_policy
    subject = _subject(kairos, pk)
    context: dict[str, Any] = {}
    if "externalIds" in subject:
        context["externalIds"] = subject.pop("externalIds")
    if consents:
        check_choices(policy, consents)
        context["consent"] = {
            "categoryPreferences": dict(consents),
            "textVersions": {p: policy.purposes[p].version for p in consents},
        }
    if traits is not None and len(traits) > MAX_TRAITS:
        raise ValidationError(f"at most {MAX_TRAITS} traits at once", code="too_many", field="traits")
    if not consents and not traits:
        raise ValidationError("nothing to record", code="empty", field="body")
    source = kairos.source_named(f"kairos-{via}", "stated")
    now = datetime.fromtimestamp(kairos.clock.now() / 1000, UTC)
    event: dict[str, Any] = {
        "messageId": f"kairos-{uuid.uuid4().hex}",
        "timestamp": now.isoformat(),
        "context": context,
        **subject,
    }
    if traits:
        event.update(type="identify", traits=dict(traits))
    else:
        event.update(type="track", event=CONSENT_EVENT, properties={})
    events, errors = kairos.prepare_for(source, event, event["type"], now)
    if errors:
        error = errors[0]
        raise ValidationError(error.message, code=error.code, field=error.field)
    return kairos.append([(source.name, events)])[0][0]


def wait_applied(kairos: Kairos, seq: int, timeout: float) -> bool:
    """Wait until the processor has applied log position ``seq`` (at most ``timeout`` seconds)."""
    deadline = time.monotonic() + timeout
    while kairos.store.state.checkpoint().seq < seq:
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)
    return True

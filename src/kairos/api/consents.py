"""A person's consents and the uses of their data: ``GET/PUT /v1/profiles/{ref}/consents`` and
``GET /v1/profiles/{ref}/data-uses``.

Reading needs the ``read`` scope; changing consents needs ``write``. A change is appended to the log as an
event (:mod:`kairos.privacy.consents`) and the answer waits (at most ``privacy.apply_wait_seconds``) until the
processor has applied it, so that it shows the new state; if the processor is behind, the answer is ``202`` with
the log position, and the change takes effect when the processor reaches it.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.routing import Route

from kairos.api._common import endpoint, known_query, query_limit
from kairos.api.profiles import profile_ref, resolve_ref
from kairos.collect import iso
from kairos.errors import ValidationError
from kairos.identity import profile_id_for
from kairos.privacy.consents import check_choices, record, wait_applied
from kairos.privacy.uses import data_uses
from kairos.profiles.consents import CONSENT_LEDGER
from kairos.runtime import Kairos

__all__ = ["consents_body", "routes"]

MAX_LEDGER = 200


def consents_body(kairos: Kairos, pk: int) -> dict[str, Any]:
    """The person's consents as the API (and the preference centre) shows them, with the ledger."""
    profile = kairos.profile(pk)  # not the read cache: the answer to a change must show the change
    policy = kairos.consent_policy
    state = policy.state(profile.sections if profile is not None else {})
    for key, item in state.items():
        purpose = policy.purposes.get(key)
        item["title"] = purpose.title if purpose else key
        item["text"] = purpose.text if purpose else None
        item["version"] = purpose.version if purpose else None
    rows = kairos.store.state.counts(CONSENT_LEDGER.name, "WHERE profile_pk = {p}", (pk,))
    rows.sort(key=lambda r: (-r[4], -r[1], r[2]))
    ledger = [
        {"purpose": r[2], "granted": bool(r[3]), "at": iso(r[4]), "source": r[5], "text_version": r[6], "seq": r[1]}
        for r in rows[:MAX_LEDGER]
    ]
    return {"profile_id": profile_id_for(pk), "consents": state, "ledger": ledger}


def get_consents(kairos: Kairos, request: Request, body: Any) -> dict[str, Any]:
    known_query(request)
    return consents_body(kairos, resolve_ref(kairos, profile_ref(request)))


def put_consents(kairos: Kairos, request: Request, body: Any) -> tuple[dict[str, Any], int]:
    if not isinstance(body, dict) or not body:
        raise ValidationError(
            'send an object of purpose → true or false, e.g. {"marketing_email": false}',
            code="invalid_body",
            field="body",
        )
    check_choices(kairos.consent_policy, body)  # before the profile: a bad body is a 400 whoever it is for
    pk = resolve_ref(kairos, profile_ref(request))
    seq = record(kairos, pk, consents=body, via="api")
    if wait_applied(kairos, seq, kairos.settings.privacy.apply_wait_seconds):
        return consents_body(kairos, kairos.resolve(profile_id_for(pk)) or pk), 200
    return {"profile_id": profile_id_for(pk), "status": "accepted", "seq": seq}, 202


def get_data_uses(kairos: Kairos, request: Request, body: Any) -> dict[str, Any]:
    known_query(request, "limit")
    pk = resolve_ref(kairos, profile_ref(request))
    limit = query_limit(request, 100, 1000)
    return {"profile_id": profile_id_for(pk), "items": data_uses(kairos, pk, limit)}


routes = [
    Route(
        "/v1/profiles/{ref:path}/consents",
        endpoint(
            {"GET": ("read", get_consents, False), "PUT": ("write", put_consents, True)}, audit={"PUT": "consents.put"}
        ),
        methods=["GET", "PUT"],
    ),
    Route("/v1/profiles/{ref:path}/data-uses", endpoint({"GET": ("read", get_data_uses, False)}), methods=["GET"]),
]

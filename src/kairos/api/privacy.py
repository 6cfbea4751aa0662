"""Privacy routes: export everything held about a person, erase them, and follow an erasure request.

All need an API key with the ``privacy`` scope (``admin`` does not imply it: ``kairos.scopes``). Errors never
quote the reference that was sent (it may be an e-mail address); a reference that matches nobody is a ``404``
on field ``profile``.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.routing import Route

from kairos.api._common import endpoint
from kairos.errors import ValidationError
from kairos.privacy.erasure import find_request, request_erasure, request_view
from kairos.privacy.export import export, person
from kairos.runtime import Kairos
from kairos.scopes import Scope

__all__ = ["routes"]

SCOPE: Scope = "privacy"


def _body(body: Any, allowed: frozenset[str]) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise ValidationError("the body must be a JSON object", code="invalid_body", field="body")
    extra = sorted(str(k) for k in set(body) - allowed)
    if extra:
        name = extra[0] if len(extra[0]) <= 64 and extra[0].isprintable() else "?"
        raise ValidationError("unknown field in the body", code="unknown_field", field=name)
    if body.get("profile") is None:
        raise ValidationError("profile is required: a profile id or type:value", code="missing_field", field="profile")
    return body


def _export(kairos: Kairos, request: Request, body: Any) -> dict[str, Any]:
    found = _body(body, frozenset({"profile"}))
    return export(kairos, person(kairos, found["profile"]))


def _erase(kairos: Kairos, request: Request, body: Any) -> tuple[dict[str, Any], int]:
    found = _body(body, frozenset({"profile", "suppress"}))
    suppress = found.get("suppress", False)
    if not isinstance(suppress, bool):
        raise ValidationError("suppress must be true or false", code="invalid_field", field="suppress")
    made = request_erasure(kairos, person(kairos, found["profile"]), suppress)
    return {"request_id": made.id, "status": made.status}, 202


def _status(kairos: Kairos, request: Request, body: Any) -> dict[str, Any]:
    return request_view(find_request(kairos, request.path_params["id"]))


routes = [
    # Audited by the endpoint with the key that asked (the target stays empty: never the person's reference);
    # the processor audits each erasure it completes under its request id.
    Route(
        "/v1/privacy/export", endpoint({"POST": (SCOPE, _export, True)}, {"POST": "privacy.export"}), methods=["POST"]
    ),
    Route("/v1/privacy/erase", endpoint({"POST": (SCOPE, _erase, True)}, {"POST": "privacy.erase"}), methods=["POST"]),
    Route("/v1/privacy/requests/{id}", endpoint({"GET": (SCOPE, _status, False)}), methods=["GET"]),
]

"""``GET /v1/audit``: the audit log of admin and privacy actions, newest first (scope ``admin``)."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.routing import Route

from kairos.api._common import endpoint, query_limit
from kairos.audit import ACTION
from kairos.collect import iso
from kairos.errors import ValidationError
from kairos.runtime import Kairos
from kairos.store import AuditEntry, decode_cursor, encode_cursor

__all__ = ["entry_view", "routes"]

MAX_LIMIT = 1000
_PARAMS = frozenset({"limit", "cursor", "action"})


def entry_view(e: AuditEntry) -> dict[str, Any]:
    return {
        "id": e.id,
        "at": iso(e.at),
        "actor": e.actor,
        "key_id": e.key_id,
        "key_name": e.key_name,
        "action": e.action,
        "target": e.target,
        "outcome": e.outcome,
        "detail": e.detail,
    }


def _action(request: Request) -> str | None:
    raw = request.query_params.get("action")
    if raw is None:
        return None
    if len(raw) > 64 or not ACTION.fullmatch(raw):
        raise ValidationError(
            "action is an audit action such as 'segments.put' (lower-case words joined by dots)",
            code="invalid_query",
            field="action",
        )
    return raw


def list_audit(kairos: Kairos, request: Request, body: Any) -> dict[str, Any]:
    for name in request.query_params:
        if name not in _PARAMS:
            shown = name[:40] if name.isprintable() else "(unprintable)"
            raise ValidationError(
                f"unknown query parameter {shown!r}: use limit, cursor or action", code="invalid_query", field=shown
            )
    for name in _PARAMS:
        if len(request.query_params.getlist(name)) > 1:
            raise ValidationError(f"give {name} once", code="invalid_query", field=name)
    limit = query_limit(request, 100, MAX_LIMIT)
    cursor = request.query_params.get("cursor")
    before = decode_cursor(cursor, 1)[0] if cursor else None
    rows = kairos.store.audit.list(limit + 1, before, _action(request))
    more = len(rows) > limit
    rows = rows[:limit]
    return {
        "items": [entry_view(e) for e in rows],
        "next_cursor": encode_cursor(rows[-1].id) if more and rows else None,
    }


routes = [Route("/v1/audit", endpoint({"GET": ("admin", list_audit, False)}), methods=["GET"])]

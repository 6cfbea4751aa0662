"""Destinations and pull subscriptions: ``PUT/GET/DELETE /v1/destinations/{key}``, ``GET /v1/destinations``,
``GET /v1/destinations/{key}/deliveries``, ``POST /v1/destinations/{key}/deliveries:retry`` and
``GET /v1/subscriptions/{key}/stream`` (Server-Sent Events).

Changing needs the ``admin`` scope (recorded in the audit log), reading (and streaming) the ``read`` scope.
A secret is never answered back: ``secret_hint`` shows its last 4 characters.
"""

from __future__ import annotations

from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from kairos.activate import destinations as dests
from kairos.activate.destinations import Destination, compile_destination
from kairos.activate.stream import events, parse_position
from kairos.api._common import Work, endpoint, error_response, known_query, query_limit, require_scope, runtime
from kairos.errors import KairosError, ValidationError
from kairos.runtime import Kairos
from kairos.scopes import Scope
from kairos.store import Delivery

__all__ = ["routes"]

STATUSES = ("pending", "delivered", "dead", "suppressed")


def delivery_view(d: Delivery) -> dict[str, Any]:
    return {
        "id": d.id,
        "type": d.type,
        "key": d.key,
        "profile_id": d.profile_id,
        "status": d.status,
        "attempts": d.attempts,
        "next_attempt_at": d.next_attempt_at if d.status == "pending" else None,
        "created_at": d.created_at,
        "updated_at": d.updated_at,
        "last_status": d.last_status,
        "last_error": d.last_error,
        "latency_ms": d.latency_ms,
    }


def deliveries(kairos: Kairos, key: str, status: str | None, limit: int) -> dict[str, Any]:
    """A destination's deliveries, newest first (``kairos destinations deliveries`` prints the same)."""
    dests.get(kairos, key)
    if status is not None and status not in STATUSES:
        raise ValidationError(f"status is one of {', '.join(STATUSES)}", code="invalid_query", field="status")
    rows = kairos.store.deliveries.list(key, status, limit)
    return {"items": [delivery_view(d) for d in rows]}


def retry(kairos: Kairos, key: str) -> dict[str, Any]:
    """Dead deliveries become pending again, due now."""
    dests.get(kairos, key)
    return {"retried": kairos.store.deliveries.retry(key, kairos.clock.now())}


def _put(kairos: Kairos, request: Request, body: Any) -> tuple[dict[str, Any], int]:
    return dests.save(kairos, request.path_params["key"], body)


def _get(kairos: Kairos, request: Request, body: Any) -> dict[str, Any]:
    return dests.destination_view(kairos, dests.get(kairos, request.path_params["key"]))


def _delete(kairos: Kairos, request: Request, body: Any) -> dict[str, Any]:
    return dests.remove(kairos, request.path_params["key"])


def _list(kairos: Kairos, request: Request, body: Any) -> dict[str, Any]:
    known_query(request)
    return {"items": [dests.destination_view(kairos, d) for d in kairos.store.admin.definitions(dests.KIND)]}


def _deliveries(kairos: Kairos, request: Request, body: Any) -> dict[str, Any]:
    known_query(request, "status", "limit")
    status = request.query_params.get("status")
    return deliveries(kairos, request.path_params["key"], status, query_limit(request, 100, 1000))


def _retry(kairos: Kairos, request: Request, body: Any) -> dict[str, Any]:
    return retry(kairos, request.path_params["key"])


def _opening(kairos: Kairos, request: Request) -> tuple[Destination, int, int, int | None]:
    """The subscription, where its stream starts (outbox, log) and its limit (two store reads: in a thread)."""
    dest = compile_destination(dests.get(kairos, request.path_params["key"]))
    if not dest.pull:
        raise ValidationError(
            f"destination {dest.key!r} has a url: it is pushed, not pulled", code="not_a_subscription", field="key"
        )
    known_query(request, "limit")
    raw_limit = request.query_params.get("limit")
    limit = query_limit(request, 100, 1000) if raw_limit is not None else None
    last = request.headers.get("last-event-id")
    cursor = kairos.store.deliveries.cursor(dest.key)
    outbox, log = (cursor.outbox, cursor.log) if cursor is not None else (0, 0)
    if last:  # never before where the subscription started: what came earlier was not subscribed to
        resume = parse_position(last)
        outbox, log = max(outbox, resume[0]), max(log, resume[1])
    return dest, outbox, log, limit


async def stream(request: Request) -> Response:
    try:
        await require_scope(request, "read")
        kairos = runtime(request)
        dest, outbox, log, limit = await run_in_threadpool(_opening, kairos, request)
    except KairosError as exc:
        return error_response(exc)
    return StreamingResponse(
        events(kairos, dest, outbox, log, limit),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


_ONE: dict[str, tuple[Scope, Work, bool]] = {
    "PUT": ("admin", _put, True),
    "GET": ("read", _get, False),
    "DELETE": ("admin", _delete, False),
}
_RETRY = endpoint({"POST": ("admin", _retry, False)}, {"POST": "destinations.retry"})
routes = [
    Route("/v1/destinations", endpoint({"GET": ("read", _list, False)}), methods=["GET"]),
    Route(
        "/v1/destinations/{key}",
        endpoint(_ONE, {"PUT": "destinations.put", "DELETE": "destinations.delete"}),
        methods=list(_ONE),
    ),
    Route("/v1/destinations/{key}/deliveries", endpoint({"GET": ("read", _deliveries, False)}), methods=["GET"]),
    Route("/v1/destinations/{key}/deliveries:retry", _RETRY, methods=["POST"]),
    Route("/v1/subscriptions/{key}/stream", stream, methods=["GET"]),
]

"""Collect routes: the Segment Tracking API (``/v1/track`` ... ``/v1/batch`` and the short paths)."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from kairos.api._common import basic_user, error_response, json_response, read_body, runtime
from kairos.api.ratelimit import RateLimits
from kairos.collect import EVENT_TYPES, SHORT_PATHS, decode_body
from kairos.errors import KairosError
from kairos.metrics import REJECTED

__all__ = ["routes"]


def _endpoint(name: str) -> Any:
    async def collect(request: Request) -> Response:
        kairos = runtime(request)
        limits = kairos.settings.collect
        try:
            body = await read_body(request, limits.max_request_bytes)
            payload = decode_body(body, request.headers.get("content-encoding"), name, limits)
            write_key = basic_user(request.headers.get("authorization"))
            # As Kairos.prepare: the key in the body wins over Basic auth (a Bearer token beside it is for
            # something else). The source's rate limit is checked once per request, before any event is read.
            source = kairos.source_for(payload.write_key or write_key)
            rate_limits: RateLimits = request.app.state.limits
            await rate_limits.acheck("source", source.id, "writeKey")
            events, errors = kairos.prepare_for(source, payload, name)
            kept = kairos.unsuppressed(source.name, events)  # answered as accepted (docs/privacy.md)
            if kept:
                await request.app.state.writer.append(source.name, kept)
                kairos.count_ingested(source.name, len(kept))
        except KairosError as exc:
            REJECTED.labels(exc.code).inc()
            return error_response(exc, collect=True)
        if errors:
            return json_response(
                {
                    "success": False,
                    "accepted": len(events),
                    "errors": [
                        {"index": e.index, "code": e.code, "field": e.field, "message": e.message} for e in errors
                    ],
                },
                400,
            )
        return json_response({"success": True})

    collect.__name__ = f"collect_{name}"
    return collect


routes = [Route(f"/v1/{name}", _endpoint(name), methods=["POST"]) for name in (*sorted(EVENT_TYPES), "batch")] + [
    Route(f"/v1/{short}", _endpoint(name), methods=["POST"]) for short, name in SHORT_PATHS.items()
]

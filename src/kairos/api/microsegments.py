"""Micro-segment discovery over HTTP: ``POST /v1/microsegments:discover`` (scope ``read``)."""

from __future__ import annotations

from typing import Any

import msgspec
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from kairos.api._common import error_response, json_response, read_body, require_scope, runtime
from kairos.errors import KairosError, ValidationError, unknown_field
from kairos.runtime import Kairos
from kairos.segments.discover import check_request, discover, live_traits

__all__ = ["routes"]

MAX_BODY = 64 * 1024
_decode = msgspec.json.Decoder()


def _request(body: bytes) -> tuple[list[str], int | None]:
    try:
        data = _decode.decode(body)
    except (msgspec.DecodeError, RecursionError, UnicodeDecodeError):  # msgspec raises the last for bad UTF-8
        raise ValidationError("the body must be JSON in UTF-8", code="invalid_json", field="body") from None
    if not isinstance(data, dict):
        raise ValidationError("the body must be a JSON object", code="invalid_json", field="body")
    unknown = sorted(set(data) - {"features", "k"})
    if unknown:
        raise unknown_field(unknown[0])
    return check_request(data.get("features"), data.get("k"))


def _discover(kairos: Kairos, features: list[str], k: int | None) -> dict[str, Any]:
    return discover(live_traits(kairos), features, k)


async def discover_endpoint(request: Request) -> Response:
    try:
        await require_scope(request, "read")
        features, k = _request(await read_body(request, MAX_BODY))
        answer = await run_in_threadpool(_discover, runtime(request), features, k)
    except KairosError as exc:
        return error_response(exc)
    return json_response(answer)


routes = [Route("/v1/microsegments:discover", discover_endpoint, methods=["POST"])]

"""What every route shares: JSON responses, the error envelope, API-key auth, body reading."""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import msgspec
from cachetools import TTLCache
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kairos.errors import (
    AuthError,
    ForbiddenError,
    KairosError,
    PayloadTooLarge,
    RequestTimeout,
    TransientError,
    ValidationError,
    http_status,
)
from kairos.runtime import Kairos
from kairos.store import ApiKey

__all__ = [
    "JSON",
    "MAX_JSON_BODY",
    "AccessLog",
    "Disconnects",
    "Work",
    "basic_user",
    "endpoint",
    "error_response",
    "json_body",
    "json_response",
    "known_query",
    "query_limit",
    "read_body",
    "require_scope",
    "runtime",
]

_encoder = msgspec.json.Encoder()


class JSON(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return _encoder.encode(content)


def json_response(content: Any, status: int = 200) -> JSON:
    return JSON(content, status_code=status)


def error_response(error: KairosError, *, collect: bool = False) -> JSON:
    body: dict[str, Any] = {"error": error.to_dict()}
    if collect:
        body["success"] = False
    status = http_status(error)
    headers = {"WWW-Authenticate": 'Bearer realm="kairos"'} if status == 401 and not collect else None
    if status == 408:  # the rest of a stalled body may still come: it must not be read as the next request
        headers = {"Connection": "close"}
    if isinstance(error, TransientError):
        headers = {"Retry-After": str(error.retry_after)}
    return JSON(body, status_code=status, headers=headers)


def runtime(request: Request) -> Kairos:
    kairos: Kairos = request.app.state.kairos
    return kairos


async def read_body(request: Request, limit: int, timeout: float | None = None) -> bytes:
    """Read at most ``limit`` bytes; a longer body is refused without being buffered whole.

    A client that sends no part of the body for ``timeout`` seconds (``server.body_timeout_seconds``) gets
    :class:`RequestTimeout` (408) instead of holding a connection and a task for ever.
    """
    if timeout is None:
        timeout = runtime(request).settings.server.body_timeout_seconds
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"request body is larger than {limit} bytes", field="body")
    chunks: list[bytes] = []
    size = 0
    stream = request.stream()
    try:
        while True:
            try:
                async with asyncio.timeout(timeout):
                    chunk = await anext(stream)
            except StopAsyncIteration:
                break
            except TimeoutError:
                raise RequestTimeout(
                    f"no part of the request body arrived for {timeout:g} seconds", field="body"
                ) from None
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(f"request body is larger than {limit} bytes", field="body")
            chunks.append(chunk)
    finally:
        await stream.aclose()
    return b"".join(chunks)


def basic_user(authorization: str | None) -> str | None:
    """The user name of HTTP Basic auth: where Segment's server libraries put the write key."""
    if not authorization or authorization[:6].lower() != "basic ":
        return None
    try:
        decoded = base64.b64decode(authorization[6:].strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):  # ValueError: non-ASCII in the header
        return None
    return decoded.partition(":")[0] or None


_keys: TTLCache[str, ApiKey | None] = TTLCache(maxsize=10_000, ttl=5.0)


def require_scope(request: Request, scope: str) -> ApiKey:
    header = request.headers.get("authorization", "")
    if header[:7].lower() != "bearer " or not header[7:].strip():
        raise AuthError("send an API key as 'Authorization: Bearer <key>'", field="Authorization")
    secret = header[7:].strip()
    if secret in _keys:
        key = _keys[secret]
    else:
        key = runtime(request).store.admin.api_key(secret)
        _keys[secret] = key
    if key is None or not key.enabled:
        raise AuthError("unknown or disabled API key", code="invalid_api_key", field="Authorization")
    if scope not in key.scopes and "admin" not in key.scopes:
        raise ForbiddenError(f"this API key lacks the {scope!r} scope", code="missing_scope", field="Authorization")
    return key


class AccessLog:
    """Debug-level access log (pure ASGI: no cost when disabled). Logs the route template, never the
    path, because paths carry identities such as e-mail addresses."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.log = logging.getLogger("kairos.http")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.log.isEnabledFor(logging.DEBUG):
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 0

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        await self.app(scope, receive, sending)
        route = getattr(scope.get("route"), "path", "?")
        ms = round((time.perf_counter() - start) * 1000, 2)
        self.log.debug("request", extra={"method": scope["method"], "route": route, "status": status, "ms": ms})


class Disconnects:
    """A client that goes away before its body is read is no server error: the request ends quietly.

    Starlette's ``request.stream()`` raises ``ClientDisconnect`` when the server reports the disconnect;
    uncaught, it reached the error handler, which logged an unhandled error and started a 500 for no one.
    The server already knows the connection is gone, so nothing is sent.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.log = logging.getLogger("kairos.http")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self.app(scope, receive, send)
        except ClientDisconnect:
            route = getattr(scope.get("route"), "path", "?")
            self.log.debug("client disconnected", extra={"method": scope.get("method"), "route": route})


MAX_JSON_BODY = 64 * 1024  # the bodies of definitions and other configuration
_json_decoder = msgspec.json.Decoder()
Work = Callable[[Kairos, Request, Any], Any]


async def json_body(request: Request, limit: int = MAX_JSON_BODY) -> Any:
    """The request's JSON body (at most ``limit`` bytes), or a 400 ``invalid_json``."""
    raw = await read_body(request, limit)
    try:
        return _json_decoder.decode(raw)
    except (msgspec.DecodeError, RecursionError, UnicodeDecodeError) as exc:
        raise ValidationError("the body is not valid JSON in UTF-8", code="invalid_json", field="body") from exc


def known_query(request: Request, *names: str) -> None:
    """Refuse a query parameter the route does not read (a 400 ``invalid_query``): a typo such as ``?form=``
    would otherwise be ignored and answer something the caller did not ask for."""
    for key in request.query_params:
        if key not in names:
            raise ValidationError(
                f"unknown query parameter {key[:100]!r}; this route reads {', '.join(names) or 'none'}",
                code="invalid_query",
                field=key[:100],
            )


def query_limit(request: Request, default: int, maximum: int) -> int:
    """``?limit=``: a whole number from 1 to ``maximum`` (ASCII digits only), else a 400."""
    raw = request.query_params.get("limit")
    if raw is None:
        return default
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= maximum:
        raise ValidationError(f"limit must be an integer from 1 to {maximum}", code="invalid_query", field="limit")
    return int(raw)


def endpoint(methods: Mapping[str, tuple[str, Work, bool]]) -> Callable[[Request], Awaitable[Response]]:
    """One endpoint per path: method → (scope, work, whether it reads a JSON body). ``work`` runs off the event
    loop and answers a body, or (body, status)."""

    async def handle(request: Request) -> Response:
        scope, work, with_body = methods[request.method]
        try:
            require_scope(request, scope)
            body = await json_body(request) if with_body else None
            result = await run_in_threadpool(work, runtime(request), request, body)
        except KairosError as exc:
            return error_response(exc)
        if isinstance(result, tuple):
            return json_response(result[0], result[1])
        return json_response(result)

    return handle

"""What every route shares: JSON responses, the error envelope, API-key auth, body reading."""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import msgspec
from cachetools import TTLCache
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Send
from starlette.types import Scope as ASGIScope

from kairos import audit as audit_log
from kairos._json import check_document
from kairos.api.ratelimit import RateLimits
from kairos.definitions import check_key
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
from kairos.scopes import Scope, grants
from kairos.store import ApiKey

__all__ = [
    "JSON",
    "KEY_CACHE_SECONDS",
    "MAX_JSON_BODY",
    "AccessLog",
    "Disconnects",
    "Work",
    "authenticate",
    "basic_user",
    "check_scope",
    "endpoint",
    "error_response",
    "json_body",
    "json_response",
    "key_cache",
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
    receive = request.receive
    # The ASGI messages read as Request.stream() reads them, with one timer for the whole body, moved on only
    # while more parts are due. A timer per step of the stream (three for a one-part body: the part, the
    # stream's empty end, its stop) made reading a batch cost 17 µs in-process; one timer, 5 µs.
    try:
        async with asyncio.timeout(timeout) as idle:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise ClientDisconnect()
                chunk: bytes = message.get("body", b"")
                size += len(chunk)
                if size > limit:
                    raise PayloadTooLarge(f"request body is larger than {limit} bytes", field="body")
                if chunk:
                    chunks.append(chunk)
                if not message.get("more_body", False):
                    break
                idle.reschedule(asyncio.get_running_loop().time() + timeout)
    except TimeoutError:
        raise RequestTimeout(f"no part of the request body arrived for {timeout:g} seconds", field="body") from None
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


KEY_CACHE_SECONDS = 5.0


def key_cache() -> TTLCache[str, ApiKey | None]:
    """Keys by secret, for :data:`KEY_CACHE_SECONDS`: one store read per key and 5 s, not per request. So a key
    revoked or rotated by another process (``kairos keys``) is refused here at most 5 s later."""
    return TTLCache(maxsize=10_000, ttl=KEY_CACHE_SECONDS)


def _lookup(request: Request, secret: str) -> ApiKey | None:
    cache: TTLCache[str, ApiKey | None] | None = getattr(request.app.state, "api_keys", None)
    if cache is None:
        cache = request.app.state.api_keys = key_cache()
    try:
        return cache[secret]
    except KeyError:
        key = runtime(request).store.admin.api_key(secret)
        cache[secret] = key
        return key


async def require_scope(request: Request, scope: Scope) -> ApiKey:
    """The request's API key, if it may use a route that needs ``scope`` (:func:`kairos.scopes.grants`: admin
    implies read, write and decide, never privacy), counted against its rate limit; else 401, 429 or 403."""
    key = await authenticate(request)
    check_scope(key, scope)
    return key


def check_scope(key: ApiKey, scope: Scope) -> None:
    """403 ``missing_scope`` unless ``key`` may use a route that needs ``scope``: the one rule, in one place."""
    if not grants(key.scopes, scope):
        raise ForbiddenError(f"this API key lacks the {scope!r} scope", code="missing_scope", field="Authorization")


async def authenticate(request: Request) -> ApiKey:
    """The request's valid API key (401 otherwise), counted against its rate limit (429 when over)."""
    header = request.headers.get("authorization", "")
    if header[:7].lower() != "bearer " or not header[7:].strip():
        raise AuthError("send an API key as 'Authorization: Bearer <key>'", field="Authorization")
    secret = header[7:].strip()
    key = _lookup(request, secret) if len(secret) <= 200 else None
    if key is not None and key.expires_at is not None and key.expires_at <= runtime(request).clock.now():
        key = None  # the secret a rotation replaced, after its grace period
    if key is None or not key.enabled:
        raise AuthError("unknown, revoked or expired API key", code="invalid_api_key", field="Authorization")
    limits: RateLimits | None = getattr(request.app.state, "limits", None)
    if limits is not None:
        await limits.acheck("key", key.id, "Authorization")
    return key


class AccessLog:
    """Debug-level access log (pure ASGI: no cost when disabled). Logs the route template, never the
    path, because paths carry identities such as e-mail addresses."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.log = logging.getLogger("kairos.http")

    async def __call__(self, scope: ASGIScope, receive: Receive, send: Send) -> None:
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

    :func:`read_body` (like Starlette's ``request.stream()``) raises ``ClientDisconnect`` when the server
    reports the disconnect; uncaught, it reached the error handler, which logged an unhandled error and started
    a 500 for no one. The server already knows the connection is gone, so nothing is sent.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.log = logging.getLogger("kairos.http")

    async def __call__(self, scope: ASGIScope, receive: Receive, send: Send) -> None:
        try:
            await self.app(scope, receive, send)
        except ClientDisconnect:
            route = getattr(scope.get("route"), "path", "?")
            self.log.debug("client disconnected", extra={"method": scope.get("method"), "route": route})


MAX_JSON_BODY = 64 * 1024  # the bodies of definitions and other configuration
_json_decoder = msgspec.json.Decoder()
Work = Callable[[Kairos, Request, Any], Any]


async def json_body(request: Request, limit: int = MAX_JSON_BODY) -> Any:
    """The request's JSON body (at most ``limit`` bytes), or a 400: ``invalid_json``, ``invalid`` on the
    path of an integer beyond 64 bits, ``duplicate_key`` (:func:`kairos._json.check_document`)."""
    raw = await read_body(request, limit)
    try:
        body = _json_decoder.decode(raw)
    except (msgspec.DecodeError, RecursionError, UnicodeDecodeError) as exc:
        raise ValidationError(json_problem(raw, exc), code="invalid_json", field="body") from exc
    check_document(raw, body, "the body", "body")
    return body


_AT_BYTE = re.compile(r"\(byte (\d+)\)$")
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


def json_problem(raw: bytes, exc: Exception) -> str:
    """What is wrong with a body that is not JSON, in words a client can act on (msgspec's own say "Input data
    was truncated" for a lone surrogate, and "invalid character" for NaN). Positions, never content."""
    if isinstance(exc, RecursionError):
        return "the body nests objects and lists too deeply"
    if isinstance(exc, UnicodeDecodeError):
        return "the body is not valid UTF-8"
    if raw.startswith(b"\xef\xbb\xbf"):
        return "the body starts with a byte order mark (BOM), which JSON does not allow"
    text = str(exc)
    if text.startswith("Number out of range"):
        return "the body holds a number beyond the range of a double (such as 1e999)"
    if not raw.strip():
        return "the body is empty; send a JSON object"
    found = _AT_BYTE.search(text)
    if found is not None:
        at = int(found.group(1))
        if raw[at : at + 3] in (b"NaN", b"Inf") or raw[at : at + 4] == b"-Inf":
            return f"the body holds NaN or Infinity, which JSON does not allow (byte {at})"
        return f"the body is not valid JSON: {text.removeprefix('JSON is malformed: ')}"
    if _SURROGATE_ESCAPE.search(raw) is not None:
        return "the body is cut short, or holds an unpaired UTF-16 surrogate (such as \\ud800): not valid Unicode"
    return "the body is not valid JSON: it ends too early"


def known_query(request: Request, *names: str) -> None:
    """Refuse a query parameter the route does not read (a 400 ``invalid_query``): a typo such as ``?form=``
    would otherwise be ignored and answer something the caller did not ask for. A parameter given twice is
    refused too: which one would count is a guess."""
    params = request.query_params
    for key in params:
        if key not in names:
            raise ValidationError(
                f"unknown query parameter {key[:100]!r}; this route reads {', '.join(names) or 'none'}",
                code="invalid_query",
                field=key[:100],
            )
        if len(params.getlist(key)) > 1:
            raise ValidationError(f"query parameter {key!r} is given more than once", code="invalid_query", field=key)


def query_limit(request: Request, default: int, maximum: int) -> int:
    """``?limit=``: a whole number from 1 to ``maximum`` (ASCII digits only), else a 400."""
    raw = request.query_params.get("limit")
    if raw is None:
        return default
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= maximum:
        raise ValidationError(f"limit must be an integer from 1 to {maximum}", code="invalid_query", field="limit")
    return int(raw)


def _audit_detail(result: Any) -> dict[str, Any] | None:
    """What an audit entry keeps of a successful answer: counters and flags, never the body."""
    if not isinstance(result, dict):
        return None
    kept = {k: result[k] for k in ("version", "changed", "deleted", "retried") if k in result}
    return {k: v for k, v in kept.items() if isinstance(v, bool | int)} or None


def _key_target(request: Request) -> str:
    """The path's definition key as an audit target, if it is one: a refused key may be anything (an e-mail
    address sent by mistake), and the audit log holds no personal data."""
    key = str(request.path_params.get("key", ""))
    if not key:
        return ""
    try:
        return check_key(key, "definition")
    except ValidationError:
        return "(invalid key)"


def _answer_target(answer: Any) -> str:
    """The target of a route addressed by a profile reference (which may be an e-mail address): the profile id
    or request id the answer names, never the reference itself."""
    if isinstance(answer, dict):
        for field in ("request_id", "profile_id"):
            if isinstance(answer.get(field), str):
                return str(answer[field])
    return ""


def endpoint(
    methods: Mapping[str, tuple[Scope, Work, bool]], audit: Mapping[str, str] | None = None
) -> Callable[[Request], Awaitable[Response]]:
    """One endpoint per path: method → (scope, work, whether it reads a JSON body). ``work`` runs off the event
    loop and answers a body, or (body, status).

    ``audit``: method → audit action (``segments.put``); such a request from a valid key is recorded in the
    audit log (:func:`kairos.audit.record`) with the path's ``key`` as target (or the profile or request id the
    answer names: never a profile reference) and the answer's status, also when it is refused for its scope or
    its body.
    """

    async def handle(request: Request) -> Response:
        scope, work, with_body = methods[request.method]
        action = audit.get(request.method) if audit else None
        kairos = runtime(request)
        key: ApiKey | None = None
        try:
            key = await authenticate(request)
            check_scope(key, scope)
            body = await json_body(request) if with_body else None
            result = await run_in_threadpool(work, kairos, request, body)
        except KairosError as exc:
            if action is not None and key is not None:
                target = _key_target(request)
                await run_in_threadpool(
                    audit_log.record, kairos, key, action, target, http_status(exc), {"code": exc.code}
                )
            return error_response(exc)
        answer, status = result if isinstance(result, tuple) else (result, 200)
        if action is not None:
            target = _key_target(request) or _answer_target(answer)
            await run_in_threadpool(audit_log.record, kairos, key, action, target, status, _audit_detail(answer))
        return json_response(answer, status)

    return handle

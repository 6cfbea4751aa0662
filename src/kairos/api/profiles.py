"""Profile routes: one profile by id or ``type:value``, its timeline, its merges, and the list."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import unquote

import msgspec
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from kairos._numbers import MESSAGE, out_of_range
from kairos.api._common import error_response, json_response, known_query, query_limit, require_scope, runtime
from kairos.collect import iso
from kairos.errors import KairosError, NotFoundError, ValidationError
from kairos.identity import profile_id_for
from kairos.pipeline import ProfileState
from kairos.runtime import Kairos
from kairos.store import LogEntry, MergeRecord, decode_cursor, encode_cursor

__all__ = ["profile_view", "resolve_ref", "routes"]

MAX_LIMIT = 200
# Never the reference itself: it is often an e-mail address or a phone number, and messages reach logs.
NO_PROFILE = "no profile has this id or identity"
_decode = msgspec.json.Decoder()


def profile_view(kairos: Kairos, profile: ProfileState, merged_ids: list[str]) -> dict[str, Any]:
    return kairos.profile_view(profile, merged_ids)


def _merge_view(m: MergeRecord) -> dict[str, Any]:
    return {
        "winner": profile_id_for(m.winner),
        "loser": profile_id_for(m.loser),
        "at": iso(m.at),
        "reason": m.reason,
        "identities": [{"type": t, "value": v} for t, v in m.identities],
        "message_id": m.message_id,
        "seq": m.seq,
    }


_PROFILES = b"/v1/profiles/"
_REF = "kairos.profile_ref"


class ProfileRefs:
    """Routes ``/v1/profiles/{ref}/...`` on the path as sent, not as decoded. An identity value may hold a
    ``/`` (sent as ``%2F``), and once decoded ``user_id:x%2Fevents`` is ``user_id:x/events``: the timeline of
    ``user_id:x``, another person. When the ref holds an encoded ``/``, the ref is decoded apart (handlers
    read it with :func:`profile_ref`) and the path is routed with a stand-in for it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        raw = scope.get("raw_path") if scope["type"] == "http" else None
        if raw and raw.startswith(_PROFILES) and b"%2f" in raw.lower():
            ref, slash, rest = raw[len(_PROFILES) :].partition(b"/")
            try:
                decoded = unquote(ref.decode("ascii"), errors="strict")
            except UnicodeError:  # not UTF-8 once decoded: the routes refuse it as they always did
                decoded = ""
            if "/" in decoded:
                scope = {**scope, "path": f"/v1/profiles/-{slash.decode()}{unquote(rest.decode('latin-1'))}"}
                scope[_REF] = decoded
        await self.app(scope, receive, send)


def profile_ref(request: Request) -> str:
    """The ``{ref}`` of a ``/v1/profiles/{ref}/...`` route, decoded from the path as sent (:class:`ProfileRefs`)."""
    found = request.scope.get(_REF)
    return found if isinstance(found, str) else str(request.path_params["ref"])


def resolve_ref(kairos: Kairos, ref: str) -> int:
    """The canonical profile key of ``ref`` (an id or ``type:value``), or a precise 400/404."""
    if not ref or len(ref) > 600 or "\x00" in ref:
        raise ValidationError(
            "profile reference must be 1 to 600 characters, without NUL", code="invalid_ref", field="ref"
        )
    pk = kairos.resolve(ref)
    if pk is None:
        raise NotFoundError(NO_PROFILE, field="ref")
    return pk


def _get_profile(kairos: Kairos, ref: str) -> dict[str, Any]:
    view = kairos.view(resolve_ref(kairos, ref))
    if view is None:
        raise NotFoundError(NO_PROFILE, field="ref")
    return view


def _timeline(kairos: Kairos, ref: str, limit: int, cursor: str | None) -> dict[str, Any]:
    before = None
    if cursor:
        ts, seq, sub = decode_cursor(cursor, 3)
        before = (ts, seq, sub)
    pk = resolve_ref(kairos, ref)
    rows = kairos.store.state.timeline(pk, limit + 1, before)
    more = len(rows) > limit
    rows = rows[:limit]
    entries = kairos.store.log.get([r.seq for r in rows if r.sub == 0])
    items = []
    for r in rows:
        event = _event_view(entries[r.seq]) if r.sub == 0 and r.seq in entries else None
        item: dict[str, Any] = {"seq": r.seq, "type": r.type, "name": r.name, "timestamp": iso(r.ts), "event": event}
        if r.sub:
            item["data"] = r.data
        items.append(item)
    return {
        "profile_id": profile_id_for(pk),
        "items": items,
        "next_cursor": encode_cursor(rows[-1].ts, rows[-1].seq, rows[-1].sub) if more and rows else None,
    }


def _event_view(entry: LogEntry) -> Any:
    """A logged event as Segment shows it: the payload is what the client sent; what Kairos decided
    (message id, corrected time, time received) is in the log's columns. Logs written before that kept
    all of it in the payload, under ``_kairos``."""
    event = _decode.decode(entry.payload)
    if not isinstance(event, dict):
        return event
    if "_kairos" in event:  # the older format: already presented, but for Kairos' own stamp
        del event["_kairos"]
        return event
    event["messageId"] = entry.message_id
    sent = event.get("timestamp")
    if sent is None:
        sent = event.get("originalTimestamp")
    if sent is not None:
        event["originalTimestamp"] = sent
    event["timestamp"] = iso(entry.ts)
    event["receivedAt"] = iso(entry.received_at)
    return event


def _list(kairos: Kairos, filters: dict[str, Any], limit: int, cursor: str | None) -> dict[str, Any]:
    after = decode_cursor(cursor, 1)[0] if cursor else None
    kairos.definitions()  # computed traits are decoded and read through the current definitions
    rows = kairos.store.state.list_profiles(filters, limit + 1, after)
    more = len(rows) > limit
    rows = rows[:limit]
    return {
        "items": [profile_view(kairos, kairos.codec.state(r), []) for r in rows],
        "next_cursor": encode_cursor(rows[-1].pk) if more and rows else None,
    }


def _filters(request: Request) -> dict[str, Any]:
    out: dict[str, Any] = {}
    params = request.query_params
    for key, raw in params.multi_items():
        if len(params.getlist(key)) > 1:
            raise ValidationError(
                f"query parameter {key[:100]!r} is given more than once", code="invalid_query", field=key[:100]
            )
        if key in ("limit", "cursor"):
            continue
        if not key.startswith("trait.") or len(key) == 6:
            raise ValidationError(
                f"unknown query parameter {key!r}: filter with trait.NAME=VALUE",
                code="invalid_query",
                field=key,
            )
        if len(raw) > 1000 or "\x00" in raw or "\x00" in key:
            raise ValidationError(
                f"{key} must be at most 1000 characters, without NUL", code="invalid_query", field=key
            )
        try:
            value: Any = _decode.decode(raw)  # numbers, booleans and quoted strings as JSON
            if isinstance(value, dict | list):
                value = raw
        except (msgspec.DecodeError, RecursionError):
            value = raw
        if isinstance(value, str) and "\x00" in value:  # "\u0000" in JSON: no stored trait can hold NUL
            raise ValidationError(f"{key} must not hold NUL characters", code="invalid_query", field=key)
        if out_of_range(value) is not None:  # no stored trait can hold one either (kairos._numbers)
            raise ValidationError(f"{key}: {MESSAGE}", code="invalid_query", field=key)
        out[key[6:]] = value
    return out


Work = Callable[[Kairos, Request], dict[str, Any]]


def read_endpoint(work: Work) -> Callable[[Request], Awaitable[Response]]:
    """An endpoint that needs the ``read`` scope and does its store work off the event loop."""

    async def endpoint(request: Request) -> Response:
        try:
            await require_scope(request, "read")
            body = await run_in_threadpool(work, runtime(request), request)
        except KairosError as exc:
            return error_response(exc)
        return json_response(body)

    endpoint.__name__ = work.__name__
    return endpoint


@read_endpoint
def get_profile(kairos: Kairos, request: Request) -> dict[str, Any]:
    return _get_profile(kairos, profile_ref(request))


@read_endpoint
def get_events(kairos: Kairos, request: Request) -> dict[str, Any]:
    known_query(request, "limit", "cursor")
    limit = query_limit(request, 50, MAX_LIMIT)
    return _timeline(kairos, profile_ref(request), limit, request.query_params.get("cursor"))


@read_endpoint
def get_moments(kairos: Kairos, request: Request) -> dict[str, Any]:
    known_query(request, "limit", "cursor")
    pk = resolve_ref(kairos, profile_ref(request))
    before = None
    cursor = request.query_params.get("cursor")
    if cursor:
        ts, seq, sub = decode_cursor(cursor, 3)
        before = (ts, seq, sub)
    limit = query_limit(request, 50, MAX_LIMIT)
    rows = kairos.store.state.timeline(pk, limit + 1, before, type="moment")
    more = len(rows) > limit
    rows = rows[:limit]
    return {
        "profile_id": profile_id_for(pk),
        "items": [
            {
                "moment": r.name,
                "at": iso(r.ts),
                "seqs": (r.data or {}).get("seqs", []),
                "version": (r.data or {}).get("version"),
            }
            for r in rows
        ],
        "next_cursor": encode_cursor(rows[-1].ts, rows[-1].seq, rows[-1].sub) if more and rows else None,
    }


@read_endpoint
def get_merges(kairos: Kairos, request: Request) -> dict[str, Any]:
    pk = resolve_ref(kairos, profile_ref(request))
    return {"profile_id": profile_id_for(pk), "items": [_merge_view(m) for m in kairos.store.state.merges(pk)]}


@read_endpoint
def list_profiles(kairos: Kairos, request: Request) -> dict[str, Any]:
    filters = _filters(request)
    derived = {name for p in kairos.projections for name in p.trait_names()}
    for name in filters:
        if name in derived:  # not stored columns: the filter would match no one, silently
            raise ValidationError(
                f"trait.{name} is computed (a computed or RFM trait) and cannot filter this list: define a segment "
                f"on traits.{name} and list its members (GET /v1/segments/KEY/members)",
                code="invalid_query",
                field=f"trait.{name}"[:100],
            )
    limit = query_limit(request, 50, MAX_LIMIT)
    return _list(kairos, filters, limit, request.query_params.get("cursor"))


routes = [
    Route("/v1/profiles", list_profiles, methods=["GET"]),
    Route("/v1/profiles/{ref:path}/events", get_events, methods=["GET"]),
    Route("/v1/profiles/{ref:path}/merges", get_merges, methods=["GET"]),
    Route("/v1/profiles/{ref:path}/moments", get_moments, methods=["GET"]),
    Route("/v1/profiles/{ref:path}", get_profile, methods=["GET"]),
]

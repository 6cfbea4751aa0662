"""Computed traits and segments: ``PUT/GET/DELETE /v1/{traits|segments}/{key}``, lists, segment members,
and ``POST /v1/segments:preview``.

Saving needs the ``admin`` scope, reading the ``read`` scope. A definition is validated and compiled when it
is saved (a rule error answers 400 ``invalid_rule`` with its ``position``); the processor picks it up within
a batch and backfills existing profiles, whose progress ``GET`` shows under ``backfill``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import msgspec
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from kairos.api._common import error_response, json_response, read_body, require_scope, runtime
from kairos.definitions import (
    Catalog,
    SegmentDef,
    check_key,
    compile_definition,
    segment_body,
    segment_order,
    trait_body,
)
from kairos.errors import KairosError, NotFoundError, ValidationError
from kairos.identity import profile_id_for
from kairos.runtime import Kairos
from kairos.segments.membership import SEGMENT_STATS, profile_variables
from kairos.store import Definition, Job, decode_cursor, encode_cursor

__all__ = ["definition_view", "preview", "routes"]

MAX_BODY = 64 * 1024
MAX_LIMIT = 1000
PREVIEW_SAMPLE = 20
DAY = 86_400_000
_decoder = msgspec.json.Decoder()


def _iso_day(day: int) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(day * DAY / 1000))


def _job_view(job: Job | None, d: Definition) -> dict[str, Any]:
    if job is None or job.version != d.version:
        return {"status": "pending", "done": 0, "total": None}
    return {
        "status": job.status,
        "done": job.done,
        "total": job.total,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
    }


def definition_view(kairos: Kairos, d: Definition, job: Job | None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "key": d.key,
        **d.body,
        "version": d.version,
        "created_at": d.created_at,
        "updated_at": d.updated_at,
        "backfill": _job_view(job, d),
    }
    if d.kind == "segment":
        stats = kairos.store.state.counts(SEGMENT_STATS.name, "WHERE segment = {p}", (d.key,))
        size = 0
        history = []
        for _segment, day, entered, exited in stats:
            size += entered - exited
            history.append({"date": _iso_day(day), "size": size, "entered": entered, "exited": exited})
        out["size"] = size
        out["size_history"] = history
    return out


def _job(kairos: Kairos, kind: str, key: str) -> Job | None:
    return next((j for j in kairos.store.state.jobs() if j.kind == kind and j.key == key), None)


async def _json(request: Request) -> Any:
    raw = await read_body(request, MAX_BODY)
    try:
        return _decoder.decode(raw)
    except (msgspec.DecodeError, RecursionError, UnicodeDecodeError) as exc:
        raise ValidationError("the body is not valid JSON in UTF-8", code="invalid_json", field="body") from exc


def _kind(request: Request) -> str:
    return "trait" if request.url.path.startswith("/v1/traits") else "segment"


def _warnings(kairos: Kairos, source_rule: SegmentDef) -> list[dict[str, str]]:
    """Traits a rule names that no definition or profile has (probably a typo)."""
    out = []
    catalog = kairos.definitions(0)
    state = kairos.store.state
    declared = {name for p in kairos.projections for name in p.trait_names()}
    for name in sorted(source_rule.rule.references.traits):
        if name in catalog.traits or name in declared:
            continue
        if state.profiles_in("traits", name, 1, None):
            continue
        out.append(
            {"code": "unknown_trait", "field": "rule", "message": f"no profile or definition has a trait {name!r}"}
        )
    return out


def _put(kairos: Kairos, kind: str, key: str, body: Any) -> tuple[dict[str, Any], int]:
    check_key(key, kind)
    stored = trait_body(body) if kind == "trait" else segment_body(body)
    warnings: list[dict[str, str]] = []
    if kind == "segment":
        existing = {d.key: d for d in kairos.store.admin.definitions("segment")}
        old = existing.get(key)
        candidate = Definition("segment", key, (old.version + 1) if old else 1, 0, stored, False, 0, 0)
        compiled = compile_definition(candidate)
        assert isinstance(compiled, SegmentDef)
        for name in sorted(compiled.after):
            if name != key and name not in existing:
                raise ValidationError(
                    f"the rule refers to segment {name!r}, which does not exist", code="unknown_segment", field="rule"
                )
        defs = {k: compile_definition(d) for k, d in existing.items() if k != key}
        segment_order({**{k: v for k, v in defs.items() if isinstance(v, SegmentDef)}, key: compiled})
        warnings = _warnings(kairos, compiled)
    d, changed = kairos.store.admin.put_definition(kind, key, stored, kairos.clock.now())
    view = definition_view(kairos, d, _job(kairos, kind, key))
    view["changed"] = changed
    if warnings:
        view["warnings"] = warnings
    return view, 201 if changed and d.version == 1 else 200


def _get(kairos: Kairos, kind: str, key: str) -> dict[str, Any]:
    d = kairos.store.admin.definition(kind, key)
    if d is None:
        raise NotFoundError(f"no {kind} named {key!r}", field="key")
    return definition_view(kairos, d, _job(kairos, kind, key))


def _list(kairos: Kairos, kind: str) -> dict[str, Any]:
    jobs = {j.key: j for j in kairos.store.state.jobs() if j.kind == kind}
    return {"items": [definition_view(kairos, d, jobs.get(d.key)) for d in kairos.store.admin.definitions(kind)]}


def _delete(kairos: Kairos, kind: str, key: str) -> dict[str, Any]:
    check_key(key, kind)
    dependents = []
    if kind == "segment":
        for d in kairos.store.admin.definitions("segment"):
            compiled = compile_definition(d)
            if isinstance(compiled, SegmentDef) and key in compiled.after and d.key != key:
                dependents.append(d.key)
    if dependents:
        raise ValidationError(
            f"segments {', '.join(dependents)} refer to {key!r}: change them first", code="in_use", field="key"
        )
    d = kairos.store.admin.delete_definition(kind, key, kairos.clock.now())
    return {"key": key, "deleted": True, "version": d.version}


def _limit(request: Request, default: int = 100) -> int:
    raw = request.query_params.get("limit")
    if raw is None:
        return default
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
        raise ValidationError(f"limit is a whole number from 1 to {MAX_LIMIT}", code="invalid_query", field="limit")
    return int(raw)


def _members(kairos: Kairos, key: str, limit: int, cursor: str | None) -> dict[str, Any]:
    if kairos.store.admin.definition("segment", key) is None:
        raise NotFoundError(f"no segment named {key!r}", field="key")
    after = decode_cursor(cursor, 1)[0] if cursor else None
    pks = kairos.store.state.profiles_in("segments", key, limit + 1, after)
    more = len(pks) > limit
    pks = pks[:limit]
    return {
        "items": [{"profile_id": profile_id_for(pk)} for pk in pks],
        "next_cursor": encode_cursor(pks[-1]) if more and pks else None,
    }


def preview(kairos: Kairos, body: Any, sample: int = PREVIEW_SAMPLE) -> dict[str, Any]:
    """How many profiles a rule selects now, and a few of them, without saving it."""
    stored = segment_body(body)
    candidate = compile_definition(Definition("segment", "preview", 0, 0, stored, False, 0, 0))
    assert isinstance(candidate, SegmentDef)
    catalog: Catalog = kairos.definitions()
    sources = [p for p in kairos.projections if p.name != "segments" and p.name != "timeline"]
    codec = kairos.codec
    now = kairos.clock.now()
    reads = candidate.rule.references.variables
    started = time.perf_counter()
    size = 0
    found: list[str] = []
    after = 0
    while True:
        rows = kairos.store.state.scan_profiles(after, 2000)
        if not rows:
            break
        for row in rows:
            profile = codec.state(row)
            members = profile.sections.get("segments") or {}
            if candidate.rule.evaluate(profile_variables(profile, sources, members, now, reads)):
                size += 1
                if len(found) < sample:
                    found.append(profile.id)
        after = rows[-1].pk
    return {
        "size": size,
        "sample": found,
        "took_ms": round((time.perf_counter() - started) * 1000, 1),
        "segments_defined": len(catalog.segments),
    }


Work = Callable[[Kairos, Request, Any], Any]


def _endpoint(methods: Mapping[str, tuple[str, Work, bool]]) -> Callable[[Request], Any]:
    """One endpoint per path: method → (scope, work, reads a JSON body)."""

    async def endpoint(request: Request) -> Response:
        scope, work, with_body = methods[request.method]
        try:
            require_scope(request, scope)
            body = await _json(request) if with_body else None
            result = await run_in_threadpool(work, runtime(request), request, body)
        except KairosError as exc:
            return error_response(exc)
        if isinstance(result, tuple):
            return json_response(result[0], result[1])
        return json_response(result)

    return endpoint


def put_definition(kairos: Kairos, request: Request, body: Any) -> tuple[dict[str, Any], int]:
    return _put(kairos, _kind(request), request.path_params["key"], body)


def get_definition(kairos: Kairos, request: Request, body: Any) -> dict[str, Any]:
    return _get(kairos, _kind(request), request.path_params["key"])


def delete_definition(kairos: Kairos, request: Request, body: Any) -> dict[str, Any]:
    return _delete(kairos, _kind(request), request.path_params["key"])


def list_definitions(kairos: Kairos, request: Request, body: Any) -> dict[str, Any]:
    return _list(kairos, _kind(request))


def get_members(kairos: Kairos, request: Request, body: Any) -> dict[str, Any]:
    return _members(kairos, request.path_params["key"], _limit(request), request.query_params.get("cursor"))


def post_preview(kairos: Kairos, request: Request, body: Any) -> dict[str, Any]:
    return preview(kairos, body)


_ONE: dict[str, tuple[str, Work, bool]] = {
    "PUT": ("admin", put_definition, True),
    "GET": ("read", get_definition, False),
    "DELETE": ("admin", delete_definition, False),
}
routes = [
    Route("/v1/traits", _endpoint({"GET": ("read", list_definitions, False)}), methods=["GET"]),
    Route("/v1/traits/{key}", _endpoint(_ONE), methods=list(_ONE)),
    Route("/v1/segments", _endpoint({"GET": ("read", list_definitions, False)}), methods=["GET"]),
    Route("/v1/segments:preview", _endpoint({"POST": ("read", post_preview, True)}), methods=["POST"]),
    Route("/v1/segments/{key}/members", _endpoint({"GET": ("read", get_members, False)}), methods=["GET"]),
    Route("/v1/segments/{key}", _endpoint(_ONE), methods=list(_ONE)),
]

"""Computed traits, segments and moments: ``PUT/GET/DELETE /v1/{traits|segments|moments}/{key}``, lists,
segment members, and ``POST /v1/segments:preview``.

Saving needs the ``admin`` scope (and is recorded in the audit log), reading the ``read`` scope. A
definition is validated and compiled when it is saved (a rule error answers 400 ``invalid_rule`` with its
``position``); the processor picks it up within a batch and backfills existing profiles, whose progress
``GET`` shows under ``backfill``.
"""

from __future__ import annotations

import math
import time
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.routing import Route

from kairos._gc import paused as gc_paused
from kairos.api._common import Work, endpoint, known_query, query_limit
from kairos.definitions import Catalog, SegmentDef, check_key, compile_definition, segment_body
from kairos.errors import NotFoundError, ValidationError
from kairos.identity import profile_id_for
from kairos.pipeline import Projection
from kairos.privacy.uses import record_uses
from kairos.runtime import Kairos
from kairos.scopes import Scope
from kairos.segments.admin import definition_view, job_of, remove, save
from kairos.segments.membership import profile_variables
from kairos.store import Definition, UseRow, decode_cursor, encode_cursor

__all__ = ["preview", "routes"]

MAX_BODY = 64 * 1024
MAX_LIMIT = 1000
PREVIEW_SAMPLE = 20
EXACT_UP_TO = 2_000  # a preview evaluates every profile up to this many, a sample beyond
SAMPLED = 2_000  # about how many profiles a sampled preview evaluates
SAMPLE_MODULUS = 10_007
PREVIEW_SECONDS = 5.0  # a rule that costs more over the sample is refused: one request must not hold a worker
_decoder = msgspec.json.Decoder()


def _kind(request: Request) -> str:
    path = request.url.path
    return "trait" if path.startswith("/v1/traits") else "moment" if path.startswith("/v1/moments") else "segment"


def _get(kairos: Kairos, kind: str, key: str) -> dict[str, Any]:
    check_key(key, kind)  # a 400 for what no key can be (never quoted back: it may be anything)
    d = kairos.store.admin.definition(kind, key)
    if d is None:
        raise NotFoundError(f"no {kind} named {key!r}", field="key")
    return definition_view(kairos, d, job_of(kairos, kind, key))


def _list(kairos: Kairos, kind: str) -> dict[str, Any]:
    jobs = {j.key: j for j in kairos.store.state.jobs() if j.kind == kind}
    return {"items": [definition_view(kairos, d, jobs.get(d.key)) for d in kairos.store.admin.definitions(kind)]}


def _members(
    kairos: Kairos, key: str, limit: int, cursor: str | None, purpose: str | None = None, recipient: str = ""
) -> dict[str, Any]:
    """The segment's members, in key order. With ``purpose`` (sharing the segment: an ad audience, a partner)
    only members whose consent allows it are listed, and each listed member's data-use ledger records the
    export to ``recipient``."""
    check_key(key, "segment")
    if kairos.store.admin.definition("segment", key) is None:
        raise NotFoundError(f"no segment named {key!r}", field="key")
    if purpose is not None and purpose not in kairos.consent_policy.purposes:
        raise ValidationError("not a configured consent purpose", code="unknown_purpose", field="purpose")
    after = decode_cursor(cursor, 1)[0] if cursor else None
    state = kairos.store.state
    listed: list[int] = []
    allows = kairos.consent_policy.allows
    while True:  # a purpose may leave members out: read on until the page is full or the segment ends
        want = limit - len(listed)
        pks = state.profiles_in("segments", key, want + 1, after)
        page, more = pks[:want], len(pks) > want
        if page:
            after = page[-1]
        if purpose is not None and page:
            consents = state.consents_of([profile_id_for(pk) for pk in page])
            page = [pk for pk in page if allows({"consents": consents.get(profile_id_for(pk))}, purpose)]
        listed += page
        if not more or len(listed) >= limit:
            break
    if purpose is not None and listed:
        now = kairos.clock.now()
        ref = f"segment:{key}"
        uses = [UseRow(profile_id_for(pk), now, purpose, "segment_export", recipient, ref) for pk in listed]
        record_uses(kairos, uses)
    return {
        "items": [{"profile_id": profile_id_for(pk)} for pk in listed],
        "next_cursor": encode_cursor(after) if more and after is not None else None,
    }


def preview(kairos: Kairos, body: Any, sample: int = PREVIEW_SAMPLE) -> dict[str, Any]:
    """How many profiles a rule selects now, and a few of them, without saving it.

    Up to ``EXACT_UP_TO`` profiles every one is evaluated; beyond, a spread sample of about ``SAMPLED``
    of them (by key: see ``scan_profiles``), and the size is estimated from it with a 95% margin, so that
    the answer comes back while someone is typing. Saving the segment gives the exact size."""
    stored = segment_body(body)
    candidate = compile_definition(Definition("segment", "preview", 0, 0, stored, False, 0, 0))
    assert isinstance(candidate, SegmentDef)
    catalog: Catalog = kairos.definitions()
    sources = [p for p in kairos.projections if p.name not in ("segments", "moments", "timeline")]
    codec = kairos.codec
    now = kairos.clock.now()
    reads = candidate.rule.references.variables
    # Read and decode only the state the rule reads (most of a row's bytes are state it does not).
    needed = {"counters"}  # the profile's times are also the fallback of `now`-free rules: cheap, always read
    if "traits" in reads:
        needed |= {p.name for p in sources if type(p).traits is not Projection.traits}
    if "consents" in reads:
        needed.add("consents")
    if "segments" in reads:
        needed.add("segments")
    columns = codec.columns_of(needed)
    started = time.perf_counter()
    total = kairos.store.state.count_profiles()
    spread = None if total <= EXACT_UP_TO else (SAMPLE_MODULUS, max(1, SAMPLE_MODULUS * SAMPLED // total))
    size = scanned = 0
    found: list[str] = []
    after = 0
    keys = None if candidate.traits_dynamic else set(candidate.traits)
    rule = candidate.rule
    failed_before = rule.errors
    deadline = started + PREVIEW_SECONDS
    with gc_paused():  # tens of thousands of short-lived states: no cyclic collection rescanning the heap
        while True:
            rows = kairos.store.state.scan_profiles(after, 2000, spread, columns, identities="identities" in reads)
            if not rows:
                break
            for row in rows:
                scanned += 1
                profile = codec.partial_state(row, needed)
                members = profile.sections.get("segments") or {}
                if rule.evaluate(profile_variables(profile, sources, members, now, reads, keys)):
                    size += 1
                    if len(found) < sample:
                        found.append(profile.id)
                if time.perf_counter() > deadline:
                    raise ValidationError(
                        f"the rule took more than {PREVIEW_SECONDS:g} s over {scanned} profiles (of about "
                        f"{min(total, SAMPLED)} to preview): it is too costly to run on every event; simplify it "
                        "(nested map() or filter() over lists multiply)",
                        code="rule_too_costly",
                        field="rule",
                    )
            after = rows[-1].pk
    out: dict[str, Any] = {"size": size, "sample": found, "exact": spread is None, "scanned": scanned}
    out["errors"] = rule.errors - failed_before  # failed (a missing key, CEL's iteration budget): not selected
    if spread is not None and scanned:
        share = size / scanned
        out["size"] = round(share * total)
        out["margin"] = round(1.96 * math.sqrt(share * (1 - share) / scanned) * total)
    out["took_ms"] = round((time.perf_counter() - started) * 1000, 1)
    out["segments_defined"] = len(catalog.segments)
    return out


def put_definition(kairos: Kairos, request: Request, body: Any) -> tuple[dict[str, Any], int]:
    return save(kairos, _kind(request), request.path_params["key"], body)


def get_definition(kairos: Kairos, request: Request, body: Any) -> dict[str, Any]:
    return _get(kairos, _kind(request), request.path_params["key"])


def delete_definition(kairos: Kairos, request: Request, body: Any) -> dict[str, Any]:
    return remove(kairos, _kind(request), request.path_params["key"])


def list_definitions(kairos: Kairos, request: Request, body: Any) -> dict[str, Any]:
    known_query(request)  # no parameters: the whole list (no paging yet)
    return _list(kairos, _kind(request))


def get_members(kairos: Kairos, request: Request, body: Any) -> dict[str, Any]:
    known_query(request, "limit", "cursor", "purpose", "recipient")
    q = request.query_params
    recipient = q.get("recipient", "")
    if len(recipient) > 100 or "\x00" in recipient:
        raise ValidationError(
            "recipient is at most 100 characters, without NUL", code="invalid_query", field="recipient"
        )
    return _members(
        kairos,
        request.path_params["key"],
        query_limit(request, 100, MAX_LIMIT),
        q.get("cursor"),
        q.get("purpose"),
        recipient or "unnamed",
    )


def post_preview(kairos: Kairos, request: Request, body: Any) -> dict[str, Any]:
    return preview(kairos, body)


_ONE: dict[str, tuple[Scope, Work, bool]] = {
    "PUT": ("admin", put_definition, True),
    "GET": ("read", get_definition, False),
    "DELETE": ("admin", delete_definition, False),
}


def _audit(kind: str) -> dict[str, str]:
    return {"PUT": f"{kind}.put", "DELETE": f"{kind}.delete"}


routes = [
    Route("/v1/traits", endpoint({"GET": ("read", list_definitions, False)}), methods=["GET"]),
    Route("/v1/traits/{key}", endpoint(_ONE, _audit("traits")), methods=list(_ONE)),
    Route("/v1/segments", endpoint({"GET": ("read", list_definitions, False)}), methods=["GET"]),
    Route("/v1/segments:preview", endpoint({"POST": ("read", post_preview, True)}), methods=["POST"]),
    Route("/v1/segments/{key}/members", endpoint({"GET": ("read", get_members, False)}), methods=["GET"]),
    Route("/v1/segments/{key}", endpoint(_ONE, _audit("segments")), methods=list(_ONE)),
    Route("/v1/moments", endpoint({"GET": ("read", list_definitions, False)}), methods=["GET"]),
    Route("/v1/moments/{key}", endpoint(_ONE, _audit("moments")), methods=list(_ONE)),
]

"""The decision API: the offer catalogue, ``POST /v1/decide``, ``POST /v1/rewards``, and the reports.

Offers need the ``admin`` scope to change (recorded in the audit log) and ``read`` to see; deciding and
rewarding need ``decide``. The decision path reads the cached profile and answers after the decision is
logged (``docs/decide.md``).
"""

from __future__ import annotations

import math
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from kairos.api._common import Work, endpoint, error_response, json_body, json_response, known_query, require_scope
from kairos.api._writer import GroupWriter
from kairos.decide import reports
from kairos.decide.engine import Decider, decide_request
from kairos.decide.offers import KIND, offer_body
from kairos.definitions import check_key, checked_write
from kairos.errors import ConflictError, KairosError, NotFoundError, ValidationError, unknown_field
from kairos.runtime import Kairos
from kairos.scopes import Scope
from kairos.store import DecisionRow, Definition

__all__ = ["add_reward", "get_offer", "offer_view", "remove_offer", "routes", "save_offer"]

MAX_DECIDE_BODY = 16 * 1024


def decider(request: Request) -> Decider:
    found: Decider = request.app.state.decider
    return found


def offer_view(kairos: Kairos, d: Definition) -> dict[str, Any]:
    impressions = kairos.store.decisions.impressions([d.key]).get(d.key, 0)
    out: dict[str, Any] = {"key": d.key, **d.body, "version": d.version}
    out.update(created_at=d.created_at, updated_at=d.updated_at, impressions=impressions)
    budget = (d.body.get("budget") or {}).get("impressions")
    if budget is not None:
        out["budget_left"] = max(0, budget - impressions)
    return out


def save_offer(kairos: Kairos, key: str, body: Any) -> tuple[dict[str, Any], int]:
    """Validate and store an offer; 201 when created, else 200. Decisions see it within a second."""
    check_key(key, KIND)
    stored = offer_body(body)
    kairos.consent_policy.check(stored["purpose"])
    return checked_write(lambda: _save_offer(kairos, key, stored))


def _save_offer(kairos: Kairos, key: str, stored: dict[str, Any]) -> tuple[dict[str, Any], int]:
    admin = kairos.store.admin
    revision = admin.definitions_revision()  # what follows is read at it; the write fails if it moved
    old = admin.definition(KIND, key)
    if old is None and len(admin.definitions(KIND)) >= kairos.settings.decide.max_offers:
        raise ValidationError(
            f"the catalogue holds at most {kairos.settings.decide.max_offers} offers (decide.max_offers)",
            code="too_many",
            field="key",
        )
    d, changed = admin.put_definition(KIND, key, stored, kairos.clock.now(), expect_revision=revision)
    view = offer_view(kairos, d)
    view["changed"] = changed
    return view, 201 if changed and old is None else 200


def remove_offer(kairos: Kairos, key: str) -> dict[str, Any]:
    check_key(key, KIND)
    d = kairos.store.admin.delete_definition(KIND, key, kairos.clock.now())
    return {"key": key, "deleted": True, "version": d.version}


def get_offer(kairos: Kairos, key: str) -> Definition:
    """The stored offer ``key``, or a 404."""
    check_key(key, KIND)
    d = kairos.store.admin.definition(KIND, key)
    if d is None:
        raise NotFoundError(f"no offer named {key!r}", field="key")
    return d


def add_reward(kairos: Kairos, body: Any) -> dict[str, Any]:
    """Record a reward for a shown item. The first reward of an item wins (a repeat answers
    ``status: "duplicate"``); after the wait (``decide.reward_wait_seconds``) the item is closed (409)."""
    if not isinstance(body, dict):
        raise ValidationError("the body must be a JSON object", code="invalid_body", field="body")
    extra = sorted(set(body) - {"decision_id", "offer_id", "reward"})
    if extra:
        raise unknown_field(extra[0])
    decision_id = body.get("decision_id")
    if decision_id is None:
        raise ValidationError("decision_id is required", code="missing_field", field="decision_id")
    # ASCII without control characters: PostgreSQL refuses a NUL in a text parameter (a 500, not a 404).
    if (
        not isinstance(decision_id, str)
        or not 1 <= len(decision_id) <= 64
        or not decision_id.isascii()
        or not decision_id.isprintable()
    ):
        raise ValidationError("decision_id is the id a decision answered", field="decision_id")
    offer = body.get("offer_id")
    if offer is None:
        raise ValidationError("offer_id is required", code="missing_field", field="offer_id")
    if not isinstance(offer, str):
        raise ValidationError("offer_id must be a string", field="offer_id")
    reward = body.get("reward")
    if reward is None:
        raise ValidationError("reward is required: a number, e.g. 1 for a click", code="missing_field", field="reward")
    if isinstance(reward, bool) or not isinstance(reward, int | float) or not math.isfinite(reward):
        raise ValidationError("reward must be a finite number", field="reward")
    low, high = kairos.settings.decide.reward_range
    if not low <= reward <= high:
        raise ValidationError(f"reward is from {low:g} to {high:g} (decide.reward_range)", field="reward")
    decisions = kairos.store.decisions
    row = decisions.decision(decision_id)
    if row is None:
        raise NotFoundError("no decision with this id", code="unknown_decision", field="decision_id")
    if offer not in row.offers:
        raise ValidationError("this offer was not shown in this decision", code="offer_not_shown", field="offer_id")
    now = kairos.clock.now()
    if row.closed or now >= row.closes_at:
        raise ConflictError(
            "the decision's wait for rewards is over (decide.reward_wait_seconds): its outcome is recorded",
            code="decision_closed",
            field="decision_id",
        )
    (first,) = decisions.add_rewards([(decision_id, offer, float(reward), now, "api")])
    if not first:  # the item's first reward stands: answer it, not the one refused
        stored = next((r for r in decisions.rewards_of([decision_id]) if r.offer == offer), None)
        reward = stored.reward if stored is not None else reward
    return {
        "decision_id": decision_id,
        "offer_id": offer,
        "reward": float(reward),
        "status": "recorded" if first else "duplicate",
    }


async def decide(request: Request) -> Response:
    try:
        await require_scope(request, "decide")
        body = await json_body(request, MAX_DECIDE_BODY)
        req = decide_request(body)
        found = decider(request)
        if found.on_loop:
            decision = found.decide(req)
        else:
            decision = await run_in_threadpool(found.decide, req)
        writer: GroupWriter[DecisionRow, None] = request.app.state.decision_writer
        await writer.submit(decision.row)  # answered only once the decision is in the log
        answer = decision.answer
    except KairosError as exc:
        return error_response(exc)
    return json_response(answer)


def _put(kairos: Kairos, request: Request, body: Any) -> tuple[dict[str, Any], int]:
    return save_offer(kairos, request.path_params["key"], body)


def _get(kairos: Kairos, request: Request, body: Any) -> dict[str, Any]:
    return offer_view(kairos, get_offer(kairos, request.path_params["key"]))


def _delete(kairos: Kairos, request: Request, body: Any) -> dict[str, Any]:
    return remove_offer(kairos, request.path_params["key"])


def _list(kairos: Kairos, request: Request, body: Any) -> dict[str, Any]:
    known_query(request)  # the catalogue is bounded (decide.max_offers): no paging
    return {"items": [offer_view(kairos, d) for d in kairos.store.admin.definitions(KIND)]}


def _reward(kairos: Kairos, request: Request, body: Any) -> dict[str, Any]:
    return add_reward(kairos, body)


def _period(kairos: Kairos, request: Request) -> reports.Period:
    known_query(request, "from", "to")
    q = request.query_params
    return reports.period(q.get("from"), q.get("to"), kairos.clock.now())


def _stats(kairos: Kairos, request: Request, body: Any) -> dict[str, Any]:
    d = get_offer(kairos, request.path_params["key"])
    return reports.offer(kairos.store.decisions, d.key, _period(kairos, request))


def _decisions_report(kairos: Kairos, request: Request, body: Any) -> dict[str, Any]:
    policy = decider(request).holder.current().policy
    return reports.decisions(kairos.store.decisions, policy, _period(kairos, request))


def _experience_report(kairos: Kairos, request: Request, body: Any) -> dict[str, Any]:
    threshold = kairos.settings.decide.experience_threshold
    return reports.experience(kairos.store.decisions, _period(kairos, request), threshold)


_ONE: dict[str, tuple[Scope, Work, bool]] = {
    "PUT": ("admin", _put, True),
    "GET": ("read", _get, False),
    "DELETE": ("admin", _delete, False),
}
routes = [  # the decision path's first (kairos.api.app tries routes in order)
    Route("/v1/decide", decide, methods=["POST"]),
    Route("/v1/rewards", endpoint({"POST": ("decide", _reward, True)}), methods=["POST"]),
    Route("/v1/offers", endpoint({"GET": ("read", _list, False)}), methods=["GET"]),
    Route("/v1/offers/{key}", endpoint(_ONE, {"PUT": "offers.put", "DELETE": "offers.delete"}), methods=list(_ONE)),
    Route("/v1/offers/{key}/stats", endpoint({"GET": ("read", _stats, False)}), methods=["GET"]),
    Route("/v1/reports/decisions", endpoint({"GET": ("read", _decisions_report, False)}), methods=["GET"]),
    Route("/v1/reports/experience", endpoint({"GET": ("read", _experience_report, False)}), methods=["GET"]),
]

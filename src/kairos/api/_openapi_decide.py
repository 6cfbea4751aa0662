"""The OpenAPI paths and schemas of the decision API (offers, decide, rewards, reports)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["decide_paths", "decide_schemas"]

Op = Callable[..., dict[str, Any]]
_TEXT = {"type": "string"}
_NUMBER = {"type": "number"}
_INT = {"type": "integer"}
_STAMP = {"type": "string", "format": "date-time"}
_NAMES = {"type": "array", "items": _TEXT}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def decide_paths(op: Op, key: dict[str, Any]) -> dict[str, Any]:
    tag = "decide"
    put = op(tag, "Create or change an offer (decisions see it within a second)", "admin", "Offer", "OfferBody")
    put["parameters"] = [key]
    put["responses"]["201"] = {"description": "Created", "content": {"application/json": {"schema": _ref("Offer")}}}
    decide = op(tag, "What this person should see now, here, on this channel", "decide", "Decision", "DecideBody")
    decide["responses"]["404"] = {"description": "Not used: an unknown person gets a context-only answer."}
    reward = op(tag, "The reward of a shown item (the first one wins)", "decide", "Reward", "RewardBody")
    reward["responses"]["409"] = {
        "description": "The decision's wait for rewards is over (`decision_closed`).",
        "content": {"application/json": {"schema": _ref("Error")}},
    }
    window = [
        {
            "name": "from",
            "in": "query",
            "schema": {"type": "string"},
            "description": "ISO 8601; default: 30 days before to",
        },
        {"name": "to", "in": "query", "schema": {"type": "string"}, "description": "ISO 8601; default: now"},
    ]
    reports = "reports"
    return {
        "/v1/offers/{key}/stats": {
            "get": {
                **op(
                    tag, "Impressions, rewards and rates with intervals, by group, uplift vs control", "read", "Report"
                ),
                "parameters": [key, *window],
            }
        },
        "/v1/reports/decisions": {
            "get": {
                **op(
                    reports,
                    "Decisions by group, uplift vs control, and off-policy estimates (IPS, SNIPS, DR) of the current"
                    " policy and the baseline",
                    "read",
                    "Report",
                ),
                "parameters": window,
            }
        },
        "/v1/reports/experience": {
            "get": {
                **op(
                    reports,
                    "Which experience the business delivers (mass, niche, targeted, one-to-one), per channel",
                    "read",
                    "Report",
                ),
                "parameters": window,
            }
        },
        "/v1/offers": {"get": op(tag, "The offer catalogue", "read", "OfferList")},
        "/v1/offers/{key}": {
            "put": put,
            "get": {**op(tag, "One offer", "read", "Offer"), "parameters": [key]},
            "delete": {**op(tag, "Delete an offer", "admin", "Deleted"), "parameters": [key]},
        },
        "/v1/decide": {"post": decide},
        "/v1/rewards": {"post": reward},
    }


def decide_schemas() -> dict[str, Any]:
    fields: dict[str, Any] = {
        "name": _TEXT,
        "content": {"type": "object", "additionalProperties": True, "description": "channel -> any JSON"},
        "channels": _NAMES,
        "placements": _NAMES,
        "attributes": {"type": "object", "additionalProperties": {"type": ["string", "number", "boolean"]}},
        "eligibility": {**_TEXT, "description": "CEL over profile, segments, traits, context, moments."},
        "purpose": _TEXT,
        "contact_policy": {
            "type": "object",
            "properties": {
                "max_impressions": _INT,
                "window": _TEXT,
                "suppress_after_ignored": _INT,
                "suppress_for": _TEXT,
            },
        },
        "active_from": _STAMP,
        "active_to": _STAMP,
        "value": _NUMBER,
        "weight": _NUMBER,
        "budget": {"type": "object", "properties": {"impressions": _INT}},
        "description": _TEXT,
    }
    offer = {
        "type": "object",
        "required": ["key", "name", "purpose", "value", "weight", "version", "impressions"],
        "properties": {
            **fields,
            "key": _TEXT,
            "version": _INT,
            "created_at": _INT,
            "updated_at": _INT,
            "impressions": _INT,
            "budget_left": _INT,
            "changed": {"type": "boolean"},
        },
    }
    reasons = {
        "type": "object",
        "required": ["group", "eligibility", "segments", "explored", "features"],
        "properties": {
            "group": {"enum": ["policy", "control", "not_personalized"]},
            "eligibility": {"type": ["string", "null"]},
            "segments": _NAMES,
            "explored": {"type": "boolean"},
            "features": {
                "type": "array",
                "items": {"type": "object", "properties": {"feature": _TEXT, "weight": _NUMBER}},
            },
            "baseline": _TEXT,
        },
    }
    item = {
        "type": "object",
        "required": ["offer_id", "content", "score", "propensity", "explored", "reasons"],
        "properties": {
            "offer_id": _TEXT,
            "name": _TEXT,
            "content": {"description": "The offer's content for the channel (any JSON), or null."},
            "score": _NUMBER,
            "propensity": _NUMBER,
            "explored": {"type": "boolean"},
            "reasons": reasons,
        },
    }
    return {
        "Report": {
            "type": "object",
            "additionalProperties": True,
            "description": "The shapes are documented field by field in docs/reports.md.",
        },
        "OfferBody": {"type": "object", "required": ["name"], "properties": fields},
        "Offer": offer,
        "OfferList": {
            "type": "object",
            "required": ["items"],
            "properties": {"items": {"type": "array", "items": offer}},
        },
        "DecideBody": {
            "type": "object",
            "required": ["profile", "channel"],
            "properties": {
                "profile": {**_TEXT, "description": "A profile id or type:value."},
                "channel": {**_TEXT, "description": 'A channel, or "auto".'},
                "placement": _TEXT,
                "context": {"type": "object", "additionalProperties": True},
                "limit": {"type": "integer", "minimum": 1, "maximum": 20},
            },
        },
        "Decision": {
            "type": "object",
            "required": ["decision_id", "profile_id", "channel", "group", "items"],
            "properties": {
                "decision_id": _TEXT,
                "profile_id": {"type": ["string", "null"]},
                "channel": _TEXT,
                "placement": {"type": ["string", "null"]},
                "group": {"enum": ["policy", "control", "not_personalized"]},
                "policy": {**_TEXT, "description": "The learner that ranked the items (priority: the baseline)."},
                "policy_version": {**_INT, "description": "The policy snapshot it used (0: not trained yet)."},
                "items": {"type": "array", "items": item},
            },
        },
        "RewardBody": {
            "type": "object",
            "required": ["decision_id", "offer_id", "reward"],
            "properties": {
                "decision_id": _TEXT,
                "offer_id": _TEXT,
                "reward": {**_NUMBER, "description": "Within `decide.reward_range`, `[-1, 1]` by default."},
            },
        },
        "Reward": {
            "type": "object",
            "required": ["decision_id", "offer_id", "reward", "status"],
            "properties": {
                "decision_id": _TEXT,
                "offer_id": _TEXT,
                "reward": _NUMBER,
                "status": {"enum": ["recorded", "duplicate"]},
            },
        },
    }

"""The OpenAPI description of export and erasure (``/v1/privacy/export``, ``/v1/privacy/erase``, and
``/v1/privacy/requests/{id}``)."""

from __future__ import annotations

from typing import Any

__all__ = ["erasure_paths", "erasure_schemas"]


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref("Error")}}}


def _op(summary: str, description: str, ok: str, schema: str, body: str | None) -> dict[str, Any]:
    op: dict[str, Any] = {
        "tags": ["privacy"],
        "summary": summary,
        "description": description,
        "security": [{"apiKey": []}],
        "x-kairos-scope": "privacy",
        "responses": {
            ok: {"description": "OK", "content": {"application/json": {"schema": _ref(schema)}}},
            "400": _error("Malformed body, unknown field, or a reference that is not one."),
            "401": _error("Missing or unknown API key."),
            "403": _error("The key lacks the `privacy` scope."),
            "404": _error("No profile matches the reference (field `profile`), or no such request (field `id`)."),
        },
    }
    if body is not None:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": _ref(body)}}}
        op["responses"]["413"] = _error("Body too large.")
    return op


def erasure_paths() -> dict[str, Any]:
    return {
        "/v1/privacy/export": {
            "post": _op(
                "Everything held about one person",
                "Profile, identities, events, decisions with rewards, deliveries, moments, the rows of every "
                "per-profile table (consent ledger included) and the data-use ledger; `format` names the "
                "document's version (docs/privacy.md).",
                "200",
                "PrivacyExport",
                "PrivacyRef",
            )
        },
        "/v1/privacy/erase": {
            "post": _op(
                "Erase one person from every store and cache",
                "Records the request and answers at once (202); the processor carries it out once it has "
                "applied every event received before it. `suppress`: keep keyed hashes of the person's "
                "identifiers so that later events about them are dropped.",
                "202",
                "PrivacyRequestCreated",
                "PrivacyErase",
            )
        },
        "/v1/privacy/requests/{id}": {
            "get": {
                **_op(
                    "Where an erasure request stands",
                    "`complete` only once every step is done; `steps` holds counts, never personal data.",
                    "200",
                    "PrivacyRequest",
                    None,
                ),
                "parameters": [
                    {
                        "name": "id",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string", "pattern": "^pr_[0-9a-f]{32}$"},
                    }
                ],
            }
        },
    }


def erasure_schemas() -> dict[str, Any]:
    ref = {"type": "string", "minLength": 1, "maxLength": 600, "description": "A profile id or `type:value`."}
    stamp = {"type": "string", "format": "date-time"}
    status = {"enum": ["pending", "running", "complete", "failed"]}
    rows = {"type": "array", "items": {"type": "object", "additionalProperties": True}}
    return {
        "PrivacyRef": {"type": "object", "required": ["profile"], "properties": {"profile": ref}},
        "PrivacyErase": {
            "type": "object",
            "required": ["profile"],
            "properties": {"profile": ref, "suppress": {"type": "boolean", "default": False}},
        },
        "PrivacyRequestCreated": {
            "type": "object",
            "required": ["request_id", "status"],
            "properties": {"request_id": {"type": "string"}, "status": status},
        },
        "PrivacyRequest": {
            "type": "object",
            "required": ["request_id", "kind", "status", "created_at", "finished_at", "steps"],
            "properties": {
                "request_id": {"type": "string"},
                "kind": {"const": "erase"},
                "status": status,
                "created_at": stamp,
                "finished_at": {"type": ["string", "null"], "format": "date-time"},
                "steps": {"type": "object", "additionalProperties": True},
            },
        },
        "PrivacyExport": {
            "type": "object",
            "required": [
                *("format", "export_id", "exported_at", "profile", "merged_ids", "identities", "events", "decisions"),
                *("deliveries", "moments", "records", "data_uses"),
            ],
            "properties": {
                "format": {"const": "kairos.export/1"},
                "export_id": {"type": "string", "description": "The data-use ledger's reference of this export."},
                "exported_at": stamp,
                "profile": _ref("Profile"),
                "merged_ids": {"type": "array", "items": {"type": "string"}},
                "identities": rows,
                "events": rows,
                "decisions": rows,
                "deliveries": rows,
                "moments": rows,
                "records": {"type": "object", "additionalProperties": rows},
                "data_uses": {"type": ["array", "null"], "items": {"type": "object", "additionalProperties": True}},
            },
        },
    }

"""The OpenAPI paths and schemas of the privacy routes (consents, the data-use ledger; export, erasure and the
preference-centre links add theirs here)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["privacy_paths", "privacy_schemas"]

Op = Callable[..., dict[str, Any]]
_TEXT = {"type": "string"}
_TEXT_OR_NULL = {"type": ["string", "null"]}
_STAMP = {"type": "string", "format": "date-time"}
_STAMP_OR_NULL = {"type": ["string", "null"], "format": "date-time"}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def privacy_paths(op: Op, ref: dict[str, Any]) -> dict[str, Any]:
    get = op("privacy", "The person's consents per purpose, and the ledger of their changes", "read", "Consents")
    get["parameters"] = [ref]
    get["responses"]["404"]["description"] = "No such profile."
    put = op(
        "privacy",
        "Record the person's consents (appended to the log; the answer waits for it to be applied)",
        "write",
        "Consents",
        "ConsentsBody",
    )
    put["parameters"] = [ref]
    put["responses"]["404"]["description"] = "No such profile."
    put["responses"]["202"] = {
        "description": "Accepted: the processor is behind and will apply it (`privacy.apply_wait_seconds`).",
        "content": {"application/json": {"schema": _ref("ConsentsAccepted")}},
    }
    put["responses"]["413"] = {
        "description": "Body too large.",
        "content": {"application/json": {"schema": _ref("Error")}},
    }
    uses = op("privacy", "The uses of the person's data, newest first (the data-use ledger)", "read", "DataUses")
    limit = {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000}}
    uses["parameters"] = [ref, limit]
    uses["responses"]["404"]["description"] = "No such profile."
    return {"/v1/profiles/{ref}/consents": {"get": get, "put": put}, "/v1/profiles/{ref}/data-uses": {"get": uses}}


def privacy_schemas() -> dict[str, Any]:
    consent = {
        "type": "object",
        "required": ["granted", "stated", "default", "source", "updated_at", "text_version", "title", "text"],
        "properties": {
            "granted": {"type": "boolean", "description": "Whether the purpose is allowed now."},
            "stated": {"type": "boolean", "description": "The person's own word (else the purpose's default)."},
            "default": {"enum": ["opt_in", "opt_out", None]},
            "source": _TEXT_OR_NULL,
            "updated_at": _STAMP_OR_NULL,
            "text_version": {**_TEXT_OR_NULL, "description": "Version of the text the person was shown."},
            "title": _TEXT,
            "text": _TEXT_OR_NULL,
            "version": {**_TEXT_OR_NULL, "description": "Current version of the purpose's text."},
        },
    }
    change = {
        "type": "object",
        "required": ["purpose", "granted", "at", "source", "text_version", "seq"],
        "properties": {
            "purpose": _TEXT,
            "granted": {"type": "boolean"},
            "at": _STAMP,
            "source": _TEXT,
            "text_version": _TEXT_OR_NULL,
            "seq": {"type": "integer", "description": "Log position of the event that said it."},
        },
    }
    use = {
        "type": "object",
        "required": ["at", "purpose", "use", "recipient", "ref"],
        "properties": {
            "at": _STAMP,
            "purpose": _TEXT,
            "use": {"enum": ["decision", "delivery", "stream", "export", "segment_export"]},
            "recipient": {**_TEXT, "description": "A destination, a channel (decisions), `self` (exports)..."},
            "ref": {**_TEXT, "description": "The decision id, delivery id or request id."},
        },
    }
    return {
        "ConsentsBody": {
            "type": "object",
            "minProperties": 1,
            "additionalProperties": {"type": "boolean"},
            "description": 'Configured purpose → granted, e.g. `{"marketing_email": false}`.',
        },
        "Consents": {
            "type": "object",
            "required": ["profile_id", "consents", "ledger"],
            "properties": {
                "profile_id": _TEXT,
                "consents": {"type": "object", "additionalProperties": consent},
                "ledger": {"type": "array", "items": change, "description": "Newest first (at most 200)."},
            },
        },
        "ConsentsAccepted": {
            "type": "object",
            "required": ["profile_id", "status", "seq"],
            "properties": {"profile_id": _TEXT, "status": {"enum": ["accepted"]}, "seq": {"type": "integer"}},
        },
        "DataUses": {
            "type": "object",
            "required": ["profile_id", "items"],
            "properties": {"profile_id": _TEXT, "items": {"type": "array", "items": use}},
        },
    }

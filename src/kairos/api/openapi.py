"""The OpenAPI 3.1 description served at ``/openapi.json``; a test checks it names every route."""

from __future__ import annotations

from functools import cache
from typing import Any

from kairos import __version__
from kairos.api._openapi_centre import centre_paths, centre_schemas
from kairos.api._openapi_decide import decide_paths, decide_schemas
from kairos.api._openapi_erasure import erasure_paths, erasure_schemas
from kairos.api._openapi_privacy import privacy_paths, privacy_schemas
from kairos.collect import EVENT_TYPES, SHORT_PATHS

__all__ = ["SCOPE", "spec"]

# The API-key scope an operation needs, declared once here: tests/test_route_scopes.py checks that each
# route enforces exactly this scope, and fails for a route that declares none (unless public by design).
SCOPE = "x-kairos-scope"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref("Error")}}}


def _collect_op(name: str, short: str | None = None) -> dict[str, Any]:
    body = _ref("Batch") if name == "batch" else _ref("Event")
    return {
        "post": {
            "tags": ["collect"],
            "summary": f"Segment {name}" + (f" (browser short path for /v1/{name})" if short else ""),
            "description": "Write key as HTTP Basic user name, or `writeKey` in the body. JSON may be sent as "
            "`text/plain`; `Content-Encoding: gzip` is accepted. 32 KB per event, 500 KB per request.",
            "security": [{"writeKeyBasic": []}, {}],
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": body}, "text/plain": {"schema": body}},
            },
            "responses": {
                "200": {
                    "description": "Every event is durably in the log.",
                    "content": {
                        "application/json": {"schema": {"type": "object", "properties": {"success": {"const": True}}}}
                    },
                },
                "400": {
                    "description": "Some or all events were rejected; `accepted` were stored.",
                    "content": {"application/json": {"schema": _ref("CollectRejected")}},
                },
                "401": _error("Missing or unknown write key."),
                "403": _error("The source is disabled."),
                "413": _error("Body or event too large."),
            },
        }
    }


def _read_op(summary: str, schema: str, params: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "get": {
            "tags": ["profiles"],
            "summary": summary,
            "security": [{"apiKey": []}],
            SCOPE: "read",
            "parameters": params,
            "responses": {
                "200": {"description": "OK", "content": {"application/json": {"schema": _ref(schema)}}},
                "400": _error("Bad parameter."),
                "401": _error("Missing or unknown API key."),
                "403": _error("The key lacks the `read` scope."),
                "404": _error("No such profile."),
            },
        }
    }


def _discover_op() -> dict[str, Any]:
    return {
        "post": {
            "tags": ["segments"],
            "summary": "Discover micro-segments: cluster profiles on numeric traits, each with a CEL rule",
            "description": "k-means on standardised features (fixed seed); `k` null picks 2..8 by the best "
            "silhouette on a sample. Profiles missing a feature are excluded and counted. Each cluster's rule "
            "comes from a depth-3 decision tree; precision and recall are those of the rule as written.",
            "security": [{"apiKey": []}],
            SCOPE: "read",
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": _ref("MicrosegmentsRequest")}},
            },
            "responses": {
                "200": {"description": "OK", "content": {"application/json": {"schema": _ref("Microsegments")}}},
                "400": _error("Bad request: unknown or non-numeric feature, k out of range, too few profiles."),
                "401": _error("Missing or unknown API key."),
                "403": _error("The key lacks the `read` scope."),
                "413": _error("Body too large."),
            },
        }
    }


def _discover_schemas() -> dict[str, Any]:
    number = {"type": "number"}
    cluster = {
        "type": "object",
        "required": ["size", "share", "centroid", "rule", "precision", "recall"],
        "properties": {
            "size": {"type": "integer"},
            "share": number,
            "centroid": {"type": "object", "additionalProperties": number},
            "rule": {"type": "string", "description": "CEL over `traits`, ready to save as a segment."},
            "precision": number,
            "recall": number,
        },
    }
    return {
        "MicrosegmentsRequest": {
            "type": "object",
            "required": ["features"],
            "properties": {
                "features": {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": 20},
                "k": {"type": ["integer", "null"], "minimum": 2, "maximum": 20},
            },
        },
        "Microsegments": {
            "type": "object",
            "required": ["features", "k", "k_chosen_by", "profiles", "excluded", "clusters"],
            "properties": {
                "features": {"type": "array", "items": {"type": "string"}},
                "k": {"type": "integer"},
                "k_chosen_by": {"enum": ["given", "silhouette"]},
                "silhouette": {"type": "object", "additionalProperties": number, "description": "Score per k."},
                "profiles": {"type": "integer", "description": "Profiles holding every feature."},
                "excluded": {"type": "integer", "description": "Profiles missing a feature."},
                "clusters": {"type": "array", "items": cluster},
            },
        },
    }


_REF = {
    "name": "ref",
    "in": "path",
    "required": True,
    "schema": {"type": "string"},
    "description": "A profile id, or any identity as `type:value` (e.g. `email:jane@example.com`).",
}
_LIMIT = {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 200}}
_CURSOR = {
    "name": "cursor",
    "in": "query",
    "schema": {"type": "string"},
    "description": "`next_cursor` of the previous page.",
}


DERIVED_ITEMS = ("segment_entered", "segment_exited", "moment")
_KEY = {
    "name": "key",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_]{0,63}$"},
}


def _audit_op() -> dict[str, Any]:
    op = _op(
        "security",
        "The audit log of admin and privacy actions, newest first",
        "admin",
        "AuditLog",
        description="Every change made with an admin key (definitions, offers, destinations, retries), the "
        "privacy actions, and the CLI's key and source commands. No personal data: targets are definition "
        "keys, key ids, profile ids or request ids.",
    )
    del op["responses"]["404"]
    op["parameters"] = [
        {**_LIMIT, "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}},
        _CURSOR,
        {
            "name": "action",
            "in": "query",
            "description": "Only this action, e.g. `segments.put`, `keys.rotate`, `privacy.erase`.",
            "schema": {"type": "string", "pattern": "^[a-z][a-z0-9_]*(\\.[a-z][a-z0-9_]*)+$", "maxLength": 64},
        },
    ]
    return {"get": op}


def _audit_schemas(stamp: dict[str, Any], cursor: dict[str, Any]) -> dict[str, Any]:
    nullable_text = {"type": ["string", "null"]}
    entry = {
        "type": "object",
        "required": ["id", "at", "actor", "key_id", "key_name", "action", "target", "outcome", "detail"],
        "properties": {
            "id": {"type": "integer"},
            "at": stamp,
            "actor": {"enum": ["api", "cli"]},
            "key_id": nullable_text,
            "key_name": nullable_text,
            "action": {"type": "string"},
            "target": {"type": "string"},
            "outcome": {"type": "integer", "description": "The HTTP status answered (200 for the CLI)."},
            "detail": {"type": ["object", "null"], "additionalProperties": True},
        },
    }
    return {
        "AuditEntry": entry,
        "AuditLog": {
            "type": "object",
            "required": ["items", "next_cursor"],
            "properties": {"items": {"type": "array", "items": _ref("AuditEntry")}, "next_cursor": cursor},
        },
    }


def _rate_limited(paths: dict[str, Any]) -> None:
    """``429`` on every operation a key or a write key authenticates: those the rate limits count."""
    for item in paths.values():
        for op in item.values():
            if not any({"apiKey", "writeKeyBasic"} & set(s) for s in op.get("security", [])):
                continue
            op["responses"]["429"] = {
                **_error("Over the key's or the source's rate limit (`rate_limited`); retry after `Retry-After`."),
                "headers": {
                    "Retry-After": {
                        "description": "Seconds to wait (1 or more).",
                        "schema": {"type": "integer", "minimum": 1},
                    }
                },
            }


def _op(tag: str, summary: str, scope: str, ok: str | None, body: str | None = None, **extra: Any) -> dict[str, Any]:
    responses: dict[str, Any] = {
        "200": {"description": "OK", **({"content": {"application/json": {"schema": _ref(ok)}}} if ok else {})},
        "400": _error("Invalid definition or parameter (a rule error carries `position`, `line`, `column`)."),
        "401": _error("Missing or unknown API key."),
        "403": _error(f"The key lacks the `{scope}` scope."),
        "404": _error("No such definition."),
    }
    op: dict[str, Any] = {
        "tags": [tag],
        "summary": summary,
        "security": [{"apiKey": []}],
        SCOPE: scope,
        "responses": responses,
    }
    if body is not None:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": _ref(body)}}}
    op.update(extra)
    return op


def definition_paths() -> dict[str, Any]:
    """Computed traits and segments."""
    paths: dict[str, Any] = {}
    for kind, tag, body in (
        ("traits", "computed traits", "TraitBody"),
        ("segments", "segments", "SegmentBody"),
        ("moments", "moments", "MomentBody"),
    ):
        one = kind[:-1].capitalize()
        effect = "applies from the next event" if kind == "moments" else "backfills every profile"
        put = _op(tag, f"Create or change a {kind[:-1]} ({effect})", "admin", one, body)
        put["parameters"] = [_KEY]
        put["responses"]["201"] = {"description": "Created", "content": {"application/json": {"schema": _ref(one)}}}
        paths[f"/v1/{kind}"] = {"get": _op(tag, f"All {kind}", "read", f"{one}List")}
        paths[f"/v1/{kind}/{{key}}"] = {
            "put": put,
            "get": {**_op(tag, f"One {kind[:-1]}, with its backfill's progress", "read", one), "parameters": [_KEY]},
            "delete": {**_op(tag, f"Delete a {kind[:-1]}", "admin", "Deleted"), "parameters": [_KEY]},
        }
    paths["/v1/segments/{key}/members"] = {
        "get": {
            **_op("segments", "Profiles in the segment now", "read", "Members"),
            "parameters": [
                _KEY,
                {**_LIMIT, "schema": {"type": "integer", "minimum": 1, "maximum": 1000}},
                _CURSOR,
                {
                    "name": "purpose",
                    "in": "query",
                    "schema": {"type": "string"},
                    "description": "Sharing the segment for this consent purpose: only members who allow it are "
                    "listed, and each one's data-use ledger records the export.",
                },
                {
                    "name": "recipient",
                    "in": "query",
                    "schema": {"type": "string", "maxLength": 100},
                    "description": "Who receives the export (recorded in the data-use ledger).",
                },
            ],
        }
    }
    paths["/v1/segments:preview"] = {
        "post": _op("segments", "Size and a sample of a rule, without saving it", "read", "Preview", "SegmentBody")
    }
    return paths


def definition_schemas(stamp: dict[str, Any], cursor: dict[str, Any]) -> dict[str, Any]:
    text = {"type": "string"}
    backfill = {
        "type": "object",
        "required": ["status", "done", "total"],
        "properties": {
            "status": {"enum": ["pending", "running", "done"]},
            "done": {"type": "integer"},
            "total": {"type": ["integer", "null"]},
            "started_at": {"type": "integer", "description": "epoch ms"},
            "finished_at": {"type": ["integer", "null"], "description": "epoch ms"},
        },
    }
    warning = {
        "type": "object",
        "required": ["code", "field", "message"],
        "properties": {"code": text, "field": text, "message": text},
    }
    common = {
        "key": text,
        "description": text,
        "version": {"type": "integer"},
        "created_at": {"type": "integer", "description": "epoch ms"},
        "updated_at": {"type": "integer", "description": "epoch ms"},
        "backfill": backfill,
        "changed": {"type": "boolean", "description": "PUT only: false when the definition was already so."},
        "warnings": {"type": "array", "items": warning},
    }
    trait_fields: dict[str, Any] = {
        "aggregate": {
            "enum": ["count", "sum", "min", "max", "avg", "first", "last", "distinct_count", "most_frequent"]
        },
        "event": {**text, "description": "Only events (track) or pages/screens of this name."},
        "where": {**text, "description": "A CEL condition over the event (event, event_type, properties, ...)."},
        "property": {**text, "description": "Dotted path into the event's properties."},
        "window": {**text, "pattern": "^[1-9][0-9]{0,6}[mhd]$", "description": "e.g. 30d; none: all time"},
        "description": text,
    }
    trait_body = {"type": "object", "required": ["aggregate"], "properties": trait_fields}
    segment_fields: dict[str, Any] = {
        "rule": {**text, "description": "A CEL condition over the profile."},
        "description": text,
    }
    segment_body = {"type": "object", "required": ["rule"], "properties": segment_fields}
    size_point = {
        "type": "object",
        "required": ["date", "size", "entered", "exited"],
        "properties": {
            "date": {"type": "string", "format": "date"},
            "size": {"type": "integer"},
            "entered": {"type": "integer"},
            "exited": {"type": "integer"},
        },
    }
    trait = {
        "type": "object",
        "required": ["key", "aggregate", "version", "created_at", "updated_at", "backfill"],
        "properties": {**common, **trait_fields},
    }
    segment = {
        "type": "object",
        "required": ["key", "rule", "version", "created_at", "updated_at", "backfill", "size", "size_history"],
        "properties": {
            **common,
            **segment_fields,
            "size": {"type": "integer"},
            "size_history": {"type": "array", "items": size_point},
        },
    }
    step = {
        "type": "object",
        "required": ["event"],
        "properties": {"event": text, "where": {**text, "description": "A CEL condition over the event."}},
    }
    moment_fields: dict[str, Any] = {
        "when": {
            "type": "object",
            "description": "One pattern: event (+where), sequence + within, event + not_followed_by + within, "
            "segment_entered, segment_exited, or trait + crosses_above/crosses_below.",
            "properties": {
                "event": text,
                "where": text,
                "sequence": {"type": "array", "items": step, "minItems": 2, "maxItems": 10},
                "not_followed_by": step,
                "within": {**text, "pattern": "^[1-9][0-9]{0,6}[mhd]$"},
                "segment_entered": text,
                "segment_exited": text,
                "trait": text,
                "crosses_above": {"type": "number"},
                "crosses_below": {"type": "number"},
            },
        },
        "context": {**text, "description": "A CEL condition over the profile, the derived context and the event."},
        "cooldown": {**text, "pattern": "^[1-9][0-9]{0,6}[mhd]$"},
        "description": text,
    }
    moment = {
        "type": "object",
        "required": ["key", "when", "version", "created_at", "updated_at", "counts", "total"],
        "properties": {
            **{k: v for k, v in common.items() if k != "backfill"},
            **moment_fields,
            "counts": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["date", "fired"],
                    "properties": {"date": {"type": "string", "format": "date"}, "fired": {"type": "integer"}},
                },
            },
            "total": {"type": "integer"},
        },
    }
    return {
        "MomentBody": {"type": "object", "required": ["when"], "properties": moment_fields},
        "Moment": moment,
        "MomentList": {
            "type": "object",
            "required": ["items"],
            "properties": {"items": {"type": "array", "items": moment}},
        },
        "ProfileMoments": {
            "type": "object",
            "required": ["profile_id", "items", "next_cursor"],
            "properties": {
                "profile_id": text,
                "next_cursor": cursor,
                "items": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["moment", "at", "seqs", "version"],
                        "properties": {
                            "moment": text,
                            "at": stamp,
                            "seqs": {"type": "array", "items": {"type": "integer"}},
                            "version": {"type": ["integer", "null"]},
                        },
                    },
                },
            },
        },
        "TraitBody": trait_body,
        "SegmentBody": segment_body,
        "Trait": trait,
        "Segment": segment,
        "TraitList": {
            "type": "object",
            "required": ["items"],
            "properties": {"items": {"type": "array", "items": trait}},
        },
        "SegmentList": {
            "type": "object",
            "required": ["items"],
            "properties": {"items": {"type": "array", "items": segment}},
        },
        "Deleted": {
            "type": "object",
            "required": ["key", "deleted", "version"],
            "properties": {"key": text, "deleted": {"const": True}, "version": {"type": "integer"}},
        },
        "Members": {
            "type": "object",
            "required": ["items", "next_cursor"],
            "properties": {
                "items": {
                    "type": "array",
                    "items": {"type": "object", "required": ["profile_id"], "properties": {"profile_id": text}},
                },
                "next_cursor": cursor,
            },
        },
        "Preview": {
            "type": "object",
            "required": ["size", "sample"],
            "properties": {
                "size": {"type": "integer", "description": "exact, or estimated from a sample (`exact`)"},
                "sample": {"type": "array", "items": text, "description": "profile ids"},
                "exact": {"type": "boolean", "description": "false: more than 2,000 profiles; a sample was read"},
                "margin": {"type": "integer", "description": "sampled: the 95% margin of the estimate"},
                "scanned": {"type": "integer", "description": "profiles evaluated"},
                "errors": {
                    "type": "integer",
                    "description": "profiles on which the rule failed (a missing key, its iteration budget)",
                },
                "took_ms": {"type": "number"},
                "segments_defined": {"type": "integer"},
            },
        },
    }


def destination_paths() -> dict[str, Any]:
    """Destinations (webhooks), their deliveries, and pull subscriptions (Server-Sent Events)."""
    tag = "destinations"
    put = _op(
        tag, "Create or change a destination (no url: a pull subscription)", "admin", "Destination", "DestinationBody"
    )
    put["parameters"] = [_KEY]
    put["responses"]["201"] = {
        "description": "Created",
        "content": {"application/json": {"schema": _ref("Destination")}},
    }
    status = {"name": "status", "in": "query", "schema": {"enum": ["pending", "delivered", "dead", "suppressed"]}}
    limit = {**_LIMIT, "schema": {"type": "integer", "minimum": 1, "maximum": 1000}}
    stream = _op(tag, "Server-Sent Events of a pull subscription, resumable with Last-Event-ID", "read", None)
    stream["parameters"] = [
        _KEY,
        {"name": "Last-Event-ID", "in": "header", "schema": {"type": "string", "pattern": "^[0-9]+[.][0-9]+$"}},
        {**limit, "description": "Close the stream after this many messages."},
    ]
    stream["responses"]["200"] = {"description": "text/event-stream", "content": {"text/event-stream": {}}}
    return {
        "/v1/destinations": {"get": _op(tag, "All destinations and subscriptions", "read", "DestinationList")},
        "/v1/destinations/{key}": {
            "put": put,
            "get": {
                **_op(tag, "One destination (the secret is never shown)", "read", "Destination"),
                "parameters": [_KEY],
            },
            "delete": {
                **_op(tag, "Delete a destination (pending deliveries are dropped)", "admin", "Deleted"),
                "parameters": [_KEY],
            },
        },
        "/v1/destinations/{key}/deliveries": {
            "get": {
                **_op(tag, "The destination's deliveries, newest first", "read", "Deliveries"),
                "parameters": [_KEY, status, limit],
            }
        },
        "/v1/destinations/{key}/deliveries:retry": {
            "post": {**_op(tag, "Dead deliveries become pending again", "admin", "Retried"), "parameters": [_KEY]}
        },
        "/v1/subscriptions/{key}/stream": {"get": stream},
    }


def destination_schemas() -> dict[str, Any]:
    text = {"type": "string"}
    keys = {"type": "array", "items": text, "description": 'keys, or ["*"] for all'}
    subscribe = {
        "type": "object",
        "properties": {"moments": keys, "segments": keys, "events": {**text, "description": "CEL over the event"}},
    }
    fields: dict[str, Any] = {
        "url": {
            **text,
            "description": "http(s) URL, ASCII (percent-encoded), without credentials (user:password@: put them"
            " in headers), fragment or IPv6 zone; an address in delivery.blocked_networks is refused (by"
            " default link-local and cloud metadata addresses); none: a pull subscription",
        },
        "headers": {"type": "object", "additionalProperties": text},
        "subscribe": subscribe,
        "traits": {"type": "array", "items": text},
        "purpose": {**text, "description": "The consent purpose this destination serves."},
        "enabled": {"type": "boolean"},
        "description": text,
    }
    body = {
        "type": "object",
        "required": ["subscribe", "purpose"],
        "properties": {**fields, "secret": {**text, "minLength": 16, "description": "Required with a url."}},
    }
    destination = {
        "type": "object",
        "required": ["key", "kind", "subscribe", "purpose", "enabled", "version", "queue_depth"],
        "properties": {
            **fields,
            "key": text,
            "kind": {"enum": ["push", "pull"]},
            "secret_hint": {**text, "description": "The secret's last 4 characters."},
            "version": {"type": "integer"},
            "created_at": {"type": "integer"},
            "updated_at": {"type": "integer"},
            "queue_depth": {"type": "integer"},
            "changed": {"type": "boolean"},
        },
    }
    nullable_int = {"type": ["integer", "null"]}
    delivery = {
        "type": "object",
        "required": ["id", "type", "key", "status", "attempts"],
        "properties": {
            "id": text,
            "type": {"enum": ["moment", "segment_entered", "segment_exited", "event"]},
            "key": text,
            "profile_id": {"type": ["string", "null"]},
            "status": {"enum": ["pending", "delivered", "dead", "suppressed"]},
            "attempts": {"type": "integer"},
            "next_attempt_at": nullable_int,
            "created_at": {"type": "integer"},
            "updated_at": {"type": "integer"},
            "last_status": nullable_int,
            "last_error": {"type": ["string", "null"]},
            "latency_ms": nullable_int,
        },
    }
    return {
        "DestinationBody": body,
        "Destination": destination,
        "DestinationList": {
            "type": "object",
            "required": ["items"],
            "properties": {"items": {"type": "array", "items": destination}},
        },
        "Deliveries": {
            "type": "object",
            "required": ["items"],
            "properties": {"items": {"type": "array", "items": delivery}},
        },
        "Retried": {"type": "object", "required": ["retried"], "properties": {"retried": {"type": "integer"}}},
    }


@cache
def spec() -> dict[str, Any]:
    paths: dict[str, Any] = {}
    for name in (*sorted(EVENT_TYPES), "batch"):
        paths[f"/v1/{name}"] = _collect_op(name)
    for short, name in SHORT_PATHS.items():
        paths[f"/v1/{short}"] = _collect_op(name, short)
    paths["/v1/profiles"] = _read_op(
        "List profiles, filtered by traits",
        "ProfileList",
        [
            {
                "name": "trait.NAME",
                "in": "query",
                "schema": {"type": "string"},
                "description": "Keep profiles whose trait NAME equals the value (JSON literals compare as JSON).",
            },
            _LIMIT,
            _CURSOR,
        ],
    )
    paths["/v1/profiles/{ref}"] = _read_op("One profile", "Profile", [_REF])
    paths["/v1/profiles/{ref}/events"] = _read_op(
        "The profile's timeline, newest first", "Timeline", [_REF, _LIMIT, _CURSOR]
    )
    paths["/v1/profiles/{ref}/merges"] = _read_op("Merges that built this profile", "Merges", [_REF])
    paths["/v1/profiles/{ref}/moments"] = _read_op(
        "The person's moments, newest first", "ProfileMoments", [_REF, _LIMIT, _CURSOR]
    )
    paths.update(definition_paths())
    paths["/v1/microsegments:discover"] = _discover_op()
    paths.update(destination_paths())
    paths.update(decide_paths(_op, _KEY))
    paths.update(privacy_paths(_op, _REF))
    paths.update(erasure_paths())
    paths["/v1/audit"] = _audit_op()
    paths.update(centre_paths())
    _rate_limited(paths)
    for path, summary in (
        ("/healthz", "Health: the store, the processor and its lag"),
        ("/livez", "Liveness only (reads nothing)"),
        ("/metrics", "Prometheus metrics"),
        ("/openapi.json", "This document"),
        ("/docs", "Interactive API docs"),
    ):
        paths[path] = {"get": {"tags": ["operations"], "summary": summary, "responses": {"200": {"description": "OK"}}}}
    identity = {
        "type": "object",
        "required": ["type", "value"],
        "properties": {"type": {"type": "string"}, "value": {"type": "string"}},
    }
    stamp = {"type": "string", "format": "date-time"}
    text_or_null = {"type": ["string", "null"]}
    number_or_null = {"type": ["number", "null"]}
    last_context = {
        "timezone": {**text_or_null, "description": "IANA time zone, e.g. Europe/Paris."},
        "device_class": {"enum": ["mobile", "tablet", "desktop", "bot", None]},
        "os": text_or_null,
        "browser": text_or_null,
        "channel": text_or_null,
        "country": {**text_or_null, "description": "ISO 3166 alpha-2."},
        "city": text_or_null,
        "latitude": number_or_null,
        "longitude": number_or_null,
    }
    provenance = {"source": {"type": "string"}, "updated_at": stamp}
    profile = {
        "type": "object",
        "required": [
            *("id", "identities", "traits", "trait_meta", "segments", "consents"),
            *("created_at", "updated_at", "event_count", "merged_ids", "context"),
        ],
        "properties": {
            "id": {"type": "string"},
            "identities": {"type": "array", "items": identity},
            "traits": {"type": "object", "additionalProperties": True, "description": "Any JSON value per trait."},
            "trait_meta": {
                "type": "object",
                "additionalProperties": {
                    "type": "object",
                    "required": ["kind", "source", "updated_at"],
                    "properties": {
                        "kind": {"enum": ["stated", "observed", "inferred", "third_party"]},
                        **provenance,
                        "updated_at": {
                            **stamp,
                            "type": ["string", "null"],
                            "description": "null for a computed trait no event has counted yet (e.g. a count of 0).",
                        },
                    },
                },
            },
            "segments": {"type": "array", "items": {"type": "string"}},
            "consents": {
                "type": "object",
                "additionalProperties": {
                    "type": "object",
                    "required": ["granted", "source", "updated_at"],
                    "properties": {
                        "granted": {"type": "boolean"},
                        **provenance,
                        "text_version": {
                            "type": ["string", "null"],
                            "description": "Version of the purpose's text the person was shown, when known.",
                        },
                    },
                },
            },
            "created_at": stamp,
            "updated_at": stamp,
            "event_count": {"type": "integer"},
            "merged_ids": {"type": "array", "items": {"type": "string"}},
            "context": {
                "type": "object",
                "description": "The last-known context (docs/context.md): each field from the newest event that "
                "said it; null when no event did.",
                "required": list(last_context),
                "additionalProperties": False,
                "properties": last_context,
            },
        },
    }
    # Every field of a message may be sent as null, and is stored and served back as sent.
    client_id = {"type": ["string", "integer", "null"]}
    text = {"type": ["string", "null"]}
    fields = {"type": ["object", "null"], "additionalProperties": True}
    client_time = {"type": ["string", "null"], "description": "RFC 3339 (ISO-8601) date-time; numbers are refused."}
    message = {
        "messageId": text,
        "userId": client_id,
        "anonymousId": client_id,
        "previousId": client_id,
        "groupId": client_id,
        "event": text,
        "name": text,
        "category": text,
        "properties": fields,
        "traits": fields,
        "context": fields,
        "integrations": fields,
        "originalTimestamp": client_time,
        "sentAt": client_time,
    }
    event = {
        "type": "object",
        "description": "A Segment Tracking API message (https://segment.com/docs/connections/spec/); fields "
        "outside the spec are kept.",
        "additionalProperties": True,
        "properties": {
            "type": {"enum": [*sorted(EVENT_TYPES), None]},
            **message,
            "timestamp": client_time,
            "writeKey": text,
        },
    }
    stored_event = {
        "type": "object",
        "description": "An event as stored: what the client sent (less `writeKey`), with `messageId`, the "
        "skew-corrected `timestamp` and `receivedAt` set by Kairos; `originalTimestamp` is the client's.",
        "additionalProperties": True,
        "required": ["type", "messageId", "timestamp", "receivedAt"],
        "properties": {
            **message,
            "type": {"enum": sorted(EVENT_TYPES)},
            "messageId": {"type": "string"},
            "timestamp": stamp,
            "receivedAt": stamp,
        },
    }
    cursor = {"type": ["string", "null"], "description": "Pass as `cursor` for the next page; null on the last."}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Kairos",
            "version": __version__,
            "description": "Real-time customer data and personalization platform.",
        },
        "paths": paths,
        "components": {
            "securitySchemes": {
                "apiKey": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "`kairos keys add NAME --scope SCOPE`: scopes write, read, decide, admin (implies "
                    "read, write and decide) and privacy; each operation names the scope it needs in `x-kairos-scope`.",
                },
                "writeKeyBasic": {
                    "type": "http",
                    "scheme": "basic",
                    "description": "Source write key as the user name, empty password.",
                },
            },
            "schemas": {
                **_discover_schemas(),
                **_audit_schemas(stamp, cursor),
                **erasure_schemas(),
                "Event": event,
                "Batch": {
                    "type": "object",
                    "required": ["batch"],
                    "properties": {
                        "batch": {"type": "array", "items": _ref("Event")},
                        "context": fields,
                        "integrations": fields,
                        "sentAt": client_time,
                        "writeKey": text,
                    },
                },
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {
                        "success": {"const": False, "description": "Collect routes only."},
                        "error": {
                            "type": "object",
                            "required": ["code", "message"],
                            "properties": {
                                "code": {"type": "string"},
                                "field": {"type": "string"},
                                "message": {"type": "string"},
                                "position": {"type": "integer", "description": "invalid_rule: 0-based offset"},
                                "line": {"type": "integer", "description": "invalid_rule: 1-based"},
                                "column": {"type": "integer", "description": "invalid_rule: 1-based"},
                            },
                        },
                    },
                },
                "CollectRejected": {
                    "type": "object",
                    "properties": {
                        "success": {"const": False},
                        "accepted": {"type": "integer"},
                        "errors": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "properties": {
                                    "index": {"type": "integer"},
                                    "code": {"type": "string"},
                                    "field": {"type": ["string", "null"]},
                                    "message": {"type": "string"},
                                },
                            },
                        },
                    },
                },
                **definition_schemas(stamp, cursor),
                **destination_schemas(),
                **decide_schemas(),
                **privacy_schemas(),
                **centre_schemas(),
                "Profile": profile,
                "ProfileList": {
                    "type": "object",
                    "required": ["items", "next_cursor"],
                    "properties": {"items": {"type": "array", "items": _ref("Profile")}, "next_cursor": cursor},
                },
                "StoredEvent": stored_event,
                "Timeline": {
                    "type": "object",
                    "required": ["profile_id", "items", "next_cursor"],
                    "properties": {
                        "profile_id": {"type": "string"},
                        "next_cursor": cursor,
                        "items": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["seq", "type", "name", "timestamp", "event"],
                                "properties": {
                                    "seq": {"type": "integer"},
                                    "type": {"enum": [*sorted(EVENT_TYPES), *DERIVED_ITEMS]},
                                    "name": {
                                        "type": ["string", "null"],
                                        "description": "Event or page name; for a segment item, the segment key.",
                                    },
                                    "timestamp": stamp,
                                    "event": {
                                        "description": "null if the log no longer holds the event, or for an item"
                                        " derived from events (a segment entered or left).",
                                        "anyOf": [_ref("StoredEvent"), {"type": "null"}],
                                    },
                                    "data": {
                                        "type": "object",
                                        "additionalProperties": True,
                                        "description": "Derived items only: e.g. the rule version.",
                                    },
                                },
                            },
                        },
                    },
                },
                "Merges": {
                    "type": "object",
                    "required": ["profile_id", "items"],
                    "properties": {
                        "profile_id": {"type": "string"},
                        "items": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["winner", "loser", "at", "reason", "identities", "message_id", "seq"],
                                "properties": {
                                    "winner": {"type": "string"},
                                    "loser": {"type": "string"},
                                    "at": stamp,
                                    "reason": {"enum": ["alias", "shared_identifier"]},
                                    "identities": {"type": "array", "items": identity},
                                    "message_id": {"type": "string"},
                                    "seq": {"type": "integer"},
                                },
                            },
                        },
                    },
                },
            },
        },
    }

"""The OpenAPI paths and schemas of the preference centre: the link API and the person's pages."""

from __future__ import annotations

from typing import Any

__all__ = ["centre_paths", "centre_schemas"]

_TOKEN = {
    "name": "token",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "maxLength": 400},
    "description": "The signed token of a link made by `POST /v1/privacy/links`.",
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref("Error")}}}


def _page(summary: str, method: str, ok: str) -> dict[str, Any]:
    responses: dict[str, Any] = {
        ok: {"description": "An HTML page" if ok == "200" else "Back to the page, with a status message"},
        "400": {"description": "An HTML page: the form could not be read, or a preference is invalid."},
        "403": {"description": "An HTML page: the link was tampered with, or the form's CSRF field is wrong."},
        "410": {"description": "An HTML page: the link expired, or the person's data was erased."},
    }
    if method == "post":
        responses["303"] = responses.pop(ok)
    return {
        "tags": ["preference centre"],
        "summary": summary,
        "parameters": [_TOKEN],
        "responses": responses,
        **(
            {"requestBody": {"required": True, "content": {"application/x-www-form-urlencoded": {"schema": {}}}}}
            if method == "post"
            else {}
        ),
    }


def centre_paths() -> dict[str, Any]:
    link = {
        "tags": ["privacy"],
        "summary": "A signed, expiring link to the person's preference centre",
        "security": [{"apiKey": []}],
        "x-kairos-scope": "privacy",
        "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("PrivacyLinkBody")}}},
        "responses": {
            "201": {"description": "Created", "content": {"application/json": {"schema": _ref("PrivacyLink")}}},
            "400": _error("Invalid body, `profile` or `ttl` (`invalid_ttl`, `ttl_too_long`)."),
            "401": _error("Missing or unknown API key."),
            "403": _error("The key lacks the `privacy` scope."),
            "404": _error("No profile for `profile`."),
            "413": _error("The body is too large."),
        },
    }
    download = _page("Download everything held about the person (a JSON attachment)", "post", "200")
    download["responses"]["200"] = download["responses"].pop("303")
    download["responses"]["200"]["description"] = "The export, as a JSON attachment"
    return {
        "/v1/privacy/links": {"post": link},
        "/privacy/assets/centre.css": {
            "get": {
                "tags": ["preference centre"],
                "summary": "The pages' stylesheet",
                "responses": {"200": {"description": "CSS"}},
            }
        },
        "/privacy/assets/icon.svg": {
            "get": {
                "tags": ["preference centre"],
                "summary": "The pages' icon",
                "responses": {"200": {"description": "SVG"}},
            }
        },
        "/privacy/{token}": {"get": _page("The person's preference centre (HTML)", "get", "200")},
        "/privacy/{token}/consents": {"post": _page("Save the person's consents", "post", "303")},
        "/privacy/{token}/preferences": {"post": _page("Save the person's stated preferences", "post", "303")},
        "/privacy/{token}/download": {"post": download},
        "/privacy/{token}/delete": {
            "get": _page("Ask the person to confirm the erasure (HTML)", "get", "200"),
            "post": _page("Request the erasure of the person's data", "post", "303"),
        },
    }


def centre_schemas() -> dict[str, Any]:
    return {
        "PrivacyLinkBody": {
            "type": "object",
            "required": ["profile"],
            "additionalProperties": False,
            "properties": {
                "profile": {"type": "string", "description": "Profile id or `type:value` identity."},
                "ttl": {
                    "type": "string",
                    "description": "How long the link works, e.g. `15m`, `1h`, `7d` (default `privacy.link_ttl`, "
                    "at most `privacy.link_max_ttl`).",
                },
            },
        },
        "PrivacyLink": {
            "type": "object",
            "required": ["url", "expires_at"],
            "properties": {"url": {"type": "string"}, "expires_at": {"type": "string", "format": "date-time"}},
        },
    }

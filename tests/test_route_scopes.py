"""Every route of the app refuses a missing key (401) and a key without its scope (403), and enforces the very
scope its OpenAPI operation declares in ``x-kairos-scope``.

The routes come from the Starlette app itself, not from a list here: a route added later fails this test
until its operation declares a scope, or until it is listed below as public by design, with the reason.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from starlette.routing import Mount, Route
from starlette.testclient import TestClient

from kairos.api.openapi import SCOPE, spec
from kairos.runtime import Kairos
from kairos.scopes import SCOPES

# Public by design, each with its reason. Nothing else may answer without an API key.
WRITE_KEY = "collect: authenticated by the source's write key (Segment style), tested in test_collect.py"
PUBLIC: dict[str, str] = {
    **{f"/v1/{name}": WRITE_KEY for name in ("track", "identify", "page", "screen", "group", "alias", "batch")},
    **{f"/v1/{short}": WRITE_KEY for short in ("t", "i", "p", "s", "g", "a", "b")},
    "/healthz": "load balancers and monitoring probe it without credentials; it shows no personal data",
    "/livez": "liveness probe: reads nothing",
    "/metrics": "Prometheus scrapes it without credentials; counters only, no personal data",
    "/openapi.json": "the API's public description",
    "/docs": "the interactive API docs page (static)",
    "/docs/assets": "Swagger UI's static files",
}
# The customer's own preference centre pages: the customer has no API key, a signed expiring link is the
# credential there (tested with those routes).
PUBLIC_PREFIXES: dict[str, str] = {"/privacy/": "customer preference centre, authenticated by signed links"}

SAMPLE_PARAMS = {"ref": "user_id:nobody", "key": "nothing_here"}


def _public(path: str) -> bool:
    return path in PUBLIC or any(path.startswith(prefix) for prefix in PUBLIC_PREFIXES)


def _doc_path(route_path: str) -> str:
    """``/v1/profiles/{ref:path}`` (Starlette) → ``/v1/profiles/{ref}`` (OpenAPI)."""
    return re.sub(r"\{(\w+):\w+\}", r"{\1}", route_path)


def _url(doc_path: str) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: SAMPLE_PARAMS.get(m.group(1), "x"), doc_path)


def _operations(client: TestClient) -> list[tuple[str, str]]:
    """(method, OpenAPI path) of every route the app serves, HEAD aside (GET without a body)."""
    out: list[tuple[str, str]] = []
    for route in client.app.routes:  # type: ignore[attr-defined]
        if isinstance(route, Mount):
            assert _public(route.path), f"mounted app {route.path} is not listed as public: declare its auth"
            continue
        assert isinstance(route, Route), f"unexpected route type {type(route).__name__} at {route}"
        for method in sorted((route.methods or set()) - {"HEAD"}):
            out.append((method, _doc_path(route.path)))
    return out


def _all_scopes() -> set[str]:
    declared = {op[SCOPE] for item in spec()["paths"].values() for op in item.values() if SCOPE in op}
    return set(SCOPES) | declared


def _key(kairos: Kairos, scopes: set[str]) -> dict[str, str]:
    _, secret = kairos.store.admin.add_api_key("-".join(sorted(scopes)) or "none", frozenset(scopes), 0)
    return {"Authorization": f"Bearer {secret}"}


def _send(client: TestClient, method: str, path: str, headers: dict[str, str] | None = None) -> Any:
    """The request with an empty JSON object as body where the method takes one: auth comes first."""
    if method in ("POST", "PUT"):
        headers = {"Content-Type": "application/json", **(headers or {})}
        return client.request(method, _url(path), content=b"{}", headers=headers)
    return client.request(method, _url(path), headers=headers)


def test_every_route_is_in_the_document_with_its_scope(client: TestClient) -> None:
    paths = spec()["paths"]
    served = _operations(client)
    assert len(served) > 40  # the enumeration found the app's routes
    undeclared = []
    for method, path in served:
        op = paths.get(path, {}).get(method.lower())
        assert op is not None, f"{method} {path} is served but not in the OpenAPI document (kairos.api.openapi)"
        if not _public(path) and SCOPE not in op:
            undeclared.append(f"{method} {path}")
        if _public(path):
            assert SCOPE not in op, f"{method} {path} is listed public here but declares a scope"
            assert {"apiKey"} not in [set(s) for s in op.get("security", [])], f"{method} {path} says apiKey"
    assert not undeclared, f"declare {SCOPE!r} in the OpenAPI operation, or list the route as public: {undeclared}"
    documented = {(m.upper(), p) for p, item in paths.items() for m in item}
    assert documented <= set(served), f"documented but not served: {documented - set(served)}"


def test_every_scoped_route_refuses_a_missing_key(client: TestClient) -> None:
    for method, path in _operations(client):
        if _public(path):
            continue
        r = _send(client, method, path)
        assert r.status_code == 401, (method, path, r.status_code, r.text)
        assert r.headers["WWW-Authenticate"] == 'Bearer realm="kairos"', (method, path)
        error = r.json()["error"]
        assert (error["code"], error["field"]) == ("unauthorized", "Authorization"), (method, path, error)
        assert error["message"]
        r = _send(client, method, path, {"Authorization": "Bearer kk_not_a_key"})
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key", (method, path, r.text)


@pytest.mark.parametrize("scope", sorted(_all_scopes()))
def test_each_route_enforces_exactly_its_declared_scope(client: TestClient, kairos: Kairos, scope: str) -> None:
    """A key lacking the route's scope (and not admin) gets 403 ``missing_scope``; a key holding only that
    scope gets past authorization: so the route enforces the scope the document declares, no other."""
    lacking = _key(kairos, _all_scopes() - {scope, "admin"})
    holding = _key(kairos, {scope})
    paths = spec()["paths"]
    checked = 0
    for method, path in _operations(client):
        if _public(path) or paths[path][method.lower()][SCOPE] != scope:
            continue
        checked += 1
        r = _send(client, method, path, lacking)
        assert r.status_code == 403, (method, path, r.status_code, r.text)
        error = r.json()["error"]
        assert (error["code"], error["field"]) == ("missing_scope", "Authorization"), (method, path, error)
        assert scope in error["message"]
        r = _send(client, method, path, holding)
        assert r.status_code not in (401, 403) and r.status_code < 500, (method, path, r.status_code, r.text)
    # privacy: its routes (/v1/privacy/export|erase) may not be there yet; every other scope has some.
    if scope in set(SCOPES) - {"admin", "privacy"}:
        assert checked, f"no route declares the {scope!r} scope"

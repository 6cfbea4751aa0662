"""Fuzz every operation of the served OpenAPI document with schemathesis, in-process (ASGI, no network).

Each operation of ``spec()`` (what ``/openapi.json`` serves) becomes one test, so a route added to the
document is fuzzed without touching this file. Generated requests, valid and invalid (``positive`` and
``negative`` modes), go to the real app on SQLite holding a few real profiles, definitions, offers,
destinations and a decision, with a key holding every scope (collect routes get the source's write key).
Each answer must pass:

- ``not_a_server_error``: no 5xx;
- ``status_code_conformance``: the status is one the operation documents;
- ``content_type_conformance`` and ``response_headers_conformance``: as documented;
- ``response_schema_conformance``: the body matches the documented schema.

``negative_data_rejection`` is not run: this harness adds the credentials to every case, so a case that
Schemathesis made invalid by dropping the key (plus an extra query parameter that the HTTP client then drops
for its null value) reached the app valid, and its 200 was reported as invalid data accepted. The routes'
refusal of unknown fields and query parameters is tested in their own files; 401 in test_route_scopes.py.

Bounded for CI (``make test``): ``KAIROS_FUZZ_EXAMPLES`` examples per operation (default below), generated
deterministically (``derandomize``: the same cases every run), no deadline, no example database. Run longer
locally with e.g. ``KAIROS_FUZZ_EXAMPLES=500 .venv/bin/python -m pytest tests/test_fuzz_openapi.py``.

The operations share one app and its data, in the document's order: what a PUT or DELETE changes is seen by
the operations after it, the same way every run (404 is documented wherever a key may be gone). No operation
is excluded.

SQLite only: the handlers are the same on both stores, and the store layer's PostgreSQL behaviour (types,
NUL, sizes) is covered by the API tests that run on both backends (``store_settings``); a second fuzz run
on PostgreSQL would double this test's time (about 30 s here, docs/testing.md) for no route of its own.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.python import asgi
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from starlette.applications import Starlette

from kairos.api import create_app
from kairos.api.openapi import spec
from kairos.runtime import Kairos
from tests.conftest import make_settings

MAX_EXAMPLES = int(os.environ.get("KAIROS_FUZZ_EXAMPLES", "30"))

schema = schemathesis.openapi.from_dict(spec())
schema.config.generation.update(max_examples=MAX_EXAMPLES, deterministic=True, database="none")
# Examples from the document (which name the data loaded below), then generated cases. The "coverage"
# phase (every boundary of every field) is left out: it alone takes minutes on this document.
schema.config.phases.update(phases=["examples", "fuzzing"])

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


@dataclass(frozen=True)
class Target:
    """The app under test and the credentials each kind of operation needs."""

    app: Starlette
    api_key: str
    write_key: str

    def headers(self, case: schemathesis.Case[Any]) -> dict[str, str]:
        """Credentials as the operation's ``security`` names them (none for public operations)."""
        security: list[dict[str, Any]] = case.operation.definition.raw.get("security", [])
        schemes = {name for requirement in security for name in requirement}
        if "apiKey" in schemes:
            return {"Authorization": f"Bearer {self.api_key}"}
        if "writeKeyBasic" in schemes:
            return {"Authorization": "Basic " + base64.b64encode(f"{self.write_key}:".encode()).decode()}
        return {}


EVENTS: list[dict[str, Any]] = [
    {"type": "identify", "userId": "u1", "anonymousId": "a1", "traits": {"email": "jane@example.com", "plan": "pro"}},
    {"type": "track", "userId": "u1", "event": "Order Completed", "properties": {"total": 42.5}},
    {"type": "page", "anonymousId": "a2", "name": "Landing"},
    {"type": "identify", "userId": "u1", "anonymousId": "a2"},  # merges a2's profile into u1's
    {"type": "identify", "userId": "u2", "traits": {"plan": "free"}},
    {"type": "track", "userId": "u2", "event": "Product Added"},
]
DEFINITIONS: list[tuple[str, dict[str, Any]]] = [
    ("/v1/traits/orders_30d", {"aggregate": "count", "event": "Order Completed", "window": "30d"}),
    ("/v1/segments/vip", {"rule": 'traits.plan == "pro"'}),
    ("/v1/moments/big_order", {"when": {"event": "Order Completed", "where": "properties.total > 40"}}),
    ("/v1/offers/welcome", {"name": "Welcome", "content": {"web": {"title": "Hello"}}, "channels": ["web"]}),
    ("/v1/destinations/crm", {"url": "http://127.0.0.1:9/hook", "secret": "whsec_0123456789abcdef",
                              "subscribe": {"segments": ["vip"]}, "purpose": "marketing_email"}),
    ("/v1/destinations/feed", {"subscribe": {"moments": ["*"]}, "purpose": "marketing_email"}),
]  # fmt: skip


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    kairos = Kairos(make_settings({"url": f"sqlite:///{tmp_path_factory.mktemp('fuzz')}/kairos.db"}))
    source = kairos.store.admin.add_source("web", "observed", 0)
    _, api_key = kairos.store.admin.add_api_key("fuzz", frozenset({"admin", "privacy"}), 0)
    app = create_app(kairos, run_processor=False)
    bearer = {"Authorization": f"Bearer {api_key}"}
    try:
        # Schemathesis' in-process client runs the app's lifespan once and keeps it until shutdown_lifespans().
        with asgi.get_client(app) as client:  # type: ignore[arg-type]  # its ASGI alias is narrower than Starlette's
            assert client.get("/openapi.json").json() == spec()  # what is fuzzed is what is served
            r = client.post("/v1/batch", json={"writeKey": source.write_key, "batch": EVENTS})
            assert r.status_code == 200, r.text
            kairos.processor.run_until_caught_up()
            for path, body in DEFINITIONS:
                r = client.put(path, json=body, headers=bearer)
                assert r.status_code == 201, (path, r.text)
            kairos.processor.run_until_caught_up()  # backfills, moments, deliveries
            r = client.post("/v1/decide", json={"profile": "user_id:u1", "channel": "web"}, headers=bearer)
            assert r.status_code == 200 and r.json()["items"], r.text
        yield Target(app, api_key, source.write_key)
    finally:
        asgi.shutdown_lifespans()
        kairos.close()


@schema.parametrize()
@settings(deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck))
def test_fuzz(case: schemathesis.Case[Any], target: Target) -> None:
    case.call_and_validate(app=target.app, headers=target.headers(case), checks=CHECKS)

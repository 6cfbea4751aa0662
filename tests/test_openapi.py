"""Real answers of the read routes validate against the component schemas that ``/openapi.json`` serves.

OpenAPI 3.1 schemas are JSON Schema 2020-12. Objects are checked *closed* here (a key the schema does not
declare fails), except where the schema itself says ``additionalProperties``: Segment events keep every
field the client sent.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012
from starlette.testclient import TestClient

from kairos.runtime import Kairos
from kairos.store import Source

SPEC_URI = "urn:kairos:openapi"


def closed(node: Any) -> Any:
    """``node`` with ``additionalProperties: false`` on every object schema that lists properties."""
    if isinstance(node, list):
        return [closed(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: closed(value) for key, value in node.items()}
    if "properties" in out and isinstance(out["properties"], dict) and "additionalProperties" not in out:
        out["additionalProperties"] = False
    return out


class Contract:
    """The served document: which schema a route answers with, and whether a body matches it."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        document = {"components": {"schemas": closed(copy.deepcopy(spec["components"]["schemas"]))}}
        resource: Resource[Any] = Resource.from_contents(document, default_specification=DRAFT202012)
        self.registry: Registry[Any] = Registry().with_resource(SPEC_URI, resource)

    def schema_of(self, path: str, status: str = "200") -> str:
        content = self.spec["paths"][path]["get"]["responses"][status]["content"]
        ref: str = content["application/json"]["schema"]["$ref"]
        return ref.rsplit("/", 1)[1]

    def check(self, schema: str, body: Any) -> None:
        ref = {"$ref": f"{SPEC_URI}#/components/schemas/{schema}"}
        validator = Draft202012Validator(ref, registry=self.registry)
        errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(body)]
        assert not errors, errors


@pytest.fixture
def contract(client: TestClient) -> Contract:
    spec = client.get("/openapi.json").json()
    assert spec["openapi"].startswith("3.1")
    return Contract(spec)


ALL_NULL = {"properties": None, "context": None, "traits": None, "integrations": None, "name": None, "sentAt": None}


def test_read_answers_match_the_served_schemas(
    client: TestClient, kairos: Kairos, source: Source, read_key: dict[str, str], contract: Contract
) -> None:
    batch = [
        {"type": "page", "anonymousId": "a2", "name": "Landing"},
        {
            "type": "identify",
            "userId": "u1",
            "anonymousId": "a1",
            "traits": {"email": "jane@example.com", "plan": "pro", "orders": 3, "tags": ["a"], "gone": None},
            "context": {"consent": {"categoryPreferences": {"marketing_email": True}}, "ip": "10.0.0.1"},
            "timestamp": "2026-01-01T00:00:00Z",
            "sentAt": "2026-01-01T00:00:01Z",
            "customField": {"kept": True},
        },
        {"type": "track", "userId": "u1", "event": "All Null", "messageId": None, **ALL_NULL},
        {"type": "page", "anonymousId": 42, "name": None, "category": None, "timestamp": "2026-01-01T00:00:00Z"},
        {"type": "screen", "userId": "u1", "name": "Home", "originalTimestamp": "2026-01-01T00:00:00Z"},
        {"type": "group", "userId": "u1", "groupId": 7, "traits": None},
        {"type": "identify", "userId": "u2", "traits": {"email": "jane@example.com"}},
        {"type": "alias", "userId": "u1", "previousId": "a-old"},
        {"type": "identify", "userId": "u1", "anonymousId": "a2"},  # merges the a2 profile into u1's
    ]
    r = client.post("/v1/batch", json={"writeKey": source.write_key, "batch": batch})
    assert r.status_code == 200, r.text
    kairos.processor.run_until_caught_up()

    for path, schema_path in (
        ("/v1/profiles/user_id:u1", "/v1/profiles/{ref}"),
        ("/v1/profiles/user_id:u1/events?limit=3", "/v1/profiles/{ref}/events"),
        ("/v1/profiles/user_id:u1/events", "/v1/profiles/{ref}/events"),
        ("/v1/profiles/user_id:u1/merges", "/v1/profiles/{ref}/merges"),
        ("/v1/profiles?limit=1", "/v1/profiles"),
        ("/v1/profiles?trait.plan=pro", "/v1/profiles"),
    ):
        answer = client.get(path, headers=read_key)
        assert answer.status_code == 200, (path, answer.text)
        contract.check(contract.schema_of(schema_path), answer.json())

    events = client.get("/v1/profiles/user_id:u1/events", headers=read_key).json()["items"]
    nulls = next(i["event"] for i in events if i["name"] == "All Null")
    assert all(nulls[key] is None for key in ALL_NULL), nulls  # stored and served as sent
    assert client.get("/v1/profiles/user_id:u1/merges", headers=read_key).json()["items"]

    for path, status in (("/v1/profiles/user_id:nobody", 404), ("/v1/profiles?limit=0", 400)):
        answer = client.get(path, headers=read_key)
        assert answer.status_code == status
        contract.check("Error", answer.json())
    contract.check("Error", client.get("/v1/profiles").json())
    unauthorized = client.post("/v1/track", json={"userId": "u", "event": "E"})
    assert unauthorized.status_code == 401
    contract.check("Error", unauthorized.json())


def test_collect_answers_match_the_served_schemas(client: TestClient, source: Source, contract: Contract) -> None:
    rejected = client.post("/v1/batch", json={"writeKey": source.write_key, "batch": [{"type": "track"}, 1]})
    assert rejected.status_code == 400
    contract.check("CollectRejected", rejected.json())
    # The request schemas accept what the API accepts, nulls included.
    contract.check("Batch", {"batch": [{"type": "track", "userId": 1, "event": "E", **ALL_NULL}], "sentAt": None})
    contract.check("Event", {"userId": "u", "timestamp": "2026-01-01T00:00:00.500Z", "custom": [1]})


def test_a_computed_trait_nothing_counted_yet_matches_the_profile_schema(
    client: TestClient, kairos: Kairos, source: Source, read_key: dict[str, str], contract: Contract
) -> None:
    """Found by the fuzzer: a count no event has touched is 0 with ``updated_at`` null, which the document
    did not allow."""
    _, admin = kairos.store.admin.add_api_key("admin", frozenset({"admin"}), 0)
    r = client.post("/v1/batch", json={"writeKey": source.write_key, "batch": [{"type": "identify", "userId": "u"}]})
    assert r.status_code == 200
    body = {"aggregate": "count", "event": "Order Completed"}
    assert client.put("/v1/traits/orders", json=body, headers={"Authorization": f"Bearer {admin}"}).status_code == 201
    kairos.processor.run_until_caught_up()
    for path, schema in (("/v1/profiles/user_id:u", "Profile"), ("/v1/profiles", "ProfileList")):
        answer = client.get(path, headers=read_key)
        assert answer.status_code == 200, answer.text
        contract.check(schema, answer.json())
    profile = client.get("/v1/profiles/user_id:u", headers=read_key).json()
    assert profile["traits"]["orders"] == 0
    assert profile["trait_meta"]["orders"] == {"kind": "observed", "source": "computed", "updated_at": None}


def test_routes_refuse_query_parameters_they_do_not_read(
    client: TestClient, kairos: Kairos, source: Source, read_key: dict[str, str]
) -> None:
    """Found by the fuzzer: the reports ignored an unknown parameter (``?form=`` for ``?from=``) and answered
    the default window. Every route that reads query parameters now refuses the others."""
    _, secret = kairos.store.admin.add_api_key("admin", frozenset({"admin"}), 0)
    admin = {"Authorization": f"Bearer {secret}"}
    r = client.post("/v1/batch", json={"writeKey": source.write_key, "batch": [{"type": "identify", "userId": "u"}]})
    assert r.status_code == 200
    kairos.processor.run_until_caught_up()
    for path, body in (
        ("/v1/offers/welcome", {"name": "Welcome"}),
        ("/v1/segments/vip", {"rule": "true"}),
        ("/v1/destinations/crm", {"url": "http://127.0.0.1:9/", "secret": "s" * 16, "subscribe": {"segments": ["vip"]},
                                  "purpose": "marketing_email"}),
        ("/v1/destinations/feed", {"subscribe": {"segments": ["vip"]}, "purpose": "marketing_email"}),
    ):  # fmt: skip
        assert client.put(path, json=body, headers=admin).status_code == 201, path
    for path in (
        "/v1/reports/decisions?form=2026-01-01",
        "/v1/reports/experience?=null",
        "/v1/offers/welcome/stats?since=1",
        "/v1/profiles/user_id:u/events?limt=5",
        "/v1/profiles/user_id:u/moments?x=1",
        "/v1/segments/vip/members?page=2",
        "/v1/destinations/crm/deliveries?state=dead",
        "/v1/subscriptions/feed/stream?limit=1&after=0",
        "/v1/reports/decisions?from=2026-01-01&%00=1",
        "/v1/reports/decisions?%C3%A9t%C3%A9=1",
        "/v1/offers?limit=5",  # the lists of definitions take no parameters: ignored, they answered all
        "/v1/segments?cursor=x",
        "/v1/destinations?limit=1",
    ):
        answer = client.get(path, headers=read_key)
        assert answer.status_code == 400, (path, answer.text)
        error = answer.json()["error"]
        assert error["code"] == "invalid_query" and error["message"].startswith("unknown query parameter"), error
    for path in ("/v1/offers/welcome/stats?from=2026-01-01&from=2026-02-01", "/v1/reports/decisions?to=1&to=2",
                 "/v1/segments/vip/members?limit=1&limit=2", "/v1/profiles?limit=5&limit=500",
                 "/v1/profiles?trait.x=1&trait.x=2"):  # fmt: skip
        error = client.get(path, headers=read_key).json()["error"]
        assert error["code"] == "invalid_query" and "more than once" in error["message"], (path, error)
    r = client.get("/v1/reports/decisions?form=x", headers=read_key).json()["error"]
    assert r["field"] == "form" and "from, to" in r["message"]
    assert client.get("/v1/reports/decisions?from=2026-01-01T00:00:00Z", headers=read_key).status_code == 200

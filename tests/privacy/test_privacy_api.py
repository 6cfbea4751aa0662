"""The privacy routes and CLI under malformed, oversized, unauthorized and hostile input: a precise error
(code, field, message) that never quotes the reference sent, never a 500."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient
from typer.testing import CliRunner

from kairos.api import create_app
from kairos.cli import app as cli
from kairos.runtime import Kairos
from kairos.store import Source
from tests.conftest import Feed, point_cli_at


@pytest.fixture
def api(kairos: Kairos, feed: Feed) -> Iterator[tuple[TestClient, dict[str, dict[str, str]]]]:
    feed({"type": "identify", "userId": "u1", "traits": {"email": "one@example.com"}})
    keys = {}
    for name, scopes in (("privacy", {"privacy"}), ("admin", {"admin"}), ("read", {"read"}), ("decide", {"decide"})):
        _, secret = kairos.store.admin.add_api_key(name, frozenset(scopes), 0)
        keys[name] = {"Authorization": f"Bearer {secret}"}
    with TestClient(create_app(kairos, run_processor=False), raise_server_exceptions=False) as c:
        yield c, keys


BAD_BODIES: list[tuple[Any, int, str, str]] = [
    ([], 400, "invalid_body", "body"),
    ("user_id:u1", 400, "invalid_body", "body"),
    ({}, 400, "missing_field", "profile"),
    ({"profile": None}, 400, "missing_field", "profile"),
    ({"profile": 42}, 400, "invalid_ref", "profile"),
    ({"profile": ["user_id:u1"]}, 400, "invalid_ref", "profile"),
    ({"profile": {"user_id": "u1"}}, 400, "invalid_ref", "profile"),
    ({"profile": ""}, 400, "invalid_ref", "profile"),
    ({"profile": "   "}, 400, "invalid_ref", "profile"),
    ({"profile": "user_id:"}, 400, "invalid_ref", "profile"),
    ({"profile": "email: \t"}, 400, "invalid_ref", "profile"),
    ({"profile": "user_id:u1\x00"}, 400, "invalid_ref", "profile"),
    ({"profile": "user_id:" + "x" * 700}, 400, "invalid_ref", "profile"),
    ({"profile": "nosuchtype:secret-value@example.com"}, 400, "invalid_ref", "profile"),
    ({"profile": "user_id:u1", "extra": 1}, 400, "unknown_field", "extra"),
    ({"profile": "user_id:nobody-at-all"}, 404, "not_found", "profile"),
    ({"profile": "email:someone.else@example.com"}, 404, "not_found", "profile"),
    ({"profile": "00000000-0000-0000-0000-000000000000"}, 404, "not_found", "profile"),
    ({"profile": "user_id:\U0001f600\u200d\u202e"}, 404, "not_found", "profile"),
]


@pytest.mark.parametrize("path", ["/v1/privacy/export", "/v1/privacy/erase"])
@pytest.mark.parametrize(("body", "status", "code", "field"), BAD_BODIES)
def test_bad_bodies_get_a_precise_error_that_quotes_nothing(
    api: tuple[TestClient, dict[str, dict[str, str]]], path: str, body: Any, status: int, code: str, field: str
) -> None:
    client, keys = api
    r = client.post(path, json=body, headers=keys["privacy"])
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert (error["code"], error["field"]) == (code, field) and error["message"]
    ref = body.get("profile") if isinstance(body, dict) else None
    value = ref.split(":", 1)[-1] if isinstance(ref, str) else ""
    if value.strip():
        assert value not in error["message"]


@pytest.mark.parametrize(
    ("raw", "headers", "status", "code"),
    [
        (b"{not json", {}, 400, "invalid_json"),
        (b'{"profile": "user_id:\\ud800"}', {}, 400, "invalid_json"),
        (b"\xff\xfe\x00garbage", {}, 400, "invalid_json"),
        (b'{"profile": "user_id:u1", "pad": "' + b"x" * 70_000 + b'"}', {}, 413, "too_large"),
        (b"{}", {"content-length": "99999999"}, 413, "too_large"),
    ],
)
def test_malformed_and_oversized_bodies(
    api: tuple[TestClient, dict[str, dict[str, str]]], raw: bytes, headers: dict[str, str], status: int, code: str
) -> None:
    client, keys = api
    for path in ("/v1/privacy/export", "/v1/privacy/erase"):
        r = client.post(path, content=raw, headers={**keys["privacy"], "content-type": "application/json", **headers})
        assert r.status_code == status, r.text
        assert r.json()["error"]["code"] == code


def test_suppress_must_be_a_boolean(api: tuple[TestClient, dict[str, dict[str, str]]]) -> None:
    client, keys = api
    values: list[Any] = ["yes", 1, 0, None, [], {"a": 1}]
    for value in values:
        r = client.post("/v1/privacy/erase", json={"profile": "user_id:u1", "suppress": value}, headers=keys["privacy"])
        assert r.status_code == 400 and r.json()["error"] == {
            "code": "invalid_field",
            "field": "suppress",
            "message": "suppress must be true or false",
        }


@pytest.mark.parametrize("path", ["/v1/privacy/export", "/v1/privacy/erase"])
def test_only_privacy_keys_may_export_or_erase(api: tuple[TestClient, dict[str, dict[str, str]]], path: str) -> None:
    client, keys = api
    body = {"profile": "user_id:u1"}
    assert client.post(path, json=body).status_code == 401
    r = client.post(path, json=body, headers={"Authorization": "Bearer kk_not-a-key"})
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    for name in ("read", "decide", "admin"):  # admin does not imply privacy
        r = client.post(path, json=body, headers=keys[name])
        assert r.status_code == 403 and r.json()["error"] == {
            "code": "missing_scope",
            "field": "Authorization",
            "message": "this API key lacks the 'privacy' scope",
        }
    assert client.post(path, json=body, headers=keys["privacy"]).status_code in (200, 202)


def test_erase_answers_202_and_the_request_can_be_followed(
    api: tuple[TestClient, dict[str, dict[str, str]]], kairos: Kairos
) -> None:
    client, keys = api
    r = client.post(
        "/v1/privacy/erase", json={"profile": "email:ONE@example.com", "suppress": True}, headers=keys["privacy"]
    )
    assert r.status_code == 202, r.text
    made = r.json()
    assert made["status"] == "pending" and set(made) == {"request_id", "status"}
    r = client.get(f"/v1/privacy/requests/{made['request_id']}", headers=keys["privacy"])
    assert r.status_code == 200 and r.json()["status"] == "pending" and r.json()["finished_at"] is None
    kairos.processor.run_until_caught_up()
    from kairos.privacy.erasure import run_pending

    run_pending(kairos)
    view = client.get(f"/v1/privacy/requests/{made['request_id']}", headers=keys["privacy"]).json()
    assert set(view) == {"request_id", "kind", "status", "created_at", "finished_at", "steps"}
    assert view["kind"] == "erase" and view["status"] == "complete" and view["steps"]["profiles"] == 1
    assert "one@example.com" not in json.dumps(view) and "u1" not in json.dumps(view["steps"])
    r = client.post("/v1/privacy/export", json={"profile": "user_id:u1"}, headers=keys["privacy"])
    assert r.status_code == 404
    asked = [(e.action, e.key_name, e.outcome) for e in kairos.store.audit.list(10) if e.action.startswith("privacy")]
    assert ("privacy.erase", "privacy", 202) in asked and ("privacy.export", "privacy", 404) in asked


@pytest.mark.parametrize(
    ("request_id", "status", "code"),
    [
        ("pr_" + "0" * 32, 404, "not_found"),
        ("pr_" + "g" * 32, 400, "invalid_id"),
        ("x" * 500, 400, "invalid_id"),
        ("pr_%00" + "0" * 30, 400, "invalid_id"),
        ("pr_" + "0" * 31 + "\u0660", 400, "invalid_id"),
    ],
)
def test_bad_request_ids(
    api: tuple[TestClient, dict[str, dict[str, str]]], request_id: str, status: int, code: str
) -> None:
    client, keys = api
    r = client.get(f"/v1/privacy/requests/{request_id}", headers=keys["privacy"])
    assert r.status_code == status, r.text
    assert r.json()["error"]["code"] == code and r.json()["error"]["field"] == "id"
    assert client.get(f"/v1/privacy/requests/{'pr_' + '0' * 32}").status_code == 401


def test_the_openapi_document_declares_the_routes_and_the_scope(
    api: tuple[TestClient, dict[str, dict[str, str]]],
) -> None:
    client, _ = api
    spec = client.get("/openapi.json").json()
    assert {"/v1/privacy/export", "/v1/privacy/erase", "/v1/privacy/requests/{id}"} <= set(spec["paths"])
    assert "privacy" in spec["components"]["securitySchemes"]["apiKey"]["description"]
    for path in ("/v1/privacy/export", "/v1/privacy/erase", "/v1/privacy/requests/{id}"):
        for op in spec["paths"][path].values():
            assert op["x-kairos-scope"] == "privacy"
    assert spec["paths"]["/v1/privacy/erase"]["post"]["responses"]["202"]


def test_cli_erase_wait_and_status(
    kairos: Kairos,
    feed: Feed,
    source: Source,
    store_settings: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    feed({"type": "identify", "userId": "u-cli", "traits": {"nickname": "cli-person-x"}})
    point_cli_at(store_settings, monkeypatch, tmp_path / "kairos.toml", "")
    runner = CliRunner()
    result = runner.invoke(cli, ["privacy", "erase", "user_id:u-cli", "--suppress", "--wait", "--json"])
    assert result.exit_code == 0, result.output
    view = json.loads(result.stdout)
    assert view["status"] == "complete" and view["steps"]["suppressed_identifiers"] == 1
    result = runner.invoke(cli, ["privacy", "status", view["request_id"], "--json"])
    assert result.exit_code == 0 and json.loads(result.stdout)["status"] == "complete"
    result = runner.invoke(cli, ["privacy", "status", "pr_nope", "--json"])
    assert result.exit_code == 2 and json.loads(result.stdout)["error"]["code"] == "invalid_id"
    result = runner.invoke(cli, ["privacy", "erase", "user_id:u-cli", "--json"])
    assert result.exit_code == 2 and json.loads(result.stdout)["error"]["code"] == "not_found"
    assert "u-cli" not in result.output
    kairos.cache.clear()
    assert kairos.resolve("user_id:u-cli") is None


def test_cli_link_opens_the_preference_centre(
    kairos: Kairos,
    feed: Feed,
    source: Source,
    store_settings: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    from starlette.testclient import TestClient

    from kairos.api import create_app

    feed({"type": "identify", "userId": "u-link", "traits": {"nickname": "linky"}})
    point_cli_at(store_settings, monkeypatch, tmp_path / "kairos.toml", "")
    runner = CliRunner()
    result = runner.invoke(cli, ["privacy", "link", "user_id:u-link", "--ttl", "15m", "--json"])
    assert result.exit_code == 0, result.output
    url = json.loads(result.stdout)["url"]
    assert url.startswith("http://127.0.0.1:8000/privacy/") and "u-link" not in url
    with TestClient(create_app(kairos, run_processor=False)) as client:
        page = client.get(url.removeprefix("http://127.0.0.1:8000"))
        assert page.status_code == 200 and "linky" in page.text
    for bad, code in ((["--ttl", "10s"], "invalid_ttl"), (["--ttl", "99d"], "ttl_too_long")):
        result = runner.invoke(cli, ["privacy", "link", "user_id:u-link", *bad, "--json"])
        assert result.exit_code == 2 and json.loads(result.stdout)["error"]["code"] == code, result.output
    result = runner.invoke(cli, ["privacy", "link", "user_id:nobody", "--json"])
    assert result.exit_code == 2 and "nobody" not in result.output

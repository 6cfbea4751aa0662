"""Micro-segment discovery: planted groups are found, their rules are valid CEL that find them again."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
from cel_expr_python import cel
from starlette.testclient import TestClient
from typer.testing import CliRunner

from kairos.cli.main import app
from kairos.runtime import Kairos
from kairos.segments.discover import discover, live_traits
from tests.conftest import Feed, make_settings, point_cli_at

URL = "/v1/microsegments:discover"
# Three well-separated groups: (orders, spend, vip).
GROUPS = [(1, 20.0, False), (8, 400.0, False), (25, 3000.0, True)]
SIZES = [60, 40, 20]


def plant(feed: Feed) -> dict[str, int]:
    """Profiles of the three groups (u<group>-<i>), a few without the features; their group by user id."""
    rnd = random.Random(7)
    events: list[dict[str, Any]] = []
    group_of: dict[str, int] = {}
    for g, ((orders, spend, vip), size) in enumerate(zip(GROUPS, SIZES, strict=True)):
        for i in range(size):
            user = f"u{g}-{i}"
            group_of[user] = g
            traits = {"orders": orders + rnd.randint(0, 2), "spend": round(spend * rnd.uniform(0.9, 1.1), 2)}
            events.append({"type": "identify", "userId": user, "traits": {**traits, "vip": vip, "plan": "x"}})
    for i in range(5):  # no spend: excluded
        events.append({"type": "identify", "userId": f"lurker-{i}", "traits": {"orders": 0}})
    feed(*events)
    return group_of


def cel_env() -> Any:
    return cel.NewEnv(variables={"traits": cel.Type.Map(cel.Type.STRING, cel.Type.DYN)})


def test_three_planted_groups_are_found_with_rules_that_find_them(
    feed: Feed, kairos: Kairos, client: TestClient, read_key: dict[str, str]
) -> None:
    group_of = plant(feed)
    r = client.post(URL, json={"features": ["orders", "spend"], "k": None}, headers=read_key)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["k"] == 3 and body["k_chosen_by"] == "silhouette" and set(body["silhouette"]) >= {"2", "3", "4"}
    assert max(body["silhouette"], key=body["silhouette"].get) == "3"
    assert (body["profiles"], body["excluded"]) == (120, 5)
    assert [c["size"] for c in body["clusters"]] == SIZES  # largest first
    env = cel_env()
    profiles = {
        user: kairos.codec.traits(p)
        for user in group_of
        if (pk := kairos.resolve(f"user_id:{user}")) is not None and (p := kairos.profile(pk)) is not None
    }
    for g, cluster in enumerate(body["clusters"]):
        assert cluster["precision"] >= 0.9 and cluster["recall"] >= 0.9, cluster
        assert abs(cluster["centroid"]["orders"] - (GROUPS[g][0] + 1)) < 1
        assert cluster["share"] == round(SIZES[g] / 120, 4)
        rule = env.compile(cluster["rule"])
        # The rule, run by CEL on the profiles' traits, selects the group (the same predicate as reported).
        chosen = {u for u, traits in profiles.items() if rule.eval(data={"traits": traits}).value() is True}
        members = {u for u, grp in group_of.items() if grp == g}
        assert len(chosen & members) / len(chosen) == cluster["precision"]
        assert len(chosen & members) / len(members) == cluster["recall"]


def test_given_k_booleans_and_keys_that_are_not_identifiers(feed: Feed, kairos: Kairos) -> None:
    events = []
    for g, ((orders, spend, vip), size) in enumerate(zip(GROUPS, SIZES, strict=True)):
        for i in range(size):
            traits = {"order-count": orders + i % 3, "in": spend + i, "vip": vip}
            events.append({"type": "identify", "userId": f"v{g}-{i}", "traits": traits})
    feed(*events)
    answer = discover(live_traits(kairos, page=7), ["order-count", "in", "vip"], 3)
    assert answer["k_chosen_by"] == "given" and "silhouette" not in answer and answer["k"] == 3
    env = cel_env()
    for cluster in answer["clusters"]:
        env.compile(cluster["rule"])
        assert cluster["precision"] >= 0.9 and cluster["recall"] >= 0.9
    rules = " ".join(c["rule"] for c in answer["clusters"])
    assert 'traits["order-count"]' in rules or 'traits["in"]' in rules or "traits.vip ==" in rules
    assert "traits.in " not in rules  # `in` is a CEL keyword: indexed, not selected


def test_answer_validates_against_the_openapi_schema(feed: Feed, client: TestClient, read_key: dict[str, str]) -> None:
    from tests.test_openapi import Contract

    plant(feed)
    contract = Contract(client.get("/openapi.json").json())
    r = client.post(URL, json={"features": ["orders", "spend"], "k": 4}, headers=read_key)
    assert r.status_code == 200
    contract.check("Microsegments", r.json())
    r = client.post(URL, json={"features": ["nope"]}, headers=read_key)
    contract.check("Error", r.json())


@pytest.mark.parametrize(
    ("body", "code", "field"),
    [
        (b"not json", "invalid_json", "body"),
        (b"[1, 2]", "invalid_json", "body"),
        (b'{"features": "orders"}', "invalid_features", "features"),
        (b'{"features": []}', "invalid_features", "features"),
        (b"{}", "invalid_features", "features"),
        (b'{"features": [1]}', "invalid_features", "features[0]"),
        (b'{"features": ["or\\u0000ders"]}', "invalid_features", "features[0]"),
        (b'{"features": [""]}', "invalid_features", "features[0]"),
        (b'{"features": ["orders", "orders"]}', "invalid_features", "features"),
        (json.dumps({"features": [f"f{i}" for i in range(5000)]}).encode(), "invalid_features", "features"),
        (b'{"features": ["orders"], "k": 1}', "invalid_k", "k"),
        (b'{"features": ["orders"], "k": 21}', "invalid_k", "k"),
        (b'{"features": ["orders"], "k": "3"}', "invalid_k", "k"),
        (b'{"features": ["orders"], "k": true}', "invalid_k", "k"),
        (b'{"features": ["orders"], "k": 2.5}', "invalid_k", "k"),
        (b'{"features": ["orders"], "kk": 2}', "unknown_field", "kk"),
        (b'{"features": ["nope"]}', "unknown_feature", "features"),
        (b'{"features": ["plan"]}', "non_numeric_feature", "features"),
        (b'{"features": ["\xff"]}', "invalid_json", "body"),  # not UTF-8: was a 500
    ],
)
def test_bad_requests_get_precise_errors(
    feed: Feed, client: TestClient, read_key: dict[str, str], body: bytes, code: str, field: str
) -> None:
    plant(feed)
    r = client.post(URL, content=body, headers={**read_key, "Content-Type": "application/json"})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == code and r.json()["error"]["field"] == field


def test_too_few_profiles_and_auth(feed: Feed, client: TestClient, read_key: dict[str, str]) -> None:
    feed({"type": "identify", "userId": "a", "traits": {"orders": 1}})
    r = client.post(URL, json={"features": ["orders"]}, headers=read_key)
    assert r.status_code == 400 and r.json()["error"]["code"] == "too_few_profiles"
    feed(*({"type": "identify", "userId": f"n{i}", "traits": {"orders": i}} for i in range(12)))
    r = client.post(URL, json={"features": ["orders"], "k": 8}, headers=read_key)  # 13 profiles, 8 clusters
    assert r.status_code == 400 and r.json()["error"]["code"] == "too_few_profiles"
    assert client.post(URL, json={"features": ["orders"], "k": 3}, headers=read_key).status_code == 200
    assert client.post(URL, json={"features": ["orders"]}).status_code == 401
    huge = b'{"features": ["' + b"x" * 70_000 + b'"]}'
    r = client.post(URL, content=huge, headers=read_key)
    assert r.status_code == 413 and r.json()["error"]["field"] == "body"


def test_identical_profiles_are_not_clusters(feed: Feed, client: TestClient, read_key: dict[str, str]) -> None:
    feed(*({"type": "identify", "userId": f"same-{i}", "traits": {"orders": 3}} for i in range(20)))
    r = client.post(URL, json={"features": ["orders"]}, headers=read_key)
    assert r.status_code == 400 and r.json()["error"]["code"] == "too_few_profiles"


def test_rfm_traits_are_features(feed: Feed, client: TestClient, read_key: dict[str, str]) -> None:
    events = []
    for g, (orders, total) in enumerate([(1, 10), (4, 200), (9, 900)]):
        for i in range(15):
            events += [
                {"type": "track", "userId": f"b{g}-{i}", "event": "Order Completed", "properties": {"total": total}}
            ] * orders
    feed(*events)
    r = client.post(URL, json={"features": ["rfm_orders", "rfm_spend"]}, headers=read_key)
    assert r.status_code == 200, r.text
    assert r.json()["k"] == 3 and all(c["size"] == 15 for c in r.json()["clusters"])


def test_cli_prints_a_table_and_json(
    tmp_path: Path, store_settings: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    kairos = Kairos(make_settings(store_settings))
    try:
        plant(Feed(kairos, kairos.source_named("web")))
    finally:
        kairos.close()
    point_cli_at(store_settings, monkeypatch, tmp_path / "kairos.toml", "")
    monkeypatch.setenv("COLUMNS", "250")
    runner = CliRunner()
    result = runner.invoke(app, ["microsegments", "discover", "--features", "orders,spend"])
    assert result.exit_code == 0, result.output
    assert "3 clusters (best silhouette) of 120 profiles; 5 excluded" in result.output
    assert "precision" in result.output and "has(traits." in result.output
    result = runner.invoke(app, ["microsegments", "discover", "--features", "orders, spend", "--k", "2", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["k"] == 2
    result = runner.invoke(app, ["microsegments", "discover", "--features", "nope", "--json"])
    assert result.exit_code == 2 and json.loads(result.stdout)["error"]["code"] == "unknown_feature"


def test_features_no_profile_holds_together_are_named_as_such() -> None:
    """Two profiles held ``k`` (none with ``orders`` too): the answer said no profile had ``k`` at all."""
    from kairos.errors import ValidationError

    rows = [{"orders": 3}, {"orders": 5}, {"k": 1}, {"k": 2}]
    with pytest.raises(ValidationError, match="every one of the features together") as caught:
        discover(rows, ["orders", "k"], None)
    assert caught.value.code == "unknown_feature"
    with pytest.raises(ValidationError, match="no profile has the trait 'nope'"):
        discover(rows, ["orders", "nope"], None)

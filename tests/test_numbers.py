"""Integers beyond 64 bits (a JSON decoder reads ``1`` and 400 zeros as a Python int): refused where JSON comes
in, with the path of the number, and harmless if one is in the log already. Found by a helper probing the API:
one such event paused the processor for everyone (each one dead-lettered, then the pause after 10 in a row);
decide, rewards, offers and the profile filter answered 500. Both backends."""

from __future__ import annotations

from typing import Any

from starlette.testclient import TestClient

from kairos.collect import NewEvent
from kairos.runtime import Kairos
from kairos.store import Source

BIG = "1" + "0" * 400  # as JSON text
INT64_MAX = 2**63 - 1


def big(text: str) -> str:
    """``text`` with BIG and MAX for the numbers (JSON text)."""
    return text.replace("BIG", BIG).replace("MAX", str(INT64_MAX))


def raw(text: str, headers: dict[str, str] | None = None) -> dict[str, Any]:
    return {"content": big(text).encode(), "headers": {"Content-Type": "application/json", **(headers or {})}}


def admin(kairos: Kairos, scopes: str = "admin") -> dict[str, str]:
    _, secret = kairos.store.admin.add_api_key(scopes, frozenset({scopes}), 0)
    return {"Authorization": f"Bearer {secret}"}


def test_collect_refuses_an_event_holding_one_and_keeps_the_others(
    client: TestClient, kairos: Kairos, source: Source
) -> None:
    batch = (
        '{"batch": ['
        '{"type": "identify", "userId": "good", "traits": {"n": MAX, "id": "12345678901234567890123"}},'
        '{"type": "track", "userId": "bad", "event": "E", "context": {"location": {"latitude": BIG, "longitude": 1}}},'
        '{"type": "track", "userId": "bad2", "event": "E", "properties": {"list": [1, -BIG]}}'
        "]}"
    )
    r = client.post("/v1/batch", auth=(source.write_key, ""), **raw(batch))
    assert (r.status_code, r.json()["accepted"]) == (400, 1), r.text
    errors = [(e["index"], e["code"], e["field"]) for e in r.json()["errors"]]
    assert errors == [(1, "invalid_field", "context.location.latitude"), (2, "invalid_field", "properties.list[1]")]
    assert "64 bits" in r.json()["errors"][0]["message"]
    assert kairos.store.log.count() == 1  # the good event only (a 23-digit string is not a number)
    single = '{"userId": "bad", "event": "E", "properties": {"n": BIG}}'
    r = client.post("/v1/track", auth=(source.write_key, ""), **raw(single))
    assert r.status_code == 400 and r.json()["errors"][0]["field"] == "properties.n", r.text


def test_one_already_in_the_log_neither_pauses_nor_dead_letters_the_processor(kairos: Kairos, source: Source) -> None:
    """Written before collect refused them: the derived context ignores the coordinate, a reward is clipped."""
    events = [
        NewEvent(
            f"m{i}",
            1_767_261_600_000,
            1_767_261_600_000,
            "observed",
            big(
                '{"type":"track","userId":"u#","event":"Offer Clicked","messageId":"m#",'
                '"context":{"location":{"latitude":BIG,"longitude":1}},'
                '"properties":{"decision_id":"d-1","reward":BIG},"_kairos":{"source":"web","trait_kind":"observed"}}'
            )
            .replace("#", str(i))
            .encode(),
        )
        for i in range(12)  # more than the poison events in a row that pause the processor
    ]
    kairos.append([(source.name, events)])
    kairos.processor.run_until_caught_up()
    assert kairos.store.state.deadletters() == []
    assert kairos.processor.status()["state"] != "paused"
    assert kairos.resolve("user_id:u11") is not None
    rewards = [m.payload.get("reward") for m in kairos.store.outbox.read(0, 100) if m.type == "conversion"]
    assert rewards and all(r == 1e9 for r in rewards)


def test_api_bodies_and_queries_refuse_one_precisely(client: TestClient, kairos: Kairos) -> None:
    keys = admin(kairos)
    decide = admin(kairos, "decide")
    read = admin(kairos, "read")
    cases = [
        (
            "POST",
            "/v1/decide",
            decide,
            '{"profile": "user_id:u1", "channel": "web", "context": {"n": BIG}}',
            "context.n",
        ),
        ("POST", "/v1/rewards", decide, '{"decision_id": "d", "offer_id": "o", "reward": BIG}', "reward"),
        ("PUT", "/v1/offers/o1", keys, '{"name": "x", "value": BIG}', "value"),
        ("PUT", "/v1/offers/o1", keys, '{"name": "x", "weight": -BIG}', "weight"),
        ("PUT", "/v1/offers/o1", keys, '{"name": "x", "attributes": {"a": BIG}}', "attributes.a"),
        ("PUT", "/v1/segments/s1", keys, '{"rule": "true", "description": BIG}', "description"),
    ]
    for method, path, headers, body, field in cases:
        r = client.request(method, path, **raw(body, headers))
        assert r.status_code == 400, (path, r.text)
        assert (r.json()["error"]["code"], r.json()["error"]["field"]) == ("invalid", field), (path, r.text)
    for value in (str(2**63), str(-(2**63) - 1)):
        r = client.get(f"/v1/profiles?trait.n={value}", headers=read)
        assert r.status_code == 400 and r.json()["error"]["field"] == "trait.n", r.text
    assert client.get(f"/v1/profiles?trait.n={INT64_MAX}", headers=read).status_code == 200


def test_times_beyond_the_calendar_are_refused_not_500(client: TestClient, kairos: Kairos) -> None:
    keys = admin(kairos)
    read = admin(kairos, "read")
    for field, value in (("active_from", "0001-01-01T00:00:00+14:00"), ("active_to", "9999-12-31T23:59:59-14:00")):
        r = client.put("/v1/offers/o1", headers=keys, json={"name": "x", field: value})
        assert r.status_code == 400 and r.json()["error"]["field"] == field, r.text
    assert client.put("/v1/offers/o1", headers=keys, json={"name": "x"}).status_code in (200, 201)
    for path in ("/v1/reports/decisions", "/v1/reports/experience", "/v1/offers/o1/stats"):
        for field, value in (("from", "0001-01-01T00:00:00%2B14:00"), ("to", "9999-12-31T23:59:59-14:00")):
            r = client.get(f"{path}?{field}={value}", headers=read)
            assert r.status_code == 400, (path, r.text)
            assert (r.json()["error"]["code"], r.json()["error"]["field"]) == ("invalid_query", field)
        # `from` defaults to 30 days before `to`, which must not fall before year 1 either (it was a 500).
        for to in ("0001-01-01", "0001-01-15T00:00:00Z"):
            r = client.get(f"{path}?to={to}", headers=read)
            if to == "0001-01-01":
                assert r.status_code == 400, (path, r.text)
                assert (r.json()["error"]["code"], r.json()["error"]["field"]) == ("invalid_query", "to")
            else:
                assert r.status_code == 200, (path, r.text)
                body = r.json()
                start = body["from"] if "from" in body else body["period"]["from"]  # experience: epoch ms
                assert start in (-62135596800000, "0001-01-01T00:00:00Z"), r.text
        # The last microsecond of 9999 is in 9999 (a float timestamp rounded it into year 10000).
        assert client.get(f"{path}?from=9999-12-30&to=9999-12-31T23:59:59.999999Z", headers=read).status_code == 200
    # The experience report has a bucket per week of its period: ten thousand years were 50 MB.
    r = client.get("/v1/reports/experience?from=0001-01-02&to=9999-12-30", headers=read)
    assert r.status_code == 400 and "at most" in r.json()["error"]["message"], r.text
    assert client.get("/v1/reports/experience?from=2026-01-01&to=2026-06-01", headers=read).status_code == 200


def test_a_command_s_json_argument_is_read_as_a_request_body() -> None:
    import pytest

    from kairos.cli._common import json_argument
    from kairos.errors import ValidationError

    assert json_argument(big('{"name": "x", "value": MAX}')) == {"name": "x", "value": INT64_MAX}
    with pytest.raises(ValidationError) as caught:
        json_argument(big('{"name": "x", "attributes": {"a": [BIG]}}'))
    assert caught.value.field == "attributes.a[0]"
    for text in (
        '{"value": NaN}',
        "{",
        '{"a": 1' + "0" * 5000 + "}",
    ):  # json.loads took NaN; Python refuses 5,000 digits
        with pytest.raises(ValidationError):
            json_argument(text)

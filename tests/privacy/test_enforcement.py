"""Consent at every use, and the data-use ledger: deliveries, streams, segment exports, decisions."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from kairos.activate import destinations
from kairos.api import create_app
from kairos.privacy.consents import record
from kairos.privacy.uses import data_uses
from kairos.runtime import Kairos
from kairos.store import Source
from tests.conftest import Feed, make_settings
from tests.receivers import receiver
from tests.test_delivery import FAST, SECRET, delivering, wait_for


@pytest.fixture
def kairos(store_settings: dict[str, Any]) -> Iterator[Kairos]:
    k = Kairos(make_settings(store_settings, delivery=FAST))
    yield k
    k.close()


def keys(kairos: Kairos, *scopes: str) -> dict[str, str]:
    _, secret = kairos.store.admin.add_api_key("-".join(scopes), frozenset(scopes), 0)
    return {"Authorization": f"Bearer {secret}"}


def say(feed: Feed, user: str, **consents: bool) -> None:
    feed({"type": "track", "userId": user, "event": "Consent", "context": {"consent": {
        "categoryPreferences": consents}}})  # fmt: skip


def test_a_withdrawn_consent_stops_the_next_delivery_and_each_delivery_is_in_the_ledger(
    kairos: Kairos, feed: Feed, source: Source
) -> None:
    kairos.store.admin.put_definition("segment", "vip", {"rule": 'traits.plan == "pro"'}, kairos.clock.now())
    with receiver(SECRET) as rec:
        body = {"url": rec.url, "secret": SECRET, "subscribe": {"events": 'event == "Viewed"'}, "traits": ["plan"]}
        destinations.save(kairos, "mailer", {**body, "purpose": "marketing_email"})
        feed({"type": "identify", "userId": "jane", "traits": {"plan": "pro"}})
        say(feed, "jane", marketing_email=True)
        feed({"type": "track", "userId": "jane", "event": "Viewed"})
        with delivering(kairos):
            wait_for(lambda: len(rec.accepted) == 1)
            pk = feed.profile("user_id:jane").pk
            record(kairos, pk, consents={"marketing_email": False}, via="api")  # through the log, like the API
            kairos.processor.run_until_caught_up()
            feed({"type": "track", "userId": "jane", "event": "Viewed"})
            wait_for(lambda: len(kairos.store.deliveries.list("mailer", "suppressed", 10)) == 1)
        assert len(rec.accepted) == 1  # the second message was never sent
    uses = [u for u in data_uses(kairos, pk) if u["use"] == "delivery"]
    assert len(uses) == 1 and uses[0]["purpose"] == "marketing_email" and uses[0]["recipient"] == "mailer"
    delivered = kairos.store.deliveries.list("mailer", "delivered", 10)
    assert uses[0]["ref"] == delivered[0].id


def test_a_segment_export_lists_only_those_who_allow_its_purpose_and_records_it(
    kairos: Kairos, feed: Feed, source: Source
) -> None:
    kairos.store.admin.put_definition("segment", "vip", {"rule": 'traits.plan == "pro"'}, kairos.clock.now())
    feed(*({"type": "identify", "userId": f"u{i}", "traits": {"plan": "pro"}} for i in range(7)))
    for i in range(0, 7, 2):
        say(feed, f"u{i}", advertising=True)
    say(feed, "u2", advertising=False)  # changed their mind
    allowed = {feed.profile(f"user_id:u{i}").id for i in (0, 4, 6)}
    with TestClient(create_app(kairos, run_processor=False), raise_server_exceptions=False) as client:
        reader = keys(kairos, "read")
        everyone = client.get("/v1/segments/vip/members", headers=reader).json()["items"]
        assert len(everyone) == 7
        got: list[str] = []
        cursor = None
        while True:  # pages of 2: the filter must not end a page early or skip anyone
            q = "?purpose=advertising&recipient=ads_partner&limit=2" + (f"&cursor={cursor}" if cursor else "")
            page = client.get(f"/v1/segments/vip/members{q}", headers=reader).json()
            got += [m["profile_id"] for m in page["items"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert sorted(got) == sorted(allowed)
        bad = client.get("/v1/segments/vip/members?purpose=nope", headers=reader)
        assert bad.status_code == 400 and bad.json()["error"] == {
            "code": "unknown_purpose", "field": "purpose", "message": bad.json()["error"]["message"]}  # fmt: skip
        bad = client.get("/v1/segments/vip/members?purpose=advertising&recipient=" + "x" * 101, headers=reader)
        assert bad.status_code == 400 and bad.json()["error"]["field"] == "recipient"
        ledger = client.get("/v1/profiles/user_id:u0/data-uses", headers=reader).json()["items"]
        assert [(u["use"], u["purpose"], u["recipient"], u["ref"]) for u in ledger] == [
            ("segment_export", "advertising", "ads_partner", "segment:vip")
        ]
        assert client.get("/v1/profiles/user_id:u2/data-uses", headers=reader).json()["items"] == []
        for path in ("/v1/profiles/user_id:u0/data-uses?cursor=x", "/v1/profiles/user_id:u0/consents?limit=3"):
            bad = client.get(path, headers=reader)  # a parameter the route does not read is refused, not ignored
            assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_query", path


def test_decisions_are_in_the_ledger_with_their_purposes(store_settings: dict[str, Any]) -> None:
    k = Kairos(make_settings(store_settings, decide={"control_share": 0.0}))
    try:
        src = k.store.admin.add_source("web", "observed", 0)
        feed = Feed(k, src)
        feed({"type": "identify", "userId": "jane", "traits": {"email": "jane@example.com"}})
        say(feed, "jane", marketing_email=True)
        with TestClient(create_app(k, run_processor=False), raise_server_exceptions=False) as client:
            admin, decider = keys(k, "admin"), keys(k, "decide")
            for key, purpose in (("news", "marketing_email"), ("tips", "personalization")):
                r = client.put(f"/v1/offers/{key}", json={"name": key, "purpose": purpose}, headers=admin)
                assert r.status_code == 201, r.text
            bad = client.put("/v1/offers/x", json={"name": "x", "purpose": "nope"}, headers=admin)
            assert bad.status_code == 400 and bad.json()["error"]["code"] == "unknown_purpose"
            client.app.state.decider.catalog.current(float("inf"))  # type: ignore[attr-defined]
            answer = client.post("/v1/decide", json={"profile": "email:jane@example.com", "channel": "web",
                                                     "limit": 2}, headers=decider).json()  # fmt: skip
            assert {i["offer_id"] for i in answer["items"]} == {"news", "tips"}
            uses = client.get("/v1/profiles/user_id:jane/data-uses", headers=keys(k, "read")).json()["items"]
        assert {(u["use"], u["purpose"], u["ref"]) for u in uses} == {
            ("decision", "personalization", answer["decision_id"]),
            ("decision", "marketing_email", answer["decision_id"]),
        }
        assert all(u["recipient"] == "web" for u in uses)
    finally:
        k.close()


def test_a_destination_must_serve_a_configured_purpose(kairos: Kairos) -> None:
    from kairos.errors import ValidationError

    body = {"url": "http://127.0.0.1:9/x", "secret": SECRET, "subscribe": {"moments": ["*"]}, "purpose": "crm"}
    with pytest.raises(ValidationError) as err:
        destinations.save(kairos, "crm", body)
    assert err.value.code == "unknown_purpose" and err.value.field == "purpose"

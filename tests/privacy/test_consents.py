"""The consent model: purposes with defaults, the ledger, the consent API, merges and out-of-order arrival."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from kairos.api.app import create_app
from kairos.consent import ConsentPolicy
from kairos.runtime import Kairos
from kairos.store import Source
from tests.conftest import Feed, make_settings

T0 = "2026-05-01T10:00:0{}Z"


@pytest.fixture
def live(store_settings: dict[str, Any]) -> Iterator[tuple[Kairos, TestClient]]:
    """The API with its processor running in a thread (a consent change waits for it to be applied)."""
    settings = make_settings(
        store_settings,
        processor={"mode": "thread", "poll_interval_ms": 10},
        decide={"learner_mode": "off"},
        delivery={"mode": "off"},
        consent={"categories": {"web": {"C0004": "advertising"}}},
    )
    k = Kairos(settings)
    with TestClient(create_app(k), raise_server_exceptions=False) as c:
        yield k, c
    k.close()


def sections(kairos: Kairos, ref: str) -> dict[str, Any]:
    """The profile's state as stored now (the read cache may still hold an older view)."""
    profile = kairos.profile(kairos.resolve(ref) or 0)
    assert profile is not None
    return dict(profile.sections)


def keys(kairos: Kairos, *scopes: str) -> dict[str, str]:
    _, secret = kairos.store.admin.add_api_key("-".join(scopes), frozenset(scopes), 0)
    return {"Authorization": f"Bearer {secret}"}


def test_defaults_follow_each_purpose_and_the_person_overrides_them(feed: Feed, kairos: Kairos) -> None:
    feed({"type": "identify", "userId": "u1", "traits": {"name": "Jane"}})
    policy = kairos.consent_policy
    state = policy.state(sections(kairos, "user_id:u1"))
    assert state["personalization"] == {
        "granted": True, "stated": False, "default": "opt_out", "source": None, "updated_at": None,
        "text_version": None,
    }  # fmt: skip
    assert state["marketing_email"]["granted"] is False and state["marketing_email"]["default"] == "opt_in"
    feed({"type": "track", "userId": "u1", "event": "X", "context": {"consent": {"categoryPreferences": {
        "personalization": False, "marketing_email": True, "no_such_purpose": True}}}})  # fmt: skip
    view = sections(kairos, "user_id:u1")
    assert not policy.allows(view, "personalization") and policy.allows(view, "marketing_email")
    assert "no_such_purpose" not in view["consents"]  # neither mapped nor configured: ignored
    assert not policy.allows(None, "analytics")  # nobody known: nothing allowed


def test_a_source_category_maps_to_a_purpose(store_settings: dict[str, Any]) -> None:
    settings = make_settings(store_settings, consent={"categories": {"web": {"C0004": "advertising"}, "*": {
        "C0002": "analytics"}}})  # fmt: skip
    k = Kairos(settings)
    try:
        web = k.store.admin.add_source("web", "observed", 0)
        app = k.store.admin.add_source("app", "observed", 0)
        prefs = {"categoryPreferences": {"C0004": True, "C0002": False}}
        for src, user in ((web, "w"), (app, "a")):
            r = k.ingest({"type": "track", "userId": user, "event": "X", "context": {"consent": prefs}}, "track",
                         src.write_key)  # fmt: skip
            assert not r.errors
        k.processor.run_until_caught_up()
        w, a = sections(k, "user_id:w"), sections(k, "user_id:a")
        assert set(w["consents"]) == {"advertising", "analytics"} and w["consents"]["advertising"]["granted"]
        assert set(a["consents"]) == {"analytics"}  # C0004 is mapped for the web source only
    finally:
        k.close()


def test_ledger_keeps_every_choice_and_an_older_grant_never_beats_a_newer_denial(feed: Feed, kairos: Kairos) -> None:
    def say(granted: bool, second: int) -> None:
        feed({"type": "track", "userId": "u1", "event": "X", "timestamp": T0.format(second),
              "context": {"consent": {"categoryPreferences": {"marketing_email": granted}}}})  # fmt: skip

    say(False, 5)
    say(True, 3)  # arrives later, said earlier
    say(True, 5)  # same time as the denial: the denial wins the tie
    assert sections(kairos, "user_id:u1")["consents"]["marketing_email"]["granted"] is False
    rows = kairos.store.state.counts("consent_ledger")
    assert [(r[2], bool(r[3])) for r in rows] == [("marketing_email", False), ("marketing_email", True)] * 1 + [
        ("marketing_email", True)
    ]


@pytest.mark.parametrize("order", ["denial_first", "grant_first"])
def test_merging_profiles_with_conflicting_consents_keeps_the_newest_word(
    feed: Feed, kairos: Kairos, order: str
) -> None:
    deny = {"type": "track", "anonymousId": "a1", "event": "X", "timestamp": T0.format(8),
            "context": {"consent": {"categoryPreferences": {"marketing_email": False}}}}  # fmt: skip
    both = {"marketing_email": True, "advertising": True}
    grant = {"type": "track", "userId": "u1", "event": "X", "timestamp": T0.format(2),
             "context": {"consent": {"categoryPreferences": both}}}  # fmt: skip
    feed(*([deny, grant] if order == "denial_first" else [grant, deny]))
    feed({"type": "identify", "userId": "u1", "anonymousId": "a1"})  # the two profiles merge
    pk = feed.profile("user_id:u1").pk
    assert feed.profile("anonymous_id:a1").pk == pk
    view = sections(kairos, "user_id:u1")
    assert view["consents"]["marketing_email"]["granted"] is False  # the newer denial survives the merge
    assert view["consents"]["advertising"]["granted"] is True
    rows = kairos.store.state.counts("consent_ledger", "WHERE profile_pk = {p}", (pk,))
    assert len(rows) == 3  # both profiles' ledgers, moved to the winner


def test_consent_api_records_the_text_version_and_the_next_decision_sees_it(
    live: tuple[Kairos, TestClient],
) -> None:
    kairos, client = live
    web: Source = kairos.store.admin.add_source("web", "observed", 0)
    kairos.ingest({"type": "identify", "userId": "u1", "traits": {"email": "jane@example.com"}}, "identify",
                  web.write_key)  # fmt: skip
    assert kairos.wait_processed()
    writer, reader = keys(kairos, "write"), keys(kairos, "read")
    got = client.get("/v1/profiles/email:jane@example.com/consents", headers=reader)
    assert got.status_code == 200, got.text
    body = got.json()
    assert body["consents"]["marketing_email"]["granted"] is False and body["ledger"] == []
    assert body["consents"]["marketing_email"]["title"] == "Marketing e-mails"
    r = client.put("/v1/profiles/user_id:u1/consents", json={"marketing_email": True, "personalization": False},
                   headers=writer)  # fmt: skip
    assert r.status_code == 200, r.text
    after = r.json()
    assert after["consents"]["marketing_email"] | {"updated_at": None} == {
        "granted": True, "stated": True, "default": "opt_in", "source": "kairos-api", "updated_at": None,
        "text_version": "1", "title": "Marketing e-mails", "text": "Send you offers and news by e-mail.",
        "version": "1",
    }  # fmt: skip
    assert {(e["purpose"], e["granted"], e["source"], e["text_version"]) for e in after["ledger"]} == {
        ("marketing_email", True, "kairos-api", "1"),
        ("personalization", False, "kairos-api", "1"),
    }
    profile = client.get("/v1/profiles/user_id:u1", headers=reader).json()
    assert profile["consents"]["personalization"]["granted"] is False
    events = client.get("/v1/profiles/user_id:u1/events", headers=reader).json()["items"]
    assert any(e.get("event") == "Consent Updated" or e.get("name") == "Consent Updated" for e in events)
    assert client.get("/v1/profiles/user_id:u1/consents", headers=reader).json() == after


BAD_PUTS: list[tuple[Any, str, str]] = [
    ([], "invalid_body", "body"),
    ({}, "invalid_body", "body"),
    ({"marketing_email": "yes"}, "invalid_type", "marketing_email"),
    ({"marketing_email": 1}, "invalid_type", "marketing_email"),
    ({"marketing_email": None}, "invalid_type", "marketing_email"),
    ({"nope": True}, "unknown_purpose", "nope"),
    ({"x\u0000y": True}, "unknown_purpose", "x\u0000y"),
    ({"é" * 500: True}, "unknown_purpose", "é" * 100),
]


@pytest.mark.parametrize(("body", "code", "field"), BAD_PUTS)
def test_consent_api_refuses_bad_bodies_precisely(
    client: TestClient, kairos: Kairos, feed: Feed, body: Any, code: str, field: str
) -> None:
    feed({"type": "identify", "userId": "u1"})
    r = client.put("/v1/profiles/user_id:u1/consents", json=body, headers=keys(kairos, "write"))
    assert r.status_code == 400 and r.json()["error"]["code"] == code and r.json()["error"]["field"] == field
    assert kairos.store.log.count() == 1  # nothing appended


def test_consent_api_refuses_bad_refs_keys_and_bytes(client: TestClient, kairos: Kairos, feed: Feed) -> None:
    feed({"type": "identify", "userId": "u1"})
    writer = keys(kairos, "write")
    ok = {"marketing_email": True}
    assert client.put("/v1/profiles/user_id:u1/consents", json=ok).status_code == 401
    assert client.put("/v1/profiles/user_id:u1/consents", json=ok, headers=keys(kairos, "read")).status_code == 403
    assert client.put("/v1/profiles/user_id:nobody/consents", json=ok, headers=writer).status_code == 404
    assert client.put("/v1/profiles/nope:x/consents", json=ok, headers=writer).json()["error"]["code"] == "invalid_ref"
    bad = client.put("/v1/profiles/user_id:u1/consents", content=b"\xff\xfe{", headers=writer)
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_json"
    huge = client.put("/v1/profiles/user_id:u1/consents", content=b"{" + b" " * 70_000 + b"}", headers=writer)
    assert huge.status_code == 413
    assert client.get("/v1/profiles/user_id:u1/consents").status_code == 401
    assert kairos.store.log.count() == 1


def test_policy_state_lists_unconfigured_purposes_the_person_spoke_about() -> None:
    from kairos.config import ConsentSettings

    policy = ConsentPolicy(ConsentSettings())
    view = {"consents": {"legacy": {"granted": True, "source": "crm", "updated_at": "x"}}}
    assert policy.state(view)["legacy"]["granted"] is True and not policy.allows({}, "legacy")


def test_a_consent_change_is_audited_by_profile_id_never_by_the_reference(
    client: TestClient, kairos: Kairos, feed: Feed
) -> None:
    feed({"type": "identify", "userId": "u1", "traits": {"email": "jane@example.com"}})
    kairos.settings.privacy.apply_wait_seconds = 0.0
    r = client.put("/v1/profiles/email:jane@example.com/consents", json={"advertising": True},
                   headers=keys(kairos, "write"))  # fmt: skip
    assert r.status_code == 202
    _, admin = kairos.store.admin.add_api_key("auditor", frozenset({"admin"}), 0)
    entries = client.get("/v1/audit?action=consents.put", headers={"Authorization": f"Bearer {admin}"}).json()
    assert [(e["action"], e["target"], e["outcome"]) for e in entries["items"]] == [
        ("consents.put", feed.profile("user_id:u1").id, 202)
    ]
    assert "jane" not in str(entries)

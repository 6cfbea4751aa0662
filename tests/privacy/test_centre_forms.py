"""The preference centre's forms doing their work in-process, with the real processor running in a thread:
a consent switched off, a preference stated, the download, the erasure request (both backends)."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
from starlette.testclient import TestClient

from kairos.api import create_app
from kairos.privacy.links import create_link
from kairos.runtime import Kairos
from kairos.store import Source
from tests.conftest import Feed, make_settings
from tests.privacy.test_centre import PREFERENCES

HOUR = 3_600_000


@pytest.fixture
def kairos(store_settings: dict[str, Any]) -> Iterator[Kairos]:
    settings = make_settings(
        store_settings,
        processor={"mode": "thread", "poll_interval_ms": 5},
        delivery={"mode": "off"},
        decide={"learner_mode": "off", "control_share": 0},
        privacy={"preferences": PREFERENCES},
    )
    k = Kairos(settings)
    yield k
    k.close()


@pytest.fixture
def client(kairos: Kairos) -> Iterator[TestClient]:
    with TestClient(create_app(kairos), raise_server_exceptions=False) as c:
        yield c


@pytest.fixture
def path(kairos: Kairos, source: Source, feed: Feed) -> str:
    feed(
        {
            "type": "identify",
            "userId": "jo-1",
            "traits": {"email": "jo@example.com", "preferred_channel": "sms"},
            "context": {"consent": {"categoryPreferences": {"marketing_email": True}}},
        }
    )
    pk = kairos.resolve("user_id:jo-1")
    assert pk is not None
    return urlsplit(create_link(kairos, pk, HOUR, "http://testserver").url).path


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found is not None
    return found.group(1)


def switch(html: str, purpose: str) -> str:
    """The consent switch's input tag."""
    found = re.search(rf'<input type="checkbox" role="switch" id="consent-{purpose}"[^>]*>', html)
    assert found is not None, purpose
    return found.group(0)


def test_switching_a_consent_off_records_it_and_shows_it(client: TestClient, kairos: Kairos, path: str) -> None:
    page = client.get(path).text
    assert " checked" in switch(page, "marketing_email")
    assert "On: your choice" in page
    on = [k for k, p in kairos.settings.consent.purposes.items() if p.default == "opt_out"]
    # Every switch as shown, but marketing_email off.
    r = client.post(f"{path}/consents", data={"csrf": csrf_of(page), "consent": on}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == f"{path}?done=consents#notice"
    after = client.get(r.headers["location"]).text
    assert "Your choices are saved." in after
    assert " checked" not in switch(after, "marketing_email")
    state = re.search(r'<p class="state" id="consent-marketing_email-state">([^<]*)</p>', after)
    assert state is not None and re.fullmatch(r"Off: your choice, made on \d+ \w+ \d{4} through this page\.", state[1])
    assert " checked" in switch(after, "analytics")  # untouched: still the default
    view = kairos.view(kairos.resolve("user_id:jo-1") or 0)
    assert view is not None and view["consents"]["marketing_email"]["granted"] is False
    # Saving the same choices again appends nothing.
    last = kairos.store.log.last_seq()
    r = client.post(f"{path}/consents", data={"csrf": csrf_of(after), "consent": on}, follow_redirects=False)
    assert r.headers["location"].endswith("?done=nothing#notice") and kairos.store.log.last_seq() == last


def test_an_unknown_purpose_is_refused(client: TestClient, kairos: Kairos, path: str) -> None:
    page = client.get(path).text
    last = kairos.store.log.last_seq()
    r = client.post(f"{path}/consents", data={"csrf": csrf_of(page), "consent": ["analytics", "mind_reading"]})
    assert r.status_code == 400 and kairos.store.log.last_seq() == last


def test_a_preference_becomes_a_stated_trait(client: TestClient, kairos: Kairos, path: str) -> None:
    page = client.get(path).text
    assert re.search(r'value="sms" checked', page)
    r = client.post(
        f"{path}/preferences",
        data={"csrf": csrf_of(page), "pref.preferred_channel": "email"},
        follow_redirects=False,
    )
    assert r.status_code == 303, r.text
    after = client.get(r.headers["location"]).text
    assert "Your preferences are saved." in after and re.search(r'value="email" checked', after)
    view = kairos.view(kairos.resolve("user_id:jo-1") or 0)
    assert view is not None
    assert view["traits"]["preferred_channel"] == "email"
    assert view["trait_meta"]["preferred_channel"]["kind"] == "stated"


def test_download_is_a_json_attachment_of_everything(client: TestClient, kairos: Kairos, path: str) -> None:
    page = client.get(path).text
    r = client.post(f"{path}/download", data={"csrf": csrf_of(page)})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/json")
    assert re.fullmatch(r'attachment; filename="my-data-\d{4}-\d{2}-\d{2}\.json"', r.headers["content-disposition"])
    assert r.headers["cache-control"] == "no-store"
    assert "jo@example.com" in json.dumps(r.json())  # whole, unmasked: it is the person's own copy


def test_delete_asks_for_confirmation_then_requests_the_erasure(client: TestClient, kairos: Kairos, path: str) -> None:
    html = client.get(path).text
    confirm = client.get(f"{path}/delete")
    assert confirm.status_code == 200 and "Delete all your data?" in confirm.text
    assert "jo@example.com" not in confirm.text and "j•••@example.com" not in confirm.text
    csrf = csrf_of(confirm.text)
    assert csrf == csrf_of(html)
    # Without the confirmation field nothing is requested.
    assert client.post(f"{path}/delete", data={"csrf": csrf}).status_code == 400
    r = client.post(f"{path}/delete", data={"csrf": csrf, "confirm": "yes"}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == f"{path}?done=erasure#notice"
    # The processor carries the erasure out; then the link opens nothing.
    back = client.get(r.headers["location"])  # under way, or already done if the processor was quick
    if back.status_code == 200:
        assert "Your request to delete your data is under way." in back.text
    else:
        assert back.status_code == 410 and "Your data has been deleted" in back.text
    deadline = time.monotonic() + 20
    while (gone := client.get(path)).status_code == 200 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert gone.status_code == 410 and "There is no data behind this link" in gone.text
    back = client.get(r.headers["location"])
    assert back.status_code == 410 and "Your data has been deleted" in back.text and "jo" not in back.text
    assert kairos.resolve("user_id:jo-1") is None
    _, admin = kairos.store.admin.add_api_key("admin", frozenset({"admin"}), 0)
    audit = client.get("/v1/audit", params={"action": "privacy.erase"}, headers={"Authorization": f"Bearer {admin}"})
    assert [(e["actor"], e["outcome"]) for e in audit.json()["items"]] == [("preference-centre", 202)]


def test_multi_and_text_preferences(client: TestClient, kairos: Kairos, path: str) -> None:
    page = client.get(path).text
    fields = {"csrf": csrf_of(page), "pref.topics": ["hats", "shoes"], "shown": "topics", "pref.nickname": "  Jo "}
    r = client.post(f"{path}/preferences", data=fields, follow_redirects=False)
    assert r.status_code == 303, r.text
    pk = kairos.resolve("user_id:jo-1") or 0
    view = kairos.view(pk)
    assert view is not None
    assert view["traits"]["topics"] == ["shoes", "hats"]  # in the business's order
    assert view["traits"]["nickname"] == "Jo"
    assert {view["trait_meta"][k]["kind"] for k in ("topics", "nickname")} == {"stated"}
    # Every topic unticked: the list becomes empty; the nickname is unchanged, so it is not recorded again.
    page = client.get(path).text
    assert re.search(r'value="shoes" checked', page) and 'value="Jo"' in page
    last = kairos.store.log.last_seq()
    fields = {"csrf": csrf_of(page), "shown": "topics", "pref.nickname": "Jo"}
    assert client.post(f"{path}/preferences", data=fields, follow_redirects=False).status_code == 303
    assert kairos.store.log.last_seq() == last + 1
    view = kairos.profile_view(kairos.profile(pk), [])  # type: ignore[arg-type]
    assert view["traits"]["topics"] == [] and view["traits"]["nickname"] == "Jo"


def test_why_you_saw_an_offer_names_what_the_person_told_us(client: TestClient, kairos: Kairos, path: str) -> None:
    page = client.get(path).text
    form = {"csrf": csrf_of(page), "pref.preferred_channel": "email"}
    assert client.post(f"{path}/preferences", data=form, follow_redirects=False).status_code == 303
    _, admin = kairos.store.admin.add_api_key("admin", frozenset({"admin"}), 0)
    _, decide = kairos.store.admin.add_api_key("decide", frozenset({"decide"}), 0)
    offer = {"name": "Autumn boots", "purpose": "personalization"}
    assert client.put("/v1/offers/boots", json=offer, headers={"Authorization": f"Bearer {admin}"}).status_code == 201
    body = {"profile": "user_id:jo-1", "channel": "web"}
    r = client.post("/v1/decide", json=body, headers={"Authorization": f"Bearer {decide}"})
    assert r.status_code == 200 and r.json()["group"] == "policy", r.text
    logged = kairos.store.decisions.history([r.json()["profile_id"]], 0)[0][0].record
    assert b"preferred_channel=#" in logged and b"preferred_channel=email" not in logged
    html = client.get(path).text
    offers = html.split('id="offers"', 1)[1].split("</section>", 1)[0]
    assert "Autumn boots" in offers
    # The log holds the stated value only as a keyed hash; the page names it back from the person's own data.
    assert "You told us: Contact me by — email." in offers
    assert "When and where you were: on web in the " in offers and "#" not in offers.replace("&#", "")

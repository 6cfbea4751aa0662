"""The preference centre in-process: the link API, the page's security headers, CSRF, refused links, form
validation and escaping, on SQLite and PostgreSQL (the browser tests are in tests/e2e/)."""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
from starlette.testclient import TestClient

from kairos.api import create_app
from kairos.api.centre import SECURITY_HEADERS
from kairos.decide.records import DecisionItem, DecisionRecord, Group
from kairos.identity import profile_id_for
from kairos.pipeline.clock import ManualClock
from kairos.privacy.centre import why
from kairos.privacy.links import CSRF_COOKIE, create_link
from kairos.runtime import Kairos
from kairos.store import Source
from tests.conftest import Feed, make_settings

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
HOUR = 3_600_000
XSS = '<script>alert("x")</script>"><img src=x onerror=alert(1)>'
PREFERENCES = {
    "preferred_channel": {"label": "Contact me by", "type": "choice", "options": ["email", "sms"]},
    "topics": {"label": "Topics", "type": "multi", "options": ["shoes", "bags", "hats"]},
    "nickname": {"label": "What should we call you?", "type": "text", "max_length": 20},
}


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(T0)


@pytest.fixture
def kairos(store_settings: dict[str, Any], clock: ManualClock) -> Iterator[Kairos]:
    settings = make_settings(store_settings, privacy={"preferences": PREFERENCES})
    k = Kairos(settings, clock=clock)
    yield k
    k.close()


@pytest.fixture
def client(kairos: Kairos) -> Iterator[TestClient]:
    with TestClient(create_app(kairos, run_processor=False), raise_server_exceptions=False) as c:
        yield c


@pytest.fixture
def privacy_key(kairos: Kairos) -> dict[str, str]:
    _, secret = kairos.store.admin.add_api_key("privacy", frozenset({"privacy"}), 0)
    return {"Authorization": f"Bearer {secret}"}


@pytest.fixture
def jane(kairos: Kairos, source: Source, feed: Feed) -> int:
    feed(
        {
            "type": "identify",
            "userId": "jane-1",
            "traits": {"email": "jane@example.com", "city": "Lyon", "motto": XSS},
            "timestamp": "2025-12-30T10:00:00Z",
        }
    )
    pk = kairos.resolve("user_id:jane-1")
    assert pk is not None
    return pk


def link_path(kairos: Kairos, pk: int, ttl: int = HOUR) -> str:
    return urlsplit(create_link(kairos, pk, ttl, "http://testserver").url).path


def open_page(client: TestClient, path: str) -> tuple[str, str]:
    """GET the page; (its HTML, the CSRF field of its forms)."""
    r = client.get(path)
    assert r.status_code == 200, r.text
    found = re.search(r'name="csrf" value="([^"]+)"', r.text)
    assert found is not None
    return r.text, found.group(1)


# -- POST /v1/privacy/links -----------------------------------------------------------------------------
def test_a_link_names_the_profile_by_its_id_and_expires(
    client: TestClient, kairos: Kairos, jane: int, privacy_key: dict[str, str]
) -> None:
    r = client.post("/v1/privacy/links", json={"profile": "email:Jane@Example.com", "ttl": "15m"}, headers=privacy_key)
    assert r.status_code == 201, r.text
    body = r.json()
    assert set(body) == {"url", "expires_at"}
    assert body["url"].startswith("http://testserver/privacy/")
    assert body["expires_at"] == "2026-01-01T00:15:00.000Z"
    assert "jane" not in body["url"].lower()  # the token names the internal id, never an identity
    page = client.get(urlsplit(body["url"]).path)
    assert page.status_code == 200 and "Lyon" in page.text


def test_a_link_uses_the_public_url_and_the_default_ttl(store_settings: dict[str, Any], clock: ManualClock) -> None:
    settings = make_settings(store_settings, privacy={"public_url": "https://prefs.example.com/"})
    k = Kairos(settings, clock=clock)
    try:
        src = k.store.admin.add_source("web", "observed", 0)
        Feed(k, src)({"type": "identify", "userId": "u1"})
        _, secret = k.store.admin.add_api_key("p", frozenset({"privacy"}), 0)
        with TestClient(create_app(k, run_processor=False)) as c:
            r = c.post(
                "/v1/privacy/links", json={"profile": "user_id:u1"}, headers={"Authorization": f"Bearer {secret}"}
            )
        assert r.status_code == 201, r.text
        assert r.json()["url"].startswith("https://prefs.example.com/privacy/")
        assert r.json()["expires_at"] == "2026-01-01T01:00:00.000Z"
    finally:
        k.close()


@pytest.mark.parametrize(
    ("body", "status", "code", "field"),
    [
        ({"profile": "user_id:nobody"}, 404, "not_found", "profile"),
        ({"profile": "shoe_size:42"}, 400, "invalid_ref", "profile"),
        ({"profile": ""}, 400, "invalid_ref", "profile"),
        ({"profile": 42}, 400, "invalid_ref", "profile"),
        ({"profile": ["user_id:jane-1"]}, 400, "invalid_ref", "profile"),
        ({"profile": "user_id:jane\x00-1"}, 400, "invalid_ref", "profile"),
        ({"profile": "user_id:" + "j" * 700}, 400, "invalid_ref", "profile"),
        ({}, 400, "invalid_ref", "profile"),
        ({"profile": "user_id:jane-1", "ttl": 3600}, 400, "invalid_ttl", "ttl"),
        ({"profile": "user_id:jane-1", "ttl": "1 hour"}, 400, "invalid_ttl", "ttl"),
        ({"profile": "user_id:jane-1", "ttl": "30s"}, 400, "invalid_ttl", "ttl"),
        ({"profile": "user_id:jane-1", "ttl": "0m"}, 400, "invalid_ttl", "ttl"),
        ({"profile": "user_id:jane-1", "ttl": "-1h"}, 400, "invalid_ttl", "ttl"),
        ({"profile": "user_id:jane-1", "ttl": "\uff11h"}, 400, "invalid_ttl", "ttl"),  # a fullwidth digit
        ({"profile": "user_id:jane-1", "ttl": "1h\x00"}, 400, "invalid_ttl", "ttl"),
        ({"profile": "user_id:jane-1", "ttl": "8d"}, 400, "ttl_too_long", "ttl"),
        ({"profile": "user_id:jane-1", "ttl": "99999999999999999999d"}, 400, "invalid_ttl", "ttl"),
        ({"profile": "user_id:jane-1", "ttl": None, "extra": 1}, 400, "unknown_field", "extra"),
    ],
)
def test_bad_link_requests_get_a_precise_error(
    client: TestClient,
    jane: int,
    privacy_key: dict[str, str],
    body: dict[str, Any],
    status: int,
    code: str,
    field: str,
) -> None:
    r = client.post("/v1/privacy/links", json=body, headers=privacy_key)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert (error["code"], error["field"]) == (code, field)
    assert "jane" not in error["message"]  # no identifier is echoed back


@pytest.mark.parametrize(
    ("raw", "status", "code"),
    [
        (b"not json", 400, "invalid_json"),
        (b"\xff\xfe{}", 400, "invalid_json"),
        (b"[1, 2]", 400, "invalid_body"),
        (b'"user_id:jane-1"', 400, "invalid_body"),
        (b'{"profile": "' + b"a" * 70_000 + b'"}', 413, "too_large"),
        (b"[" * 5000 + b"]" * 5000, 400, "invalid_json"),
        (b'{"profile": "email:\\ud800@example.com"}', 400, "invalid_json"),  # a lone surrogate
        (b'{"profile": "user_id:jane-1", "ttl": "\\ud800"}', 400, "invalid_json"),
        (b'{"profile": "user_id:\\ud83d\\ude00"}', 404, "not_found"),  # a real emoji: no one has it
    ],
)
def test_malformed_link_bodies_are_refused(
    client: TestClient, jane: int, privacy_key: dict[str, str], raw: bytes, status: int, code: str
) -> None:
    r = client.post("/v1/privacy/links", content=raw, headers={**privacy_key, "Content-Type": "application/json"})
    assert r.status_code == status, r.text
    assert r.json()["error"]["code"] == code


def test_links_are_audited_by_profile_id_never_by_identity(
    client: TestClient, kairos: Kairos, jane: int, privacy_key: dict[str, str]
) -> None:
    assert (
        client.post("/v1/privacy/links", json={"profile": "email:jane@example.com"}, headers=privacy_key).status_code
        == 201
    )
    assert (
        client.post("/v1/privacy/links", json={"profile": "email:nobody@example.com"}, headers=privacy_key).status_code
        == 404
    )
    _, admin = kairos.store.admin.add_api_key("admin", frozenset({"admin"}), 0)
    r = client.get("/v1/audit", params={"action": "privacy.link"}, headers={"Authorization": f"Bearer {admin}"})
    assert r.status_code == 200, r.text
    entries = r.json()["items"]
    assert [(e["target"], e["outcome"]) for e in entries] == [("", 404), (profile_id_for(jane), 201)]
    assert "example.com" not in r.text


def test_links_need_the_privacy_scope(client: TestClient, kairos: Kairos, jane: int, read_key: dict[str, str]) -> None:
    body = {"profile": "user_id:jane-1"}
    assert client.post("/v1/privacy/links", json=body).status_code == 401
    assert client.post("/v1/privacy/links", json=body, headers={"Authorization": "Bearer nope"}).status_code == 401
    r = client.post("/v1/privacy/links", json=body, headers=read_key)
    assert r.status_code == 403 and r.json()["error"]["code"] == "missing_scope"
    _, admin = kairos.store.admin.add_api_key("admin", frozenset({"admin"}), 0)  # admin does not imply privacy
    r = client.post("/v1/privacy/links", json=body, headers={"Authorization": f"Bearer {admin}"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "missing_scope"


# -- the page: headers, refused links ------------------------------------------------------------------
def assert_secure(headers: Any) -> None:
    for name, value in SECURITY_HEADERS.items():
        assert headers[name] == value, name
    csp = headers["content-security-policy"]
    assert "default-src 'none'" in csp and "'unsafe-inline'" not in csp and "://" not in csp


def test_the_page_has_strict_headers_and_no_inline_script_or_style(
    client: TestClient, kairos: Kairos, jane: int
) -> None:
    path = link_path(kairos, jane)
    r = client.get(path)
    assert r.status_code == 200
    assert_secure(r.headers)
    html = r.text
    assert '<html lang="en">' in html
    assert "<script" not in html.replace("&lt;script", "") and " style=" not in html and "<style" not in html
    assert "://" not in html.replace("http://testserver", "")  # no third-party asset
    cookie = r.headers["set-cookie"]
    assert cookie.startswith(f"{CSRF_COOKIE}=") and "HttpOnly" in cookie and "SameSite=strict" in cookie
    assert "Path=/privacy/" in cookie and "Secure" not in cookie  # plain http here: Secure only over https
    css = client.get("/privacy/assets/centre.css")
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
    assert ":focus-visible" in css.text and "@media" in css.text


def test_every_control_has_a_label_and_headings_are_in_order(client: TestClient, kairos: Kairos, jane: int) -> None:
    html = client.get(link_path(kairos, jane)).text
    ids = set(re.findall(r'<input[^>]*\bid="([^"]+)"', html))
    labelled = set(re.findall(r'<label for="([^"]+)"', html))
    assert ids and ids <= labelled
    levels = [int(h) for h in re.findall(r"<h([1-6])", html)]
    assert levels[0] == 1 and levels.count(1) == 1
    assert all(b - a <= 1 for a, b in itertools.pairwise(levels))
    assert html.count("<fieldset") == html.count("<legend>")


def test_identities_are_masked_unless_configured_otherwise(
    client: TestClient, kairos: Kairos, jane: int, store_settings: dict[str, Any], clock: ManualClock
) -> None:
    html = client.get(link_path(kairos, jane)).text
    assert "jane@example.com" not in html and "jane-1" not in html
    assert "j•••@example.com" in html  # the identity, and the trait named email
    whole = Kairos(make_settings(store_settings, privacy={"mask_identities": False}), clock=clock)
    try:
        with TestClient(create_app(whole, run_processor=False)) as c:
            html = c.get(link_path(whole, jane)).text
        assert "jane@example.com" in html and "jane-1" in html and "•••" not in html
    finally:
        whole.close()


def test_trait_values_are_escaped(client: TestClient, kairos: Kairos, jane: int) -> None:
    html = client.get(link_path(kairos, jane)).text
    assert XSS not in html and "<img src=x" not in html
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;&#34;&gt;&lt;img src=x onerror=alert(1)&gt;" in html


def test_an_expired_link_is_refused_without_data(
    client: TestClient, kairos: Kairos, jane: int, clock: ManualClock
) -> None:
    path = link_path(kairos, jane, ttl=HOUR)
    clock.advance(HOUR)
    r = client.get(path)
    assert r.status_code == 410
    assert "expired" in r.text and "Lyon" not in r.text and "jane" not in r.text
    assert_secure(r.headers)


@pytest.mark.parametrize(
    "mangle",
    [
        # The signature (not its last character: base64's padding bits there do not count).
        lambda t: t[:-5] + ("A" if t[-5] != "A" else "B") + t[-4:],
        lambda t: ("e" if t[0] != "e" else "f") + t[1:],  # the payload
        lambda t: t.split(".")[0],
        lambda t: t + "." + t,
        lambda t: "x" * 5000,
        lambda t: "%C3%A9" + t,
        lambda t: "%00",
        lambda t: "..",
    ],
)
def test_a_tampered_link_is_refused_without_data(client: TestClient, kairos: Kairos, jane: int, mangle: Any) -> None:
    token = link_path(kairos, jane).rsplit("/", 1)[1]
    r = client.get("/privacy/" + mangle(token))
    assert r.status_code in (403, 404), r.text
    if r.status_code == 403:
        assert "not valid" in r.text and "Lyon" not in r.text
        assert_secure(r.headers)


def test_a_link_signed_with_another_secret_is_refused(store_settings: dict[str, Any], clock: ManualClock) -> None:
    ks = [Kairos(make_settings(store_settings, privacy={"secret": c * 32}), clock=clock) for c in ("a", "b")]
    try:
        Feed(ks[0], ks[0].store.admin.add_source("web", "observed", 0))({"type": "identify", "userId": "u1"})
        pk = ks[0].resolve("user_id:u1")
        assert pk is not None
        path = link_path(ks[0], pk)
        with TestClient(create_app(ks[1], run_processor=False)) as c:
            assert c.get(path).status_code == 403
        with TestClient(create_app(ks[0], run_processor=False)) as c:
            assert c.get(path).status_code == 200
    finally:
        for k in ks:
            k.close()


def test_a_link_to_a_profile_that_is_gone_is_refused(client: TestClient, kairos: Kairos, jane: int) -> None:
    r = client.get(link_path(kairos, jane + 10_000))  # a genuine token naming no profile (as after an erasure)
    assert r.status_code == 410 and "no data" in r.text


# -- forms: CSRF ---------------------------------------------------------------------------------------
def test_forms_need_the_csrf_field_bound_to_the_cookie_and_the_link(
    client: TestClient, kairos: Kairos, jane: int
) -> None:
    path = link_path(kairos, jane)
    _, csrf = open_page(client, path)
    cookie = client.cookies.get(CSRF_COOKIE)
    assert cookie
    form = {"csrf": csrf, "pref.nickname": "Jay"}
    # No field, a wrong one, one made for another link, no cookie: all refused, nothing recorded.
    other = link_path(kairos, jane)
    _, other_csrf = open_page(client, other)
    for bad in ({"pref.nickname": "Jay"}, {**form, "csrf": "x" * 43}, {**form, "csrf": other_csrf}):
        r = client.post(f"{path}/preferences", data=bad)
        assert r.status_code == 403 and "expired" in r.text, r.text
        assert_secure(r.headers)
    client.cookies.clear()
    assert client.post(f"{path}/preferences", data=form).status_code == 403
    client.cookies.set(CSRF_COOKIE, cookie)
    # Another site's Origin (or a cross-site fetch) is refused even with the right field.
    for headers in ({"Origin": "https://evil.example"}, {"Sec-Fetch-Site": "cross-site"}):
        assert client.post(f"{path}/preferences", data=form, headers=headers).status_code == 403
    assert kairos.store.log.last_seq() == 1  # only Jane's identify: nothing was appended


@pytest.mark.parametrize(
    ("content", "content_type"),
    [
        (b"csrf=%ff%fe&pref.nickname=x", "application/x-www-form-urlencoded"),
        ("pref.nickname=caf\u00e9".encode(), "application/x-www-form-urlencoded"),
        (b"pref.nickname=a%00b", "application/x-www-form-urlencoded"),
        (b'{"pref.nickname": "x"}', "application/json"),
        (b"&".join([b"a=b"] * 300), "application/x-www-form-urlencoded"),
        (b"pref.nickname=" + b"x" * 20_000, "application/x-www-form-urlencoded"),
    ],
)
def test_unreadable_forms_are_refused_with_a_page(
    client: TestClient, kairos: Kairos, jane: int, content: bytes, content_type: str
) -> None:
    path = link_path(kairos, jane)
    open_page(client, path)
    r = client.post(f"{path}/preferences", content=content, headers={"Content-Type": content_type})
    assert r.status_code in (400, 403), r.text
    assert "<h1>" in r.text and "Lyon" not in r.text
    assert_secure(r.headers)


# -- forms: validation ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("fields", "key", "message"),
    [
        ({"pref.preferred_channel": "fax"}, "preferred_channel", "Choose one of the options shown."),
        ({"pref.preferred_channel": ["email", "sms"]}, "preferred_channel", "Choose one of the options shown."),
        ({"pref.topics": ["shoes", "<b>socks</b>"], "shown": "topics"}, "topics", "Choose among the options shown."),
        ({"pref.nickname": "J" * 21}, "nickname", "Use at most 20 characters."),
        ({"pref.nickname": "Jay\u202egnp.exe"}, "nickname", "Remove the invisible formatting characters."),
        ({"pref.nickname": "Jay\x07"}, "nickname", "Use letters, digits, spaces and punctuation only."),
    ],
)
def test_invalid_preferences_are_shown_next_to_their_field(
    client: TestClient, kairos: Kairos, jane: int, fields: dict[str, Any], key: str, message: str
) -> None:
    path = link_path(kairos, jane)
    _, csrf = open_page(client, path)
    r = client.post(f"{path}/preferences", data={"csrf": csrf, **fields})
    assert r.status_code == 400, r.text
    assert f'<p class="error" id="pref-{key}-error">{message}</p>' in r.text
    assert 'role="alert"' in r.text and f'href="#pref-{key}"' in r.text
    assert "<b>socks" not in r.text
    assert kairos.store.log.last_seq() == 1


# -- why you saw this ----------------------------------------------------------------------------------
def record(group: Group, shared: dict[str, dict[str, float]], interaction: bool = False) -> DecisionRecord:
    item = DecisionItem("spring", 0, 0.9, False, 0.1, 0.1)
    return DecisionRecord(
        "d1",
        T0,
        "p",
        "email",
        None,
        group,
        "linucb",
        1,
        shared,
        (),
        (),
        (item,),
        interaction,
        False,
    )


def test_why_you_saw_this_is_said_in_plain_words() -> None:
    labels = {"preferred_channel": "Contact me by"}
    shared = {
        "stated": {"preferred_channel=email": 1.0},
        "segments": {"shoe_lovers": 1.0},
        "profile": {"orders_30d": 1.1},
        "context": {"daypart=evening": 1.0, "channel=email": 1.0},
    }
    assert why(record("policy", shared, interaction=True), True, labels) == [
        "You told us: Contact me by — email.",
        "You are in these groups of customers: shoe lovers.",
        "What you did recently, such as your visits and purchases.",
        "When and where you were: on email in the evening.",
        "We also try other offers now and then, to learn what people like; this was one.",
    ]
    assert why(record("not_personalized", shared), False, labels) == [
        "You have not allowed a personalised experience, so you saw what everyone sees."
    ]
    assert "random" in why(record("control", shared), False, labels)[0]
    assert why(record("policy", {}), False, labels) == ["When and where you were: on email."]
    hashed = {"stated": {"preferred_channel=#3f2a": 1.0, "size=#77aa": 1.0}, "context": {"daypart=#0b1c": 1.0}}
    clear = {"preferred_channel=#3f2a": "preferred_channel=sms"}
    assert why(record("policy", hashed), False, labels, clear) == [
        "You told us: Contact me by — sms.",
        "You told us about size.",  # a value the person's data no longer names is left out
        "When and where you were: on email.",
    ]

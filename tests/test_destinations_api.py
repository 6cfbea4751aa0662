"""The destination routes: saving (secrets never shown), hostile input, deliveries, and the SSE stream."""

from __future__ import annotations

import json
from typing import Any

import pytest
from starlette.testclient import TestClient

from kairos.runtime import Kairos
from kairos.store import Source
from tests.conftest import Feed

SECRET = "whsec_test_0123456789"
HOOK = {
    "url": "http://127.0.0.1:9/hook",
    "secret": SECRET,
    "subscribe": {"segments": ["vip"]},
    "purpose": "marketing_email",
}


@pytest.fixture
def admin(kairos: Kairos) -> dict[str, str]:
    _, secret = kairos.store.admin.add_api_key("admin", frozenset({"admin"}), 0)
    return {"Authorization": f"Bearer {secret}"}


def test_put_get_list_delete_never_show_the_secret(client: TestClient, admin: dict[str, str]) -> None:
    body = {**HOOK, "headers": {"X-Token": "tok_abcdefgh"}, "traits": ["plan"]}
    r = client.put("/v1/destinations/crm", json=body, headers=admin)
    assert r.status_code == 201, r.text
    view = r.json()
    assert SECRET not in r.text and "tok_abcdefgh" not in r.text
    assert view["secret_hint"] == "…6789" and view["headers"] == {"X-Token": "…efgh"} and view["kind"] == "push"
    assert client.put("/v1/destinations/crm", json=body, headers=admin).json()["changed"] is False
    no_secret = {k: v for k, v in body.items() if k != "secret"}
    r = client.put("/v1/destinations/crm", json=no_secret, headers=admin)  # keeps the stored secret
    assert r.status_code == 200 and r.json()["secret_hint"] == "…6789"
    got = client.get("/v1/destinations/crm", headers=admin)
    assert got.status_code == 200 and SECRET not in got.text
    assert [d["key"] for d in client.get("/v1/destinations", headers=admin).json()["items"]] == ["crm"]
    assert client.get("/v1/destinations/crm/deliveries?status=dead", headers=admin).json() == {"items": []}
    assert client.post("/v1/destinations/crm/deliveries:retry", headers=admin).json() == {"retried": 0}
    assert client.delete("/v1/destinations/crm", headers=admin).json()["deleted"] is True
    assert client.get("/v1/destinations/crm", headers=admin).status_code == 404


BAD: list[tuple[Any, str, str]] = [
    ([], "invalid_body", "body"),
    ({**HOOK, "nope": 1}, "unknown_field", "nope"),
    ({**HOOK, "url": "ftp://x/y"}, "invalid_field", "url"),
    ({**HOOK, "url": "http://"}, "invalid_field", "url"),
    ({**HOOK, "url": "http://x:99999/"}, "invalid_field", "url"),
    ({**HOOK, "url": "http://x/\n"}, "invalid_field", "url"),
    ({**HOOK, "url": 5}, "invalid_field", "url"),
    ({**HOOK, "secret": "short"}, "invalid_field", "secret"),
    ({**HOOK, "secret": None}, "missing_field", "secret"),
    ({**HOOK, "secret": "\ud800" * 20}, "invalid_json", "body"),  # msgspec refuses lone surrogates
    ({**HOOK, "headers": {"Kairos-Signature": "x"}}, "reserved_header", "headers.Kairos-Signature"),
    ({**HOOK, "headers": {"X-Ok": "1", "bad name": "x"}}, "invalid_field", "headers.bad name"),
    ({**HOOK, "headers": {"n" * 50 + " x": "1"}}, "invalid_field", "headers." + "n" * 40),  # cut, as unknown fields
    ({**HOOK, "headers": {"X-A": "a\r\nX-B: b"}}, "invalid_field", "headers.X-A"),
    ({**HOOK, "headers": {"X-A": 1}}, "invalid_field", "headers.X-A"),
    ({**HOOK, "headers": ["X-A"]}, "invalid_field", "headers"),
    ({**HOOK, "subscribe": {}}, "missing_field", "subscribe"),
    ({**HOOK, "subscribe": []}, "missing_field", "subscribe"),
    ({**HOOK, "subscribe": {"segments": "vip"}}, "invalid_field", "subscribe.segments"),
    ({**HOOK, "subscribe": {"segments": ["not a key"]}}, "invalid_key", "subscribe.segments"),
    ({**HOOK, "subscribe": {"segments": [1]}}, "invalid_key", "subscribe.segments"),
    ({**HOOK, "subscribe": {"other": []}}, "unknown_field", "subscribe.other"),
    ({**HOOK, "subscribe": {"events": "event =="}}, "invalid_rule", "subscribe.events"),
    ({**HOOK, "subscribe": {"events": 'event == "\ud800"'}}, "invalid_json", "body"),
    ({**HOOK, "subscribe": {"events": "x" * 5000}}, "too_large", "subscribe.events"),
    ({**HOOK, "subscribe": {"events": 7}}, "invalid_field", "subscribe.events"),
    ({**HOOK, "traits": {"a": 1}}, "invalid_field", "traits"),
    ({**HOOK, "purpose": None}, "missing_field", "purpose"),
    ({**HOOK, "purpose": "with space"}, "invalid_field", "purpose"),
    ({**HOOK, "enabled": "yes"}, "invalid_field", "enabled"),
    ({k: v for k, v in HOOK.items() if k != "url"}, "invalid_field", "secret"),  # pull: stored, never used
]


def test_hostile_bodies_get_precise_400s(client: TestClient, admin: dict[str, str]) -> None:
    for body, code, field in BAD:  # one test, not one per body: each backend's fixture costs more than these
        r = client.put("/v1/destinations/crm", content=json.dumps(body), headers=admin)  # ASCII: surrogates pass
        assert r.status_code == 400, (body, r.text)
        error = r.json()["error"]
        assert (error["code"], error.get("field", "")) == (code, field), (body, error)
    assert client.get("/v1/destinations", headers=admin).json() == {"items": []}


def test_a_url_with_credentials_is_refused_without_quoting_it(client: TestClient, admin: dict[str, str]) -> None:
    """A url is shown to every reader (GET, list): credentials in it would be too; headers are hidden."""
    for url in ("https://user:pa55word@crm.example.com/x", "http://tok_abcdef@127.0.0.1:9/hook", "http://@x/"):
        r = client.put("/v1/destinations/crm", json={**HOOK, "url": url}, headers=admin)
        assert r.status_code == 400, (url, r.text)
        error = r.json()["error"]
        assert (error["code"], error["field"]) == ("invalid_field", "url")
        assert "headers" in error["message"] and url not in r.text
        assert "pa55word" not in r.text and "tok_abcdef" not in r.text
    assert client.get("/v1/destinations", headers=admin).json() == {"items": []}


MISREAD_URLS = [
    "http://exa mple.com/x",  # aiohttp looks the name up with its space
    "http://example.com/a b",
    " http://example.com/",  # leading space and tab: dropped by yarl
    "http://exa\tmple.com/",  # yarl drops the tab: example.com
    "http://example.com/\x0b",
    "http://example.com/\x7f",
    "http://[::1",
    "http:///x",
    "http:/x",
    "http://x:0/",
    "http://x:65536/",
    "http://x:+80/",
    "http://example.com/x#frag",  # never sent
    "http://ex$ample.com/",
    "http://ex%41mple.com/",
    "http://a..b/",  # aiohttp's IDNA encoding raises (not a ClientError)
    "http://-a.com/",
    "http://" + "a" * 64 + ".com/",
    "http://0x7f.1/",  # getaddrinfo reads it as 127.0.0.1
    "http://2130706433/",
    "http://127.1/",
    "http://01.2.3.4/",
    "http://[v1.x]/",  # IPvFuture: yarl takes it for the host name v1.x
    "http://[fe80::1%25eth0]/",
    "http://[::1]x/",
    "http:/\\127.0.0.1/",
    "http://127.0.0.1:9\\@evil.com/",
    "http://x/{a}",
    "http://x/%zz",  # yarl sends %25zz
]


def test_urls_an_http_client_would_refuse_or_misread_get_a_400_on_url(
    client: TestClient, admin: dict[str, str]
) -> None:
    for url in MISREAD_URLS:
        r = client.put("/v1/destinations/crm", content=json.dumps({**HOOK, "url": url}), headers=admin)
        assert r.status_code == 400, (url, r.text)
        error = r.json()["error"]
        assert (error["code"], error["field"]) == ("invalid_field", "url"), (url, error)
        assert json.dumps(url)[1:-1] not in r.text
    good = ["https://crm.example.com:8443/hooks/kairos?tenant=a%20b&x=1", "http://localhost:8000/h",
            "http://my_service/hook", "http://crm.example.com./x", "http://[::1]:9/hook",
            "HTTP://EXAMPLE.COM/"]  # fmt: skip
    for url in good:
        r = client.put("/v1/destinations/crm", json={**HOOK, "url": url}, headers=admin)
        assert r.status_code in (200, 201), (url, r.text)
        assert client.get("/v1/destinations/crm", headers=admin).json()["url"] == url


def test_a_url_at_a_blocked_address_is_refused_at_save(client: TestClient, admin: dict[str, str]) -> None:
    """The default delivery.blocked_networks: link-local and the cloud metadata services, not loopback nor
    private ranges (self-hosted receivers live there)."""
    blocked = ["http://169.254.169.254/latest/meta-data/", "http://[fd00:ec2::254]/", "http://[fe80::1]:8080/",
               "http://[::ffff:169.254.169.254]/", "http://100.100.100.200/latest/",
               # IPv6 addresses that lead to the IPv4 metadata service: NAT64, 6to4, Teredo, IPv4-compatible
               "http://[64:ff9b::a9fe:a9fe]/", "http://[2002:a9fe:a9fe::1]/",
               "http://[2001:0:4136:e378:8000:63bf:5601:5601]/", "http://[::169.254.169.254]/"]  # fmt: skip
    for url in blocked:
        r = client.put("/v1/destinations/crm", json={**HOOK, "url": url}, headers=admin)
        assert r.status_code == 400, (url, r.text)
        error = r.json()["error"]
        assert (error["code"], error["field"]) == ("blocked_address", "url"), (url, error)
        assert "delivery.blocked_networks" in error["message"] and url not in r.text
    allowed = ["http://127.0.0.1:9/hook", "http://10.0.0.5/hook", "http://192.168.1.10/hook", "http://[fd12::1]/",
               "http://[64:ff9b::a00:5]/", "http://[2002:a00:5::1]/"]  # fmt: skip
    for url in allowed:
        assert client.put("/v1/destinations/crm", json={**HOOK, "url": url}, headers=admin).status_code in (200, 201)


@pytest.mark.parametrize(
    "name",
    ["Connection", "keep-alive", "Proxy-Authenticate", "Proxy-Authorization", "Proxy-Connection", "TE", "Trailer",
     "Transfer-Encoding", "Upgrade", "HTTP2-Settings", "Expect", "Content-Encoding"],
)  # fmt: skip
def test_hop_by_hop_and_framing_headers_are_refused(client: TestClient, admin: dict[str, str], name: str) -> None:
    r = client.put("/v1/destinations/crm", json={**HOOK, "headers": {"X-Ok": "1", name: "x"}}, headers=admin)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert (error["code"], error["field"]) == ("reserved_header", f"headers.{name}")


def test_header_values_aiohttp_would_refuse_or_the_receiver_trim_are_refused(
    client: TestClient, admin: dict[str, str]
) -> None:
    bad: list[tuple[dict[str, str], str]] = [
        ({"X-A": "a\x01b"}, "headers.X-A"),
        ({"X-A": "a\x7fb"}, "headers.X-A"),
        ({"X-A": " padded"}, "headers.X-A"),
        ({"X-A": "padded\t"}, "headers.X-A"),
        ({"X-A": "1", "x-a": "2"}, "headers.x-a"),  # one would replace the other
    ]
    for headers, field in bad:
        r = client.put("/v1/destinations/crm", content=json.dumps({**HOOK, "headers": headers}), headers=admin)
        assert r.status_code == 400, (headers, r.text)
        assert (r.json()["error"]["code"], r.json()["error"]["field"]) == ("invalid_field", field), headers
    ok = {**HOOK, "headers": {"Authorization": "Bearer a\tb c", "X-Empty": ""}}
    assert client.put("/v1/destinations/crm", json=ok, headers=admin).status_code == 201


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [
        ("PUT", "/v1/destinations/9bad", 400, "invalid_key"),
        ("GET", "/v1/destinations/nope", 404, "not_found"),
        ("DELETE", "/v1/destinations/nope", 404, "not_found"),
        ("GET", "/v1/destinations/nope/deliveries", 404, "not_found"),
        ("POST", "/v1/destinations/nope/deliveries:retry", 404, "not_found"),
        ("GET", "/v1/subscriptions/nope/stream", 404, "not_found"),
        ("GET", "/v1/subscriptions/x%00y/stream", 400, "invalid_key"),
    ],
)
def test_unknown_or_malformed_keys(
    client: TestClient, admin: dict[str, str], method: str, path: str, status: int, code: str
) -> None:
    r = client.request(method, path, headers=admin, content=b"{}" if method == "PUT" else None)
    assert (r.status_code, r.json()["error"]["code"]) == (status, code)


def test_bad_json_and_scopes(client: TestClient, admin: dict[str, str], read_key: dict[str, str]) -> None:
    r = client.put("/v1/destinations/crm", content=b"{nope", headers=admin)
    assert r.json()["error"]["code"] == "invalid_json"
    assert client.put("/v1/destinations/crm", json=HOOK, headers=read_key).status_code == 403
    assert client.get("/v1/destinations").status_code == 401
    client.put("/v1/destinations/crm", json=HOOK, headers=admin)
    r = client.get("/v1/destinations/crm/deliveries?status=lost", headers=admin)
    assert (r.status_code, r.json()["error"]["field"]) == (400, "status")
    assert client.get("/v1/destinations/crm/deliveries?limit=0", headers=admin).status_code == 400
    r = client.get("/v1/subscriptions/crm/stream", headers=admin)  # it has a url: pushed, not pulled
    assert (r.status_code, r.json()["error"]["code"]) == (400, "not_a_subscription")


def _read(client: TestClient, headers: dict[str, str], limit: int, last: str | None = None) -> list[tuple[str, str]]:
    """(SSE id, data) of each dispatched message; id-only events move the position."""
    h = {**headers, **({"Last-Event-ID": last} if last else {})}
    out: list[tuple[str, str]] = []
    with client.stream("GET", f"/v1/subscriptions/pull/stream?limit={limit}", headers=h) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        text = "".join(r.iter_text())
    for block in text.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if "data" in fields:
            out.append((fields["id"], fields["data"]))
    return out


def test_sse_resumes_after_last_event_id_without_loss_or_repeat(
    client: TestClient, kairos: Kairos, feed: Feed, source: Source, admin: dict[str, str]
) -> None:
    body = {"subscribe": {"segments": ["vip"], "events": 'event == "Order Completed"'}, "traits": ["plan"],
            "purpose": "marketing_email"}  # fmt: skip
    r = client.put("/v1/destinations/pull", json=body, headers=admin)
    assert r.status_code == 201 and r.json()["kind"] == "pull"
    kairos.store.admin.put_definition("segment", "vip", {"rule": 'traits.plan == "pro"'}, kairos.clock.now())
    yes = {"context": {"consent": {"categoryPreferences": {"marketing_email": True}}}}
    no = {"context": {"consent": {"categoryPreferences": {"marketing_email": False}}}}
    events: list[dict[str, Any]] = []
    for i in range(5):
        events.append({"type": "identify", "userId": f"u{i}", "traits": {"plan": "pro"}, **yes})
        events.append({"type": "track", "userId": f"u{i}", "event": "Order Completed", "properties": {"n": i}})
    events.append({"type": "identify", "userId": "denied", "traits": {"plan": "pro"}, **no})
    events.append({"type": "track", "userId": "denied", "event": "Order Completed"})
    feed(*events)
    first = _read(client, admin, 4)
    assert len(first) == 4
    rest = _read(client, admin, 6, last=first[-1][0])
    assert len(rest) == 6
    import msgspec

    messages = [msgspec.json.decode(data) for _, data in first + rest]
    assert len({m["id"] for m in messages}) == 10  # no repeat
    kinds = sorted(m["type"] for m in messages)
    assert kinds == ["event"] * 5 + ["segment_entered"] * 5  # no loss
    denied = feed.profile("user_id:denied").id
    assert all(m["profile_id"] != denied for m in messages)
    assert all(m["traits"] == {"plan": "pro"} for m in messages)
    # From the start again: the same messages with the same ids.
    again = [msgspec.json.decode(d)["id"] for _, d in _read(client, admin, 10)]
    assert again == [m["id"] for m in messages]
    for bad in ("x", "1", "1.2.3", "-1.0", "9" * 30 + ".0"):
        r = client.get("/v1/subscriptions/pull/stream", headers={**admin, "Last-Event-ID": bad})
        assert (r.status_code, r.json()["error"]["code"]) == (400, "invalid_cursor")


def test_opening_a_stream_reads_the_store_off_the_event_loop(
    client: TestClient, kairos: Kairos, admin: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The definition and the cursor were read on the event loop: a store slow to answer (PostgreSQL across a
    network) held every other request of the process for that long."""
    import asyncio

    body = {"subscribe": {"events": 'event == "Order Completed"'}, "purpose": "marketing_email"}
    assert client.put("/v1/destinations/pull", json=body, headers=admin).status_code == 201
    on_loop: list[bool] = []
    real = kairos.store.deliveries.cursor

    def cursor(key: str) -> Any:
        try:
            asyncio.get_running_loop()
            on_loop.append(True)
        except RuntimeError:
            on_loop.append(False)
        return real(key)

    monkeypatch.setattr(kairos.store.deliveries, "cursor", cursor)
    r = client.get("/v1/subscriptions/pull/stream", headers={**admin, "Last-Event-ID": "x"})  # read, then refused
    assert r.json()["error"]["code"] == "invalid_cursor" and on_loop == [False]


def test_a_stream_never_replays_what_came_before_the_subscription(
    client: TestClient, kairos: Kairos, feed: Feed, admin: dict[str, str]
) -> None:
    """``Last-Event-ID: 0.0`` read the whole outbox and log from the beginning: every message before the
    subscription was created (people who entered segments, events) went to its reader."""
    yes = {"context": {"consent": {"categoryPreferences": {"marketing_email": True}}}}
    kairos.store.admin.put_definition("segment", "vip", {"rule": 'traits.plan == "pro"'}, kairos.clock.now())
    feed({"type": "identify", "userId": "before", "traits": {"plan": "pro"}, **yes},
         {"type": "track", "userId": "before", "event": "Order Completed"})  # fmt: skip
    body = {"subscribe": {"segments": ["vip"], "events": 'event == "Order Completed"'}, "purpose": "marketing_email"}
    assert client.put("/v1/destinations/pull", json=body, headers=admin).status_code == 201
    feed({"type": "identify", "userId": "after", "traits": {"plan": "pro"}, **yes},
         {"type": "track", "userId": "after", "event": "Order Completed"})  # fmt: skip
    import msgspec

    after = feed.profile("user_id:after").id
    for last in ("0.0", "0.1", None):
        messages = [msgspec.json.decode(d) for _, d in _read(client, admin, 2, last=last)]
        assert [m["profile_id"] for m in messages] == [after, after], last


def test_a_url_stored_with_credentials_before_they_were_refused_is_shown_without_them(
    client: TestClient, kairos: Kairos, admin: dict[str, str]
) -> None:
    """Credentials in a url are refused at save now; one saved earlier kept them, and GET showed them."""
    body = {**HOOK, "url": "https://crm-user:hunter2-password@crm.example.com:8443/hook?x=1"}
    kairos.store.admin.put_definition("destination", "old", body, kairos.clock.now())
    for r in (client.get("/v1/destinations/old", headers=admin), client.get("/v1/destinations", headers=admin)):
        assert r.status_code == 200, r.text
        assert "hunter2" not in r.text and "crm-user" not in r.text
    shown = client.get("/v1/destinations/old", headers=admin).json()["url"]
    assert shown == "https://***@crm.example.com:8443/hook?x=1"


def test_racing_saves_of_a_new_destination_create_it_once(kairos: Kairos, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two PUTs of a new key racing (one saved between the other's read and its write) both answered 201."""
    from kairos.activate.destinations import save

    admin_store = kairos.store.admin
    real_definition = admin_store.definition
    racing = [{**HOOK, "traits": ["plan"]}]

    def read_then_race(kind: str, key: str) -> Any:
        found = real_definition(kind, key)
        if racing:
            save(kairos, "crm", racing.pop())
        return found

    monkeypatch.setattr(admin_store, "definition", read_then_race)
    view, status = save(kairos, "crm", HOOK)
    assert status == 200 and view["version"] == 2  # the racer created it; this one changed it

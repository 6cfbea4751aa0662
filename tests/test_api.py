"""The HTTP API in-process (Starlette TestClient): profiles, auth, errors, operations."""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
import re
import sqlite3
import threading
import time
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.routing import Route
from starlette.testclient import TestClient
from starlette.types import Message

from kairos.api import create_app
from kairos.api._common import error_response
from kairos.api._writer import LogWriter
from kairos.collect import NewEvent
from kairos.errors import Overloaded, StoreUnavailable
from kairos.runtime import Kairos
from kairos.store import Source
from tests.conftest import make_settings


def send(client: TestClient, source: Source, *events: dict[str, Any]) -> None:
    r = client.post("/v1/batch", json={"writeKey": source.write_key, "batch": list(events)})
    assert r.status_code == 200, r.text


def test_profile_by_any_identity(client: TestClient, kairos: Kairos, source: Source, read_key: dict[str, str]) -> None:
    send(
        client,
        source,
        {
            "type": "identify",
            "userId": "u1",
            "anonymousId": "a1",
            "traits": {"email": "Jane@X.io", "phone": "(415) 555-0132", "plan": "pro"},
            "context": {"consent": {"categoryPreferences": {"marketing_email": True}}},
        },
    )
    kairos.processor.run_until_caught_up()
    views = [
        client.get(f"/v1/profiles/{ref}", headers=read_key)
        for ref in (
            "user_id:u1",
            "anonymous_id:a1",
            "email:JANE@x.io",
            "phone:+14155550132",
            "phone:(415) 555-0132",
        )
    ]
    assert all(v.status_code == 200 for v in views), [v.text for v in views]
    body = views[0].json()
    assert all(v.json() == body for v in views)
    assert client.get(f"/v1/profiles/{body['id']}", headers=read_key).json() == body
    assert {"type": "email", "value": "jane@x.io"} in body["identities"]
    assert body["traits"]["plan"] == "pro"
    assert body["trait_meta"]["plan"]["kind"] == "observed" and body["trait_meta"]["plan"]["source"] == "web"
    assert body["segments"] == [] and body["consents"]["marketing_email"]["granted"] is True


def test_timeline_pagination_is_complete_and_ordered(
    client: TestClient, kairos: Kairos, source: Source, read_key: dict[str, str]
) -> None:
    send(
        client,
        source,
        *[
            {"type": "track", "userId": "u1", "event": f"E{i}", "timestamp": f"2026-01-01T00:00:{i:02d}Z"}
            for i in range(25)
        ],
    )
    kairos.processor.run_until_caught_up()
    names: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 10} | ({"cursor": cursor} if cursor else {})
        page = client.get("/v1/profiles/user_id:u1/events", params=params, headers=read_key).json()
        names += [item["name"] for item in page["items"]]
        assert all(item["event"]["userId"] == "u1" and "_kairos" not in item["event"] for item in page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert names == [f"E{i}" for i in reversed(range(25))]


def test_list_profiles_filter_and_pagination(
    client: TestClient, kairos: Kairos, source: Source, read_key: dict[str, str]
) -> None:
    send(
        client,
        source,
        *[
            {
                "type": "identify",
                "userId": f"u{i}",
                "traits": {"plan": "pro" if i % 2 else "free", "orders": i, "vip": i == 3},
            }
            for i in range(7)
        ],
    )
    kairos.processor.run_until_caught_up()
    seen: list[int] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"trait.plan": "pro", "limit": 2} | ({"cursor": cursor} if cursor else {})
        page = client.get("/v1/profiles", params=params, headers=read_key).json()
        seen += [p["traits"]["orders"] for p in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert sorted(seen) == [1, 3, 5]
    assert [
        p["traits"]["orders"]
        for p in client.get("/v1/profiles", params={"trait.orders": "4"}, headers=read_key).json()["items"]
    ] == [4]
    assert len(client.get("/v1/profiles", params={"trait.vip": "true"}, headers=read_key).json()["items"]) == 1
    assert len(client.get("/v1/profiles", headers=read_key).json()["items"]) == 7


def test_merges_endpoint(client: TestClient, kairos: Kairos, source: Source, read_key: dict[str, str]) -> None:
    send(
        client,
        source,
        {"type": "page", "anonymousId": "a1"},
        {"type": "page", "anonymousId": "a2"},
        {"type": "alias", "previousId": "a2", "userId": "u1", "anonymousId": "a1"},
    )
    kairos.processor.run_until_caught_up()
    body = client.get("/v1/profiles/user_id:u1/merges", headers=read_key).json()
    [merge] = body["items"]
    assert merge["reason"] == "alias" and merge["winner"] == body["profile_id"]
    assert {"type": "anonymous_id", "value": "a2"} in merge["identities"]
    loser = client.get(f"/v1/profiles/{merge['loser']}", headers=read_key).json()
    assert loser["id"] == body["profile_id"]  # a merged-away id still answers, with the surviving profile


@pytest.mark.parametrize(
    ("path", "headers", "status", "code"),
    [
        ("/v1/profiles/user_id:u1", {}, 401, "unauthorized"),
        ("/v1/profiles/user_id:u1", {"Authorization": "Bearer nope"}, 401, "invalid_api_key"),
        ("/v1/profiles/user_id:u1", {"Authorization": "Basic dTE6"}, 401, "unauthorized"),
        ("/v1/profiles/user_id:nobody", None, 404, "not_found"),
        ("/v1/profiles/nobody-id", None, 404, "not_found"),
        ("/v1/profiles/shoe_size:42", None, 400, "invalid_ref"),
        ("/v1/profiles/user_id:u1/events?limit=0", None, 400, "invalid_query"),
        ("/v1/profiles/user_id:u1/events?limit=abc", None, 400, "invalid_query"),
        ("/v1/profiles/user_id:u1/events?cursor=%%%", None, 400, "invalid_cursor"),
        ("/v1/profiles?plan=pro", None, 400, "invalid_query"),
        ("/v1/profiles?limit=100000", None, 400, "invalid_query"),
        ("/v1/profiles/" + "x" * 700, None, 400, "invalid_ref"),
        ("/v1/profiles/email:", None, 400, "invalid_ref"),  # no value: it was a 404
        ("/v1/profiles/%20%20", None, 400, "invalid_ref"),
        ("/v1/profiles/user_id:%20/events", None, 400, "invalid_ref"),
        ("/v1/nothing-here", None, 404, "not_found"),
    ],
)
def test_read_errors_are_precise(
    client: TestClient,
    read_key: dict[str, str],
    path: str,
    headers: dict[str, str] | None,
    status: int,
    code: str,
) -> None:
    r = client.get(path, headers=read_key if headers is None else headers)
    assert r.status_code == status, r.text
    assert r.json()["error"]["code"] == code
    assert r.json()["error"]["message"]


def test_scope_is_enforced(client: TestClient, kairos: Kairos) -> None:
    _, secret = kairos.store.admin.add_api_key("decider", frozenset({"decide"}), 0)
    r = client.get("/v1/profiles", headers={"Authorization": f"Bearer {secret}"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "missing_scope"
    _, admin = kairos.store.admin.add_api_key("root", frozenset({"admin"}), 0)
    assert client.get("/v1/profiles", headers={"Authorization": f"Bearer {admin}"}).status_code == 200


def test_collect_auth_modes(client: TestClient, kairos: Kairos, source: Source) -> None:
    import base64

    basic = "Basic " + base64.b64encode(f"{source.write_key}:".encode()).decode()
    assert client.post("/v1/identify", json={"userId": "u"}, headers={"Authorization": basic}).status_code == 200
    ok = client.post(
        "/v1/i",
        json={"userId": "u", "writeKey": source.write_key},
        headers={"Authorization": "Bearer something-else"},
    )
    assert ok.status_code == 200
    gz = client.post(
        "/v1/t",
        content=gzip.compress(b'{"userId":"u","event":"E","writeKey":"%s"}' % source.write_key.encode()),
        headers={"Content-Encoding": "gzip", "Content-Type": "text/plain"},
    )
    assert gz.status_code == 200, gz.text
    r = client.post("/v1/track", json={"userId": "u", "event": "E"})
    assert r.status_code == 401 and r.json() == {
        "success": False,
        "error": {"code": "unauthorized", "message": r.json()["error"]["message"], "field": "writeKey"},
    }
    assert client.post("/v1/track", json={"userId": "u", "event": "E", "writeKey": "bad"}).status_code == 401
    kairos.store.admin.set_source_enabled("web", False)
    kairos._sources.clear()
    r = client.post("/v1/track", json={"userId": "u", "event": "E", "writeKey": source.write_key})
    assert r.status_code == 403 and r.json()["error"]["code"] == "source_disabled"
    assert kairos.store.log.count() == 3


def test_collect_never_500s_on_hostile_bodies(client: TestClient, source: Source) -> None:
    wk = source.write_key
    bodies: list[bytes] = [
        b"",
        b"null",
        b"[]",
        b"123",
        b'"s"',
        b"{",
        b"\xff\xfe",
        b"[" * 5000 + b"]" * 5000,
        b'{"batch": {}}',
        b'{"batch": [1, "x", null]}',
        b'{"userId": "\\u0000"}',
        b'{"writeKey": ["x"]}',
        b'{"batch": [], "writeKey": "%s"}' % wk.encode(),
        b'{"userId": 1e999, "writeKey": "%s"}' % wk.encode(),
    ]
    for body in bodies:
        for path in ("/v1/batch", "/v1/track"):
            r = client.post(path, content=body, headers={"Content-Type": "application/json"})
            assert r.status_code in (200, 400, 401, 413), (body[:40], r.status_code, r.text)
            assert "error" in r.json() or "errors" in r.json() or r.json().get("success") is True


def test_oversized_request_is_413(client: TestClient, source: Source) -> None:
    r = client.post("/v1/batch", content=b'{"batch": [' + b" " * 600_000 + b"]}")
    assert r.status_code == 413 and r.json()["error"]["code"] == "too_large"


def test_openapi_names_every_route(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    app = client.app
    paths = {r.path.replace(":path", "") for r in app.routes if isinstance(r, Route)}  # type: ignore[attr-defined]
    assert paths == set(spec["paths"])
    assert client.get("/docs").status_code == 200


def test_health_and_metrics(client: TestClient, kairos: Kairos, source: Source) -> None:
    send(client, source, {"type": "identify", "userId": "u1"})
    health = client.get("/healthz").json()
    assert health["status"] == "ok" and health["lag"] == 1
    text = client.get("/metrics").text
    assert "kairos_ingest_events_total" in text and "kairos_processor_lag_events 1.0" in text
    client.post("/v1/batch", json={"writeKey": source.write_key, "batch": [{"type": "track", "userId": "u"}]})
    assert 'kairos_ingest_rejected_total{code="missing_field"}' in client.get("/metrics").text


def test_cors_preflight(client: TestClient) -> None:
    r = client.options("/v1/t", headers={"Origin": "https://shop.example", "Access-Control-Request-Method": "POST"})
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] in ("*", "https://shop.example")


def test_trait_filters_compare_json_types(
    client: TestClient, kairos: Kairos, source: Source, read_key: dict[str, str]
) -> None:
    send(
        client,
        source,
        {"type": "identify", "userId": "u1", "traits": {"vip": True, "n": None, 'q"r': 5}},
        {"type": "identify", "userId": "u2", "traits": {"vip": 1, "n": "null", "q": 5}},
    )
    kairos.processor.run_until_caught_up()

    def users(**params: str) -> list[str]:
        body = client.get("/v1/profiles", params=params, headers=read_key).json()
        return sorted(i["value"] for p in body["items"] for i in p["identities"] if i["type"] == "user_id")

    assert users(**{"trait.vip": "true"}) == ["u1"]
    assert users(**{"trait.vip": "1"}) == ["u2"]
    assert users(**{"trait.n": "null"}) == ["u1"]
    assert users(**{"trait.n": '"null"'}) == ["u2"]
    assert users(**{'trait.q"r': "5"}) == ["u1"]


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("GET", "/v1/track", {"POST"}),
        ("PUT", "/v1/b", {"POST"}),
        ("DELETE", "/v1/profiles/x", {"GET", "HEAD"}),
        ("POST", "/healthz", {"GET", "HEAD"}),
    ],
)
def test_405_says_which_methods_are_allowed(client: TestClient, method: str, path: str, allowed: set[str]) -> None:
    r = client.request(method, path)
    assert r.status_code == 405
    assert set(r.headers["allow"].split(", ")) == allowed  # RFC 9110: a 405 must carry Allow
    assert r.json() == {"error": {"code": "method_not_allowed", "field": "method", "message": "Method Not Allowed"}}


def _asgi_request(app: Any, path: str, messages: list[Message], pause: float = 0.0) -> list[Message]:
    """Drive ``app`` with one POST whose ``receive`` returns ``messages`` (``pause`` seconds before each one but
    the first) and then waits for ever."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"content-type", b"application/json"), (b"content-length", b"100")],
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 8000),
    }
    sent: list[Message] = []

    first = True

    async def receive() -> Message:
        nonlocal first
        if messages:
            if not first:
                await asyncio.sleep(pause)
            first = False
            return messages.pop(0)
        await asyncio.Event().wait()  # a client that stalls
        raise AssertionError("unreachable")

    async def send(message: Message) -> None:
        sent.append(message)

    asyncio.run(asyncio.wait_for(app(scope, receive, send), 10))
    return sent


def test_client_that_disconnects_mid_body_is_not_a_server_error(
    kairos: Kairos, caplog: pytest.LogCaptureFixture
) -> None:
    app = create_app(kairos, run_processor=False)
    partial: Message = {"type": "http.request", "body": b'{"userId": "u-secret", "ev', "more_body": True}
    with caplog.at_level(logging.DEBUG, logger="kairos.http"):
        sent = _asgi_request(app, "/v1/track", [partial, {"type": "http.disconnect"}])
    assert sent == []  # nobody to answer: no 500 is started
    assert [r.levelname for r in caplog.records] == ["DEBUG"]
    assert caplog.records[0].getMessage() == "client disconnected"
    assert "u-secret" not in caplog.text


def test_stalled_body_is_408_after_the_body_timeout(store_settings: dict[str, Any]) -> None:
    kairos = Kairos(make_settings(store_settings, server={"body_timeout_seconds": 0.2}))
    try:
        app = create_app(kairos, run_processor=False)
        start = time.monotonic()
        sent = _asgi_request(app, "/v1/track", [{"type": "http.request", "body": b'{"us', "more_body": True}])
        elapsed = time.monotonic() - start
    finally:
        kairos.close()
    assert 0.2 <= elapsed < 5
    assert sent[0]["status"] == 408
    assert (b"connection", b"close") in sent[0]["headers"]
    assert json.loads(sent[1]["body"]) == {
        "success": False,
        "error": {
            "code": "body_timeout",
            "field": "body",
            "message": "no part of the request body arrived for 0.2 seconds",
        },
    }


def test_body_timeout_is_the_wait_for_each_part_not_for_the_whole_body(store_settings: dict[str, Any]) -> None:
    kairos = Kairos(make_settings(store_settings, server={"body_timeout_seconds": 1.0}))
    try:
        source = kairos.store.admin.add_source("web", "observed", 0)
        # No event name: answered 400 after the whole body was read and validated (no writer runs here).
        body = json.dumps({"writeKey": source.write_key, "userId": "u", "properties": {"n": 1}}).encode()
        parts = [body[:10], body[10:20], body[20:30], body[30:]]
        messages: list[Message] = [
            {"type": "http.request", "body": part, "more_body": i < len(parts) - 1} for i, part in enumerate(parts)
        ]
        app = create_app(kairos, run_processor=False)
        start = time.monotonic()
        sent = _asgi_request(app, "/v1/track", messages, pause=0.4)  # 1.2 s in all, no wait longer than 1 s
        assert time.monotonic() - start >= 1.2
        assert sent[0]["status"] == 400, sent
        assert json.loads(sent[1]["body"])["errors"][0]["field"] == "event"
    finally:
        kairos.close()


def test_docs_page_is_self_contained(client: TestClient) -> None:
    page = client.get("/docs")
    assert page.status_code == 200 and "://" not in page.text
    csp = dict(part.split(" ", 1) for part in page.headers["content-security-policy"].split("; "))
    assert csp["default-src"] == "'none'" and csp["connect-src"] == "'self'"
    assert csp["script-src"].startswith("'self' 'sha256-")  # the one inline initializer, by its hash
    assets = re.findall(r'(?:src|href)="(docs/assets/[^"]+)"', page.text)
    assert len(assets) == 2
    for asset in assets:
        r = client.get("/" + asset)
        assert r.status_code == 200 and len(r.content) > 10_000, asset
    assert client.get("/docs/assets/nope.js").json()["error"]["code"] == "not_found"


def test_basic_auth_header_with_non_ascii_bytes_is_401_not_500(client: TestClient) -> None:
    # Starlette decodes header bytes as latin-1; base64 then refused the non-ASCII text with a ValueError.
    for value in (b"Basic \xe9\xe9\xe9\xe9", b"Basic \xff"):
        headers = {b"Authorization": value}
        r = client.post("/v1/track", json={"userId": "u", "event": "E"}, headers=headers)
        assert r.status_code == 401, r.text
        assert r.json()["error"]["code"] == "unauthorized"


def test_timeline_presents_logged_events_in_both_payload_formats(
    client: TestClient, kairos: Kairos, source: Source, read_key: dict[str, str]
) -> None:
    """Kairos' decisions live in the log's columns now; rows written before kept them in the payload."""
    r = client.post(
        "/v1/track",
        json={"userId": "u9", "event": "New", "timestamp": "2026-01-01T10:00:00Z", "sentAt": "2026-01-01T10:00:05Z"},
        auth=(source.write_key, ""),
    )
    assert r.status_code == 200, r.text
    old = NewEvent(
        "m-old",
        1_767_261_600_000,
        1_767_261_000_000,
        "observed",
        b'{"type":"track","userId":"u9","event":"Old","messageId":"m-old","timestamp":"2026-01-01T10:50:00.000Z",'
        b'"originalTimestamp":"2026-01-01T10:50:03Z","receivedAt":"2026-01-01T11:00:00.000Z",'
        b'"_kairos":{"source":"web","trait_kind":"observed"}}',
    )
    kairos.append([(source.name, [old])])
    kairos.processor.run_until_caught_up()
    items = client.get("/v1/profiles/user_id:u9/events", headers=read_key).json()["items"]
    events = {item["name"]: item["event"] for item in items}
    assert events["Old"] == {
        "type": "track",
        "userId": "u9",
        "event": "Old",
        "messageId": "m-old",
        "timestamp": "2026-01-01T10:50:00.000Z",
        "originalTimestamp": "2026-01-01T10:50:03Z",
        "receivedAt": "2026-01-01T11:00:00.000Z",
    }
    new = events["New"]
    received = new.pop("receivedAt")
    message_id = new.pop("messageId")
    assert message_id.startswith("kairos-")
    # Sent 5 s after it happened: it happened 5 s before it was received.
    corrected = datetime.fromisoformat(received) - timedelta(seconds=5)
    assert new.pop("timestamp") == corrected.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    assert new == {
        "type": "track",
        "userId": "u9",
        "event": "New",
        "originalTimestamp": "2026-01-01T10:00:00Z",
        "sentAt": "2026-01-01T10:00:05Z",
    }


# -- back-pressure and store failures on the write path ----------------------------------------------


def _batch(n: int, user: str = "u") -> dict[str, Any]:
    return {"batch": [{"type": "track", "userId": user, "event": f"E{i}"} for i in range(n)]}


def test_writer_refuses_beyond_max_pending_without_blocking() -> None:
    release = threading.Event()
    appended: list[int] = []

    def blocked(groups: Sequence[tuple[str, Sequence[NewEvent]]]) -> list[list[int]]:
        release.wait(10)
        appended.extend(len(events) for _, events in groups)
        return [list(range(len(events))) for _, events in groups]

    events = [NewEvent(f"m{i}", 1, 1, "observed", b"{}") for i in range(100)]
    writer = LogWriter(blocked, max_pending=150)

    async def scenario() -> None:
        first = asyncio.create_task(writer.append("s", events))
        await asyncio.sleep(0.05)
        assert writer.pending == 100
        started = time.monotonic()
        with pytest.raises(Overloaded):
            await writer.append("s", events)
        assert time.monotonic() - started < 0.05  # refused at once, not queued behind the blocked commit
        release.set()
        assert await first == list(range(100))
        assert writer.pending == 0
        assert len(await writer.append("s", events)) == 100  # room again

    try:
        asyncio.run(scenario())
    finally:
        release.set()
        writer.close()
    assert appended == [100, 100]


def test_writer_settles_a_group_with_one_wake_up_of_the_event_loop() -> None:
    """Each ``call_soon_threadsafe`` writes to the loop's wake-up socket: one per group commit, not per request."""
    release = threading.Event()

    def first_call_waits(groups: Sequence[tuple[str, Sequence[NewEvent]]]) -> list[list[int]]:
        release.wait(5)  # holds the writer on the first request, so the next ones are committed together
        return [[len(events)] for _, events in groups]

    writer = LogWriter(first_call_waits)
    wake_ups = 0

    async def scenario() -> list[list[int]]:
        nonlocal wake_ups
        loop = asyncio.get_running_loop()
        real = loop.call_soon_threadsafe

        def counting(*args: Any, **kwargs: Any) -> Any:
            nonlocal wake_ups
            wake_ups += 1
            return real(*args, **kwargs)

        loop.call_soon_threadsafe = counting  # type: ignore[method-assign,assignment]
        events = [[NewEvent(f"{r}-{i}", 1, 1, "observed", b"{}") for i in range(r + 1)] for r in range(6)]
        requests = [asyncio.ensure_future(writer.append("s", events[0]))]
        await asyncio.sleep(0.1)  # the writer thread took it and waits
        requests += [asyncio.ensure_future(writer.append("s", e)) for e in events[1:]]
        await asyncio.sleep(0.1)
        release.set()
        return await asyncio.gather(*requests)

    try:
        assert asyncio.run(scenario()) == [[n] for n in range(1, 7)]
    finally:
        release.set()
        writer.close()
    assert wake_ups == 2  # the first request's group, then the five that waited behind it


def test_queue_full_is_503_with_retry_after(client: TestClient, source: Source) -> None:
    release = threading.Event()

    def blocked(groups: Sequence[tuple[str, Sequence[NewEvent]]]) -> list[list[int]]:
        release.wait(10)
        return [list(range(len(events))) for _, events in groups]

    app = client.app
    assert isinstance(app, Starlette)
    app.state.writer.close()
    app.state.writer = LogWriter(blocked, max_pending=150)
    auth = (source.write_key, "")
    first: list[int] = []
    sender = threading.Thread(
        target=lambda: first.append(client.post("/v1/batch", json=_batch(100), auth=auth).status_code)
    )
    sender.start()
    try:
        deadline = time.monotonic() + 5
        while app.state.writer.pending == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        r = client.post("/v1/batch", json=_batch(100), auth=auth)
        assert r.status_code == 503, r.text
        assert r.headers["retry-after"] == "1"
        assert r.json() == {"success": False, "error": {"code": "overloaded", "message": r.json()["error"]["message"]}}
    finally:
        release.set()
        sender.join(10)
        app.state.writer.close()
    assert first == [200]


@pytest.mark.parametrize("error", [sqlite3.OperationalError("database is locked"), "psycopg"])
def test_store_error_during_append_is_503_with_retry_after(
    client: TestClient, kairos: Kairos, source: Source, error: Any
) -> None:
    if error == "psycopg":
        psycopg = pytest.importorskip("psycopg")
        error = psycopg.OperationalError("server closed the connection unexpectedly")

    def failing(groups: Sequence[tuple[str, Sequence[NewEvent]]]) -> list[list[int]]:
        raise error

    app = client.app
    assert isinstance(app, Starlette)
    app.state.writer.close()
    app.state.writer = LogWriter(failing, store_errors=(sqlite3.Error, type(error)))
    r = client.post("/v1/batch", json=_batch(3), auth=(source.write_key, ""))
    app.state.writer.close()
    assert r.status_code == 503, r.text
    assert r.headers["retry-after"] == "1"
    body = r.json()
    assert body["success"] is False and body["error"]["code"] == "store_unavailable"


def test_store_error_mid_append_writes_nothing(kairos: Kairos, source: Source) -> None:
    """Two requests share one group commit and the driver fails on the second: neither is half in the log."""
    release = threading.Event()

    def first_call_waits(groups: Sequence[tuple[str, Sequence[NewEvent]]]) -> list[list[int]]:
        release.wait(5)  # holds the writer on the first request, so the next two are committed together
        return kairos.store.log.append_many(groups)

    writer = LogWriter(first_call_waits, store_errors=kairos.store.driver_errors)
    events = [[NewEvent(f"{r}-{i}", 1, 1, "observed", b'{"type":"track"}') for i in range(5)] for r in "ab"]
    unbindable = [NewEvent("bad", 1, 1, "observed", object())]  # type: ignore[arg-type]  # no driver binds it
    before = kairos.store.log.last_seq()

    async def scenario() -> list[Any]:
        requests = [asyncio.ensure_future(writer.append(source.name, events[0]))]
        await asyncio.sleep(0.1)  # the writer thread took it and waits
        requests += [asyncio.ensure_future(writer.append(source.name, e)) for e in (events[1], unbindable)]
        await asyncio.sleep(0.1)
        release.set()
        return await asyncio.gather(*requests, return_exceptions=True)

    try:
        first, second, third = asyncio.run(scenario())
    finally:
        release.set()
        writer.close()
    assert first == list(range(before + 1, before + 6))
    assert isinstance(second, StoreUnavailable) and isinstance(third, StoreUnavailable)
    assert kairos.store.log.last_seq() == before + 5
    assert error_response(second, collect=True).headers["retry-after"] == "1"


def test_an_encoded_slash_in_a_ref_stays_in_the_ref(
    client: TestClient, kairos: Kairos, source: Source, read_key: dict[str, str]
) -> None:
    """Decoded, ``user_id:x%2Fevents`` routed to the timeline of ``user_id:x``: another person's data."""
    send(client, source, {"type": "identify", "userId": "x/events", "traits": {"name": "Slash"}})
    send(client, source, {"type": "identify", "userId": "x", "traits": {"name": "Mr X"}})
    send(client, source, {"type": "track", "userId": "x", "event": "Only X"})
    kairos.processor.run_until_caught_up()
    slash, x = kairos.resolve("user_id:x/events"), kairos.resolve("user_id:x")
    assert slash is not None and x is not None and slash != x
    profile = client.get("/v1/profiles/user_id:x%2Fevents", headers=read_key)
    assert profile.status_code == 200, profile.text
    assert profile.json()["traits"]["name"] == "Slash"
    for tail in ("events", "merges", "moments", "consents", "data-uses"):
        mine = client.get(f"/v1/profiles/user_id:x%2fevents/{tail}", headers=read_key)
        assert mine.status_code == 200, (tail, mine.text)
        assert mine.json().get("profile_id") in (None, profile.json()["id"]), (tail, mine.text)
    events = client.get("/v1/profiles/user_id:x%2Fevents/events", headers=read_key).json()["items"]
    assert events and all(e["name"] != "Only X" for e in events), events
    theirs = client.get("/v1/profiles/user_id:x/events", headers=read_key)
    assert theirs.status_code == 200 and theirs.json()["items"][0]["name"] == "Only X", theirs.text
    # Not UTF-8 once decoded: refused as before, not a 500.
    assert client.get("/v1/profiles/user_id:%FF%2Fx", headers=read_key).status_code in (400, 404)


def test_a_filter_on_a_computed_trait_is_refused_not_an_empty_list(
    client: TestClient, kairos: Kairos, source: Source, read_key: dict[str, str]
) -> None:
    """Computed and RFM traits are not stored columns: ``?trait.orders_90d=2`` answered [] for everyone."""
    _, secret = kairos.store.admin.add_api_key("admin", frozenset({"admin"}), 0)
    admin = {"Authorization": f"Bearer {secret}"}
    body = {"aggregate": "count", "event": "Order Completed", "window": "90d"}
    assert client.put("/v1/traits/orders_90d", json=body, headers=admin).status_code == 201
    send(client, source, {"type": "track", "userId": "u1", "event": "Order Completed"})
    kairos.processor.run_until_caught_up()
    names = ["orders_90d"] + (["rfm_segment"] if kairos.settings.rfm.enabled else [])
    for name in names:
        r = client.get(f"/v1/profiles?trait.{name}=1", headers=read_key)
        assert r.status_code == 400, (name, r.text)
        error = r.json()["error"]
        assert (error["code"], error["field"]) == ("invalid_query", f"trait.{name}") and "segment" in error["message"]
    assert client.get("/v1/profiles?trait.plan=pro", headers=read_key).status_code == 200  # a stored trait

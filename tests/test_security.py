"""Hardened APIs: scopes, key revocation and rotation, rate limits, the audit log, CORS, no personal data in
errors and logs. Store parts run on SQLite and PostgreSQL; the shared rate limits on the machine's Redis."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import Route
from starlette.testclient import TestClient
from typer.testing import CliRunner

from kairos.api import create_app
from kairos.api._common import endpoint
from kairos.api.ratelimit import RateLimits
from kairos.cli import app as cli
from kairos.config import LimitsSettings
from kairos.errors import ConfigError, RateLimited, ValidationError
from kairos.runtime import Kairos
from kairos.scopes import SCOPES, effective, grants, parse_scopes
from kairos.store import Source
from kairos.store.schema import META, Column, Table
from tests.conftest import REQUIRE, make_settings, point_cli_at

REDIS = ("127.0.0.1", 6379)
SEGMENT = {"rule": "traits.plan == 'pro'"}


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def key(kairos: Kairos, *scopes: str, name: str = "k") -> dict[str, str]:
    return bearer(kairos.store.admin.add_api_key(name, frozenset(scopes), kairos.clock.now())[1])


def app_client(kairos: Kairos) -> TestClient:
    return TestClient(create_app(kairos, run_processor=False), raise_server_exceptions=False)


def forget_keys(client: TestClient) -> None:
    """What 5 seconds do to a running server's key cache (KEY_CACHE_SECONDS)."""
    client.app.state.api_keys.clear()  # type: ignore[attr-defined]


def assert_error(r: Any, status: int, code: str, field: str | None = None) -> dict[str, Any]:
    assert r.status_code == status, r.text
    error: dict[str, Any] = r.json()["error"]
    assert error["code"] == code and error["message"], error
    if field is not None:
        assert error["field"] == field, error
    return error


# -- scopes --------------------------------------------------------------------------------------------------
def test_admin_implies_read_write_decide_but_not_privacy() -> None:
    assert SCOPES == ("write", "read", "decide", "admin", "privacy")
    assert effective({"admin"}) == {"admin", "read", "write", "decide"}
    assert not grants({"admin"}, "privacy")
    assert grants({"privacy"}, "privacy") and not grants({"privacy"}, "read")
    assert not grants({"read"}, "write") and not grants({"write"}, "read")
    with pytest.raises(ValidationError) as exc:
        parse_scopes(["read", "root"])
    assert exc.value.code == "invalid_scope" and "privacy" in exc.value.message
    for hostile in ["", "READ", "read\x00", "ré", "a" * 10_000]:
        with pytest.raises(ValidationError):
            parse_scopes([hostile])
    with pytest.raises(ValidationError):
        parse_scopes([])


def test_a_privacy_route_refuses_admin_and_takes_privacy(kairos: Kairos) -> None:
    """The rule is require_scope's, for routes others add: one that needs privacy, built the same way."""
    work = endpoint({"POST": ("privacy", lambda k, r, b: {"ok": True}, False)})
    app = Starlette(routes=[Route("/v1/privacy/test", work, methods=["POST"])])
    app.state.kairos = kairos
    with TestClient(app) as client:
        assert_error(client.post("/v1/privacy/test", headers=key(kairos, "admin")), 403, "missing_scope")
        assert_error(client.post("/v1/privacy/test"), 401, "unauthorized", "Authorization")
        assert client.post("/v1/privacy/test", headers=key(kairos, "privacy")).json() == {"ok": True}


def _bearer_routes(client: TestClient) -> list[tuple[str, str, str]]:
    """Every (method, path, scope) of the API that takes an API key, path parameters filled in; the scope is
    the one each operation's documented 403 names."""
    spec = client.get("/openapi.json").json()
    out = []
    for path, item in spec["paths"].items():
        for method, op in item.items():
            if {"apiKey"} & {s for sec in op.get("security", []) for s in sec}:
                found = re.search(r"`(\w+)` scope", op["responses"]["403"]["description"])
                assert found, (method, path, "its 403 names no scope")
                out.append((method.upper(), path.replace("{key}", "k1").replace("{ref}", "user_id:u1"), found[1]))
    return out


def test_every_route_refuses_a_missing_or_wrongly_scoped_key(client: TestClient, kairos: Kairos) -> None:
    routes = _bearer_routes(client)
    assert len(routes) > 30 and ("GET", "/v1/audit", "admin") in routes
    keys = {scope: key(kairos, scope, name=scope) for scope in SCOPES}
    for method, path, needed in routes:
        for headers in ({}, {"Authorization": "Bearer kk_not-a-key"}, {"Authorization": "Basic eDp5"}):
            r = client.request(method, path, headers=headers, json={})
            assert r.status_code == 401, (method, path, r.text)
            assert r.json()["error"]["field"] == "Authorization"
        assert needed in SCOPES, (method, path, needed)
        for scope, headers in keys.items():
            if not grants({scope}, needed):
                r = client.request(method, path, headers=headers, json={})
                assert r.status_code == 403, (method, path, scope, r.text)
                assert_error(r, 403, "missing_scope", "Authorization")


@pytest.mark.parametrize(
    "header",
    [
        "Bearer " + "x" * 100_000,
        "Bearer kk_\x00abc",
        "Bearer kk_é€",
        "Bearer ",
        "bearer\tkk_",
        "Bearer " + "\ud800".encode("utf-8", "surrogatepass").decode("latin-1"),
    ],
)
def test_hostile_authorization_headers_are_401(client: TestClient, header: str) -> None:
    raw = header.encode("utf-8", "surrogatepass") if not header.isascii() else header.encode()
    try:
        r = client.get("/v1/profiles", headers=[(b"authorization", raw)])
    except Exception:  # the HTTP client refuses to send it: then no server sees it either
        return
    assert_error(r, 401, r.json()["error"]["code"], "Authorization")


# -- key lifecycle -----------------------------------------------------------------------------------------
def test_revoked_key_is_refused(client: TestClient, kairos: Kairos) -> None:
    headers = key(kairos, "read", name="dash")
    assert client.get("/v1/profiles", headers=headers).status_code == 200
    revoked = kairos.store.admin.revoke_api_key("dash", kairos.clock.now())
    assert revoked.revoked_at is not None and not revoked.enabled
    forget_keys(client)
    assert_error(client.get("/v1/profiles", headers=headers), 401, "invalid_api_key", "Authorization")
    # Revoking again changes nothing; a revoked key cannot be given a new secret.
    assert kairos.store.admin.revoke_api_key(revoked.id, kairos.clock.now()).revoked_at == revoked.revoked_at
    with pytest.raises(Exception) as exc:
        kairos.store.admin.rotate_api_key(revoked.id, kairos.clock.now())
    assert getattr(exc.value, "code", None) == "revoked"


def test_rotation_keeps_the_old_secret_for_the_grace_period_only(client: TestClient, kairos: Kairos) -> None:
    admin = kairos.store.admin
    old = key(kairos, "read", name="etl")
    now = kairos.clock.now()
    rotated, secret = admin.rotate_api_key("etl", now, grace_ms=3_600_000)
    assert rotated.rotated_at == now and secret != old["Authorization"][7:]
    forget_keys(client)
    assert client.get("/v1/profiles", headers=old).status_code == 200  # within the grace period
    assert client.get("/v1/profiles", headers=bearer(secret)).status_code == 200
    # A rotation whose grace already ended (made an hour ago with one minute of grace): the old one is refused.
    _, newer = admin.rotate_api_key(rotated.id, now - 3_600_000, grace_ms=60_000)
    forget_keys(client)
    assert_error(client.get("/v1/profiles", headers=bearer(secret)), 401, "invalid_api_key")
    assert client.get("/v1/profiles", headers=bearer(newer)).status_code == 200
    assert client.get("/v1/profiles", headers=old).status_code == 401  # two rotations back: gone
    # Without grace the replaced secret stops at once.
    _, newest = admin.rotate_api_key(rotated.id, kairos.clock.now())
    forget_keys(client)
    assert client.get("/v1/profiles", headers=bearer(newer)).status_code == 401
    assert client.get("/v1/profiles", headers=bearer(newest)).status_code == 200
    with pytest.raises(ValidationError):
        admin.rotate_api_key(rotated.id, kairos.clock.now(), grace_ms=-1)


def test_only_hashes_are_stored(kairos: Kairos) -> None:
    _, secret = kairos.store.admin.add_api_key("h", frozenset({"read"}), 0)
    _, rotated = kairos.store.admin.rotate_api_key("h", 0, grace_ms=1000)
    db = kairos.store.log_db  # type: ignore[attr-defined]
    rows = db.rows_of("SELECT * FROM api_keys")
    text = repr(rows)
    assert secret not in text and rotated not in text and len(secret) >= 43


def test_key_names_and_refs_are_checked(kairos: Kairos) -> None:
    admin = kairos.store.admin
    for bad in ["", " x", "a" * 101, "a\x00b", "tab\there"]:
        with pytest.raises(ValidationError):
            admin.add_api_key(bad, frozenset({"read"}), 0)
    admin.add_api_key("twin", frozenset({"read"}), 0)
    admin.add_api_key("twin", frozenset({"read"}), 0)
    with pytest.raises(ValidationError) as exc:
        admin.revoke_api_key("twin", 0)
    assert exc.value.code == "ambiguous"
    for bad in ["nobody", "", "\x00", "x" * 500]:
        with pytest.raises(Exception) as err:
            admin.revoke_api_key(bad, 0)
        assert getattr(err.value, "code", None) in ("not_found", "invalid")


@pytest.fixture
def cli_env(tmp_path: Path, store_settings: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Path:
    point_cli_at(store_settings, monkeypatch, tmp_path / "kairos.toml", "")
    return tmp_path


def run(*args: str) -> Any:
    return CliRunner().invoke(cli, list(args))


def run_json(*args: str) -> Any:
    result = run(*args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_keys_cli_lifecycle_and_audit(cli_env: Path, store_settings: dict[str, Any]) -> None:
    added = run_json("keys", "add", "etl", "--scope", "read", "--scope", "privacy")
    assert added["scopes"] == ["privacy", "read"]
    [listed] = run_json("keys", "list")
    assert listed == {
        "id": added["id"],
        "name": "etl",
        "scopes": ["privacy", "read"],
        "created_at": listed["created_at"],
        "rotated_at": None,
        "revoked_at": None,
        "revoked": False,
    }
    rotated = run_json("keys", "rotate", "etl", "--grace", "1h")
    assert rotated["key"] != added["key"] and rotated["old_key_valid_for_seconds"] == 3600
    assert rotated["rotated_at"] is not None
    table = run("keys", "list")
    assert added["key"] not in table.stdout and rotated["key"] not in table.stdout and "etl" in table.stdout
    revoked = run_json("keys", "revoke", added["id"])
    assert revoked["revoked"] is True and "key" not in revoked
    kairos = Kairos(make_settings(store_settings))
    try:
        assert kairos.store.admin.api_key(rotated["key"]) is not None
        assert not kairos.store.admin.api_key(rotated["key"]).enabled  # type: ignore[union-attr]
        entries = kairos.store.audit.list(10)
        assert [(e.action, e.actor, e.target, e.outcome) for e in entries] == [
            ("keys.revoke", "cli", added["id"], 200),
            ("keys.rotate", "cli", added["id"], 200),
            ("keys.add", "cli", added["id"], 200),
        ]
        assert entries[1].detail == {"grace_seconds": 3600}
        assert all(added["key"] not in repr(e) and rotated["key"] not in repr(e) for e in entries)
    finally:
        kairos.close()


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (["keys", "add", "x", "--scope", "root"], "invalid_scope"),
        (["keys", "add", "x", "--scope", "read\x00"], "invalid_scope"),
        (["keys", "add", "x" * 500, "--scope", "read"], "invalid_field"),
        (["keys", "revoke", "nobody"], "not_found"),
        (["keys", "revoke", "\x00" * 3], "invalid"),
        (["keys", "rotate", "nobody"], "not_found"),
        (["keys", "rotate", "nobody", "--grace", "soon"], "invalid"),
        (["keys", "rotate", "nobody", "--grace", "99999999999d"], "invalid"),
        (["keys", "rotate", "nobody", "--grace", "-5m"], "invalid"),
        (["keys", "rotate", "nobody", "--grace", "٣h"], "invalid"),
    ],
)
def test_keys_cli_errors_are_precise(cli_env: Path, args: list[str], code: str) -> None:
    result = run(*args, "--json")
    assert result.exit_code == 2, result.output
    assert json.loads(result.stdout)["error"]["code"] == code


# -- migration of an existing database -------------------------------------------------------------------------
OLD_API_KEYS = Table(
    "api_keys",
    tuple(
        Column(n, t)  # type: ignore[arg-type]
        for n, t in [
            ("id", "text"),
            ("name", "text"),
            ("key_hash", "text"),
            ("scopes", "text"),
            ("enabled", "int"),
            ("created_at", "int"),
        ]
    ),
    ("id",),
)


def _old_database(store_settings: dict[str, Any]) -> Any:
    """A database as the release before this one made it: api_keys without rotation columns, no audit."""
    from kairos.store._db import Database

    if store_settings["url"].startswith("sqlite"):
        from kairos.store.sqlite import SqliteDialect

        return Database(
            SqliteDialect(store_settings["url"].removeprefix("sqlite:///"), "normal"), (), (OLD_API_KEYS, META)
        )
    from kairos.store.postgres import PostgresDialect

    return Database(PostgresDialect(store_settings["url"], store_settings["schema_name"], 1), (), (OLD_API_KEYS, META))


def test_an_existing_database_gains_the_new_columns_in_place(store_settings: dict[str, Any]) -> None:
    from kairos.store._sql import hash_secret

    old = _old_database(store_settings)
    old.migrate()
    with old.tx(write=True) as conn:
        conn.execute(
            old.sql("INSERT INTO api_keys VALUES ({p}, {p}, {p}, {p}, {p}, {p})"),
            ("id1", "legacy", hash_secret("kk_legacy"), "admin", 1, 5),
        )
    old.close()
    for _ in range(2):  # and a second start finds nothing more to add
        kairos = Kairos(make_settings(store_settings))
        try:
            found = kairos.store.admin.api_key("kk_legacy")
            assert found is not None and found.enabled and found.scopes == {"admin"}
            assert found.rotated_at is None and found.revoked_at is None
            db = kairos.store.log_db  # type: ignore[attr-defined]
            with db.conn() as conn:
                columns = db.d.table_columns(conn, "api_keys")
            assert {"rotated_at", "revoked_at", "prev_hash", "prev_expires_at"} <= set(columns)
            assert kairos.store.audit.list(5) == []
        finally:
            kairos.close()
    kairos = Kairos(make_settings(store_settings))
    try:
        _, secret = kairos.store.admin.rotate_api_key("legacy", 10, grace_ms=1000)
        assert kairos.store.admin.api_key("kk_legacy").expires_at == 1010  # type: ignore[union-attr]
        assert kairos.store.admin.api_key(secret).expires_at is None  # type: ignore[union-attr]
    finally:
        kairos.close()


def test_a_new_not_null_column_without_default_is_added_nullable(store_settings: dict[str, Any]) -> None:
    """The generic upgrade: rows that exist cannot hold a value for a NOT NULL column without default."""
    from kairos.store._db import Database

    old = _old_database(store_settings)
    old.migrate()
    with old.tx(write=True) as conn:
        conn.execute(old.sql("INSERT INTO api_keys VALUES ('a', 'n', 'h', 'read', 1, 0)"))
    wider = Table(
        "api_keys",
        (*OLD_API_KEYS.columns, Column("tier", "text"), Column("weight", "int", default="7")),
        ("id",),
    )
    new = Database(old.d, (), (wider, META))
    new.migrate()
    assert new.rows_of("SELECT tier, weight FROM api_keys") == [(None, 7)]
    new.close()


# -- rate limits ---------------------------------------------------------------------------------------------
def limited(store_settings: dict[str, Any], **limits: Any) -> Kairos:
    return Kairos(make_settings(store_settings, limits=limits))


@pytest.fixture
def tight(store_settings: dict[str, Any]) -> Iterator[Kairos]:
    k = limited(store_settings, per_key="3/minute", per_source="2/minute")
    yield k
    k.close()


def test_over_the_key_limit_is_429_with_retry_after(tight: Kairos) -> None:
    with app_client(tight) as client:
        headers = key(tight, "read")
        other = key(tight, "read", name="other")
        for _ in range(3):
            assert client.get("/v1/profiles", headers=headers).status_code == 200
        r = client.get("/v1/profiles", headers=headers)
        assert_error(r, 429, "rate_limited", "Authorization")
        assert 1 <= int(r.headers["retry-after"]) <= 60
        assert client.get("/v1/profiles", headers=other).status_code == 200  # per key, not global
        # Unknown keys are refused as such, not counted.
        assert client.get("/v1/profiles", headers=bearer("kk_nope")).status_code == 401


def test_over_the_source_limit_collect_keeps_its_body_shape(tight: Kairos) -> None:
    source = tight.store.admin.add_source("web", "observed", 0)
    other = tight.store.admin.add_source("app", "observed", 0)
    with app_client(tight) as client:
        batch = {"writeKey": source.write_key, "batch": [{"type": "track", "userId": "u", "event": "E"}] * 50}
        for _ in range(2):
            assert client.post("/v1/batch", json=batch).status_code == 200  # 50 events count as one request
        r = client.post("/v1/t", json={"writeKey": source.write_key, "type": "track", "userId": "u", "event": "E"})
        assert r.status_code == 429 and r.json() == {
            "success": False,
            "error": {"code": "rate_limited", "field": "writeKey", "message": r.json()["error"]["message"]},
        }
        assert int(r.headers["retry-after"]) >= 1
        assert (
            client.post("/v1/track", json={"writeKey": other.write_key, "userId": "u", "event": "E"}).status_code == 200
        )
    assert tight.store.log.count() == 101  # nothing of the refused request was written


def test_limits_can_be_disabled(store_settings: dict[str, Any]) -> None:
    k = limited(store_settings, per_key="1/minute", enabled=False)
    try:
        with app_client(k) as client:
            headers = key(k, "read")
            assert all(client.get("/v1/profiles", headers=headers).status_code == 200 for _ in range(3))
    finally:
        k.close()


@pytest.mark.parametrize("strategy", ["fixed-window", "sliding-window-counter", "moving-window"])
def test_memory_limits_sweep_in_one_thread_not_one_per_10_ms(monkeypatch: pytest.MonkeyPatch, strategy: str) -> None:
    # limits' memory storage starts a sweep thread on a hit 10 ms after the previous one ended: under load,
    # about 100 threads a second. Kairos' sweep runs once a second at most: one thread for these hits.
    # Per hour: the sliding window's are aligned to the clock, and these hits must not straddle two.
    limits = RateLimits(LimitsSettings(per_source="2/hour", strategy=strategy))
    started: list[threading.Thread] = []
    start = threading.Thread.start

    def counted(thread: threading.Thread) -> None:
        started.append(thread)
        start(thread)

    monkeypatch.setattr(threading.Thread, "start", counted)
    refused = 0
    for _ in range(5):
        try:
            limits.check("source", "s1", "writeKey")
        except RateLimited:
            refused += 1
        time.sleep(0.03)  # past the library's 10 ms sweep
    assert refused == 3  # still counted
    assert len(started) == 1 and started[0].daemon  # a daemon: it never holds up the process' exit


@pytest.mark.parametrize(
    "bad",
    [
        {"per_key": "lots"},
        {"per_key": "10/second;5/minute"},
        {"per_source": ""},
        {"storage": "memcached://x"},
        {"storage": "file:///etc/passwd"},
        {"strategy": "token-bucket"},
        {"storage_timeout_seconds": 0},
    ],
)
def test_bad_limits_settings_are_a_config_error(bad: dict[str, Any], tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        make_settings({"url": f"sqlite:///{tmp_path}/k.db"}, limits=bad)


def redis_reason() -> str | None:
    try:
        with socket.create_connection(REDIS, timeout=1):
            return None
    except OSError as exc:
        return f"Redis at {REDIS[0]}:{REDIS[1]} is not reachable: {exc}"


@pytest.mark.parametrize("strategy", ["fixed-window", "sliding-window-counter", "moving-window"])
def test_redis_limits_are_shared_between_processes(tmp_path: Path, strategy: str) -> None:
    reason = redis_reason()
    if reason is not None:
        if REQUIRE:
            pytest.fail(reason)
        pytest.skip(reason)
    store = {"url": f"sqlite:///{tmp_path}/k.db"}
    url = f"redis://{REDIS[0]}:{REDIS[1]}"
    first = limited(store, per_key="4/minute", storage=url, strategy=strategy)
    second = limited(store, per_key="4/minute", storage=url, strategy=strategy)  # another API process
    try:
        headers = key(first, "read", name=f"shared-{uuid.uuid4().hex[:6]}")
        with app_client(first) as a, app_client(second) as b:
            codes = [c.get("/v1/profiles", headers=headers).status_code for c in (a, b, a, b, a, b)]
            assert codes == [200, 200, 200, 200, 429, 429]
            r = b.get("/v1/profiles", headers=headers)
            assert_error(r, 429, "rate_limited", "Authorization")
            assert 1 <= int(r.headers["retry-after"]) <= 60
    finally:
        first.close()
        second.close()


@contextlib.contextmanager
def slow_redis(delay: float) -> Iterator[int]:
    """A TCP proxy to the real Redis that holds every request ``delay`` seconds (a slow or distant Redis)."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()
    sockets: list[socket.socket] = []
    threads: list[threading.Thread] = []

    def pump(src: socket.socket, dst: socket.socket, wait: float) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                time.sleep(wait)
                dst.sendall(data)

    def serve() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            upstream = socket.create_connection(REDIS)
            sockets.extend((client, upstream))
            for args in ((client, upstream, delay), (upstream, client, 0.0)):
                threads.append(threading.Thread(target=pump, args=args, daemon=True))
                threads[-1].start()

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        server.join()
        listener.close()
        for s in sockets:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()
        for thread in threads:
            thread.join()


def test_a_slow_redis_counter_never_stalls_the_event_loop() -> None:
    """Counting in Redis is a network round trip: made on the event loop, a slow Redis (up to
    ``limits.storage_timeout_seconds``) held every other request of the process for that long."""
    reason = redis_reason()
    if reason is not None:
        if REQUIRE:
            pytest.fail(reason)
        pytest.skip(reason)
    with slow_redis(0.3) as port:
        url = f"redis://127.0.0.1:{port}"
        limits = RateLimits(LimitsSettings(per_key="100/minute", storage=url, storage_timeout_seconds=5))

        async def main() -> int:
            check = asyncio.ensure_future(limits.acheck("key", f"slow-{uuid.uuid4().hex[:8]}", "Authorization"))
            ticks = 0
            while not check.done():  # the loop keeps running other work while the counter is counted
                await asyncio.sleep(0.01)
                ticks += 1
            await check
            return ticks

        assert asyncio.run(main()) >= 10  # 0 when the check blocked the loop for its 0.3 s (or more)


def test_unreachable_redis_fails_open_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    k = limited({"url": f"sqlite:///{tmp_path}/k.db"}, per_key="1/minute", storage=f"redis://127.0.0.1:{port}")
    source = k.store.admin.add_source("web", "observed", 0)
    try:
        with caplog.at_level(logging.WARNING, logger="kairos.limits"), app_client(k) as client:
            headers = key(k, "read")
            assert [client.get("/v1/profiles", headers=headers).status_code for _ in range(3)] == [200] * 3
            event = {"writeKey": source.write_key, "userId": "jane@example.com", "event": "E"}
            assert client.post("/v1/track", json=event).status_code == 200
        warnings = [r for r in caplog.records if r.name == "kairos.limits"]
        assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING  # once, not per request
        logged = json.dumps([r.__dict__ for r in warnings], default=str)
        assert source.write_key not in logged and "jane" not in logged and str(port) not in logged
    finally:
        k.close()


# -- audit log -----------------------------------------------------------------------------------------------
def test_admin_changes_are_audited_and_listed_newest_first(client: TestClient, kairos: Kairos) -> None:
    admin = key(kairos, "admin", name="ops")
    read = key(kairos, "read", name="viewer")
    assert client.put("/v1/segments/pro", json=SEGMENT, headers=admin).status_code == 201
    assert client.put("/v1/segments/pro", json={"rule": "traits.("}, headers=admin).status_code == 400
    assert client.put("/v1/segments/pro", json=SEGMENT, headers=read).status_code == 403
    assert client.delete("/v1/segments/pro", headers=admin).status_code == 200
    assert client.delete("/v1/offers/nothing", headers=admin).status_code == 404
    assert client.get("/v1/segments/pro", headers=admin).status_code == 404  # reads are not audited
    r = client.get("/v1/audit", headers=admin)
    assert r.status_code == 200, r.text
    items = r.json()["items"]
    assert [(i["action"], i["target"], i["outcome"], i["key_name"]) for i in items] == [
        ("offers.delete", "nothing", 404, "ops"),
        ("segments.delete", "pro", 200, "ops"),
        ("segments.put", "pro", 403, "viewer"),
        ("segments.put", "pro", 400, "ops"),
        ("segments.put", "pro", 201, "ops"),
    ]
    assert items[3]["detail"] == {"code": "invalid_rule"} and items[2]["detail"] == {"code": "missing_scope"}
    assert items[4]["detail"] == {"version": 1, "changed": True} and items[4]["actor"] == "api"
    assert r.json()["next_cursor"] is None
    # Pages, and the action filter.
    first = client.get("/v1/audit?limit=2", headers=admin).json()
    second = client.get(f"/v1/audit?limit=2&cursor={first['next_cursor']}", headers=admin).json()
    third = client.get(f"/v1/audit?limit=2&cursor={second['next_cursor']}", headers=admin).json()
    assert [i["id"] for i in first["items"] + second["items"] + third["items"]] == [i["id"] for i in items]
    assert third["next_cursor"] is None
    puts = client.get("/v1/audit?action=segments.put", headers=admin).json()["items"]
    assert [i["outcome"] for i in puts] == [403, 400, 201]


def test_a_key_that_cannot_be_one_is_refused_and_never_kept_or_quoted(client: TestClient, kairos: Kairos) -> None:
    """A path key is the caller's text (an e-mail address sent by mistake): every method refuses what no key
    can be with a 400 that does not quote it, and the audit log records no such target."""
    admin = key(kairos, "admin")
    bad = "jane@example.com"
    for method, path in (
        ("PUT", f"/v1/segments/{bad}"),
        ("GET", f"/v1/segments/{bad}"),
        ("GET", f"/v1/traits/{bad}"),
        ("GET", f"/v1/moments/{bad}"),
        ("GET", f"/v1/segments/{bad}/members"),
        ("DELETE", f"/v1/traits/{bad}"),
    ):
        r = client.request(method, path, headers=admin, json=SEGMENT if method == "PUT" else None)
        assert (r.status_code, r.json()["error"]["code"]) == (400, "invalid_key"), (method, path, r.text)
        assert "jane" not in r.text
    items = client.get("/v1/audit", headers=admin).json()["items"]
    assert items and all("jane" not in json.dumps(i) for i in items)
    assert [(i["action"], i["target"], i["outcome"]) for i in items if i["action"] == "segments.put"] == [
        ("segments.put", "(invalid key)", 400)
    ]


def test_destination_changes_and_retries_are_audited(client: TestClient, kairos: Kairos) -> None:
    admin = key(kairos, "admin")
    body = {
        "url": "http://127.0.0.1:9/hook",
        "secret": "s" * 32,
        "subscribe": {"segments": ["vip"]},
        "purpose": "marketing_email",
    }
    r = client.put("/v1/destinations/crm", json=body, headers=admin)
    assert r.status_code in (200, 201), r.text
    assert client.post("/v1/destinations/crm/deliveries:retry", headers=admin).status_code == 200
    actions = [(e.action, e.target) for e in kairos.store.audit.list(10)]
    assert actions == [("destinations.retry", "crm"), ("destinations.put", "crm")]
    assert "s" * 32 not in repr(kairos.store.audit.list(10))


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("limit=abc", "limit"),
        ("limit=" + "9" * 400, "limit"),
        ("limit=%EF%BC%95", "limit"),  # a full-width digit
        ("cursor=nope!", "cursor"),
        ("cursor=" + "A" * 500, "cursor"),
        ("action=Segments.Put", "action"),
        ("action=segments", "action"),
        ("action=segments.put%00", "action"),
        ("action=" + "a." * 100 + "b", "action"),
        ("actor=cli", "actor"),
        ("limit=1&limit=2", "limit"),
    ],
)
def test_audit_query_errors_are_precise(client: TestClient, kairos: Kairos, query: str, field: str) -> None:
    assert_error(client.get(f"/v1/audit?{query}", headers=key(kairos, "admin")), 400, r_code(field), field)


def r_code(field: str) -> str:
    return "invalid_cursor" if field == "cursor" else "invalid_query"


def test_audit_needs_admin(client: TestClient, kairos: Kairos) -> None:
    assert_error(client.get("/v1/audit"), 401, "unauthorized", "Authorization")
    for scope in ("read", "write", "decide", "privacy"):
        assert_error(client.get("/v1/audit", headers=key(kairos, scope)), 403, "missing_scope")


def test_audit_record_bounds_what_it_keeps(kairos: Kairos) -> None:
    from kairos import audit

    entry = audit.record(kairos, None, "keys.add", "t\x00" + "x" * 500, 200, {"blob": "y" * 5000})
    assert entry is not None and entry.target.startswith("t?") and len(entry.target) == 200
    assert entry.detail == {"truncated": True}
    [stored] = kairos.store.audit.list(1)
    assert stored == entry
    for bad in ["Keys.Add", "keys", "keys..add", "", "a." * 40 + "b"]:
        with pytest.raises(ValueError):
            audit.record(kairos, None, bad, "t", 200)


# -- CORS ------------------------------------------------------------------------------------------------------
PREFLIGHT = {"Origin": "https://shop.example", "Access-Control-Request-Method": "POST"}


@pytest.mark.parametrize("path", ["/v1/t", "/v1/track", "/v1/batch", "/v1/b", "/v1/identify", "/v1/a"])
def test_collect_routes_answer_cors(client: TestClient, path: str) -> None:
    r = client.options(path, headers=PREFLIGHT)
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] in ("*", "https://shop.example")


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/profiles"),
        ("PUT", "/v1/segments/x"),
        ("DELETE", "/v1/offers/x"),
        ("GET", "/v1/audit"),
        ("POST", "/v1/decide"),
        ("GET", "/healthz"),
        ("GET", "/openapi.json"),
    ],
)
def test_other_routes_give_browsers_no_cors(client: TestClient, kairos: Kairos, method: str, path: str) -> None:
    pre = client.options(path, headers={**PREFLIGHT, "Access-Control-Request-Method": method})
    assert "access-control-allow-origin" not in pre.headers and pre.status_code == 405
    r = client.request(method, path, headers={"Origin": "https://evil.example", **key(kairos, "admin")}, json={})
    assert "access-control-allow-origin" not in r.headers


# -- no personal data in errors and logs ----------------------------------------------------------------------
def test_profile_errors_do_not_echo_the_reference(client: TestClient, read_key: dict[str, str]) -> None:
    for ref in ["email:jane.doe@example.com", "phone:+33612345678", "jane.doe@example.com:x", "jane-doe-uuid"]:
        for suffix in ("", "/events", "/merges", "/moments"):
            r = client.get(f"/v1/profiles/{ref}{suffix}", headers=read_key)
            assert r.status_code in (400, 404), r.text
            assert "jane" not in r.text and "33612345678" not in r.text and "doe" not in r.text


def test_an_unhandled_error_logs_no_personal_data(
    kairos: Kairos, source: Source, read_key: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    def broken(ref: str) -> int:
        raise RuntimeError(f"could not read {ref}")  # a message that quotes the data, as driver errors do

    kairos.resolve = broken  # type: ignore[method-assign]
    with caplog.at_level(logging.ERROR, logger="kairos.http"), app_client(kairos) as client:
        r = client.get("/v1/profiles/email:jane@example.com", headers=read_key)
    assert r.status_code == 500 and "jane" not in r.text
    [record] = [rec for rec in caplog.records if rec.name == "kairos.http"]
    assert record.__dict__["error"] == "RuntimeError" and record.exc_info is None
    assert "jane" not in json.dumps(record.__dict__, default=str)


def test_request_handler_sees_a_key(kairos: Kairos) -> None:
    """``endpoint`` hands the work the runtime and request only once the key passed."""
    seen: list[str] = []

    def work(k: Kairos, request: Request, body: Any) -> dict[str, Any]:
        seen.append(request.url.path)
        return {}

    app = Starlette(routes=[Route("/v1/x", endpoint({"GET": ("read", work, False)}), methods=["GET"])])
    app.state.kairos = kairos
    with TestClient(app) as client:
        assert client.get("/v1/x").status_code == 401 and seen == []
        assert client.get("/v1/x", headers=key(kairos, "read")).status_code == 200 and seen == ["/v1/x"]


def test_the_audit_example_in_security_md_runs(kairos: Kairos) -> None:
    import re

    doc = (Path(__file__).resolve().parent.parent / "docs" / "security.md").read_text()
    [block] = re.findall(r"```python\n(.*?)```", doc, re.S)
    found, _ = kairos.store.admin.add_api_key("dpo", frozenset({"privacy"}), 0)
    exec(block, {"kairos": kairos, "key": found, "profile_id": "4f1c2d9e"})
    [entry] = kairos.store.audit.list(1)
    assert (entry.action, entry.key_name, entry.target, entry.detail) == (
        "privacy.erase",
        "dpo",
        "4f1c2d9e",
        {"identities": 3},
    )

"""Workers that run the processor beside the API: the supervised child process, the thread, none.

These start real child processes (multiprocessing "spawn") against the embedded store and PostgreSQL.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from kairos.api import create_app
from kairos.config import Settings
from kairos.identity import profile_id_for
from kairos.metrics import REGISTRY
from kairos.pipeline.worker import NoWorker, ProcessWorker, backoff_delay
from kairos.runtime import Kairos
from kairos.store import Source
from kairos.store.cache import MemoryCache
from tests.conftest import make_settings, pid_alive

DEADLINE = 15.0  # seconds for a child to start, apply or restart


def eventually(check: Callable[[], Any], what: str, timeout: float = DEADLINE) -> Any:
    deadline = time.monotonic() + timeout
    while not (result := check()):
        if time.monotonic() > deadline:
            pytest.fail(f"not {what} after {timeout} s")
        time.sleep(0.02)
    return result


class SpyCache(MemoryCache):
    def __init__(self) -> None:
        super().__init__(100, 3600)
        self.invalidated: list[str] = []
        self.cleared = 0

    def invalidate(self, keys: Iterable[str]) -> None:
        keys = list(keys)
        self.invalidated += keys
        super().invalidate(keys)

    def clear(self) -> None:
        self.cleared += 1
        super().clear()


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture
def worker(kairos: Kairos) -> Iterator[tuple[ProcessWorker, SpyCache]]:
    cache = SpyCache()
    w = ProcessWorker(kairos.settings, cache, status_interval=0.1, backoff_base=0.05, backoff_cap=0.2)
    yield w, cache
    w.stop()


def test_backoff_doubles_up_to_the_cap() -> None:
    assert [backoff_delay(n, 0.5, 30.0) for n in range(1, 9)] == [0.5, 1, 2, 4, 8, 16, 30, 30]


def test_settings_reach_the_child_as_data() -> None:
    settings = make_settings({"url": "sqlite:///x.db"}, processor={"mode": "thread", "nice": 3})
    assert Settings.model_validate(settings.model_dump(mode="json")) == settings


def test_child_applies_reports_and_stops_cleanly(
    kairos: Kairos, source: Source, worker: tuple[ProcessWorker, SpyCache]
) -> None:
    w, cache = worker
    applied_before = sample("kairos_processor_events_total")
    w.start()
    status = w.status()
    assert status["mode"] == "process" and status["state"] == "running" and status["restarts"] == 0
    child = status["pid"]
    assert child is not None and child != os.getpid() and pid_alive(child)

    kairos.ingest({"batch": [{"type": "identify", "userId": "w1", "messageId": "w-1"}]}, "batch", source.write_key)
    assert kairos.wait_processed(DEADLINE)
    pk = kairos.resolve("user_id:w1")
    assert pk is not None
    profile = profile_id_for(pk)
    eventually(lambda: profile in cache.invalidated, "invalidated")
    eventually(lambda: sample("kairos_processor_events_total") == applied_before + 1, "mirrored")
    assert "last_batch_at" in w.status()

    w.stop()
    assert w.status()["state"] == "stopped" and w.status()["pid"] is None
    assert not pid_alive(child)
    assert cache.cleared == 0  # a clean stop loses no report


def test_killed_child_is_restarted(kairos: Kairos, source: Source, worker: tuple[ProcessWorker, SpyCache]) -> None:
    w, cache = worker
    restarts_before = sample("kairos_processor_restarts_total")
    w.start()
    first = w.status()["pid"]
    os.kill(first, signal.SIGKILL)
    status = eventually(lambda: (s := w.status())["restarts"] == 1 and s["state"] == "running" and s, "restarted")
    assert status["pid"] not in (None, first)
    assert sample("kairos_processor_restarts_total") == restarts_before + 1
    assert cache.cleared == 1  # what the killed child committed last is unknown
    kairos.ingest({"batch": [{"type": "identify", "userId": "w2", "messageId": "w-2"}]}, "batch", source.write_key)
    assert kairos.wait_processed(DEADLINE)


def test_a_child_that_cannot_start_is_retried_with_backoff(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    settings = make_settings({"url": "nosuchstore://x"})
    w = ProcessWorker(settings, SpyCache(), status_interval=0.1, backoff_base=0.1, backoff_cap=0.4)
    with caplog.at_level(logging.ERROR, logger="kairos.processor"):
        w.start()
        try:
            eventually(lambda: w.restarts >= 4, "restarted 4 times")
            status = w.status()
            assert status["last_error"] == "ConfigError"
        finally:
            w.stop()
    delays = [r.__dict__["restart_in"] for r in caplog.records if "restart_in" in r.__dict__]
    assert delays[:4] == [0.1, 0.2, 0.4, 0.4]


def test_a_child_that_does_not_stop_is_terminated_then_killed(
    store_settings: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    settings = make_settings(store_settings, processor={"stop_timeout_seconds": 0.2})
    w = ProcessWorker(settings, SpyCache())
    w.start()
    child = w.status()["pid"]
    os.kill(child, signal.SIGSTOP)  # frozen: it can neither read the request nor act on SIGTERM
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="kairos.processor"):
        w.stop()
    assert not pid_alive(child)
    assert 2.0 <= time.monotonic() - started < 5.0  # 0.2 s asking, 2 s after SIGTERM, then SIGKILL
    assert "did not stop in time" in caplog.text


def test_stop_before_start_and_twice(kairos: Kairos) -> None:
    w = ProcessWorker(kairos.settings, SpyCache())
    w.stop()
    w.stop()
    assert w.status()["state"] == "stopped"


# -- through the API -------------------------------------------------------------------------------


def test_profile_read_is_fresh_right_after_the_child_applies(store_settings: dict[str, Any]) -> None:
    """A long cache TTL: only the child's report can make the second read see the new trait."""
    kairos = Kairos(make_settings({**store_settings, "cache_ttl_seconds": 3600}))
    source = kairos.store.admin.add_source("web", "observed", 0)
    read = {"Authorization": f"Bearer {kairos.store.admin.add_api_key('t', frozenset({'read'}), 0)[1]}"}
    try:
        with TestClient(create_app(kairos)) as client:
            health = client.get("/healthz").json()
            assert health["status"] == "ok"
            assert health["processor"]["mode"] == "process" and health["processor"]["pid"] != os.getpid()

            def send(plan: str) -> None:
                event = {"type": "identify", "userId": "fresh", "traits": {"plan": plan}, "messageId": f"f-{plan}"}
                r = client.post("/v1/batch", json={"writeKey": source.write_key, "batch": [event]})
                assert r.status_code == 200, r.text
                assert kairos.wait_processed(DEADLINE)

            def plan() -> Any:
                r = client.get("/v1/profiles/user_id:fresh", headers=read)
                return r.json()["traits"]["plan"] if r.status_code == 200 else None

            send("free")
            eventually(lambda: plan() == "free", "free")
            assert plan() == "free"  # now served from the cache
            send("pro")
            eventually(lambda: plan() == "pro", "pro", timeout=2.0)

            eventually(lambda: "kairos_processor_up 1.0" in client.get("/metrics").text, "up")
    finally:
        kairos.close()


def test_thread_mode_and_off(kairos: Kairos) -> None:
    with TestClient(create_app(kairos, processor_mode="thread")) as client:
        processor = client.get("/healthz").json()["processor"]
        assert processor == {"mode": "thread", "state": "running", "pid": os.getpid(), "restarts": 0}
    with TestClient(create_app(kairos, run_processor=False)) as client:
        health = client.get("/healthz").json()
        assert health["status"] == "ok" and health["processor"]["state"] == "off"
        assert "kairos_processor_up 0.0" in client.get("/metrics").text
    disabled = Kairos(
        make_settings(
            {"url": kairos.settings.store.url, "schema_name": kairos.settings.store.schema_name},
            processor={"enabled": False},
        )
    )
    try:
        with TestClient(create_app(disabled)) as client:
            assert client.get("/healthz").json()["processor"]["mode"] == "off"
    finally:
        disabled.close()


class Paused(NoWorker):
    def status(self) -> dict[str, Any]:
        return {"mode": "process", "state": "paused", "pid": 1, "restarts": 0, "reason": "store unavailable"}


def test_paused_processor_is_degraded_but_200(kairos: Kairos) -> None:
    app = create_app(kairos, run_processor=False)
    app.state.processor = Paused()
    with TestClient(app) as client:
        r = client.get("/healthz")
        assert r.status_code == 200
        assert r.json()["status"] == "degraded" and r.json()["processor"]["reason"] == "store unavailable"

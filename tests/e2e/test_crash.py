"""Durability: ``kill -9`` the server under load; nothing it acknowledged may be lost.

Many clients send batches concurrently. While requests are in flight the server is killed with SIGKILL (no
shutdown code runs). The store is then read directly: every event of every batch that got a ``200`` must
be in the event log. Restarted, the server must catch up and apply each event exactly once, also when the
clients re-send the batches whose answer they never got (some of which were committed anyway).
"""

from __future__ import annotations

import signal
import threading
import time
import uuid
from typing import Any

import httpx2
import pytest

from tests.e2e.conftest import Server, profile_path

pytestmark = pytest.mark.e2e

THREADS = 8
BATCHES = 30  # per thread
EVENTS = 50  # per batch
KILL_AFTER = 40  # acknowledged batches before the kill
DEADLINE = 60.0  # seconds for the whole load phase


class Load:
    """Concurrent senders that record which batches the server acknowledged."""

    def __init__(self, server: Server, run: str) -> None:
        self.server = server
        self.run = run
        self.lock = threading.Lock()
        self.acked: set[tuple[int, int]] = set()
        self.failed: set[tuple[int, int]] = set()
        self.unexpected: list[str] = []
        self.in_flight = 0
        self.enough = threading.Event()
        self.killed = threading.Event()

    def user(self, batch: tuple[int, int]) -> str:
        return f"{self.run}-{batch[0]}-{batch[1]}"

    def events(self, batch: tuple[int, int]) -> list[dict[str, Any]]:
        user = self.user(batch)
        out: list[dict[str, Any]] = [
            {"type": "identify", "userId": user, "messageId": f"{user}-0", "traits": {"batch": list(batch)}}
        ]
        out += [
            {"type": "track", "userId": user, "messageId": f"{user}-{i}", "event": "Tick", "properties": {"i": i}}
            for i in range(1, EVENTS)
        ]
        return out

    def message_ids(self, batches: set[tuple[int, int]]) -> set[str]:
        return {f"{self.user(b)}-{i}" for b in batches for i in range(EVENTS)}

    def send(self, client: httpx2.Client, batch: tuple[int, int]) -> bool:
        with self.lock:
            self.in_flight += 1
        try:
            r = client.post("/v1/batch", json={"batch": self.events(batch)})
        except httpx2.TransportError:
            return False
        finally:
            with self.lock:
                self.in_flight -= 1
        if r.status_code != 200 and not self.killed.is_set():
            self.unexpected.append(f"{batch}: {r.status_code} {r.text[:200]}")
        return r.status_code == 200

    def worker(self, thread: int) -> None:
        with self.server.client(auth=(self.server.write_key, "")) as client:
            for n in range(BATCHES):
                batch = (thread, n)
                ok = self.send(client, batch)
                with self.lock:
                    (self.acked if ok else self.failed).add(batch)
                    if len(self.acked) >= KILL_AFTER:
                        self.enough.set()


def wait_all_applied(server: Server, load: Load, batches: set[tuple[int, int]]) -> None:
    """Every batch's person holds exactly its EVENTS events: none lost, none applied twice."""
    server.wait_caught_up(timeout=30.0)
    wrong = []
    with server.client(headers=server.read_headers) as client:
        for batch in sorted(batches):
            r = client.get(profile_path(f"user_id:{load.user(batch)}"))
            count = r.json().get("event_count") if r.status_code == 200 else r.status_code
            if count != EVENTS:
                wrong.append((batch, count))
    assert wrong == [], f"{len(wrong)} of {len(batches)} people with a wrong event count: {wrong[:10]}"


def test_acknowledged_events_survive_kill_9(fresh_server: Server) -> None:
    server = fresh_server
    load = Load(server, f"crash-{uuid.uuid4().hex[:8]}")
    threads = [threading.Thread(target=load.worker, args=(t,), daemon=True) for t in range(THREADS)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    assert load.enough.wait(DEADLINE), f"only {len(load.acked)} batches acknowledged: {load.unexpected[:5]}"
    # Kill at a moment when requests are on the wire (the senders never pause, so this comes at once).
    while load.in_flight == 0 and time.monotonic() - started < DEADLINE:
        time.sleep(0.001)
    in_flight = load.in_flight
    load.killed.set()
    server.kill()
    for thread in threads:
        thread.join(DEADLINE)
        assert not thread.is_alive(), "a sender did not finish"

    assert load.unexpected == []
    assert in_flight > 0
    assert len(load.acked) >= KILL_AFTER
    assert load.failed, "every batch was acknowledged before the kill: nothing was in flight"
    assert len(load.acked) + len(load.failed) == THREADS * BATCHES

    # Read the store with the server dead: every acknowledged event is in the log.
    logged = set(server.log_message_ids())
    missing = load.message_ids(load.acked) - logged
    assert not missing, f"{len(missing)} acknowledged events lost, e.g. {sorted(missing)[:5]}"

    # Restarted, the processor catches up and applies each logged event exactly once.
    server.start()
    wait_all_applied(server, load, load.acked)

    # Clients re-send what they got no answer for; some of it was committed before the kill.
    with server.client(auth=(server.write_key, "")) as client:
        for batch in sorted(load.failed):
            r = client.post("/v1/batch", json={"batch": load.events(batch)})
            assert r.status_code == 200, r.text
    wait_all_applied(server, load, load.acked | load.failed)
    assert load.message_ids(load.acked | load.failed) <= set(server.log_message_ids())
    health = server.health()
    assert health["lag"] == 0 and health["status"] == "ok"


def test_sigterm_stops_cleanly_and_keeps_everything(fresh_server: Server) -> None:
    """A graceful stop (SIGTERM) finishes in time, and a restart serves what was sent before."""
    server = fresh_server
    load = Load(server, f"term-{uuid.uuid4().hex[:8]}")
    batches = {(0, n) for n in range(5)}
    with server.client(auth=(server.write_key, "")) as client:
        for batch in sorted(batches):
            assert client.post("/v1/batch", json={"batch": load.events(batch)}).status_code == 200
    # uvicorn shuts down gracefully, then re-raises the signal it caught: -SIGTERM, not -SIGKILL.
    assert server.stop() in (0, -signal.SIGTERM)
    assert "Application shutdown complete" in server.log_tail()
    assert load.message_ids(batches) <= set(server.log_message_ids())
    server.start()
    wait_all_applied(server, load, batches)

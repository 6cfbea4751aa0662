"""`kairos serve` delivers through its delivery process: a segment entry reaches a real receiver, signed,
and `/metrics` of the API process shows the destination's counters and latency."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import BACKENDS, running_server
from tests.receivers import receiver

SECRET = "whsec_e2e_0123456789"
FAST = {
    "KAIROS__DELIVERY__POLL_INTERVAL_MS": "20",
    "KAIROS__DELIVERY__BACKOFF_BASE_SECONDS": "0.05",
}


@pytest.mark.parametrize("backend", BACKENDS)
def test_serve_delivers_and_reports_metrics(backend: str, tmp_path: Path, pg_unreachable: str | None) -> None:
    with receiver(SECRET) as rec, running_server(backend, tmp_path, pg_unreachable, FAST) as server:
        admin = {"Authorization": f"Bearer {server.cli('keys', 'add', 'a', '--scope', 'admin')['key']}"}
        assert server.health()["delivery"]["state"] == "running"
        with server.client() as c:
            r = c.put("/v1/segments/vip", json={"rule": 'traits.plan == "pro"'}, headers=admin)
            assert r.status_code == 201, r.text
            body = {"url": rec.url, "secret": SECRET, "subscribe": {"segments": ["vip"]}, "purpose": "analytics"}
            assert c.put("/v1/destinations/hook", json=body, headers=admin).status_code == 201
            batch = [{"type": "identify", "userId": f"e{i}", "traits": {"plan": "pro"}} for i in range(3)]
            r = c.post("/v1/batch", json={"batch": batch}, auth=(server.write_key, ""))
            assert r.status_code == 200, r.text
        deadline = time.monotonic() + 20
        while len(rec.accepted) < 3:
            assert time.monotonic() < deadline, f"delivered {len(rec.accepted)} of 3:\n{server.log_tail()}"
            time.sleep(0.05)
        assert rec.signatures_verify()
        deadline = time.monotonic() + 10
        while True:  # the child reports its metrics with its status, every half second
            text = server.get("/metrics").text
            m = re.search(r'kairos_delivery_delivered_total\{destination="hook"\} (\S+)', text)
            if m and float(m.group(1)) == 3.0:
                break
            assert time.monotonic() < deadline, text[-2000:]
            time.sleep(0.1)
        assert 'kairos_delivery_latency_seconds_count{destination="hook"} 3.0' in text
        assert "kairos_delivery_queue_depth" in text
        listed = server.cli("destinations", "deliveries", "hook", "--status", "delivered")
        assert len(listed["items"]) == 3 and all(d["attempts"] == 1 for d in listed["items"])
        assert SECRET not in server.log_tail()

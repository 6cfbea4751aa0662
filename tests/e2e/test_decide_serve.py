"""The decision API across real processes: a snapshot the learner of one server stores is used by another."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx2
import pytest

from tests.e2e.conftest import BACKENDS, Server, running_server


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_second_api_process_decides_with_the_learners_snapshot(
    backend: str, tmp_path: Path, pg_unreachable: str | None
) -> None:
    fast = {"KAIROS__DECIDE__SNAPSHOT_SECONDS": "0.2", "KAIROS__DECIDE__CONTROL_SHARE": "0"}
    with running_server(backend, tmp_path, pg_unreachable, fast) as learner:
        learner.cli("offers", "put", "a", json.dumps({"name": "A", "attributes": {"category": "shoes"}}))
        learner.cli("offers", "put", "b", json.dumps({"name": "B", "attributes": {"category": "hats"}}))
        key = learner.cli("keys", "add", "shop", "--scope", "decide")["key"]
        # The second API process: same store, no processor, no learner of its own.
        env = {
            **learner.env,
            "KAIROS__DECIDE__LEARNER_MODE": "off",
            "KAIROS__PROCESSOR__ENABLED": "false",
            "KAIROS__DELIVERY__ENABLED": "false",
        }
        other = Server(backend, learner.workdir, env, learner.schema, learner.write_key, learner.api_key)
        other.starts = 10  # its logs beside the first server's, not over them
        other.start()
        try:
            headers = {"Authorization": f"Bearer {key}"}
            with httpx2.Client(base_url=other.base_url, headers=headers, timeout=10) as client:
                first = client.post("/v1/decide", json={"profile": "anonymous_id:e2e-1", "channel": "web"}).json()
                assert first["policy_version"] == 0 and first["items"]
                reward = {"decision_id": first["decision_id"], "offer_id": first["items"][0]["offer_id"], "reward": 1}
                assert client.post("/v1/rewards", json=reward).json()["status"] == "recorded"
                deadline = time.monotonic() + 20
                version = 0
                while time.monotonic() < deadline and version == 0:
                    time.sleep(0.3)
                    answer = client.post("/v1/decide", json={"profile": "anonymous_id:e2e-2", "channel": "web"})
                    version = answer.json()["policy_version"]
                assert version >= 1, "the learner's snapshot never reached the second API process"
        finally:
            other.stop()

"""Structured logs carry no personal data in clear."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
from starlette.testclient import TestClient

from kairos.api import create_app
from kairos.logs import JsonFormatter, redact
from kairos.runtime import Kairos
from kairos.store import Source


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield stream
    root.removeHandler(handler)
    root.setLevel(old_level)


def test_requests_and_processing_log_no_identifiers(captured: io.StringIO, kairos: Kairos, source: Source) -> None:
    _, secret = kairos.store.admin.add_api_key("r", frozenset({"read"}), 0)
    with TestClient(create_app(kairos, run_processor=False)) as client:
        body = {
            "writeKey": source.write_key,
            "batch": [
                {
                    "type": "identify",
                    "userId": "secret-user",
                    "traits": {"email": "jane.secret@example.com", "phone": "+1 415 555 0199"},
                },
            ],
        }
        assert client.post("/v1/batch", json=body).status_code == 200
        kairos.processor.run_until_caught_up()
        r = client.get("/v1/profiles/email:jane.secret@example.com", headers={"Authorization": f"Bearer {secret}"})
        assert r.status_code == 200
        client.get("/v1/profiles/email:jane.secret@example.com/events")  # 401, logged too
    # The test client's own request log (httpx2) is the caller's, not the server's.
    lines = [json.loads(line) for line in captured.getvalue().splitlines() if line.strip()]
    lines = [line for line in lines if not line["logger"].startswith(("httpx", "httpcore"))]
    text = "\n".join(json.dumps(line) for line in lines)
    assert any(line.get("route") == "/v1/profiles/{ref:path}" for line in lines), text
    for needle in ("jane.secret", "secret-user", "4155550199", source.write_key, secret):
        assert needle not in text


def test_redact_is_stable_within_a_process_and_hides_the_value() -> None:
    assert redact("jane@example.com") == redact("jane@example.com")
    assert "jane" not in redact("jane@example.com") and redact("a") != redact("b")

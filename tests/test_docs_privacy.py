"""The examples of docs/privacy.md: the consent body is accepted by the consent API as documented."""

from __future__ import annotations

import json
import re
from pathlib import Path

from starlette.testclient import TestClient

from kairos.config import ConsentSettings
from kairos.runtime import Kairos
from tests.conftest import Feed

DOC = (Path(__file__).resolve().parent.parent / "docs" / "privacy.md").read_text()


def test_the_default_purposes_table_is_the_configured_one() -> None:
    rows = re.findall(r"^\| `([a-z_]+)` \| (opt-in|opt-out) \| (.+?) \|$", DOC, re.M)
    defaults = ConsentSettings().purposes
    assert {r[0] for r in rows} == set(defaults)
    for key, default, text in rows:
        assert defaults[key].default == default.replace("-", "_") and defaults[key].text == text


def test_the_documented_consent_change_is_accepted(client: TestClient, kairos: Kairos, feed: Feed) -> None:
    body = json.loads(re.findall(r"```json consents\n(.*?)```", DOC, re.S)[0])
    curl = re.findall(r"-X PUT (\S+) \\\n.*?-d '(.*?)'", DOC, re.S)[0]
    assert json.loads(curl[1]) == body
    ref = curl[0].split("/v1/profiles/")[1].removesuffix("/consents")
    feed({"type": "identify", "userId": "jane", "traits": {"email": "jane@example.com"}})
    _, secret = kairos.store.admin.add_api_key("w", frozenset({"write"}), 0)
    kairos.settings.privacy.apply_wait_seconds = 0.0  # no processor runs here: the change is accepted
    r = client.put(f"/v1/profiles/{ref}/consents", json=body, headers={"Authorization": f"Bearer {secret}"})
    assert r.status_code == 202 and r.json()["status"] == "accepted", r.text
    kairos.processor.run_until_caught_up()
    profile = kairos.profile(kairos.resolve(ref) or 0)
    assert profile is not None
    assert {p: c["granted"] for p, c in profile.sections["consents"].items()} == body

"""The official Segment Python library, pointed at Kairos by changing only the host.

It posts ``/v1/batch`` with the write key both as the HTTP Basic user name and as ``writeKey`` in the body,
and a top-level ``sentAt``; Kairos must accept that exactly as Segment does.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from segment.analytics import Client
from segment.analytics.request import APIError

from tests.e2e.conftest import Server

pytestmark = pytest.mark.e2e


def test_every_call_lands_in_one_profile(server: Server) -> None:
    run = uuid.uuid4().hex[:10]
    anon, user = f"anon-{run}", f"user-{run}"
    email = f"jane.{run}@example.com"
    errors: list[tuple[Exception, Any]] = []
    # The library's defaults (threaded consumer, Basic auth + writeKey in the body, no gzip); only the
    # host changes. Few retries, so that a refusal reaches on_error quickly instead of being retried.
    client = Client(
        server.write_key,
        host=server.base_url,
        on_error=lambda exc, batch: errors.append((exc, batch)),
        upload_interval=0.05,
        max_retries=1,
        timeout=10,
    )
    try:
        client.page(anonymous_id=anon, name="Home", properties={"path": "/"})
        client.identify(
            user_id=user,
            anonymous_id=anon,
            traits={"email": f"  Jane.{run}@EXAMPLE.com ", "name": "Jane Doe", "loyalty_card": f"LC-{run}"},
        )
        client.track(user_id=user, event="Order Completed", properties={"revenue": 42.5, "currency": "EUR"})
        client.alias(previous_id=anon, user_id=user)
        client.group(user_id=user, group_id=f"acme-{run}", traits={"name": "Acme"})
        client.screen(user_id=user, name="Basket", properties={"items": 2})
        client.flush()
    finally:
        client.shutdown()
    assert errors == []

    profile = server.wait_profile(f"email:{email}", min_events=6)
    identities = {(i["type"], i["value"]) for i in profile["identities"]}
    assert {
        ("user_id", user),
        ("anonymous_id", anon),
        ("email", email),
        ("loyalty_card", f"LC-{run}"),
    } <= identities
    assert profile["traits"]["name"] == "Jane Doe"
    assert profile["trait_meta"]["name"]["source"] == "web"
    assert profile["event_count"] == 6
    # The same person by every identity, however the e-mail address is cased.
    for ref in (f"user_id:{user}", f"anonymous_id:{anon}", f"email:JANE.{run}@Example.COM", f"loyalty_card:LC-{run}"):
        r = server.get_profile(ref)
        assert r.status_code == 200, r.text
        assert r.json()["id"] == profile["id"]

    timeline = server.timeline(f"user_id:{user}")
    assert sorted(item["type"] for item in timeline) == sorted(
        ["page", "identify", "track", "alias", "group", "screen"]
    )
    track = next(item for item in timeline if item["type"] == "track")
    assert track["name"] == "Order Completed"
    assert track["event"]["properties"] == {"revenue": 42.5, "currency": "EUR"}
    assert track["event"]["context"]["library"]["name"] == "analytics-python"
    # Newest first.
    stamps = [item["timestamp"] for item in timeline]
    assert stamps == sorted(stamps, reverse=True)


def test_sync_mode_with_gzip(server: Server) -> None:
    user = f"gz-{uuid.uuid4().hex[:10]}"
    client = Client(server.write_key, host=server.base_url, sync_mode=True, gzip=True, max_retries=1)
    client.identify(user_id=user, traits={"plan": "pro"})
    client.track(user_id=user, event="Signed Up")
    profile = server.wait_profile(f"user_id:{user}", min_events=2)
    assert profile["traits"] == {"plan": "pro"}


def test_unknown_write_key_is_refused(server: Server) -> None:
    client = Client("not-a-write-key", host=server.base_url, sync_mode=True, max_retries=1)
    with pytest.raises(APIError) as refused:
        client.track(user_id="nobody", event="Nope")
    assert refused.value.status == 401

"""Moments through the processor, with a clock the tests drive, on both backends: every pattern kind,
an abandoned cart cancelled by an order 59 minutes later and fired when none came in 60, a sequence out of
its window, cool-down, a merge in the middle of a pending absence, and the API."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from kairos.api import create_app
from kairos.moments import MOMENT_STATS
from tests.test_openapi import Contract
from tests.test_segments import DAY, HOUR, World

MINUTE = 60_000
CART = {"when": {"event": "Product Added", "not_followed_by": {"event": "Order Completed"}, "within": "1h"}}


@pytest.fixture
def world(store_settings: dict[str, Any]) -> Iterator[World]:
    w = World(store_settings)
    yield w
    w.kairos.close()


def track(user: str, name: str, **extra: Any) -> dict[str, Any]:
    return {"type": "track", "userId": user, "event": name, **extra}


def fired(world: World, ref: str) -> list[tuple[str | None, list[int]]]:
    pk = world.kairos.resolve(ref)
    assert pk is not None
    rows = world.kairos.store.state.timeline(pk, 1000, None, type="moment")
    return [(r.name, r.data["seqs"]) for r in reversed(rows)]


def moments_out(world: World) -> list[dict[str, Any]]:
    return [p for t, p in world.outbox() if t == "moment"]


def test_an_abandoned_cart_is_cancelled_by_an_order_59_minutes_later(world: World) -> None:
    world.define("moment", "abandoned_cart", CART)
    world.send(track("u1", "Product Added"))
    world.advance(59 * MINUTE)
    world.send(track("u1", "Order Completed"))
    world.advance(2 * HOUR)
    assert fired(world, "user_id:u1") == []
    assert moments_out(world) == []


def test_an_abandoned_cart_fires_when_no_order_came_in_60_minutes(world: World) -> None:
    world.define("moment", "abandoned_cart", CART)
    seqs = []
    world.send(track("u1", "Product Added"))
    seqs.append(world.kairos.store.log.last_seq())
    world.advance(20 * MINUTE)
    world.send(track("u1", "Product Added"))  # a second item: the hour runs from the last one
    seqs.append(world.kairos.store.log.last_seq())
    world.advance(60 * MINUTE - 1000)
    assert fired(world, "user_id:u1") == []
    world.advance(1000)
    assert fired(world, "user_id:u1") == [("abandoned_cart", seqs)]
    (message,) = moments_out(world)
    assert message["moment"] == "abandoned_cart" and message["seqs"] == seqs
    world.advance(DAY)
    assert len(fired(world, "user_id:u1")) == 1  # exactly once
    stats = world.kairos.store.state.counts(MOMENT_STATS.name)
    assert [(r[0], r[2]) for r in stats] == [("abandoned_cart", 1)]


def test_a_merge_in_the_middle_of_a_pending_absence(world: World) -> None:
    world.define("moment", "abandoned_cart", CART)
    world.send({"type": "track", "anonymousId": "a1", "event": "Product Added"})
    world.advance(10 * MINUTE)
    world.send({"type": "identify", "anonymousId": "a1", "userId": "u1"})  # a1's profile joins u1's
    world.send({"type": "track", "anonymousId": "a2", "event": "Product Added"})
    world.advance(5 * MINUTE)
    world.send({"type": "alias", "previousId": "a2", "userId": "u1"})  # and a2's, with its own pending cart
    world.advance(HOUR)
    assert [name for name, _ in fired(world, "user_id:u1")] == ["abandoned_cart"]  # once, for the person
    world.send({"type": "track", "anonymousId": "a3", "event": "Product Added"})
    world.advance(10 * MINUTE)
    world.send({"type": "track", "userId": "u1", "event": "Order Completed", "anonymousId": "a3"})  # merge + order
    world.advance(2 * HOUR)
    assert [name for name, _ in fired(world, "user_id:u1")] == ["abandoned_cart"]  # the order cancelled it


def test_a_sequence_in_and_out_of_its_window(world: World) -> None:
    world.define(
        "moment",
        "claim_ready",
        {"when": {"sequence": [{"event": "Claim Started"}, {"event": "Document Uploaded"}], "within": "2d"}},
    )
    world.send(track("u1", "Claim Started"))
    world.advance(3 * DAY)
    world.send(track("u1", "Document Uploaded"))  # too late
    assert fired(world, "user_id:u1") == []
    world.send(track("u1", "Claim Started"))
    world.advance(HOUR)
    world.send(track("u1", "Page Viewed"))  # other events in between are fine
    world.send(track("u1", "Document Uploaded", properties={"n": 1}))
    assert [name for name, _ in fired(world, "user_id:u1")] == ["claim_ready"]
    assert len(fired(world, "user_id:u1")[0][1]) == 2  # the two events that made it


def test_an_event_moment_with_where_and_cooldown(world: World) -> None:
    world.define(
        "moment",
        "moved",
        {
            "when": {"event": "Address Changed", "where": 'properties.kind == "home"'},
            "cooldown": "1d",
        },
    )
    world.send(track("u1", "Address Changed", properties={"kind": "work"}))
    assert fired(world, "user_id:u1") == []
    world.send(track("u1", "Address Changed", properties={"kind": "home"}))
    world.advance(HOUR)
    world.send(track("u1", "Address Changed", properties={"kind": "home", "n": 2}))  # within the cool-down
    assert len(fired(world, "user_id:u1")) == 1
    world.advance(DAY)
    world.send(track("u1", "Address Changed", properties={"kind": "home", "n": 3}))
    assert len(fired(world, "user_id:u1")) == 2


def test_segment_and_trait_patterns(world: World) -> None:
    world.define("trait", "orders_30d", {"aggregate": "count", "event": "Order Completed", "window": "30d"})
    world.define("segment", "frequent", {"rule": "traits.orders_30d >= 2"})
    world.define("moment", "became_frequent", {"when": {"segment_entered": "frequent"}})
    world.define("moment", "no_longer_frequent", {"when": {"segment_exited": "frequent"}})
    world.define("moment", "third_order", {"when": {"trait": "orders_30d", "crosses_above": 3}})
    world.define("moment", "slowing", {"when": {"trait": "orders_30d", "crosses_below": 2}})
    world.send(track("u1", "Order Completed"))
    world.advance(DAY)
    world.send(track("u1", "Order Completed", properties={"n": 2}))
    assert [n for n, _ in fired(world, "user_id:u1")] == ["became_frequent"]
    world.send(track("u1", "Order Completed", properties={"n": 3}))
    assert [n for n, _ in fired(world, "user_id:u1")] == ["became_frequent", "third_order"]
    world.advance(30 * DAY)  # every order leaves the window, with no new event
    names = [n for n, _ in fired(world, "user_id:u1")]
    assert names[:2] == ["became_frequent", "third_order"]
    assert sorted(str(n) for n in names[2:]) == ["no_longer_frequent", "slowing"]


def test_moments_api(world: World) -> None:
    _, secret = world.kairos.store.admin.add_api_key("admin", frozenset({"admin"}), 0)
    headers = {"Authorization": f"Bearer {secret}"}
    with TestClient(create_app(world.kairos, run_processor=False), raise_server_exceptions=False) as client:
        contract = Contract(client.get("/openapi.json").json())
        r = client.put("/v1/moments/abandoned_cart", json=CART, headers=headers)
        assert r.status_code == 201, r.text
        contract.check("Moment", r.json())
        assert "backfill" not in r.json()
        world.send(track("u1", "Product Added"))
        world.advance(2 * HOUR)
        got = client.get("/v1/moments/abandoned_cart", headers=headers).json()
        contract.check("Moment", got)
        assert got["total"] == 1 and got["counts"][0]["fired"] == 1
        mine = client.get("/v1/profiles/user_id:u1/moments", headers=headers).json()
        contract.check("ProfileMoments", mine)
        contract.check("MomentList", client.get("/v1/moments", headers=headers).json())
        events = client.get("/v1/profiles/user_id:u1/events", headers=headers).json()
        contract.check("Timeline", events)
        assert [i["moment"] for i in mine["items"]] == ["abandoned_cart"]
        assert [m["key"] for m in client.get("/v1/moments", headers=headers).json()["items"]] == ["abandoned_cart"]
        warned = client.put("/v1/moments/vip", json={"when": {"segment_entered": "vip"}}, headers=headers).json()
        assert [w["code"] for w in warned["warnings"]] == ["unknown_segment"]
        for body, field in [
            ({"when": {}}, "when"),
            ({"when": {"event": "A", "not_followed_by": {"event": "B"}}}, "when.within"),
            ({"when": {"sequence": [{"event": "A"}], "within": "1d"}}, "when.sequence"),
            ({"when": {"event": "A", "where": "properties.x >"}}, "when.where"),
            ({"when": {"trait": "x", "crosses_above": "3"}}, "when.crosses_above"),
            ({"when": {"trait": "x", "crosses_above": 1, "crosses_below": 0}}, "when"),
            ({"when": {"event": "A"}, "cooldown": "1 day"}, "cooldown"),
            ({"when": {"event": "A", "extra": 1}}, "when.extra"),
            ({"when": {"segment_entered": "bad key"}}, "when.segment_entered"),
            ({"when": {"trait": "bad key", "crosses_above": 1}}, "when.trait"),  # was "key"
            ({"when": {"trait": "", "crosses_above": 1}}, "when.trait"),  # was "trait"
            ({"when": {"event": 5}}, "when.event"),
            ({"when": {"sequence": [{"event": "A"}, {"nope": 1}], "within": "1d"}}, "when.sequence.1.nope"),
        ]:
            r = client.put("/v1/moments/m", json=body, headers=headers)
            assert r.status_code == 400, (body, r.text)
            assert r.json()["error"]["field"] == field, (body, r.json())
        assert client.delete("/v1/moments/abandoned_cart", headers=headers).status_code == 200
        assert client.get("/v1/moments/abandoned_cart", headers=headers).status_code == 404


def test_context_conditions_in_the_persons_own_time_zone(world: World) -> None:
    from datetime import UTC, datetime

    evening = {"when": {"event": "App Opened"}, "context": 'context.daypart == "evening" && !context.weekend'}
    world.define("moment", "evening_open", evening)
    world.define(
        "moment",
        "cart_at_night",
        {**CART, "context": 'context.daypart == "night" && context.timezone == "Asia/Tokyo"'},
    )
    world.clock.set(int(datetime(2026, 5, 28, 18, 30, tzinfo=UTC).timestamp() * 1000))  # a Thursday, 18:30 UTC
    world.send(track("paris", "App Opened", context={"timezone": "Europe/Paris"}))  # 20:30 there: evening
    world.send(track("tokyo", "App Opened", context={"timezone": "Asia/Tokyo"}))  # 03:30 on Friday: night
    world.send(track("ny", "App Opened", context={"timezone": "America/New_York"}))  # 14:30: afternoon
    assert [n for n, _ in fired(world, "user_id:paris")] == ["evening_open"]
    assert fired(world, "user_id:tokyo") == [] and fired(world, "user_id:ny") == []
    # A moment fired by a timer reads the profile's last known context: Tokyo, at 04:30 local when due.
    world.send(track("tokyo", "Product Added"))
    world.send(track("paris", "Product Added"))
    world.advance(HOUR)
    assert [n for n, _ in fired(world, "user_id:tokyo")] == ["cart_at_night"]
    assert [n for n, _ in fired(world, "user_id:paris")] == ["evening_open"]

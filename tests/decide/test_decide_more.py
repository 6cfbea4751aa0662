"""Rewards from events, channel "auto", the experience flags, the reports over HTTP, and the CLI."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
from typer.testing import CliRunner

from kairos.cli import app
from tests.conftest import point_cli_at
from tests.decide.test_decide import World
from tests.test_openapi import Contract

runner = CliRunner()


@pytest.fixture
def world(store_settings: dict[str, Any], tmp_path: Path) -> Iterator[World]:
    w = World(store_settings, tmp_path, conversion_events=["Order Completed"])
    yield w
    w.close()


def test_a_conversion_event_rewards_the_latest_waiting_decision(world: World) -> None:
    world.offer("a")
    world.feed({"type": "identify", "userId": "u1"})
    older = world.decide(profile="user_id:u1")
    world.clock.advance(60_000)
    latest = world.decide(profile="user_id:u1")
    world.clock.advance(60_000)
    world.feed({"type": "track", "userId": "u1", "event": "Order Completed", "timestamp": "2026-06-26T15:32:30Z"})
    world.trainer().step()
    rewards = world.kairos.store.decisions.rewards_of([older["decision_id"], latest["decision_id"]])
    assert [(r.decision_id, r.offer, r.reward, r.source) for r in rewards] == [
        (latest["decision_id"], "a", 1.0, "conversion")
    ]


def test_an_event_naming_its_decision_rewards_it_even_before_kairos_knew_the_person(world: World) -> None:
    world.offer("a")
    world.offer("b")
    answer = world.decide(profile="anonymous_id:v9", limit=2)
    assert answer["profile_id"] is None
    world.feed(
        {"type": "identify", "anonymousId": "v9", "userId": "u9"},
        {
            "type": "track",
            "userId": "u9",
            "event": "Offer Clicked",
            "properties": {"decision_id": answer["decision_id"], "offer_id": "b", "reward": 0.75},
        },
    )
    trainer = world.trainer()
    trainer.step()
    (reward,) = world.kairos.store.decisions.rewards_of([answer["decision_id"]])
    assert (reward.offer, reward.reward, reward.source) == ("b", 0.75, "event")
    trainer.step()  # read again: nothing more
    assert len(world.kairos.store.decisions.rewards_of([answer["decision_id"]])) == 1


def test_a_conversion_finds_a_decision_made_for_an_identity_before_it_was_known(world: World) -> None:
    world.offer("a")
    answer = world.decide(profile="anonymous_id:v1")
    world.feed(
        {"type": "identify", "anonymousId": "v1", "userId": "u1"},
        {"type": "track", "userId": "u1", "event": "Order Completed", "timestamp": "2026-06-26T15:31:00Z"},
    )
    world.trainer().step()
    (reward,) = world.kairos.store.decisions.rewards_of([answer["decision_id"]])
    assert reward.source == "conversion"


def test_channel_auto_takes_the_stated_preference_among_consented_channels(world: World) -> None:
    world.offer("mail", channels=["email"], purpose="marketing_email", content={"email": {"subject": "Hi"}})
    world.offer("banner", channels=["web"])
    world.kairos.store.admin.add_source("preferences", "stated", 0)
    prefs = world.kairos.source_named("preferences")
    consent = {"consent": {"categoryPreferences": {"marketing_email": True}}}
    world.kairos.ingest(
        {"type": "identify", "userId": "u1", "traits": {"preferred_channel": "email"}, "context": consent},
        "identify",
        prefs.write_key,
    )
    world.kairos.ingest(
        {"type": "identify", "userId": "u2", "traits": {"preferred_channel": "email"}}, "identify", prefs.write_key
    )
    world.kairos.processor.run_until_caught_up()
    one = world.decide(profile="user_id:u1", channel="auto")
    assert one["channel"] == "email" and one["items"][0]["content"] == {"subject": "Hi"}
    row = world.kairos.store.decisions.decision(one["decision_id"])
    assert row is not None and row.customization
    two = world.decide(profile="user_id:u2", channel="auto")  # no consent to e-mail: the web
    assert two["channel"] == "web" and [i["offer_id"] for i in two["items"]] == ["banner"]


def test_the_experience_flags_follow_what_shaped_the_answer(world: World) -> None:
    world.offer("plain")
    world.offer("for_vips", eligibility='"vip" in segments', value=2)
    world.offer("for_stated", eligibility='traits.size == "M"', value=3)
    world.kairos.store.admin.put_definition("segment", "vip", {"rule": "traits.spend > 100"}, 0)
    world.kairos.store.admin.add_source("preferences", "stated", 0)
    prefs = world.kairos.source_named("preferences")
    world.kairos.ingest({"type": "identify", "userId": "s1", "traits": {"size": "M"}}, "identify", prefs.write_key)
    world.feed({"type": "identify", "userId": "v1", "traits": {"spend": 500}}, {"type": "identify", "userId": "n1"})
    flags = {}
    for ref in ("user_id:s1", "user_id:v1", "user_id:n1"):
        answer = world.decide(profile=ref, limit=3)
        row = world.kairos.store.decisions.decision(answer["decision_id"])
        assert row is not None
        flags[ref] = (row.interaction, row.customization, sorted(i["offer_id"] for i in answer["items"]))
    assert flags["user_id:s1"] == (False, True, ["for_stated", "plain"])
    assert flags["user_id:v1"] == (True, False, ["for_vips", "plain"])
    assert flags["user_id:n1"] == (False, False, ["plain"])


def test_reports_over_http(store_settings: dict[str, Any], tmp_path: Path) -> None:
    w = World(store_settings, tmp_path, control_share=0.4)
    try:
        w.offer("a", value=2)
        w.offer("b")
        for i in range(60):
            answer = w.decide(profile=f"user_id:p{i}")
            if i % 3 == 0:
                body = {"decision_id": answer["decision_id"], "offer_id": answer["items"][0]["offer_id"], "reward": 1}
                w.client.post("/v1/rewards", json=body, headers=w.decide_key)
        w.clock.advance(3_600_000)
        w.trainer().step(force_snapshot=True)
        stats = w.client.get("/v1/offers/a/stats", headers=w.read).json()
        assert stats["offer"] == "a" and stats["groups"]["control"]["impressions"] > 0
        assert stats["period"]["to"] == "2026-06-26T16:30:00Z" and stats["truncated"] is False
        report = w.client.get("/v1/reports/decisions", headers=w.read).json()
        groups = report["groups"]
        assert groups["policy"]["decisions"] + groups["control"]["decisions"] == 60
        assert groups["policy"]["rewarded"] + groups["control"]["rewarded"] == 20
        assert set(report["off_policy"]) >= {"policy", "baseline"}
        experience = w.client.get("/v1/reports/experience?from=2026-06-01&to=2026-07-01", headers=w.read).json()
        assert experience["overall"]["decisions"] == 60 and experience["overall"]["quadrant"] == "mass"
        assert w.client.get("/v1/reports/experience?from=2026-07-01", headers=w.read).status_code == 400
        r = w.client.get("/v1/reports/decisions?to=yesterday", headers=w.read)
        assert (r.status_code, r.json()["error"]["field"]) == (400, "to")
        assert w.client.get("/v1/offers/zz/stats", headers=w.read).status_code == 404
        assert w.client.get("/v1/reports/decisions").status_code == 401
    finally:
        w.close()


def test_answers_match_the_openapi_document(world: World) -> None:
    contract = Contract(world.client.get("/openapi.json").json())
    contract.check(
        "Offer",
        world.offer("a", attributes={"category": "shoes"}, contact_policy={"max_impressions": 1, "window": "1d"}),
    )
    contract.check("Decision", world.decide(profile="user_id:x", limit=3))
    contract.check("OfferList", world.client.get("/v1/offers", headers=world.read).json())


def test_the_cli_manages_offers_reports_and_learns(
    tmp_path: Path, store_settings: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    point_cli_at(store_settings, monkeypatch, tmp_path / "kairos.toml", "")

    def run(*args: str) -> Any:
        result = runner.invoke(app, [*args, "--json"])
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)

    made = run("offers", "put", "spring", json.dumps({"name": "Spring", "value": 4}))
    assert made["key"] == "spring" and made["version"] == 1
    assert [o["key"] for o in run("offers", "list")] == ["spring"]
    assert run("offers", "show", "spring")["value"] == 4
    bad = runner.invoke(app, ["offers", "put", "x", '{"name": 1}', "--json"])
    assert bad.exit_code == 2 and json.loads(bad.stdout)["error"]["field"] == "name"
    assert runner.invoke(app, ["offers", "put", "x", "{"]).exit_code == 2
    assert run("report", "experience")["overall"]["decisions"] == 0
    assert run("report", "decisions")["groups"]["policy"]["decisions"] == 0
    table = runner.invoke(app, ["report", "experience"])
    assert table.exit_code == 0 and "all channels" in table.stdout
    learned = runner.invoke(app, ["learn", "--once"])
    assert learned.exit_code == 0 and "learned 0 rewards" in learned.stdout
    assert run("offers", "delete", "spring")["deleted"] is True


def test_the_demo_has_offers_to_decide_from(store_settings: dict[str, Any], tmp_path: Path) -> None:
    from kairos.demo._story import STORY_USER_ID
    from kairos.demo.load import OFFERS, load_demo

    w = World(store_settings, tmp_path)
    try:
        load_demo(w.kairos, 30, 7)
        assert len(w.client.get("/v1/offers", headers=w.read).json()["items"]) == len(OFFERS)
        answer = w.decide(profile=f"user_id:{STORY_USER_ID}", limit=4)
        assert answer["profile_id"] is not None and answer["items"]
        assert w.client.get("/livez").json() == {"status": "ok"}
    finally:
        w.close()


def test_default_content_serves_every_channel(world: World) -> None:
    world.offer("everywhere", content={"default": {"title": "Hi"}, "email": {"subject": "Hi"}})
    world.offer("web_only", content={"web": {"title": "Web"}})
    assert world.decide(profile="user_id:x", channel="app")["items"][0]["content"] == {"title": "Hi"}
    assert [i["offer_id"] for i in world.decide(profile="user_id:x", channel="app", limit=5)["items"]] == ["everywhere"]
    assert world.decide(profile="user_id:x", channel="email")["items"][0]["content"] == {"subject": "Hi"}


def test_channel_auto_with_offers_that_name_no_channel_uses_the_last_known_one(world: World) -> None:
    world.offer("anywhere", content={"default": {"title": "Hi"}})
    world.feed({"type": "screen", "userId": "u1", "name": "Home", "context": {"app": {"name": "Shop"}}})
    known = world.decide(profile="user_id:u1", channel="auto")
    assert known["channel"] == "app" and [i["offer_id"] for i in known["items"]] == ["anywhere"]
    unknown = world.decide(profile="user_id:nobody", channel="auto")
    assert unknown["channel"] == "auto" and [i["offer_id"] for i in unknown["items"]] == ["anywhere"]


def test_the_learner_thread_steps_at_most_every_step_seconds() -> None:
    """Under steady traffic every step learns something: steps must not run back to back (each would learn a
    handful of decisions, at a higher CPU cost per decision), but start at most every ``step_seconds``."""
    from kairos.decide.learning import LearnerThread, Trainer

    class Busy:
        steps = 0

        def step(self) -> int:
            self.steps += 1
            return 1

    busy = Busy()
    thread = LearnerThread(cast(Trainer, busy), step_seconds=0.1)
    thread.start()
    time.sleep(0.35)
    thread._stop.set()
    assert thread._thread is not None
    thread._thread.join(timeout=5)
    assert 2 <= busy.steps <= 5


def test_decision_ids_are_uuid7_of_the_decision_time() -> None:
    import uuid

    from kairos.decide.engine import _decision_id

    now = 1_782_487_800_123
    ids = [_decision_id(now) for _ in range(1000)]
    parsed = [uuid.UUID(i) for i in ids]
    assert len(set(ids)) == 1000 and all(str(u) == i for u, i in zip(parsed, ids, strict=True))
    assert all(u.version == 7 and u.variant == uuid.RFC_4122 for u in parsed)
    assert all(int.from_bytes(u.bytes[:6], "big") == now for u in parsed)


def test_an_event_reward_outside_the_reward_range_is_clipped_into_it(world: World) -> None:
    world.offer("a")
    high, low = world.decide(profile="user_id:u1"), world.decide(profile="user_id:u2")
    world.feed(
        *(
            {
                "type": "track",
                "userId": user,
                "event": "Offer Clicked",
                "properties": {"decision_id": answer["decision_id"], "offer_id": "a", "reward": reward},
            }
            for user, answer, reward in (("u1", high, 1e9), ("u2", low, -250))
        )
    )
    world.trainer().step()
    rewards = world.kairos.store.decisions.rewards_of([high["decision_id"], low["decision_id"]])
    assert sorted((r.decision_id, r.reward) for r in rewards) == sorted(
        [(high["decision_id"], 1.0), (low["decision_id"], -1.0)]
    )

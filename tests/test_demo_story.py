"""The demo data set: deterministic, valid per the Segment spec, and Jane's five channels stitch together."""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import datetime, timedelta
from typing import Any

import msgspec
import pytest

from kairos.collect import EventError, Message, validate
from kairos.config import IdentitySettings, IdentityTypeSettings
from kairos.demo import SHARED_ANONYMOUS_ID, SOURCES, STORY_USER_ID, demo_events
from kairos.demo._story import DEMO_NOW
from kairos.identity import Identifiers
from kairos.pipeline import Event

Pairs = list[tuple[str, dict[str, Any]]]
STORY_LENGTH = 13


@pytest.fixture(scope="module")
def events() -> Pairs:
    return demo_events()


@pytest.fixture(scope="module")
def identifiers() -> Identifiers:
    custom = {
        "loyalty_card": IdentityTypeSettings(paths=["traits.loyalty_card", "context.traits.loyalty_card"]),
        "crm_id": IdentityTypeSettings(paths=["traits.crm_id"]),
    }
    return Identifiers(IdentitySettings(types=custom))


def _story(events: Pairs) -> Pairs:
    return events[:STORY_LENGTH]


def _time(event: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(event["timestamp"])


def test_same_seed_same_events() -> None:
    assert demo_events(n_profiles=200, seed=3) == demo_events(n_profiles=200, seed=3)


def test_other_seed_other_background_same_story() -> None:
    a, b = demo_events(n_profiles=200, seed=3), demo_events(n_profiles=200, seed=4)
    assert a != b
    assert _story(a) == _story(b)


def test_every_event_is_a_valid_segment_message(events: Pairs) -> None:
    for index, (source, event) in enumerate(events):
        assert source in SOURCES
        checked = validate(index, event, None)
        assert isinstance(checked, Message), checked
        assert checked.userId is not None or checked.anonymousId is not None
        assert event["timestamp"].endswith("Z")


def test_message_ids_are_unique_and_deterministic(events: Pairs) -> None:
    ids = [event["messageId"] for _, event in events]
    assert ids == [f"demo-{i}" for i in range(len(events))]


def test_all_before_now(events: Pairs) -> None:
    assert all(_time(event) < DEMO_NOW for _, event in events)
    later = DEMO_NOW + timedelta(days=30)
    shifted = demo_events(n_profiles=50, now=later)
    assert all(_time(event) < later for _, event in shifted)
    # A naive `now` is UTC: same output as the aware one.
    assert demo_events(n_profiles=50, now=later.replace(tzinfo=None)) == shifted


def test_story_comes_first_in_time_order_over_a_few_weeks(events: Pairs) -> None:
    story = _story(events)
    assert {source for source, _ in story} == set(SOURCES)
    times = [_time(event) for _, event in story]
    assert times == sorted(times)
    assert timedelta(days=7) < times[-1] - times[0] < timedelta(days=28)
    assert DEMO_NOW - timedelta(days=28) < times[0]
    # The background starts right after: nothing of Jane's there.
    assert not any(event.get("userId") == STORY_USER_ID for _, event in events[STORY_LENGTH:])


def test_story_channels_carry_the_agreed_identifiers(events: Pairs) -> None:
    by_source: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for source, event in _story(events):
        by_source[source].append(event)
    web = by_source["web"]
    anonymous = [e for e in web if "userId" not in e]
    assert {e["type"] for e in anonymous} == {"page", "track"}
    assert all(e["anonymousId"] == "anon-jane-web" for e in web)
    assert [e["event"] for e in anonymous if e["type"] == "track"] == ["Product Viewed"]
    (signup,) = [e for e in web if e["type"] == "identify"]
    assert signup["userId"] == STORY_USER_ID
    assert signup["traits"]["email"] == " Jane.Doe@Example.com "
    assert signup["traits"]["phone"] == "(415) 555-0132"
    assert {"first_name", "last_name"} <= signup["traits"].keys()
    assert signup["context"]["kairos"] == {"trait_kind": "stated"}

    app = by_source["app"]
    assert {e["type"] for e in app} == {"screen", "track"}
    assert [e["event"] for e in app if e["type"] == "track"] == ["Order Completed"]
    for event in app:
        assert (event["userId"], event["anonymousId"]) == (STORY_USER_ID, "anon-jane-app")
        assert event["context"]["device"]["id"] == "dev-jane-iphone"

    (crm,) = by_source["crm"]
    assert crm["type"] == "identify" and crm["userId"] == STORY_USER_ID
    assert crm["traits"] == {"loyalty_card": "LC-0042-7781", "crm_id": "CRM-99812"}
    (store,) = by_source["store"]
    assert store["event"] == "Order Completed" and "userId" not in store
    assert store["anonymousId"].startswith("pos-txn-")
    assert store["context"]["traits"] == {"loyalty_card": "LC-0042-7781"}
    assert _time(crm) < _time(store)
    (call,) = by_source["callcentre"]
    assert call["event"] == "Call Completed" and "userId" not in call
    assert call["anonymousId"].startswith("cc-call-")
    assert call["context"]["traits"] == {"phone": "+1 415-555-0132"}


def _components(events: Pairs, identifiers: Identifiers) -> dict[tuple[str, str], tuple[str, str]]:
    """Union-find over identifiers: two ids seen in one event belong to one person."""
    parent: dict[tuple[str, str], tuple[str, str]] = {}

    def find(key: tuple[str, str]) -> tuple[str, str]:
        parent.setdefault(key, key)
        while parent[key] != key:
            parent[key] = parent[parent[key]]
            key = parent[key]
        return key

    for _, event in events:
        keys = identifiers.extract(msgspec.convert(event, Event))
        for key in keys[1:]:
            parent[find(key)] = find(keys[0])
    return {key: find(key) for key in parent}


def test_story_stitches_into_one_person(events: Pairs, identifiers: Identifiers) -> None:
    story = _story(events)
    roots = _components(story, identifiers)
    assert len(set(roots.values())) == 1
    keys = set(roots)
    assert ("email", "jane.doe@example.com") in keys
    assert ("phone", "+14155550132") in keys
    assert ("loyalty_card", "LC-0042-7781") in keys
    # No background event touches any of Jane's identifiers, so her profile holds only her story.
    for _, event in events[STORY_LENGTH:]:
        assert not keys.intersection(identifiers.extract(msgspec.convert(event, Event))), event


def test_shared_laptop_has_two_known_users(events: Pairs) -> None:
    users = {
        event["userId"]
        for _, event in events
        if event.get("anonymousId") == SHARED_ANONYMOUS_ID and event["type"] == "identify"
    }
    assert len(users) == 2


def test_each_person_in_time_order(events: Pairs) -> None:
    last_seen: dict[str, datetime] = {}
    for _, event in events:
        moment = _time(event)
        for key in (event.get("userId"), event.get("anonymousId")):
            if key is not None:
                assert last_seen.get(key, moment) <= moment, event
                last_seen[key] = moment


def test_background_mix(events: Pairs) -> None:
    background = [event for _, event in events[STORY_LENGTH:]]
    sources = Counter(source for source, _ in events[STORY_LENGTH:])
    assert set(sources) == set(SOURCES)
    known = {e["userId"] for e in background if "userId" in e}
    anonymous = {e["anonymousId"] for e in background if e.get("anonymousId", "").startswith("anon-")}
    signed_in = {e["anonymousId"] for e in background if "userId" in e and "anonymousId" in e}
    assert len(known) > 1000
    assert len(anonymous - signed_in) > 500  # visitors who never identify
    assert 5 <= len(background) / 3000 <= 10
    identifies = [e for e in background if e["type"] == "identify"]
    emails = [e["traits"]["email"] for e in identifies if "email" in e["traits"]]
    assert any(email != email.strip().lower() for email in emails)
    assert any("phone" in e["traits"] for e in identifies)
    assert any(e["traits"].get("lifetime_orders") is not None for e in identifies)
    assert any("consent" in e["context"] for e in identifies)
    prefs = [e["context"]["consent"]["categoryPreferences"] for e in identifies if "consent" in e["context"]]
    assert all(set(p) == {"marketing_email", "analytics"} for p in prefs)
    # App ids stitched by a later identify on the app.
    assert any(e.get("anonymousId", "").startswith("anon-app-") for e in identifies if "userId" in e)
    store = [e for source, e in events[STORY_LENGTH:] if source == "store"]
    assert store and all("loyalty_card" in e["context"]["traits"] and "userId" not in e for e in store)


@pytest.mark.parametrize("n_profiles", [0, 1, 2, 5])
def test_small_sizes(n_profiles: int) -> None:
    events = demo_events(n_profiles=n_profiles)
    assert len(events) >= STORY_LENGTH
    assert all(not isinstance(validate(i, e, None), EventError) for i, (_, e) in enumerate(events))
    assert (n_profiles >= 2) == any(e.get("anonymousId") == SHARED_ANONYMOUS_ID for _, e in events)

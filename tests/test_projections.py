"""The conformance suite every projection passes, on SQLite and PostgreSQL.

For the whole pipeline (all default projections at once): replay gives equal state; batch sizes 1, 3 and
1000 give equal state; duplicates have no effect; merge chains (A↔B then B↔C, and the other order) give the
same profile. For each projection alone: ``apply`` and ``merge`` never change the state they were given,
return the very same object when nothing changed, and ``encode``/``decode`` round-trip.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from kairos.definitions import Catalog
from kairos.pipeline import Entry, Event, Processor, ProfileState, Projection
from kairos.profiles import default_projections
from kairos.runtime import Kairos
from kairos.store import Definition
from tests.conftest import Feed, dump_state, make_settings


def at(minute: int) -> str:
    return f"2026-01-01T10:{minute:02d}:00.000Z"


IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.5 Mobile/15E148 Safari/604.1"
)
WINDOWS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36"
)
PARIS = {"country": "France", "city": "Paris", "latitude": 48.8566, "longitude": 2.3522}

# Every projection's input: identify with traits, consent, tracks, pages, a group, an alias, late events,
# context (user agents, time zones, locations, channels) arriving out of order.
STORY: list[dict[str, Any]] = [
    {
        "type": "page",
        "anonymousId": "a1",
        "name": "Home",
        "timestamp": at(1),
        "context": {"userAgent": WINDOWS, "timezone": "Europe/Oslo", "locale": "nb-NO"},
    },
    {"type": "identify", "anonymousId": "a1", "userId": "u1", "timestamp": at(2), "traits": {"plan": "free"}},
    {
        "type": "track",
        "anonymousId": "a2",
        "event": "Viewed",
        "timestamp": at(3),
        "context": {"consent": {"categoryPreferences": {"marketing_email": True, "analytics": False}}},
    },
    {"type": "identify", "anonymousId": "a2", "traits": {"email": "J@x.io", "plan": "pro"}, "timestamp": at(4)},
    {"type": "identify", "userId": "u1", "traits": {"email": "j@x.io", "city": "Oslo"}, "timestamp": at(5)},
    {"type": "group", "userId": "u1", "groupId": "g1", "traits": {"email": "corp@x.io"}, "timestamp": at(6)},
    {"type": "alias", "previousId": "a3", "userId": "u2", "timestamp": at(7)},
    {"type": "identify", "userId": "u2", "traits": {"plan": "gold"}, "timestamp": at(0)},  # late, older
    {
        "type": "track",
        "userId": "u1",
        "event": "Paid",
        "timestamp": at(8),
        "context": {"consent": {"categoryPreferences": {"marketing_email": False}}},
    },
    {
        "type": "screen",
        "anonymousId": "a3",
        "name": "Cart",
        "timestamp": at(9),
        "context": {"userAgent": IPHONE, "timezone": "Europe/Paris", "location": PARIS, "app": {"name": "Shop"}},
    },
    {  # late: older than the screen above, so its context loses on every field
        "type": "track",
        "userId": "u2",
        "event": "Opened",
        "timestamp": at(2),
        "context": {"userAgent": WINDOWS, "timezone": "America/New_York", "location": {"city": "Boston"}},
    },
    {  # hostile context: nothing in it is known, nothing breaks
        "type": "track",
        "anonymousId": "a1",
        "event": "Odd",
        "timestamp": at(12),
        "context": {"userAgent": "x" * 5000, "timezone": "Mars/Olympus", "location": {"latitude": "north"}},
    },
    {"type": "track", "userId": "u2", "event": "Paid", "properties": {"total": 12.5}, "timestamp": at(10)},
    # Rewards from events (reward attribution): a click naming its decision, on a profile that merges later.
    {
        "type": "track",
        "anonymousId": "a1",
        "event": "Offer Clicked",
        "properties": {"decision_id": "d-1", "offer_id": "summer", "reward": 2},
        "timestamp": at(11),
    },
    {"type": "track", "anonymousId": "a1", "event": "Paid", "properties": {"total": "7"}, "timestamp": at(11)},
    # Purchases (RFM): on profiles that merge later, late, with Segment's `revenue`, with a bad amount.
    {
        "type": "track",
        "anonymousId": "a2",
        "event": "Order Completed",
        "properties": {"total": "19.99"},
        "timestamp": at(3),
    },
    {"type": "track", "userId": "u1", "event": "Order Completed", "properties": {"total": 120}, "timestamp": at(9)},
    {"type": "track", "userId": "u2", "event": "Order Completed", "properties": {"revenue": 7.5}, "timestamp": at(0)},
    {
        "type": "track",
        "anonymousId": "a3",
        "event": "Order Completed",
        "properties": {"total": "n/a"},
        "timestamp": at(8),
    },
]

# Computed traits, segments and moments the whole-pipeline tests run with (every aggregate, windows, a where
# filter, rules over traits, computed traits, consents, identities, counters and other segments; every moment
# pattern, an absence among them, so timers fire in the story).
DEFINITIONS: list[tuple[str, str, dict[str, Any]]] = [
    ("trait", "paid", {"aggregate": "count", "event": "Paid"}),
    ("trait", "spent", {"aggregate": "sum", "event": "Paid", "property": "total", "window": "3660d"}),
    ("trait", "basket", {"aggregate": "avg", "event": "Paid", "property": "total"}),
    ("trait", "low", {"aggregate": "min", "event": "Paid", "property": "total"}),
    ("trait", "high", {"aggregate": "max", "event": "Paid", "property": "total", "window": "3660d"}),
    ("trait", "first_seen", {"aggregate": "first", "property": "total"}),
    ("trait", "last_total", {"aggregate": "last", "property": "total", "window": "3660d"}),
    ("trait", "kinds", {"aggregate": "distinct_count", "where": 'event_type != "identify"', "property": "total"}),
    ("trait", "usual", {"aggregate": "most_frequent", "property": "total"}),
    ("trait", "screens", {"aggregate": "count", "where": 'event_type == "screen" || event_type == "page"'}),
    ("segment", "payers", {"rule": "traits.paid >= 1"}),
    ("segment", "pro", {"rule": 'has(traits.plan) && traits.plan == "pro"'}),
    (
        "segment",
        "reachable",
        {"rule": '"email" in identities && (!has(consents.marketing_email) || consents.marketing_email)'},
    ),
    ("segment", "busy", {"rule": "profile.event_count >= 3"}),
    ("segment", "paying_busy", {"rule": '"payers" in segments && "busy" in segments'}),
    ("moment", "paid", {"when": {"event": "Paid", "where": "has(properties.total)"}, "cooldown": "1m"}),
    ("moment", "viewed_then_paid", {"when": {"sequence": [{"event": "Viewed"}, {"event": "Paid"}], "within": "1d"}}),
    (
        "moment",
        "viewed_no_order",
        {"when": {"event": "Viewed", "not_followed_by": {"event": "Order Completed"}, "within": "5m"}},
    ),
    ("moment", "became_payer", {"when": {"segment_entered": "payers"}}),
    ("moment", "second_payment", {"when": {"trait": "paid", "crosses_above": 2}}),
]


def define(kairos: Kairos) -> None:
    for kind, key, body in DEFINITIONS:
        kairos.store.admin.put_definition(kind, key, body, 0)


def rebuild(kairos: Kairos, batch_size: int) -> dict[str, list[tuple[Any, ...]]]:
    kairos.store.state.reset()
    kairos.processor = Processor(kairos.store, kairos.settings, kairos.projections, kairos.clock)
    kairos.processor.batch_size = batch_size
    kairos.processor.run_until_caught_up()
    return dump_state(kairos)


def test_replay_gives_equal_state(feed: Feed, kairos: Kairos) -> None:
    define(kairos)
    feed(*STORY)
    before = dump_state(kairos)
    assert before["profiles"] and before["timeline"] and before["merges"] and before["segment_stats"]
    fired = {row[0] for row in before["moment_stats"]}
    assert {"paid", "viewed_then_paid", "viewed_no_order", "became_payer"} <= fired, fired
    assert rebuild(kairos, kairos.settings.processor.batch_size) == before


@pytest.mark.parametrize("batch_size", [1, 3, 1000])
def test_batch_size_gives_equal_state(feed: Feed, kairos: Kairos, batch_size: int) -> None:
    define(kairos)
    feed(*STORY, process=False)
    expected = rebuild(kairos, 10_000)
    assert rebuild(kairos, batch_size) == expected


def test_duplicates_have_no_effect(feed: Feed, kairos: Kairos) -> None:
    define(kairos)
    with_ids = [{"messageId": f"s{i}", **e} for i, e in enumerate(STORY)]
    kairos.ingest({"batch": with_ids}, "batch", feed.source.write_key)
    kairos.processor.run_until_caught_up()
    once = dump_state(kairos)
    # The same events again: in another batch, in the same batch twice, and one at a time.
    kairos.ingest({"batch": with_ids + with_ids}, "batch", feed.source.write_key)
    for event in with_ids:
        kairos.ingest(event, event["type"], feed.source.write_key)
    kairos.processor.run_until_caught_up()
    again = dump_state(kairos)
    assert again["profiles"] == once["profiles"] and again["timeline"] == once["timeline"]
    assert again["identities"] == once["identities"] and again["merges"] == once["merges"]


def _chain(order: str) -> list[dict[str, Any]]:
    people: list[dict[str, Any]] = [
        {"type": "identify", "anonymousId": "a", "traits": {"email": "a@x.io", "color": "red"}, "timestamp": at(1)},
        {"type": "track", "anonymousId": "a", "event": "Paid", "properties": {"total": 3}, "timestamp": at(1)},
        {
            "type": "track",
            "anonymousId": "b",
            "event": "Paid",
            "properties": {"total": 4.5},
            "timestamp": at(2),
            "context": {"userAgent": IPHONE, "timezone": "Europe/Paris", "location": PARIS},
        },
        {
            "type": "identify",
            "anonymousId": "b",
            "traits": {"phone": "+1 415 555 0100", "color": "blue"},
            "timestamp": at(2),
            "context": {"consent": {"categoryPreferences": {"marketing_sms": True}}},
        },
        {
            "type": "identify",
            "anonymousId": "c",
            "userId": "u-c",
            "traits": {"size": "M"},
            "timestamp": at(3),
            "context": {"userAgent": WINDOWS, "locale": "en-US", "channel": "Call-Centre"},
        },
        {
            "type": "track",
            "anonymousId": "a",
            "event": "Order Completed",
            "properties": {"total": 30},
            "timestamp": at(1),
        },
        {
            "type": "track",
            "userId": "u-c",
            "event": "Order Completed",
            "properties": {"total": 99.5},
            "timestamp": at(3),
        },
    ]
    ab: dict[str, Any] = {
        "type": "track",
        "anonymousId": "a",
        "event": "Linked",
        "context": {"traits": {"phone": "(415) 555-0100"}},
    }
    bc: dict[str, Any] = {"type": "identify", "anonymousId": "b", "userId": "u-c", "timestamp": at(5)}
    links: list[dict[str, Any]] = (
        [{**ab, "timestamp": at(4)}, bc] if order == "ab-bc" else [bc, {**ab, "timestamp": at(4)}]
    )
    return people + links


def _final(kairos: Kairos) -> dict[str, Any]:
    pk = kairos.resolve("user_id:u-c")
    assert pk is not None and pk == kairos.resolve("anonymous_id:a") == kairos.resolve("anonymous_id:b")
    profile = kairos.profile(pk)
    assert profile is not None
    view = kairos.codec.view(profile)
    # The events on the timeline; derived items (segments entered and left on the way) record the history,
    # which differs with the order of the merges: the profile they end in does not.
    timeline = sorted((r.seq, r.type) for r in kairos.store.state.timeline(pk, 100, None) if r.sub == 0)
    return {"id": profile.id, "identities": sorted(profile.identities), "view": view, "timeline": timeline}


def test_merge_chains_give_the_same_profile_in_either_order(store_settings: dict[str, Any]) -> None:
    finals = []
    for order in ("ab-bc", "bc-ab"):  # each order on a store of its own
        if store_settings["url"].startswith("sqlite"):
            settings = {"url": store_settings["url"].replace(".db", f"-{order}.db")}
        else:
            settings = {**store_settings, "schema_name": f"{store_settings['schema_name']}_{order[:2]}"}
        kairos = Kairos(make_settings(settings))
        try:
            define(kairos)
            source = kairos.source_named("web")
            kairos.ingest({"batch": _chain(order)}, "batch", source.write_key)
            kairos.processor.run_until_caught_up()
            finals.append(_final(kairos))
        finally:
            kairos.close()
            if "schema_name" in settings:
                import psycopg

                with psycopg.connect(settings["url"], autocommit=True) as conn:
                    conn.execute(f"DROP SCHEMA IF EXISTS {settings['schema_name']} CASCADE")
    first, second = finals
    assert first["identities"] == second["identities"]
    assert sorted(t for _, t in first["timeline"]) == sorted(t for _, t in second["timeline"])
    assert first["view"] == second["view"]  # traits, consents, counters: the same person whatever the order
    assert first["view"]["traits"]["rfm_orders"] == 2 and first["view"]["traits"]["rfm_spend"] == 129.5
    # The newest of each: the device and channel of c's event (at 3), the place of b's (at 2) but c's country.
    assert first["view"]["context"] == {
        "timezone": "Europe/Paris",
        "device_class": "desktop",
        "os": "Windows",
        "browser": "Chrome",
        "channel": "call_centre",
        "country": "US",
        "city": "Paris",
        "latitude": 48.8566,
        "longitude": 2.3522,
    }


# -- each projection alone ---------------------------------------------------------------------------------


class _Ctx:
    """A minimal Context for calling one projection directly."""

    def __init__(self, profile: ProfileState) -> None:
        self.profile = profile
        self.merged: ProfileState | None = None
        self.backfill = False
        self.refreshed: dict[str, set[str]] = {}
        self.before = dict(profile.sections)
        self.now = 0
        self.time = 0
        self.seq = 1
        self.rows: list[tuple[Any, ...]] = []

    def schedule(self, key: str, due_at: int, payload: Any = None) -> None: ...

    def cancel(self, key: str) -> None: ...

    def timers(self) -> dict[str, Any]:
        return {}

    def emit(self, type: str, payload: dict[str, Any]) -> None: ...

    def insert(self, table: Any, row: tuple[Any, ...]) -> None:
        self.rows.append(row)

    def count(self, table: Any, key: tuple[Any, ...], deltas: tuple[int, ...]) -> None: ...


def _entries() -> list[Entry]:
    import msgspec

    out = []
    for seq, raw in enumerate(STORY, start=1):
        event = msgspec.convert({k: v for k, v in raw.items() if k != "timestamp"}, Event)
        out.append(Entry(seq, "web", "observed", 1_000 * seq, 1_000 * seq, f"m{seq}", event))
    return out


def _projections() -> list[Projection[Any]]:
    catalog = Catalog.of(
        [Definition(kind, key, 1, i, body, False, 0, 0) for i, (kind, key, body) in enumerate(DEFINITIONS)]
    )
    return default_projections(make_settings({"url": "sqlite:///:memory:"}), catalog)


@pytest.mark.parametrize("projection", _projections(), ids=lambda p: p.name)
def test_apply_and_merge_are_pure_and_round_trip(projection: Projection[Any]) -> None:
    profile = ProfileState(1, "p1", {projection.name: projection.initial()})
    state = projection.initial()
    for entry in _entries():
        ctx = _Ctx(profile)
        frozen = copy.deepcopy(state)
        new = projection.apply(state, entry, ctx)
        assert state == frozen, "apply changed the state it was given"
        if new == state:
            assert new is state, "an unchanged state must be returned as the very same object"
        state = new
        if projection.columns:
            assert projection.decode(_json_round_trip(projection.encode(state))) == state
    other = projection.apply(projection.initial(), _entries()[3], _Ctx(profile))
    frozen_a, frozen_b = copy.deepcopy(state), copy.deepcopy(other)
    projection.merge(state, other, _Ctx(profile))
    assert (state, other) == (frozen_a, frozen_b), "merge changed a state it was given"
    assert projection.merge(state, projection.initial(), _Ctx(profile)) == state  # merging nothing changes nothing


def _json_round_trip(values: tuple[Any, ...]) -> tuple[Any, ...]:
    import msgspec

    return tuple(msgspec.json.decode(msgspec.json.encode(v)) for v in values)


def test_the_processor_cache_changes_nothing(feed: Feed, kairos: Kairos) -> None:
    """Profiles and identity owners kept between batches give the same state as loading everything each
    batch, including when merges happen in later batches than the ones that cached the identifiers."""
    define(kairos)
    feed(*STORY, *_chain("ab-bc"), *_chain("bc-ab"), process=False)
    cached = rebuild(kairos, 1)
    uncached_settings = make_settings(kairos.settings.store.model_dump(), processor={"cache_profiles": 0})
    kairos.store.state.reset()
    kairos.processor = Processor(kairos.store, uncached_settings, kairos.projections, kairos.clock)
    kairos.processor.batch_size = 1
    kairos.processor.run_until_caught_up()
    assert dump_state(kairos) == cached

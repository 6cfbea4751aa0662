"""Computed traits and segments, end to end through the processor, with a clock the tests drive. Both backends.

The judged cases: a "2 orders in 30 days" segment entered on the second order and left 30 days after the
first with no new event; a backfill equal to a from-scratch recomputation; a merge that moves membership;
replay gives equal traits and memberships.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from kairos.pipeline import Processor
from kairos.pipeline.clock import ManualClock
from kairos.runtime import Kairos
from kairos.segments.membership import SEGMENT_STATS
from kairos.store import Source
from tests.conftest import dump_state, make_settings

T0 = 1_780_000_000_000  # 2026-05-28
DAY = 86_400_000
HOUR = 3_600_000

ORDERS_30D = {"aggregate": "count", "event": "Order Completed", "window": "30d"}
FREQUENT = {"rule": "traits.orders_30d >= 2"}


def iso(ms: int) -> str:
    from kairos.collect import iso as _iso

    return _iso(ms)


class World:
    """A Kairos on a test store with a manual clock; events are stamped with the clock's time."""

    def __init__(self, store_settings: dict[str, Any], clock: ManualClock | None = None, **processor: Any) -> None:
        self.clock = clock or ManualClock(T0)
        settings = make_settings(store_settings, processor={"timer_grace_ms": 0, **processor})
        self.kairos = Kairos(settings, clock=self.clock)
        self.source: Source = self.kairos.source_named("web", "observed")
        self.n = 0

    def send(self, *events: dict[str, Any], process: bool = True) -> None:
        batch = []
        for e in events:
            self.n += 1
            batch.append({"messageId": f"m{self.n}", "timestamp": iso(self.clock.now()), **e})
        result = self.kairos.ingest({"batch": batch}, "batch", self.source.write_key)
        assert not result.errors, result.errors
        if process:
            self.run()

    def run(self) -> None:
        self.kairos.processor.run_until_caught_up()

    def define(self, kind: str, key: str, body: dict[str, Any]) -> None:
        self.kairos.store.admin.put_definition(kind, key, body, self.clock.now())

    def advance(self, ms: int) -> None:
        self.clock.advance(ms)
        self.run()

    def view(self, ref: str) -> dict[str, Any]:
        pk = self.kairos.resolve(ref)
        assert pk is not None
        profile = self.kairos.profile(pk)
        assert profile is not None
        return self.kairos.codec.view(profile)

    def timeline(self, ref: str) -> list[tuple[str, str | None]]:
        pk = self.kairos.resolve(ref)
        assert pk is not None
        rows = self.kairos.store.state.timeline(pk, 1000, None)
        return [(r.type, r.name) for r in reversed(rows) if r.type.startswith("segment_")]

    def outbox(self) -> list[tuple[str, Any]]:
        return [(m.type, m.payload) for m in self.kairos.store.outbox.read(0, 10_000)]


@pytest.fixture
def world(store_settings: dict[str, Any]) -> Iterator[World]:
    w = World(store_settings)
    yield w
    w.kairos.close()


def order(user: str, total: float = 10.0) -> dict[str, Any]:
    return {"type": "track", "userId": user, "event": "Order Completed", "properties": {"total": total}}


def test_two_orders_in_30_days_enter_on_the_second_and_leave_30_days_after_the_first(world: World) -> None:
    world.define("trait", "orders_30d", ORDERS_30D)
    world.define("segment", "frequent", FREQUENT)
    world.send(order("u1"))
    assert world.view("user_id:u1")["traits"]["orders_30d"] == 1
    assert world.view("user_id:u1")["segments"] == []

    world.clock.advance(10 * DAY)
    world.send(order("u1"))
    view = world.view("user_id:u1")
    assert view["traits"]["orders_30d"] == 2
    assert view["trait_meta"]["orders_30d"]["source"] == "computed"
    assert view["trait_meta"]["orders_30d"]["kind"] == "observed"
    assert view["segments"] == ["frequent"]
    assert world.timeline("user_id:u1") == [("segment_entered", "frequent")]

    world.advance(20 * DAY - 1000)  # one second before the first order is 30 days old: still in
    assert world.view("user_id:u1")["segments"] == ["frequent"]
    world.advance(1000)  # now it is: no new event, and the segment is left on time
    view = world.view("user_id:u1")
    assert view["traits"]["orders_30d"] == 1
    assert view["segments"] == []
    assert world.timeline("user_id:u1") == [("segment_entered", "frequent"), ("segment_exited", "frequent")]
    types = [(t, p["segment"]) for t, p in world.outbox() if t.startswith("segment_")]
    assert types == [("segment_entered", "frequent"), ("segment_exited", "frequent")]
    stats = world.kairos.store.state.counts(SEGMENT_STATS.name)
    assert sum(r[2] for r in stats) == 1 and sum(r[3] for r in stats) == 1


def test_every_aggregate(world: World) -> None:
    defs = {
        "n": {"aggregate": "count", "event": "Order Completed"},
        "spent": {"aggregate": "sum", "event": "Order Completed", "property": "total"},
        "smallest": {"aggregate": "min", "event": "Order Completed", "property": "total"},
        "largest": {"aggregate": "max", "event": "Order Completed", "property": "total"},
        "basket": {"aggregate": "avg", "event": "Order Completed", "property": "total"},
        "first_sku": {"aggregate": "first", "event": "Order Completed", "property": "sku"},
        "last_sku": {"aggregate": "last", "event": "Order Completed", "property": "sku"},
        "skus": {"aggregate": "distinct_count", "event": "Order Completed", "property": "sku"},
        "fav": {"aggregate": "most_frequent", "event": "Order Completed", "property": "sku"},
        "big": {"aggregate": "count", "event": "Order Completed", "where": "properties.total > 50.0"},
        "pages": {"aggregate": "count", "where": 'event_type == "page"'},
    }
    for key, body in defs.items():
        world.define("trait", key, body)
    for total, sku in [(10.1, "a"), (99.9, "b"), ("30", "a"), ("bad", "c")]:
        world.send({**order("u1"), "properties": {"total": total, "sku": sku}})
        world.clock.advance(1000)
    world.send({"type": "page", "userId": "u1", "name": "Home"})
    traits = world.view("user_id:u1")["traits"]
    assert traits["n"] == 4
    assert traits["spent"] == 140.0  # exact decimal: 10.1 + 99.9 + 30; "bad" does not count
    assert traits["smallest"] == 10.1 and traits["largest"] == 99.9
    assert traits["basket"] == pytest.approx(140 / 3)
    assert (traits["first_sku"], traits["last_sku"]) == ("a", "c")
    assert traits["skus"] == 3 and traits["fav"] == "a"
    assert traits["big"] == 1 and traits["pages"] == 1


def _backfilled(store_settings: dict[str, Any], tag: str, define_first: bool) -> dict[str, Any]:
    settings = dict(store_settings)
    if settings["url"].startswith("sqlite"):
        settings["url"] = settings["url"].replace(".db", f"-{tag}.db")
    else:
        settings["schema_name"] = f"{settings['schema_name']}_{tag}"
    w = World(settings, processor={"batch_size": 7})
    try:
        if define_first:
            w.define("trait", "orders_30d", ORDERS_30D)
            w.define("trait", "spent", {"aggregate": "sum", "event": "Order Completed", "property": "total"})
            w.define("segment", "frequent", FREQUENT)
        for day in range(40):
            for i in range(5):
                w.send(order(f"u{(day + i) % 9}", total=day + i / 10), process=False)
            if day < 3:  # one order each, long gone from the window by the end
                w.send(order(f"solo{day}"), process=False)
            if day % 7 == 3:  # merges along the way
                w.send({"type": "identify", "userId": f"u{day % 9}", "anonymousId": f"a{day}"}, process=False)
                w.send({"type": "alias", "previousId": f"a{day}", "userId": f"u{(day + 4) % 9}"}, process=False)
            w.clock.advance(DAY)
            if day == 20 and not define_first:
                w.run()
                w.define("trait", "orders_30d", ORDERS_30D)
                w.define("trait", "spent", {"aggregate": "sum", "event": "Order Completed", "property": "total"})
                w.define("segment", "frequent", FREQUENT)
                w.kairos.processor.run_once()  # the backfill starts while events keep arriving
        w.run()
        assert not w.kairos.processor.backfilling()
        out = {}
        for pk in w.kairos.store.state.live_pks(0, 10**12, 10**6):
            profile = w.kairos.profile(pk)
            assert profile is not None
            view = w.kairos.codec.view(profile)
            out[profile.id] = (view["traits"], view["segments"], sorted(profile.identities))
        return out
    finally:
        w.kairos.close()
        if "schema_name" in settings and not settings["url"].startswith("sqlite"):
            import psycopg

            with psycopg.connect(settings["url"], autocommit=True) as conn:
                conn.execute(f"DROP SCHEMA IF EXISTS {settings['schema_name']} CASCADE")


def test_a_backfill_equals_a_from_scratch_computation(store_settings: dict[str, Any]) -> None:
    later = _backfilled(store_settings, "later", define_first=False)
    scratch = _backfilled(store_settings, "first", define_first=True)
    assert later == scratch
    assert any(segments == ["frequent"] for _, segments, _ in later.values())
    assert any(segments == [] for _, segments, _ in later.values())


def test_backfill_progress_and_changed_definitions(world: World) -> None:
    for i in range(30):
        world.send(order(f"u{i}"), process=False)
        world.send(order(f"u{i}"), process=False)
    world.run()
    world.kairos.processor.batch_size = 10
    world.define("trait", "orders_30d", ORDERS_30D)
    world.kairos.processor.run_once()  # picks the definition up: a job over 30 profiles
    jobs = world.kairos.store.state.jobs()
    assert [(j.kind, j.key, j.status, j.total) for j in jobs] == [("trait", "orders_30d", "done", 30)] or [
        (j.kind, j.key, j.total) for j in jobs
    ] == [("trait", "orders_30d", 30)]
    world.run()
    (job,) = world.kairos.store.state.jobs()
    assert (job.status, job.done, job.total) == ("done", 30, 30)
    assert world.view("user_id:u7")["traits"]["orders_30d"] == 2
    # A changed definition is recomputed from the log (here: only orders over 100, none).
    world.define("trait", "orders_30d", {**ORDERS_30D, "where": "properties.total > 100.0"})
    world.run()
    assert world.view("user_id:u7")["traits"]["orders_30d"] == 0
    # A deleted one goes from every profile.
    world.kairos.store.admin.delete_definition("trait", "orders_30d", world.clock.now())
    world.run()
    assert "orders_30d" not in world.view("user_id:u7")["traits"]


def test_a_merge_moves_membership(world: World) -> None:
    world.define("trait", "orders", {"aggregate": "count", "event": "Order Completed"})
    world.define("segment", "two_orders", {"rule": "traits.orders >= 2"})
    world.define("segment", "one_order", {"rule": "traits.orders == 1"})
    world.send({**order("u1"), "anonymousId": "a1"})
    world.send({"type": "track", "anonymousId": "a2", "event": "Order Completed"})
    assert world.view("user_id:u1")["segments"] == ["one_order"]
    assert world.view("anonymous_id:a2")["segments"] == ["one_order"]
    loser = world.kairos.resolve("anonymous_id:a2")
    world.send({"type": "alias", "previousId": "a2", "userId": "u1"})
    view = world.view("user_id:u1")
    assert view["traits"]["orders"] == 2
    assert view["segments"] == ["two_orders"]  # the union qualifies; one_order is left
    exits = [p for t, p in world.outbox() if t == "segment_exited"]
    from kairos.identity import profile_id_for

    assert loser is not None
    assert {"segment": "one_order", "profile_id": profile_id_for(loser)}.items() <= next(
        p for p in exits if p.get("profile_id") == profile_id_for(loser)
    ).items()
    sizes = {r[0]: 0 for r in world.kairos.store.state.counts(SEGMENT_STATS.name)}
    for segment, _day, entered, exited in world.kairos.store.state.counts(SEGMENT_STATS.name):
        sizes[segment] += entered - exited
    assert sizes == {"one_order": 0, "two_orders": 1}


def test_rules_on_identities_follow_identifiers_added_without_a_merge(world: World) -> None:
    # Identifiers grow in place on an existing profile: the rules reading them must see it, on the event that
    # adds them (evaluated by look-up of what changed, not on every event).
    world.define("segment", "known", {"rule": '"user_id" in identities'})
    world.define("segment", "two_devices", {"rule": "size(identities.anonymous_id) >= 2"})
    world.define("segment", "active", {"rule": "profile.event_count >= 2"})
    world.send({"type": "page", "anonymousId": "a1", "name": "Home"})
    assert world.view("anonymous_id:a1")["segments"] == []
    world.send({"type": "identify", "anonymousId": "a1", "userId": "u1"})
    assert world.view("user_id:u1")["segments"] == ["active", "known"]
    world.send({"type": "track", "anonymousId": "a1", "event": "Visited"})  # nothing new
    world.send({"type": "track", "userId": "u1", "anonymousId": "a2", "event": "Visited"})  # a second device
    assert world.view("user_id:u1")["segments"] == ["active", "known", "two_devices"]
    assert sorted(world.timeline("user_id:u1")) == [
        ("segment_entered", "active"),
        ("segment_entered", "known"),
        ("segment_entered", "two_devices"),
    ]


def test_only_the_readers_of_a_moved_segment_are_evaluated_again(world: World) -> None:
    # A later rule reading an earlier one (statically, or through a dynamic read) follows it within the
    # same event; one that reads neither the changed inputs nor the segment is not evaluated.
    world.define("trait", "spent", {"aggregate": "sum", "event": "Order Completed", "property": "total"})
    world.define("segment", "big", {"rule": "traits.spent >= 100.0"})
    world.define("segment", "big_reader", {"rule": '"big" in segments'})
    world.define("segment", "any_reader", {"rule": 'segments.exists(s, s.startsWith("bi"))'})
    world.define("segment", "plan_pro", {"rule": 'traits.plan == "pro"'})
    world.send(order("u1", 60))
    assert world.view("user_id:u1")["segments"] == []
    plan_rule = world.kairos.processor.catalog.segment("plan_pro").rule  # type: ignore[union-attr]
    errors = plan_rule.errors  # no plan: each evaluation of this rule is an error, hence counted
    world.send(order("u1", 60))
    assert world.view("user_id:u1")["segments"] == ["any_reader", "big", "big_reader"]
    assert plan_rule.errors == errors  # the order changed `spent`, not `plan`: not evaluated


def test_remembered_answers_tell_value_types_apart(world: World) -> None:
    # A rule reading only plain values has its answers remembered by the values it read (SegmentDef.memo).
    # 1, 1.0 and true are equal as Python keys but not to a rule: 1.0 + 1 and true + 1 are errors in CEL.
    world.define("segment", "one", {"rule": "traits.x + 1 == 2"})
    world.define("segment", "one_reader", {"rule": '"one" in segments && traits.y == "a"'})
    for user, x in (("f", 1.0), ("i", 1), ("b", True), ("i2", 1), ("f2", 1.0)):
        world.send({"type": "identify", "userId": user, "traits": {"x": x, "y": "a"}})
    assert world.kairos.processor.catalog.segment("one").memo == (("traits", "x"),)  # type: ignore[union-attr]
    members = {u: world.view(f"user_id:{u}")["segments"] for u in ("f", "i", "b", "i2", "f2")}
    assert members == {
        "f": [],
        "i": ["one", "one_reader"],
        "b": [],
        "i2": ["one", "one_reader"],
        "f2": [],
    }
    # An answer remembered for one profile's membership is not given to another's.
    world.send({"type": "identify", "userId": "f", "traits": {"x": 1}})
    assert world.view("user_id:f")["segments"] == ["one", "one_reader"]


def test_rules_read_consents_as_the_gate_does(world: World) -> None:
    """``consents.X`` is whether the person allows purpose X: their own word, else the purpose's default
    (analytics is opt-out, marketing e-mail opt-in), as the gate of deliveries and decisions has it. It was
    their word only, so an opt-out purpose nobody spoke about read as missing: the rule was false."""
    world.define("segment", "measurable", {"rule": "consents.analytics"})
    world.define("segment", "mailable", {"rule": "consents.marketing_email"})
    world.define("segment", "asked", {"rule": "has(consents.analytics)"})

    def said(user: str, **choices: bool) -> dict[str, Any]:
        return {
            "type": "track",
            "userId": user,
            "event": "Consent",
            "context": {"consent": {"categoryPreferences": choices}},
        }

    world.send({"type": "identify", "userId": "quiet"}, said("no", analytics=False), said("yes", marketing_email=True))
    members = {u: world.view(f"user_id:{u}")["segments"] for u in ("quiet", "no", "yes")}
    assert members == {
        "quiet": ["asked", "measurable"],
        "no": ["asked"],
        "yes": ["asked", "mailable", "measurable"],
    }
    world.send(said("yes", analytics=False))  # a change of mind moves the membership at once
    assert world.view("user_id:yes")["segments"] == ["asked", "mailable"]


def test_a_changed_or_deleted_computed_trait_moves_the_segments_that_read_it(world: World) -> None:
    """The backfill of a trait's new definition (or its deletion) re-evaluates the rules reading it. It did not:
    a value of the old version reads as absent once the definition changed, so the state showed no change and
    members stayed in, while a preview of the same rule counted none. Found by a helper trying the API."""
    world.define("trait", "cnt", {"aggregate": "count", "event": "Buy"})
    world.define("segment", "buyers", {"rule": "traits.cnt >= 2"})
    world.define("segment", "pros", {"rule": 'traits.plan == "pro"'})
    world.send({"type": "identify", "userId": "u4", "traits": {"plan": "pro"}})
    world.send(*({"type": "track", "userId": "u4", "event": "Buy"} for _ in range(3)))
    assert world.view("user_id:u4")["segments"] == ["buyers", "pros"]
    world.define("trait", "cnt", {"aggregate": "count", "event": "Nope"})  # a new definition: 0 for u4
    world.advance(1000)
    assert (world.view("user_id:u4")["traits"]["cnt"], world.view("user_id:u4")["segments"]) == (0, ["pros"])
    world.define("trait", "cnt", {"aggregate": "count", "event": "Buy"})  # back: enters again
    world.advance(1000)
    assert world.view("user_id:u4")["segments"] == ["buyers", "pros"]
    world.kairos.store.admin.delete_definition("trait", "cnt", world.clock.now())
    world.advance(1000)
    assert "cnt" not in world.view("user_id:u4")["traits"] and world.view("user_id:u4")["segments"] == ["pros"]
    # A computed trait named like a stated one shadows it while it exists; its deletion brings the stated back.
    world.define("trait", "plan", {"aggregate": "count"})
    world.advance(1000)
    assert world.view("user_id:u4")["segments"] == []
    world.kairos.store.admin.delete_definition("trait", "plan", world.clock.now())
    world.advance(1000)
    assert world.view("user_id:u4")["traits"]["plan"] == "pro" and world.view("user_id:u4")["segments"] == ["pros"]


def test_rules_reading_now_change_on_time(world: World) -> None:
    world.define("segment", "dormant", {"rule": 'profile.updated_at < now - duration("7d")'})
    world.send({"type": "track", "userId": "u1", "event": "Visited"})
    assert world.view("user_id:u1")["segments"] == []
    world.advance(7 * DAY - 5000)
    assert world.view("user_id:u1")["segments"] == []
    world.advance(10_000)
    assert world.view("user_id:u1")["segments"] == ["dormant"]
    world.send({"type": "track", "userId": "u1", "event": "Visited"})  # back: leaves at once
    assert world.view("user_id:u1")["segments"] == []


def test_segments_of_segments_and_replay(world: World) -> None:
    world.define("trait", "spent", {"aggregate": "sum", "event": "Order Completed", "property": "total"})
    world.define("segment", "big", {"rule": "traits.spent >= 100.0"})
    world.define("segment", "big_fans", {"rule": '"big" in segments && traits.spent < 1000.0'})
    world.send(order("u1", 60))
    assert world.view("user_id:u1")["segments"] == []
    world.send(order("u1", 60))
    assert world.view("user_id:u1")["segments"] == ["big", "big_fans"]
    world.send(order("u1", 1000))
    assert world.view("user_id:u1")["segments"] == ["big"]
    before = dump_state(world.kairos)
    world.kairos.store.state.reset()
    world.kairos.processor = Processor(world.kairos.store, world.kairos.settings, world.kairos.projections, world.clock)
    world.run()
    after = dump_state(world.kairos)
    for table in ("profiles", "timers", "segment_stats", "timeline"):
        assert after[table] == before[table], table


def test_a_stored_cycle_leaves_out_only_its_segments(world: World) -> None:
    # Saving refuses cycles; one written to the store by other means must not disable every segment.
    world.define("segment", "a", {"rule": '"b" in segments'})
    world.define("segment", "b", {"rule": '"a" in segments'})
    world.define("segment", "buyers", {"rule": "profile.event_count >= 1"})
    world.send(order("u1"))
    assert world.view("user_id:u1")["segments"] == ["buyers"]
    assert any("cycle (a, b)" in e for e in world.kairos.processor.catalog.errors)  # type: ignore[union-attr]

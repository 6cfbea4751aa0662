"""RFM: scores from fixed breakpoints, recency that drops when time passes, merges, amounts of any shape."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from kairos.config import RfmSettings
from kairos.pipeline.clock import ManualClock
from kairos.profiles.rfm import DAY, RfmModel, parse_cents, segment
from kairos.runtime import Kairos
from tests.conftest import make_settings

T0 = 1_800_000_000_000


class Shop:
    """Kairos on a manual clock, timers firing as soon as they are due."""

    def __init__(self, store_settings: dict[str, Any], **rfm: Any) -> None:
        self.clock = ManualClock(T0)
        settings = make_settings(store_settings, processor={"timer_grace_ms": 0}, rfm=rfm)
        self.kairos = Kairos(settings, clock=self.clock)
        self.source = self.kairos.source_named("web", "observed")
        self.n = 0

    def buy(self, ref: dict[str, Any], total: Any = 100, at: int | None = None, **props: Any) -> None:
        self.n += 1
        properties = {"total": total, **props} if total is not None else props
        event = {"type": "track", "event": "Order Completed", "properties": properties, "messageId": f"o{self.n}"}
        if at is not None:
            event["timestamp"] = _iso(at)
        self.send({**event, **ref})

    def send(self, event: dict[str, Any]) -> None:
        result = self.kairos.ingest(event, event["type"], self.source.write_key)
        assert not result.errors, result.errors
        self.run()

    def run(self) -> None:
        self.kairos.processor.run_until_caught_up()
        self.kairos.processor.run_once()  # idle pass: fires what is due by now

    def traits(self, ref: str) -> dict[str, Any]:
        pk = self.kairos.resolve(ref)
        assert pk is not None
        profile = self.kairos.profile(pk)
        assert profile is not None
        return {k: v for k, v in self.kairos.codec.traits(profile).items() if k.startswith("rfm_")}


def _iso(ms: int) -> str:
    from kairos.collect import iso

    return iso(ms)


@pytest.fixture
def shop(store_settings: dict[str, Any]) -> Iterator[Shop]:
    s = Shop(store_settings)
    yield s
    s.kairos.close()


def test_scores_segment_and_traits(shop: Shop) -> None:
    for amount in (100, "250.50", 40):
        shop.buy({"userId": "u1"}, amount)
    t = shop.traits("user_id:u1")
    assert t == {
        "rfm_recency": 5,
        "rfm_frequency": 3,  # 3 orders: breakpoints 2 and 3 reached
        "rfm_monetary": 3,  # 390.50: at least 150, below 500
        "rfm_score": "533",
        "rfm_segment": "potential_loyalists",
        "rfm_orders": 3,
        "rfm_spend": 390.5,
        "rfm_last_purchase_at": _iso(T0),
    }


def test_no_purchase_no_rfm_traits(shop: Shop) -> None:
    shop.send({"type": "track", "userId": "u2", "event": "Product Viewed", "properties": {"total": 5}})
    shop.send({"type": "identify", "userId": "u2", "traits": {"plan": "pro"}})
    assert shop.traits("user_id:u2") == {}
    pk = shop.kairos.resolve("user_id:u2")
    assert pk is not None
    profile = shop.kairos.profile(pk)
    assert profile is not None
    view = shop.kairos.codec.view(profile)
    assert not any(k.startswith("rfm_") for k in view["traits"]) and "rfm_segment" not in view["trait_meta"]


def test_recency_drops_exactly_when_a_breakpoint_passes(shop: Shop) -> None:
    shop.buy({"userId": "u1"})
    for boundary, score in ((7, 4), (30, 3), (90, 2), (180, 1)):
        shop.clock.set(T0 + boundary * DAY)  # exactly on the breakpoint: still the higher score
        shop.run()
        assert shop.traits("user_id:u1")["rfm_recency"] == score + 1
        shop.clock.set(T0 + boundary * DAY + 1)
        shop.run()
        assert shop.traits("user_id:u1")["rfm_recency"] == score
    assert shop.traits("user_id:u1")["rfm_segment"] == "lost"
    assert shop.kairos.store.state.due_timers(2**62, 10) == []  # nothing left to wake for
    shop.buy({"userId": "u1"})  # a new purchase: back to 5, and a timer again
    assert shop.traits("user_id:u1")["rfm_recency"] == 5
    assert [t.due_at for t in shop.kairos.store.state.due_timers(2**62, 10)] == [shop.clock.now() + 7 * DAY + 1]


def test_a_late_old_purchase_does_not_make_a_profile_more_recent(shop: Shop) -> None:
    shop.buy({"userId": "u1"}, at=T0 - 40 * DAY)
    assert shop.traits("user_id:u1")["rfm_recency"] == 3
    shop.buy({"userId": "u1"}, at=T0 - 10 * DAY)
    shop.buy({"userId": "u1"}, at=T0 - 100 * DAY)  # late and older: recency stays with the newest
    t = shop.traits("user_id:u1")
    assert (t["rfm_recency"], t["rfm_orders"], t["rfm_last_purchase_at"]) == (4, 3, _iso(T0 - 10 * DAY))


def test_merge_sums_orders_and_spend_and_keeps_the_newest_purchase(shop: Shop) -> None:
    shop.buy({"anonymousId": "a1"}, 30, at=T0 - 60 * DAY)
    shop.buy({"anonymousId": "a1"}, 30, at=T0 - 50 * DAY)
    shop.buy({"userId": "u1"}, 1000, at=T0 - 3 * DAY)
    assert shop.traits("anonymous_id:a1")["rfm_segment"] == "about_to_sleep"
    shop.send({"type": "identify", "anonymousId": "a1", "userId": "u1"})  # the two are one person
    t = shop.traits("user_id:u1")
    assert t["rfm_orders"] == 3 and t["rfm_spend"] == 1060.0 and t["rfm_score"] == "534"
    assert t["rfm_segment"] == "potential_loyalists"
    # One recency timer survives the merge; firing early (the loser's) only reschedules it.
    shop.clock.set(T0 + 4 * DAY + 1)
    shop.run()
    assert shop.traits("user_id:u1")["rfm_recency"] == 4
    [timer] = shop.kairos.store.state.due_timers(2**62, 10)
    assert timer.due_at == T0 - 3 * DAY + 30 * DAY + 1


@pytest.mark.parametrize(
    ("amount", "cents"),
    [
        (12, 1200),
        (12.5, 1250),
        ("12.345", 1234),  # half-even
        ("12.355", 1236),
        (" 7 ", 700),
        (0.1 + 0.2, 30),
        ("free", 0),
        ("", 0),
        (True, 0),
        (None, 0),
        (-5, 0),
        ("NaN", 0),
        ("Infinity", 0),
        ("1e400", 0),
        (2**63 - 1, 0),  # beyond 2**63 collect refuses the event (tests/test_numbers.py)
        ({"amount": 5}, 0),
        ([5], 0),
        ("12 EUR", 0),
    ],
)
def test_amounts_of_any_shape_count_the_order_and_never_fail(shop: Shop, amount: Any, cents: int) -> None:
    shop.buy({"userId": "u1"}, amount)
    t = shop.traits("user_id:u1")
    assert t["rfm_orders"] == 1 and round(t["rfm_spend"] * 100) == cents
    assert shop.kairos.store.state.deadletters() == []


def test_revenue_is_read_when_total_is_missing(shop: Shop) -> None:
    shop.buy({"userId": "u1"}, None, revenue="42.10")
    assert shop.traits("user_id:u1")["rfm_spend"] == 42.1
    shop.buy({"userId": "u1"}, 10, revenue=1000)  # total wins when both are sent
    assert shop.traits("user_id:u1")["rfm_spend"] == 52.1


def test_settings_choose_the_event_and_property(store_settings: dict[str, Any]) -> None:
    shop = Shop(store_settings, event="Purchase", amount_property="amount", revenue_fallback=False)
    try:
        shop.buy({"userId": "u1"}, None, amount=5)  # "Order Completed": not a purchase here
        assert shop.traits("user_id:u1") == {}
        shop.send({"type": "track", "userId": "u1", "event": "Purchase", "properties": {"amount": 5, "revenue": 9}})
        shop.send({"type": "track", "userId": "u1", "event": "Purchase", "properties": {"revenue": 9}})
        assert shop.traits("user_id:u1")["rfm_spend"] == 5.0 and shop.traits("user_id:u1")["rfm_orders"] == 2
    finally:
        shop.kairos.close()


def test_disabled_rfm_keeps_no_state(store_settings: dict[str, Any]) -> None:
    kairos = Kairos(make_settings(store_settings, rfm={"enabled": False}))
    try:
        assert "rfm" not in kairos.codec.by_name
    finally:
        kairos.close()


@pytest.mark.parametrize("bad", [[1, 2, 3], [5, 4, 3, 2], [0, 1, 2, 3], [1, 1, 2, 3]])
def test_breakpoints_must_be_four_increasing_positive_values(bad: list[float]) -> None:
    from kairos.errors import ConfigError

    with pytest.raises(ConfigError, match=r"rfm\.frequency"):
        make_settings({"url": "sqlite:///:memory:"}, rfm={"frequency": bad})


def test_every_cell_of_the_grid_is_named() -> None:
    names = {segment(r, f) for r in range(1, 6) for f in range(1, 6)}
    assert names == {
        *("champions", "loyal_customers", "potential_loyalists", "new_customers", "promising"),
        *("need_attention", "about_to_sleep", "at_risk", "cant_lose_them", "hibernating", "lost"),
    }
    assert (segment(5, 5), segment(5, 1), segment(1, 5), segment(1, 1), segment(3, 3)) == (
        "champions",
        "new_customers",
        "cant_lose_them",
        "lost",
        "need_attention",
    )


def test_model_scores() -> None:
    model = RfmModel(RfmSettings())
    assert [model.frequency(n) for n in (1, 2, 3, 4, 5, 9, 10, 100)] == [1, 2, 3, 3, 4, 4, 5, 5]
    assert [model.monetary(c) for c in (0, 4999, 5000, 15000, 50000, 150000)] == [1, 1, 2, 3, 4, 5]
    assert model.next_change(0, 200 * DAY) is None and model.next_change(0, 0) == 7 * DAY + 1
    assert parse_cents("0.005") == 0 and parse_cents("0.015") == 2

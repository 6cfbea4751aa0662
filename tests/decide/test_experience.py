"""The experience report on constructed logs whose quadrants are known."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from itertools import count

import pytest

from kairos.decide.experience import DAY, experience_report, quadrant
from kairos.decide.records import Action, DecisionItem, DecisionRecord, Features, Group

START = int(datetime(2026, 3, 2, tzinfo=UTC).timestamp() * 1000)  # a Monday
END = START + 7 * DAY
_ids = count()


def decision(
    channel: str,
    interaction: bool,
    customization: bool,
    *,
    at: int = START + 3_600_000,
    group: Group = "policy",
    shared: Features | None = None,
    offers: int = 3,
    known: bool = True,
) -> DecisionRecord:
    n = next(_ids)
    return DecisionRecord(
        id=f"d{n}",
        at=at,
        subject=f"p{n}",
        channel=channel,
        placement=None,
        group=group,
        policy="test",
        policy_version=1,
        shared=shared if shared is not None else {"context": {"daypart=evening": 1.0}, "profile": {"orders": 1.0}},
        candidates=tuple(Action(f"o{i}", {"offer": {f"id=o{i}": 1.0}}) for i in range(offers)),
        weights=(1.0,) * offers,
        items=(DecisionItem("o0", 0, 1.0, False, 0.1, 0.1),),
        interaction=interaction,
        customization=customization,
        profile_pk=n if known else None,
    )


def channel(name: str, n: int, interactive: int, customized: int) -> list[DecisionRecord]:
    return [decision(name, i < interactive, i < customized) for i in range(n)]


def known_log() -> list[DecisionRecord]:
    return (
        channel("email", 10, 2, 1)  # mass
        + channel("sms", 10, 1, 7)  # niche
        + channel("web", 10, 8, 2)  # targeted
        + channel("app", 10, 9, 9)  # one-to-one
    )


def test_each_channel_and_the_business_land_in_their_known_quadrant() -> None:
    report = experience_report(known_log(), START, END)
    json.dumps(report, allow_nan=False)
    placed = {name: block["quadrant"] for name, block in report["channels"].items()}
    assert placed == {"email": "mass", "sms": "niche", "web": "targeted", "app": "one-to-one"}
    overall = report["overall"]
    # 20 of 40 interactive is exactly the threshold (high); 19 of 40 customized is below it.
    assert (overall["decisions"], overall["interaction"], overall["customization"]) == (40, 0.5, 0.475)
    assert overall["quadrant"] == "targeted"
    assert (report["channels"]["sms"]["interaction"], report["channels"]["sms"]["customization"]) == (0.1, 0.7)


def test_the_threshold_moves_the_boundary() -> None:
    assert quadrant(0.5, 0.5) == "one-to-one" and quadrant(0.4999, 0.5) == "niche"
    report = experience_report(known_log(), START, END, threshold=0.85)
    placed = {name: block["quadrant"] for name, block in report["channels"].items()}
    assert placed == {"email": "mass", "sms": "mass", "web": "mass", "app": "one-to-one"}
    with pytest.raises(ValueError, match="threshold"):
        experience_report([], START, END, threshold=0)


def test_a_share_just_below_the_threshold_is_not_rounded_up() -> None:
    # 49,999 of 100,000 is shown rounded to 0.5, but it is below the threshold: the quadrant uses the exact share.
    log = [decision("web", True, False)] * 49_999 + [decision("web", False, False)] * 50_001
    block = experience_report(log, START, END)["overall"]
    assert block["interaction"] == 0.5 and block["quadrant"] == "mass"


def test_an_empty_period_has_no_placement_and_no_invented_shares() -> None:
    outside = [decision("web", True, True, at=END), decision("web", True, True, at=START - 1)]
    report = experience_report(outside, START, END)
    overall = report["overall"]
    assert report["channels"] == {}
    assert (overall["decisions"], overall["interaction"], overall["quadrant"], overall["moves"]) == (0, None, None, [])
    assert all(b["decisions"] == 0 and b["quadrant"] is None for b in overall["trend"])
    assert set(overall["inputs"].values()) == {None}
    with pytest.raises(ValueError, match="end after it starts"):
        experience_report([], END, START)


def test_the_trend_is_daily_for_a_week_with_shares_per_day_and_the_change() -> None:
    early = [decision("web", False, False, at=START + DAY + 5) for _ in range(4)]
    late = [decision("web", True, i == 0, at=START + 5 * DAY + 5) for i in range(4)]
    report = experience_report(early + late, START, END)
    trend = report["overall"]["trend"]
    assert report["bucket"] == "day" and [b["start"] for b in trend] == [START + i * DAY for i in range(7)]
    assert [b["decisions"] for b in trend] == [0, 4, 0, 0, 0, 4, 0]
    assert (trend[1]["quadrant"], trend[5]["quadrant"]) == ("mass", "targeted")
    assert (trend[5]["interaction"], trend[5]["customization"]) == (1.0, 0.25)
    assert report["overall"]["change"] == {"interaction": 1.0, "customization": 0.25}


def test_a_long_period_is_weekly_and_weeks_start_on_monday() -> None:
    start = START + 2 * DAY + 7  # a Wednesday, not at midnight
    report = experience_report([decision("web", True, True, at=start + 40 * DAY)], start, start + 60 * DAY)
    trend = report["overall"]["trend"]
    assert report["bucket"] == "week" and trend[0]["start"] == START
    assert all(datetime.fromtimestamp(b["start"] / 1000, UTC).weekday() == 0 for b in trend)
    assert trend[-1]["start"] < start + 60 * DAY <= trend[-1]["start"] + 7 * DAY
    assert sum(b["decisions"] for b in trend) == 1
    assert experience_report([], START, START + 3 * DAY, buckets="week")["bucket"] == "week"


def test_what_would_move_it_is_derived_from_the_log() -> None:
    log = [
        *[decision("email", False, False, shared={}, known=False) for _ in range(4)],  # nothing known
        *[decision("email", False, False, group="control") for _ in range(2)],
        *[decision("email", False, False, shared={"context": {"x": 1.0}, "stated": {"likes=shoes": 1.0}})] * 2,
        *[decision("email", True, False, offers=1) for _ in range(2)],
    ]
    moves = experience_report(log, START, END)["channels"]["email"]["moves"]
    by_reason = {(m["axis"], m["reason"]): (m["decisions"], m["share"]) for m in moves}
    assert by_reason[("interaction", "gap")] == (3, 0.3)  # 2 of 10 interactive, 5 needed
    assert by_reason[("customization", "gap")] == (5, 0.5)
    assert by_reason[("interaction", "anonymous")] == (4, 0.4)
    assert by_reason[("interaction", "no_behaviour")] == (6, 0.6)  # the 4 with nothing and the 2 with context only
    assert by_reason[("interaction", "unused_inputs")] == (2, 0.2)
    assert by_reason[("interaction", "control")] == (2, 0.2) == by_reason[("customization", "control")]
    assert by_reason[("interaction", "single_offer")] == (2, 0.2)
    assert by_reason[("customization", "no_stated")] == (8, 0.8)
    assert by_reason[("customization", "unused_stated")] == (2, 0.2)
    gap = next(m for m in moves if m["reason"] == "gap" and m["axis"] == "interaction")
    assert gap["text"] == "3 more of 10 decisions must have used the person's behaviour or context to reach targeted"
    shares = [m["share"] for m in moves if m["axis"] == "interaction" and m["reason"] != "gap"]
    assert shares == sorted(shares, reverse=True)


def test_a_one_to_one_channel_has_nothing_to_move() -> None:
    report = experience_report(channel("app", 4, 4, 4), START, END)
    assert report["overall"]["moves"] == [] and report["overall"]["quadrant"] == "one-to-one"
    assert report["overall"]["inputs"]["no_stated"] == 1.0

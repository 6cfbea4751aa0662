"""Rates, uplift and off-policy estimates: checked against references and against logs whose truth is known."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pytest
from scipy.stats import binomtest

from kairos.decide._intervals import difference, mean_interval, rate, ratio, wilson
from kairos.decide.evaluation import decisions_report, offer_stats
from kairos.decide.offpolicy import estimates, evaluate, greedy, usable
from kairos.decide.records import Action, Closed, DecisionItem, DecisionRecord, Features, Group

OFFERS = ("a", "b", "c", "d")


def record(
    n: int,
    context: str = "x0",
    *,
    group: Group = "policy",
    shown: Sequence[str] = ("a",),
    propensity: float = 1.0,
    explored: bool = False,
    weights: Sequence[float] = (1.0, 1.0, 1.0, 1.0),
) -> DecisionRecord:
    return DecisionRecord(
        id=f"d{n}",
        at=1_700_000_000_000 + n,
        subject=f"p{n}",
        channel="web",
        placement=None,
        group=group,
        policy="test",
        policy_version=1,
        shared={"context": {f"kind={context}": 1.0}},
        candidates=tuple(Action(k, {"offer": {f"id={k}": 1.0}}) for k in OFFERS),
        weights=tuple(weights),
        items=tuple(
            DecisionItem(offer, slot, propensity if slot == 0 else 1.0, explored and slot == 0, 0.5, 0.5)
            for slot, offer in enumerate(shown)
        ),
        interaction=False,
        customization=False,
    )


class Table:
    """A reward model read from a table ``context -> expected reward per offer`` (exact, or deliberately off)."""

    def __init__(self, table: Mapping[str, Sequence[float]]) -> None:
        self.table = table

    def estimate(self, shared: Features, actions: Sequence[Action]) -> list[float]:
        context = next(iter(shared["context"])).split("=")[1]
        return [self.table[context][OFFERS.index(a.key)] for a in actions]


# --- intervals against references -------------------------------------------------------------------------


@pytest.mark.parametrize(("k", "n"), [(0, 1), (0, 10), (1, 10), (5, 10), (10, 10), (56, 70), (3, 1000), (999, 1000)])
def test_wilson_matches_scipy(k: int, n: int) -> None:
    ref = binomtest(k, n).proportion_ci(0.95, method="wilson")
    low, high = wilson(k, n)
    assert low == pytest.approx(ref.low, abs=1e-12) and high == pytest.approx(ref.high, abs=1e-12)


def test_newcombe_matches_the_papers_worked_example() -> None:
    # Newcombe (1998), Statistics in Medicine 17:873-890, Table II: 56/70 - 48/80, method 10: 0.0524 to 0.3339.
    found = difference([1.0] * 56 + [0.0] * 14, [1.0] * 48 + [0.0] * 32)
    assert found.value is not None and found.low is not None and found.high is not None
    assert (found.method, round(found.value, 4), round(found.low, 4), round(found.high, 4)) == (
        "newcombe",
        0.2,
        0.0524,
        0.3339,
    )


def test_relative_uplift_is_the_log_ratio_interval() -> None:
    # Katz's log interval for the risk ratio 30/200 over 20/200 is 0.8822 to 2.550 (as statsmodels computes it).
    found = ratio([1.0] * 30 + [0.0] * 170, [1.0] * 20 + [0.0] * 180)
    assert found.value == pytest.approx(0.5)
    assert found.low == pytest.approx(0.8822360 - 1, abs=1e-6) and found.high == pytest.approx(2.5503379 - 1, abs=1e-6)


def test_real_valued_rewards_get_a_normal_interval_on_the_mean() -> None:
    found = rate([2.0, 4.0, 6.0, 8.0])
    half = 1.959963984540054 * math.sqrt(20 / 3) / 2
    assert found.method == "normal" and found.value == 5.0
    assert found.low == pytest.approx(5 - half) and found.high == pytest.approx(5 + half)
    assert difference([2.0, 4.0], [1.0, 1.5]).method == "welch"


def test_not_enough_data_is_said_not_invented() -> None:
    assert rate([]).to_dict() == {
        "value": None,
        "low": None,
        "high": None,
        "n": 0,
        "method": "wilson",
        "reason": "no closed items",
    }
    assert mean_interval([3.0]).reason == "1 value(s): an interval needs at least 2"
    assert difference([1.0, 0.0], []).reason == "no closed decisions in the control group"
    assert ratio([1.0, 0.0], [0.0, 0.0]).reason == "the control group's mean reward is not above zero"


# --- off-policy estimates on a log whose truth is known ----------------------------------------------------

MEANS = {"x0": (0.1, 0.5, 0.2, 0.3), "x1": (0.6, 0.1, 0.1, 0.2), "x2": (0.2, 0.2, 0.7, 0.4)}
TARGET = {"x0": 1, "x1": 0, "x2": 3}  # deliberately not the best action in x2
TRUE_VALUE = float(np.mean([MEANS[x][TARGET[x]] for x in MEANS]))  # contexts are equally likely


def synthetic(rng: np.random.Generator, n: int) -> tuple[np.ndarray[Any, Any], ...]:
    """A uniform-random logging policy over 4 offers in 3 equally likely contexts, 0/1 rewards."""
    contexts = rng.integers(0, 3, n)
    actions = rng.integers(0, 4, n)
    means = np.array([MEANS[f"x{c}"][a] for c, a in zip(contexts, actions, strict=True)])
    rewards = (rng.random(n) < means).astype(np.float64)
    return contexts, actions, rewards


def test_the_intervals_cover_the_true_value_at_their_nominal_rate() -> None:
    rng = np.random.default_rng(7)
    off = {"x0": (0.3, 0.3, 0.3, 0.3), "x1": (0.3, 0.3, 0.3, 0.3), "x2": (0.3, 0.3, 0.3, 0.3)}  # a poor model
    covered = {"ips": 0, "snips": 0, "dr": 0}
    runs = 300
    for _ in range(runs):
        contexts, actions, rewards = synthetic(rng, 1500)
        names = [f"x{c}" for c in contexts]
        target = np.array([TARGET[x] for x in names])
        found, ess = estimates(
            rewards,
            np.full(len(rewards), 0.25),
            (actions == target).astype(np.float64),
            np.array([off[x][t] for x, t in zip(names, target, strict=True)]),
            np.array([off[x][a] for x, a in zip(names, actions, strict=True)]),
        )
        assert 300 < ess < 450  # a quarter of the log agrees with the target
        for name, est in found.items():
            assert est.low is not None and est.high is not None
            covered[name] += est.low <= TRUE_VALUE <= est.high
    for name, count in covered.items():
        assert 0.91 <= count / runs <= 0.99, (name, count / runs)


def test_the_estimates_through_the_decision_log_agree_with_the_truth() -> None:
    rng = np.random.default_rng(11)
    contexts, actions, rewards = synthetic(rng, 4000)
    # Weights make the greedy choice of estimate * weight the TARGET action in each context; the model is exact.
    weights = {x: [10.0 if i == TARGET[x] else 1.0 for i in range(4)] for x in MEANS}
    closed = [
        Closed(record(i, f"x{c}", shown=(OFFERS[a],), propensity=0.25, weights=weights[f"x{c}"]), {OFFERS[a]: float(r)})
        for i, (c, a, r) in enumerate(zip(contexts, actions, rewards, strict=True))
    ]
    exact = Table(MEANS)
    logged, skipped = usable(closed)
    assert len(logged) == 4000 and not skipped
    block = evaluate(logged, "policy", exact)
    for name in ("ips", "snips", "dr"):
        assert block[name]["low"] <= TRUE_VALUE <= block[name]["high"], (name, block[name])
    # DR with the right model is the tighter estimate: it only has to correct the model's noise.
    assert block["dr"]["high"] - block["dr"]["low"] < block["ips"]["high"] - block["ips"]["low"]
    baseline = evaluate(logged, "baseline", exact)
    truth = float(np.mean([MEANS[x][0] for x in MEANS]))
    assert baseline["snips"]["low"] <= truth <= baseline["snips"]["high"]
    assert baseline["matches"] == int((actions == 0).sum())


def test_greedy_breaks_ties_by_list_order_and_uses_weights() -> None:
    assert greedy([0.2, 0.4, 0.4], [1.0, 1.0, 1.0]) == 1
    assert greedy([0.2, 0.4, 0.1], [3.0, 1.0, 1.0]) == 0


def test_only_closed_policy_decisions_with_valid_propensities_are_used() -> None:
    closed = [
        Closed(record(1), {"a": 1.0}),
        Closed(record(2, group="control"), {"a": 1.0}),
        Closed(record(3, group="not_personalized"), {"a": 0.0}),
        Closed(record(4), {}),
        Closed(record(5, shown=()), {}),
        Closed(record(6, shown=("zz",)), {"zz": 1.0}),
        Closed(record(7, propensity=0.0), {"a": 1.0}),
        Closed(record(8, propensity=math.nan), {"a": 1.0}),
    ]
    logged, skipped = usable(closed)
    assert [entry.record.id for entry in logged] == ["d1"]
    assert dict(skipped) == {
        "control": 1,
        "not_personalized": 1,
        "open": 1,
        "no_items": 1,
        "unknown_offer": 1,
        "invalid_propensity": 2,
    }


def test_an_estimator_that_answers_for_the_wrong_actions_is_an_error() -> None:
    class Short:
        def estimate(self, shared: Features, actions: Sequence[Action]) -> list[float]:
            return [0.5]

    logged, _ = usable([Closed(record(1), {"a": 1.0}), Closed(record(2), {"a": 0.0})])
    with pytest.raises(ValueError, match="1 estimates for 4 candidates"):
        evaluate(logged, "policy", Short())


# --- the report shapes on a log whose counts are known -------------------------------------------------------


def small_log() -> list[Closed]:
    return [
        Closed(record(1, shown=("a", "b"), propensity=0.5, explored=True), {"a": 1.0, "b": 0.0}),
        Closed(record(2, shown=("b", "a"), propensity=0.8), {"b": 0.0}),  # its "a" is still open
        Closed(record(3, shown=("a",), propensity=0.8), {"a": 1.0}),
        Closed(record(4, group="control"), {"a": 0.0}),
        Closed(record(5, group="control"), {"a": 1.0}),
        Closed(record(6, group="not_personalized"), {"a": 1.0}),
    ]


def plain(value: object) -> bool:
    """JSON-ready: only plain types, no NaN or infinity, string keys."""
    if isinstance(value, dict):
        return all(isinstance(k, str) and plain(v) for k, v in value.items())
    if isinstance(value, list):
        return all(plain(v) for v in value)
    if isinstance(value, float):
        return math.isfinite(value)
    return value is None or type(value) in (str, int, bool)


def test_offer_stats_counts_impressions_rewards_groups_and_slots() -> None:
    stats = offer_stats(small_log(), "a")
    assert plain(stats) and json.dumps(stats, allow_nan=False)
    assert stats["eligible"] == 6
    total = stats["total"]
    assert (total["decisions"], total["impressions"], total["closed"], total["rewarded"], total["reward_sum"]) == (
        6,
        6,
        5,
        4,
        4.0,
    )
    assert total["rate"]["value"] == 0.8 and total["rate"]["method"] == "wilson"
    policy = stats["groups"]["policy"]
    assert (policy["impressions"], policy["closed"], policy["rewarded"]) == (3, 2, 2)
    assert policy["exploration"] == {"slot0": 2, "explored": 1, "share": 0.5}
    assert stats["groups"]["control"]["exploration"]["explored"] == 0
    assert [(s["slot"], s["impressions"], s["closed"], s["rewarded"]) for s in stats["slots"]] == [
        (0, 5, 5, 4),
        (1, 1, 0, 0),
    ]
    assert stats["slots"][1]["rate"]["reason"] == "no closed items"
    uplift = stats["uplift"]
    assert uplift["unit"] == "impression" and uplift["absolute"]["value"] == 0.5
    assert uplift["relative"]["value"] == 1.0  # 2/2 against 1/2


def test_offer_stats_of_an_unknown_offer_is_empty_not_an_error() -> None:
    stats = offer_stats(small_log(), "nope")
    assert stats["eligible"] == 0 and stats["total"]["impressions"] == 0 and stats["slots"] == []
    assert stats["uplift"]["absolute"]["value"] is None and stats["uplift"]["absolute"]["reason"]
    assert plain(stats)


def test_the_decisions_report_counts_everything_and_estimates_only_from_the_policy_group() -> None:
    report = decisions_report(small_log(), Table({"x0": (0.9, 0.1, 0.1, 0.1)}))
    assert plain(report) and json.dumps(report, allow_nan=False)
    assert (report["first_at"], report["last_at"]) == (1_700_000_000_001, 1_700_000_000_006)
    total = report["total"]
    assert (total["decisions"], total["impressions"], total["closed"], total["rewarded"]) == (6, 8, 7, 4)
    assert total["per_decision"]["n"] == 5  # decision 2 has an open item
    assert report["groups"]["not_personalized"]["decisions"] == 1
    assert report["groups"]["policy"]["per_decision"]["value"] == 1.0
    assert report["uplift"]["unit"] == "decision" and report["uplift"]["absolute"]["value"] == 0.5
    off = report["off_policy"]
    assert off["logged"] == {"used": 3, "skipped": {"control": 2, "not_personalized": 1}}
    # Both targets pick "a" (the model's best; the baseline's first): decisions 1 and 3 match, 2 does not.
    for target in ("policy", "baseline"):
        block = off[target]
        assert (block["n"], block["matches"]) == (3, 2)
        assert block["ips"]["value"] == pytest.approx((1 / 0.5 + 1 / 0.8) / 3, rel=1e-3)
        assert block["snips"]["value"] == 1.0


def test_without_a_learner_the_policy_estimate_says_why() -> None:
    off = decisions_report(small_log(), None)["off_policy"]
    assert off["policy"]["ips"]["value"] is None and off["policy"]["ips"]["reason"] == "no learner to evaluate"
    assert off["baseline"]["snips"]["value"] == 1.0
    assert off["baseline"]["dr"]["reason"] == "no reward model: DR needs the learner's estimates"


def test_an_empty_log_gives_a_report_of_reasons() -> None:
    report = decisions_report([], None)
    assert plain(report)
    assert report["total"]["decisions"] == 0 and report["first_at"] is None
    assert report["uplift"]["absolute"]["reason"] == "no closed decisions in the policy group"
    assert report["off_policy"]["baseline"]["ips"]["reason"] == "0 usable decision(s): an estimate needs at least 2"

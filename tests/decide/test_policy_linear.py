"""The linear learners' math: recursive least squares equals batch ridge, estimates converge, bounded memory,
exploration rules give the probabilities they claim."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from kairos.decide.policy import LinUCBPolicy, make_policy
from kairos.decide.policy._explore import epsilon_rule, igw_rule
from kairos.decide.policy._ridge import Ridge
from kairos.decide.records import Action, Features


def test_recursive_updates_equal_the_batch_ridge_solution_in_any_order() -> None:
    rng = np.random.default_rng(0)
    dim, n, l2 = 40, 300, 2.0
    rows = [rng.choice(dim, size=5, replace=False) for _ in range(n)]
    values = [rng.normal(size=5) for _ in range(n)]
    rewards = rng.normal(size=n)
    design = np.zeros((n, dim))
    for i, (slots, x) in enumerate(zip(rows, values, strict=True)):
        design[i, slots] = x
    expected = np.linalg.solve(l2 * np.eye(dim) + design.T @ design, design.T @ rewards)
    for order in (range(n), rng.permutation(n)):
        model = Ridge(l2=l2, max_dim=dim)
        model.reserve(dim)
        for i in order:
            model.update(rows[i].astype(np.int64), values[i], float(rewards[i]))
        np.testing.assert_allclose(model.theta[:dim], expected, atol=1e-9)
        np.testing.assert_allclose(model.ainv, np.linalg.inv(l2 * np.eye(dim) + design.T @ design), atol=1e-9)


def test_the_estimate_of_a_stationary_offer_converges_to_its_mean() -> None:
    policy = make_policy("linucb")
    rng = random.Random(1)
    offer = Action("a", {"offer": {"id=a": 1.0, "category=x": 1.0}})
    shared: Features = {"context": {"daypart=night": 1.0}}
    for _ in range(5000):
        policy.learn(shared, offer, float(rng.random() < 0.3), 1.0)
    assert policy.estimate(shared, [offer])[0] == pytest.approx(0.3, abs=0.02)
    # Revenue, not clicks: the same model learns any real-valued reward.
    revenue = make_policy("linucb")
    for _ in range(2000):
        revenue.learn(shared, offer, rng.choice((0.0, 0.0, 0.0, 120.0)), 1.0)
    assert revenue.estimate(shared, [offer])[0] == pytest.approx(30.0, rel=0.1)


def test_explain_names_the_interactions_and_they_sum_to_the_estimate() -> None:
    policy = make_policy("linucb")
    rng = random.Random(2)
    shoes = Action("s", {"offer": {"id=s": 1.0, "category=shoes": 1.0}})
    hats = Action("h", {"offer": {"id=h": 1.0, "category=hats": 1.0}})
    for _ in range(3000):
        daypart = rng.choice(("evening", "morning"))
        shared: Features = {"context": {f"daypart={daypart}": 1.0}}
        action = rng.choice((shoes, hats))
        rate = 0.6 if (daypart == "evening") == (action is shoes) else 0.1
        policy.learn(shared, action, float(rng.random() < rate), 0.5)
    evening: Features = {"context": {"daypart=evening": 1.0}}
    everything = policy.explain(evening, shoes, top=100)
    assert sum(value for _, value in everything) == pytest.approx(policy.estimate(evening, [shoes])[0])
    names = [name for name, _ in everything]
    assert "context:daypart=evening x offer:category=shoes" in names and "bias" in names
    assert abs(everything[0][1]) >= abs(everything[-1][1])
    assert len(policy.explain(evening, shoes)) == 3


def test_memory_is_bounded_by_the_caps_and_hashing_keeps_estimates_finite() -> None:
    policy = LinUCBPolicy(max_features=16, max_dim=32)
    rng = random.Random(3)
    for i in range(500):
        shared: Features = {"profile": {f"trait{i}": 1.0, f"other{i % 7}": 0.5}}
        action = Action(f"o{i}", {"offer": {f"id=o{i}": 1.0}})
        policy.learn(shared, action, float(rng.random() < 0.2), 1.0)
    assert len(policy.index.shared.names) <= 16 and len(policy.index.offer.names) <= 16
    assert policy.index.dim == 32 and policy.model.ainv.shape == (32, 32)
    estimates = policy.estimate({"profile": {"trait999": 1.0}}, [Action("new", {"offer": {"id=new": 1.0}})])
    assert all(math.isfinite(e) for e in estimates)


def test_ranking_never_adds_features_to_the_model() -> None:
    policy = LinUCBPolicy()
    policy.rank({"context": {"never=seen": 1.0}}, [Action("x", {"offer": {"id=x": 1.0}})], 1, rng=random.Random(0))
    assert policy.index.dim == 0 and len(policy.index.shared.names) == 1


def test_an_untried_offer_is_explored_first_by_linucb() -> None:
    policy = make_policy("linucb", alpha=1.0, l2=1.0, epsilon=0.01)
    known = Action("known", {"offer": {"id=known": 1.0}})
    rng = random.Random(4)
    for _ in range(200):
        policy.learn({}, known, float(rng.random() < 0.5), 1.0)
    fresh = Action("fresh", {"offer": {"id=fresh": 1.0}})
    ranked = policy.rank({}, [known, fresh], 1, rng=random.Random(0))
    assert ranked.order == (1,) and not ranked.explored[0]  # optimism: its upper bound is higher


def test_exploration_rules_are_distributions_with_a_floor() -> None:
    scores = np.array([0.1, 0.5, 0.3, 0.5])
    for rule in (epsilon_rule(0.2), igw_rule(gamma=50.0, floor=0.05)):
        p = rule(scores, 1)
        assert p.sum() == pytest.approx(1.0) and p.min() > 0 and int(np.argmax(p)) == 1
    np.testing.assert_allclose(epsilon_rule(0.2)(scores, 1), [0.05, 0.85, 0.05, 0.05])

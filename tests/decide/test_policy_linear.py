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


def _dense(policy: LinUCBPolicy, shared: Features, action: Action) -> tuple[float, float]:
    """Mean and ``x' ainv x`` (priors of pairs never learned included) of one action, pair by pair."""
    shared_ids, shared_values, _ = policy.index.side(shared, shared=True, add=False)
    offer_ids, offer_values, _ = policy.index.side(action.features, shared=False, add=False)
    rows, cols = policy.index.table.shape
    slots, values, prior = [], [], 0.0
    for i, xs in zip(shared_ids, shared_values, strict=True):
        for j, xo in zip(offer_ids, offer_values, strict=True):
            slot = int(policy.index.table[i, j]) if 0 <= i < rows and 0 <= j < cols else -1
            if slot < 0:
                prior += (xs * xo) ** 2 / policy.l2
            else:
                slots.append(slot)
                values.append(xs * xo)
    x = np.array(values)
    at = np.array(slots, dtype=np.int64)
    mean = float(policy.model.theta[at] @ x) if slots else 0.0
    variance = float(x @ policy.model.ainv[np.ix_(at, at)] @ x) if slots else 0.0
    return mean, variance + prior


def test_a_decision_s_scoring_equals_the_model_pair_by_pair() -> None:
    """``LinearScoring`` sums what it remembers per shared feature and per pair of them: the same means,
    variances, estimates without namespaces and explanations as the model's design vectors, for features and
    offers never seen, repeated ids (hashed past a small vocabulary) and numbers; and nothing stale once the
    model learned again."""
    policy = LinUCBPolicy(max_features=24, max_dim=200)
    rng = random.Random(7)
    offers = [Action(f"o{i}", {"offer": {f"id=o{i}": 1.0, f"kind=k{i % 3}": 1.0, "price": 0.5 * i}}) for i in range(6)]

    def shared_of(r: random.Random) -> Features:
        return {
            "context": {f"daypart=d{r.randrange(4)}": 1.0, f"channel=c{r.randrange(3)}": 1.0},
            "profile": {"orders": r.choice((0.7, 1.4, 2.1)), f"plan=p{r.randrange(40)}": 1.0},
            "segments": {f"s{r.randrange(5)}": 1.0},
        }

    for _ in range(400):
        policy.learn(shared_of(rng), rng.choice(offers), float(rng.random() < 0.3), 0.5)
    assert len(policy.index.shared.names) == 24  # full: later features share ids by hash
    actions = [*offers, Action("new", {"offer": {"id=new": 1.0, "kind=k9": 1.0}})]
    for _ in range(2):
        for _ in range(30):
            shared = shared_of(rng)
            scoring = policy.scoring(shared, actions)
            dense = [_dense(policy, shared, a) for a in actions]
            np.testing.assert_allclose(scoring.estimate(), [m for m, _ in dense], rtol=1e-9, atol=1e-12)
            np.testing.assert_allclose(scoring.variance(), [v for _, v in dense], rtol=1e-9, atol=1e-12)
            for drop in (("context",), ("profile", "segments")):
                alone = {ns: f for ns, f in shared.items() if ns not in drop}
                expected = [_dense(policy, alone, a)[0] for a in actions]
                np.testing.assert_allclose(scoring.estimate(drop), expected, rtol=1e-9, atol=1e-12)
            for index in (0, len(actions) - 1):
                parts = scoring.explain(index, top=100)
                assert sum(v for _, v in parts) == pytest.approx(dense[index][0], abs=1e-12)
        for _ in range(200):  # the model moves on: what was remembered must not be served
            policy.learn(shared_of(rng), rng.choice(offers), float(rng.random() < 0.6), 0.5)


def test_leaving_out_a_cell_namespace_asks_the_model_again() -> None:
    """A ``cells`` feature joins several namespaces' values: without one of them it is another cell."""
    policy = LinUCBPolicy(cells=("context", "segments"))
    rng = random.Random(8)
    offers = [Action(f"o{i}", {"offer": {f"id=o{i}": 1.0}}) for i in range(3)]
    for _ in range(300):
        seen: Features = {"context": {f"daypart=d{rng.randrange(3)}": 1.0}, "segments": {f"s={rng.randrange(2)}": 1.0}}
        policy.learn(seen, rng.choice(offers), float(rng.random() < 0.4), 0.5)
    shared: Features = {"context": {"daypart=d1": 1.0}, "segments": {"s=0": 1.0}, "profile": {"orders": 1.0}}
    scoring = policy.scoring(shared, offers)
    for drop in (("context",), ("profile",)):
        alone = {ns: f for ns, f in shared.items() if ns not in drop}
        assert scoring.estimate(drop) == pytest.approx(policy.estimate(alone, offers), abs=1e-12)
    assert scoring.estimate(("context",)) != scoring.estimate()


def test_an_explanation_ranks_only_the_pairs_the_model_learned() -> None:
    """Pairs never learned (unseen features) carry nothing: they must not take the place of learned ones,
    even when the learned ones weigh nothing yet (only rewards of 0 so far)."""
    policy = LinUCBPolicy()
    offer = Action("a", {"offer": {"id=a": 1.0}})
    for _ in range(5):
        policy.learn({"segments": {"seen": 1.0}}, offer, 0.0, 1.0)
    shared: Features = {"context": {"new=1": 1.0, "new=2": 1.0}, "segments": {"seen": 1.0}}
    names = [name for name, _ in policy.explain(shared, offer, top=3)]
    assert len(names) == 3 and all("new=" not in name for name in names)
    scoring = policy.scoring(shared, [offer, offer])
    assert scoring.explain_many([1, 0]) == [scoring.explain(1), scoring.explain(0)]


def test_a_new_snapshot_is_warmed_with_what_the_previous_one_saw() -> None:
    """``warm``: a snapshot replacing another works out, ahead of the decisions, what the previous one
    remembered (the lists of candidates and sets of shared features it saw last); answers are unchanged."""
    from kairos.decide.policy import load_policy

    policy = LinUCBPolicy()
    rng = random.Random(9)
    offers = [Action(f"o{i}", {"offer": {f"id=o{i}": 1.0, f"kind=k{i % 2}": 1.0}}) for i in range(4)]
    situations: list[Features] = [
        {"context": {f"daypart=d{d}": 1.0}, "segments": {f"s{s}": 1.0}} for d in range(3) for s in range(2)
    ]
    for _ in range(300):
        policy.learn(rng.choice(situations), rng.choice(offers), float(rng.random() < 0.3), 0.5)
    for shared in situations:
        policy.scoring(shared, offers).rank(1, rng=random.Random(0))
    newer, cold = load_policy(policy.dumps()), load_policy(policy.dumps())
    newer.learn(situations[0], offers[0], 1.0, 0.5)  # a newer snapshot: one more reward
    cold.learn(situations[0], offers[0], 1.0, 0.5)
    newer.warm(policy)
    assert isinstance(newer, LinUCBPolicy) and isinstance(cold, LinUCBPolicy)
    ((_, memo),) = newer._memos.values()
    assert len(memo.shapes) == len(situations)
    for shared in situations:
        warmed, fresh = newer.scoring(shared, offers), cold.scoring(shared, offers)
        assert warmed.estimate() == fresh.estimate()
        assert warmed.variance().tolist() == fresh.variance().tolist()
    assert len(memo.shapes) == len(situations)  # nothing new was worked out on the decisions' path


def test_estimates_alone_gather_no_pairs_and_a_memo_counts_what_it_holds(monkeypatch: pytest.MonkeyPatch) -> None:
    """Off-line evaluation and ``channel: "auto"`` only ask estimates: the pairs of ``ainv`` (the variance's,
    most of a cold memo's cost) are gathered only when a ranking asks the variance. And the floats a memo
    counts (its bound on memory) are those it holds, also after its shapes were dropped for new ones."""
    from kairos.decide.policy import _scoring

    monkeypatch.setattr(_scoring, "_SHAPES", 3)
    policy = LinUCBPolicy()
    rng = random.Random(3)
    offers = [Action(f"o{i}", {"offer": {f"id=o{i}": 1.0, f"kind=k{i % 2}": 1.0}}) for i in range(4)]
    situations: list[Features] = [
        {"context": {f"daypart=d{d}": 1.0}, "segments": {f"s{s}": 1.0}} for d in range(4) for s in range(2)
    ]
    for _ in range(300):
        policy.learn(rng.choice(situations), rng.choice(offers), float(rng.random() < 0.3), 0.5)
    scoring = policy.scoring(situations[0], offers)
    scoring.estimate()
    scoring.estimate(("segments",))
    memo = scoring.memo
    assert memo is not None and memo.pairs == {}
    scoring.rank(1, rng=random.Random(0))
    assert memo.pairs
    for shared in situations:  # more sets of features than the memo keeps shapes for
        policy.scoring(shared, offers).rank(1, rng=random.Random(0))
    assert len(memo.shapes) <= 3
    held = (
        sum(memo.slots[i].size * 2 + memo.parts[i].size * 2 for i in memo.parts)
        + sum(v.size for v in memo.pairs.values())
        + sum(shape.floats for shape in memo.shapes.values())
    )
    assert memo.size == held == policy._memo_floats


def test_explanations_follow_the_feature_values_and_names() -> None:
    """A decision's explanations are remembered per set of shared feature values and names: a number that
    changes, or another feature that shares an id (hashed past a full vocabulary), is explained as itself."""
    from kairos.decide.policy._features import stable_hash

    policy = LinUCBPolicy(max_features=4)
    offer = Action("a", {"offer": {"id=a": 1.0}})
    rng = random.Random(5)
    for _ in range(200):
        shared: Features = {"profile": {"orders": rng.choice((0.5, 2.0)), f"f{rng.randrange(5)}": 1.0}}
        policy.learn(shared, offer, float(rng.random() < 0.4), 0.5)
    assert len(policy.index.shared.names) == 4  # full: new features share ids by hash
    same = [f"x{i}" for i in range(200) if (1 + stable_hash(f"profile\x00x{i}") % 3) == 1][:2]
    assert len(same) == 2
    for name in same:
        for orders in (0.5, 2.0, 0.5):
            shared = {"profile": {"orders": orders, name: 1.0}}
            fresh = LinUCBPolicy(max_features=4)
            fresh._restore(policy._state())
            assert policy.scoring(shared, [offer]).explain(0, top=10) == fresh.explain(shared, offer, top=10)
    assert any(name in n for n, _ in policy.scoring({"profile": {same[1]: 1.0}}, [offer]).explain(0, top=10))


def test_a_replaced_policy_is_freed_without_the_cyclic_collector() -> None:
    """Servers freeze their heap and rarely run full collections (kairos._gc): a policy a newer snapshot
    replaced must be freed by reference counting alone, with its memos (a memo and its shapes hold no cycle
    back to the policy, which holds megabytes of model)."""
    import gc
    import weakref

    policy = LinUCBPolicy()
    offers = [Action(f"o{i}", {"offer": {f"id=o{i}": 1.0}}) for i in range(3)]
    shared: Features = {"context": {"daypart=evening": 1.0}}
    for i in range(50):
        policy.learn(shared, offers[i % 3], float(i % 4 == 0), 0.5)
    scoring = policy.scoring(shared, offers)
    scoring.rank(2, rng=random.Random(0))
    assert scoring.explain(0, 3)  # explanations read the memo's thetas
    gone = weakref.ref(policy)
    memo = weakref.ref(next(iter(policy._memos.values()))[1])
    gc.disable()
    try:
        del policy, scoring
        assert gone() is None and memo() is None
    finally:
        gc.enable()

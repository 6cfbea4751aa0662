"""Every registered policy passes the same suite: the contract of ``rank``, seeded determinism, snapshots,
features and offers that come and go, delayed rewards and hostile values (``kairos.decide.policy``)."""

from __future__ import annotations

import math
import random
from collections import Counter
from typing import Any

import msgspec
import pytest

from kairos.decide.policy import DEFAULT_POLICY, POLICIES, Policy, PolicySnapshotError, load_policy, make_policy
from kairos.decide.records import Action, Features, Ranked
from kairos.errors import KairosError

NAMES = sorted(POLICIES)
LEARNERS = [name for name in NAMES if name not in ("priority", "uniform")]
DAYPARTS = ("night", "morning", "afternoon", "evening")


def offer(key: str, category: str, tier: str = "mid") -> Action:
    return Action(key, {"offer": {f"id={key}": 1.0, f"category={category}": 1.0, f"price_tier={tier}": 1.0}})


OFFERS = [offer("boots", "shoes"), offer("tee", "tops", "low"), offer("coat", "outer", "high"), offer("cap", "hats")]


def situation(rng: random.Random) -> Features:
    return {
        "context": {f"daypart={rng.choice(DAYPARTS)}": 1.0, f"channel={rng.choice(('web', 'app'))}": 1.0},
        "segments": {rng.choice(("new", "loyal")): 1.0},
        "profile": {"orders_30d": rng.choice((0.0, 0.7, 1.4))},
    }


def click_rate(shared: Features, index: int) -> float:
    """The simple world: the best offer depends on the daypart; a learner should find it."""
    daypart = next(k for k in shared["context"] if k.startswith("daypart=")).split("=")[1]
    best = DAYPARTS.index(daypart) % len(OFFERS)
    return 0.5 if index == best else 0.1


def drive(policy: Policy, rounds: int, seed: int, *, delay: int = 0, shuffle: bool = False) -> list[Ranked]:
    """Decide ``rounds`` times and deliver each reward ``delay`` rounds later (optionally out of order)."""
    rng = random.Random(seed)
    pending: list[tuple[Features, Action, float, float]] = []
    rankings = []
    for round_ in range(rounds):
        shared = situation(rng)
        ranked = policy.rank(shared, OFFERS, 2, rng=random.Random(seed * 100_003 + round_))
        rankings.append(ranked)
        chosen = ranked.order[0]
        reward = float(rng.random() < click_rate(shared, chosen))
        pending.append((shared, OFFERS[chosen], reward, ranked.propensities[0]))
        if len(pending) > delay:
            if shuffle:
                rng.shuffle(pending)
            policy.learn(*pending.pop(0))
    for item in pending:
        policy.learn(*item)
    return rankings


def test_registry() -> None:
    assert DEFAULT_POLICY in POLICIES
    assert {"priority", "uniform", "epsilon_greedy"} <= set(POLICIES)
    assert all(POLICIES[name].name == name for name in POLICIES)
    with pytest.raises(ValueError, match="unknown policy"):
        make_policy("nope")
    with pytest.raises(ValueError):
        make_policy(DEFAULT_POLICY, no_such_option=1)


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_and_stream_give_the_same_rankings_and_bytes(name: str) -> None:
    one, two = make_policy(name, seed=3), make_policy(name, seed=3)
    assert drive(one, 300, seed=1, delay=20) == drive(two, 300, seed=1, delay=20)
    assert one.dumps() == two.dumps()
    assert one.learned == two.learned == 300


@pytest.mark.parametrize("name", NAMES)
def test_snapshot_round_trip_ranks_estimates_and_learns_identically(name: str) -> None:
    policy = make_policy(name, seed=5)
    drive(policy, 200, seed=2, delay=10)
    loaded = load_policy(policy.dumps())
    assert type(loaded) is type(policy) and loaded.learned == policy.learned
    assert loaded.dumps() == policy.dumps()
    shared = situation(random.Random(9))
    assert loaded.estimate(shared, OFFERS) == policy.estimate(shared, OFFERS)
    assert loaded.explain(shared, OFFERS[0]) == policy.explain(shared, OFFERS[0])
    assert drive(loaded, 150, seed=4) == drive(policy, 150, seed=4)
    assert loaded.dumps() == policy.dumps()


@pytest.mark.parametrize("name", NAMES)
def test_features_and_offers_that_appear_or_vanish(name: str) -> None:
    policy = make_policy(name)
    drive(policy, 100, seed=6)
    newcomer = Action("scarf", {"offer": {"id=scarf": 1.0, "category=accessories": 1.0, "material=wool": 1.0}})
    shared: Features = {"context": {"daypart=night": 1.0, "device=tablet": 1.0}, "moments": {"cart_abandoned": 1.0}}
    actions = [OFFERS[2], newcomer]  # three offers vanished, one appeared, new context features
    estimates = policy.estimate(shared, actions)
    assert len(estimates) == 2 and all(math.isfinite(e) for e in estimates)
    ranked = policy.rank(shared, actions, 5, rng=random.Random(0))
    assert sorted(ranked.order) == [0, 1]
    policy.learn(shared, newcomer, 1.0, ranked.propensities[0])
    policy.learn({}, Action("bare", {}), 0.0, 1.0)  # no features at all
    assert all(math.isfinite(e) for e in policy.estimate({}, [*OFFERS, newcomer, Action("bare", {})]))
    assert policy.learned == 102


@pytest.mark.parametrize("name", LEARNERS)
@pytest.mark.parametrize("shuffle", [False, True])
def test_delayed_rewards_in_any_order_still_find_the_best_offer(name: str, shuffle: bool) -> None:
    policy = make_policy(name, seed=1)
    drive(policy, 3000, seed=7, delay=300, shuffle=shuffle)
    for daypart in DAYPARTS:
        shared: Features = {"context": {f"daypart={daypart}": 1.0, "channel=web": 1.0}, "segments": {"new": 1.0}}
        estimates = policy.estimate(shared, OFFERS)
        best = max(range(len(OFFERS)), key=lambda i: click_rate(shared, i))
        assert max(range(len(OFFERS)), key=estimates.__getitem__) == best, (daypart, estimates)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("limit", [0, 1, 3, 10])
def test_rank_contract(name: str, limit: int) -> None:
    policy = make_policy(name)
    drive(policy, 150, seed=8)
    rng = random.Random(1)
    for _ in range(50):
        ranked = policy.rank(situation(rng), OFFERS, limit, rng=rng)
        n = min(limit, len(OFFERS))
        assert len(ranked.order) == len(ranked.propensities) == len(ranked.explored) == len(ranked.estimates) == n
        assert len(set(ranked.order)) == n and all(0 <= i < len(OFFERS) for i in ranked.order)
        assert all(0.0 < p <= 1.0 for p in ranked.propensities)
        assert all(not explored for p, explored in zip(ranked.propensities, ranked.explored, strict=True) if p == 1)
        assert all(math.isfinite(e) for e in ranked.estimates)
    assert policy.rank(situation(rng), [], 3, rng=rng) == Ranked((), (), (), ())


@pytest.mark.parametrize("name", NAMES)
def test_propensities_match_the_frequencies_they_claim(name: str) -> None:
    policy = make_policy(name)
    drive(policy, 200, seed=9)
    before = policy.dumps()
    shared = situation(random.Random(2))
    draws = 4000
    first: Counter[int] = Counter()
    claimed: dict[int, set[float]] = {}
    second: Counter[int] = Counter()
    second_claimed: dict[int, set[float]] = {}
    greedy: set[int] = set()
    rankings = [policy.rank(shared, OFFERS, 2, rng=random.Random(seed)) for seed in range(draws)]
    top = Counter(r.order[0] for r in rankings).most_common(1)[0][0]
    for ranked in rankings:
        first[ranked.order[0]] += 1
        claimed.setdefault(ranked.order[0], set()).add(ranked.propensities[0])
        if not ranked.explored[0]:
            greedy.add(ranked.order[0])
        if ranked.order[0] == top:
            second[ranked.order[1]] += 1
            second_claimed.setdefault(ranked.order[1], set()).add(ranked.propensities[1])
    assert policy.dumps() == before  # ranking never changes the model
    assert len(greedy) <= 1  # for a fixed model the greedy pick is one action
    for counts, claims, total in ((first, claimed, draws), (second, second_claimed, first[top])):
        claimed_total = sum(next(iter(c)) for c in claims.values())  # over the actions drawn at least once
        assert claimed_total <= 1.0 + 1e-9
        for index, propensities in claims.items():
            assert len(propensities) == 1  # the same model and context always claim the same probability
            p = next(iter(propensities))
            tolerance = 4 * math.sqrt(p * (1 - p) / total) + 1e-9
            assert abs(counts[index] / total - p) <= tolerance, (index, counts[index] / total, p)


@pytest.mark.parametrize("name", NAMES)
def test_a_decision_s_scoring_answers_as_the_policy_does(name: str) -> None:
    """``Policy.scoring``: what the decision path asks (ranking, estimates without namespaces, explanations),
    the same as the policy's own methods, whatever it remembers between decisions."""
    policy = make_policy(name, seed=1)
    drive(policy, 300, seed=12)
    rng = random.Random(3)
    weights = [1.0, 2.0, 0.5, 1.0]
    for round_ in range(40):
        shared = {**situation(rng), "stated": {f"size={rng.choice('SML')}": 1.0}}
        actions = OFFERS if round_ % 2 else OFFERS[1:]
        scoring = policy.scoring(shared, actions)
        w = weights[: len(actions)]
        assert scoring.rank(2, rng=random.Random(round_), weights=w) == policy.rank(
            shared, actions, 2, rng=random.Random(round_), weights=w
        )
        assert scoring.estimate() == pytest.approx(policy.estimate(shared, actions), abs=1e-12)
        for drop in (("context", "profile", "segments", "moments", "request"), ("stated",)):
            alone = {ns: f for ns, f in shared.items() if ns not in drop}
            assert scoring.estimate(drop) == pytest.approx(policy.estimate(alone, actions), abs=1e-12)
        for index, action in enumerate(actions):
            mine, theirs = scoring.explain(index), policy.explain(shared, action)
            assert [n for n, _ in mine] == [n for n, _ in theirs]
            assert [v for _, v in mine] == pytest.approx([v for _, v in theirs], abs=1e-12)
        shown = [len(actions) - 1, 0]
        assert scoring.explain_many(shown) == [scoring.explain(i) for i in shown]


@pytest.mark.parametrize("name", NAMES)
def test_greedy_order_respects_weights(name: str) -> None:
    policy = make_policy(name)
    rng = random.Random(0)
    for _ in range(100):  # every offer equally good: the weights must decide
        for action in OFFERS:
            policy.learn(situation(rng), action, 0.3, 0.25)
    shared = situation(rng)
    weights = [1.0, 1.0, 5.0, 1.0]
    for seed in range(200):
        ranked = policy.rank(shared, OFFERS, 1, rng=random.Random(seed), weights=weights)
        if not ranked.explored[0]:
            assert ranked.order[0] == 2
    with pytest.raises(ValueError):
        policy.rank(shared, OFFERS, 1, rng=rng, weights=[1.0])


@pytest.mark.parametrize("name", NAMES)
def test_hostile_values_never_crash_nor_give_non_finite_estimates(name: str) -> None:
    policy = make_policy(name)
    values: dict[str, Any] = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf, "huge": 1e308, "tiny": -1e308}
    hostile: dict[str, Any] = {
        "context": {"daypart=night": 1.0, **values, "text": "not a number", "none": None},
        "profile": {},
        "segments": {"caf\u00e9 \u2603": 1.0, "nul\x00byte": 1.0, "lone\ud800surrogate": 1.0, "": 1.0},
        "offer": {"id=boots": 1.0},  # an offer feature in the shared features: ignored on that side
        "unknown_namespace": {"x": 2.0},
        "broken": None,
    }
    odd_offer = Action("odd\x00\u00e9", {"offer": {"id=odd\x00\u00e9": 1.0, **values}, "extra": {"k": 1.0}})
    actions = [*OFFERS, odd_offer]
    for reward in (1.0, 0.0, math.nan, math.inf, 1e6, -3.0):
        for action in actions:
            policy.learn(hostile, action, reward, 0.2)
    estimates = policy.estimate(hostile, actions)
    assert all(math.isfinite(e) for e in estimates)
    ranked = policy.rank(hostile, actions, 3, rng=random.Random(0), weights=[1.0, math.nan, math.inf, -1.0, 2.0])
    assert len(ranked.order) == 3 and all(math.isfinite(e) for e in ranked.estimates)
    assert all(math.isfinite(value) for _, value in policy.explain(hostile, odd_offer, top=50))
    loaded = load_policy(policy.dumps())
    assert loaded.estimate(hostile, actions) == estimates


@pytest.mark.parametrize("name", NAMES)
def test_a_corrupt_or_foreign_blob_raises_a_clear_error(name: str) -> None:
    policy = make_policy(name)
    drive(policy, 50, seed=10)
    blob = policy.dumps()
    envelope = msgspec.msgpack.decode(blob)
    tampered_name = msgspec.msgpack.encode({**envelope, "name": "no_such_policy"})
    tampered_version = msgspec.msgpack.encode({**envelope, "version": 99})
    tampered_config = msgspec.msgpack.encode({**envelope, "config": {"bogus": 1}})
    tampered_state = msgspec.msgpack.encode({**envelope, "state": {"junk": [1, 2]}})
    for bad in (b"", b"\x00\x01garbage", blob[: len(blob) // 2], b'{"json": 1}', msgspec.msgpack.encode([1, 2])):
        with pytest.raises(PolicySnapshotError, match="snapshot"):
            load_policy(bad)
    for bad in (tampered_name, tampered_version, tampered_config):
        with pytest.raises(PolicySnapshotError):
            load_policy(bad)
    if name in LEARNERS:
        with pytest.raises(PolicySnapshotError):
            load_policy(tampered_state)
    assert issubclass(PolicySnapshotError, KairosError) and not PolicySnapshotError.transient


@pytest.mark.parametrize("name", NAMES)
def test_learning_a_batch_equals_learning_one_by_one(name: str) -> None:
    rng = random.Random(11)
    stream = []
    for _ in range(300):
        shared = situation(rng)
        index = rng.randrange(len(OFFERS))
        stream.append((shared, OFFERS[index], float(rng.random() < click_rate(shared, index)), 0.5))
    stream.append((situation(rng), OFFERS[0], float("nan"), 0.5))  # dropped by both
    one, batch = make_policy(name, seed=2), make_policy(name, seed=2)
    for item in stream:
        one.learn(*item)
    batch.learn_many(stream)
    assert batch.learned == one.learned
    probe = random.Random(5)
    for _ in range(20):
        shared = situation(probe)
        assert batch.estimate(shared, OFFERS) == pytest.approx(one.estimate(shared, OFFERS), abs=1e-9)


@pytest.mark.parametrize("name", NAMES)
def test_a_default_relabelled_later_equals_the_real_reward_learned_at_once(name: str) -> None:
    rng = random.Random(13)
    stream = []
    for _ in range(200):
        shared = situation(rng)
        index = rng.randrange(len(OFFERS))
        stream.append((shared, OFFERS[index], float(rng.random() < click_rate(shared, index))))
    direct, relabelled = make_policy(name, seed=4), make_policy(name, seed=4)
    for shared, action, reward in stream:
        direct.learn(shared, action, reward, 0.5)
    relabelled.learn_many([(shared, action, 0.0, 0.5) for shared, action, _ in stream])  # shown: the default
    relabelled.relabel([(shared, action, reward) for shared, action, reward in stream if reward])  # clicks came
    probe = random.Random(6)
    for _ in range(20):
        shared = situation(probe)
        assert relabelled.estimate(shared, OFFERS) == pytest.approx(direct.estimate(shared, OFFERS), abs=1e-9)

"""Learners in the simulated world (``bench/world.py``): click rate against uniform, best fixed offer and oracle.

Each learner is driven directly for ``--rounds`` decisions (one slot), every reward delivered after a random
delay of 0 to ``--max-delay`` rounds, for each world variant and each seed. The situations, clicks and delays
come from generators seeded by the seed alone, so every learner faces the same traffic. A click rate is the
mean click *probability* of the offers shown (the expectation of the clicks, with less noise than counting
them); the learners learn from sampled 0/1 clicks. Reported as a ratio to the oracle (the best offer of each
situation), the median over seeds with the min-max spread.

Speed, on the trained policy of the first seed: ``rank`` p50/p99 at 20 and 50 offers and learn throughput,
each beside the ``priority`` policy measured in the same run (a ratio to it, so a slow patch of the shared
machine shows in both).

    .venv/bin/python bench/learners.py --rounds 100000 --seeds 3
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
# One BLAS thread: the learners' rank-1 updates are too small to gain from threads, and the machine is shared.
for _variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")

import numpy as np  # noqa: E402

from _vw import VWPolicy, available  # noqa: E402
from kairos.decide.policy import Policy, make_policy  # noqa: E402
from kairos.decide.records import Features  # noqa: E402
from world import VARIANTS, Variant, World  # noqa: E402

LEARNERS = ("linucb", "squarecb", "epsilon_greedy")


@dataclass(frozen=True, slots=True)
class Run:
    rate: float  # mean click probability of what was shown
    oracle: float
    uniform: float
    best_fixed: float
    learn_seconds: float
    learned: int


def build(name: str, seed: int) -> Policy:
    return VWPolicy(seed=seed) if name == "vw_squarecb" else make_policy(name, seed=seed)


def drive(world: World, policy: Policy, rounds: int, seed: int, max_delay: int) -> Run:
    situations, clicks, delays = random.Random(seed), random.Random(seed + 1), random.Random(seed + 2)
    decisions = random.Random(seed + 3)
    actions = world.actions
    best = world.offers.index(world.best_fixed_offer())
    due: dict[int, list[tuple[Features, int, float, float]]] = {}
    shown = oracle = uniform = fixed = learn_seconds = 0.0
    for round_ in range(rounds + max_delay + 2):
        for shared, index, reward, propensity in due.pop(round_, ()):
            started = time.perf_counter()
            policy.learn(shared, actions[index], reward, propensity)
            learn_seconds += time.perf_counter() - started
        if round_ >= rounds:
            continue
        situation = world.sample(situations)
        shared = world.features(situation)
        ranked = policy.rank(shared, actions, 1, rng=decisions)
        index = ranked.order[0]
        p = world.probabilities(situation)
        shown += p[index]
        oracle += p.max()
        uniform += p.mean()
        fixed += p[best]
        reward = float(clicks.random() < p[index])
        at = round_ + 1 + delays.randint(0, max_delay)  # learned before the decision of round `at`
        due.setdefault(at, []).append((shared, index, reward, ranked.propensities[0]))
    return Run(shown / rounds, oracle / rounds, uniform / rounds, fixed / rounds, learn_seconds, policy.learned)


def rank_latency(name: str, offers: int, seed: int, repeats: int = 3000) -> tuple[float, float]:
    """p50/p99 of ``rank`` (microseconds) on a policy trained for 5,000 rounds in a world of ``offers``."""
    world = World(seed, offers=offers)
    policy = build(name, seed)
    drive(world, policy, 5000, seed, max_delay=0)
    rng = random.Random(seed)
    samples = []
    for _ in range(repeats):
        shared = world.features(world.sample(rng))
        started = time.perf_counter()
        policy.rank(shared, world.actions, 1, rng=rng)
        samples.append((time.perf_counter() - started) * 1e6)
    return float(np.percentile(samples, 50)), float(np.percentile(samples, 99))


def spread(values: Sequence[float], digits: int = 3) -> str:
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.median(values):.{digits}f} ({min(values):.{digits}f}-{max(values):.{digits}f})"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=100_000)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--max-delay", type=int, default=1000)
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--learners", nargs="*", default=[*LEARNERS, *(["vw_squarecb"] if available() else [])])
    parser.add_argument("--no-speed", action="store_true", help="skip the latency and throughput measurements")
    args = parser.parse_args(argv)
    seeds = range(args.seeds)
    print(f"{args.rounds:,} rounds, rewards delayed 0-{args.max_delay} rounds, seeds {list(seeds)}\n")
    print("| world | policy | click rate / oracle, median (min-max) over seeds | click rate |")
    print("|---|---|---|---|")
    throughput: dict[str, list[float]] = {}
    for variant in args.variants:
        results: dict[str, list[Run]] = {name: [] for name in args.learners}
        for name in args.learners:
            for seed in seeds:
                world = World(seed, variant=_variant(variant))
                run = drive(world, build(name, seed), args.rounds, seed, args.max_delay)
                results[name].append(run)
                throughput.setdefault(name, []).append(run.learned / run.learn_seconds)
        runs = next(iter(results.values()))
        rows = [
            ("oracle", [1.0 for _ in runs], [r.oracle for r in runs]),
            ("uniform", [r.uniform / r.oracle for r in runs], [r.uniform for r in runs]),
            ("best fixed offer", [r.best_fixed / r.oracle for r in runs], [r.best_fixed for r in runs]),
        ] + [(name, [r.rate / r.oracle for r in rs], [r.rate for r in rs]) for name, rs in results.items()]
        for label, ratios, rates in rows:
            print(f"| {variant} | {label} | {spread(ratios)} | {spread(rates, 4)} |")
        sys.stdout.flush()
    if args.no_speed:
        return
    print("\n| policy | rank p50 / p99, 20 offers (us) | 50 offers (us) | p99 at 20 / priority's | learn rewards/s |")
    print("|---|---|---|---|---|")
    priority20, priority50 = rank_latency("priority", 20, 0), rank_latency("priority", 50, 0)
    priority_learn = _learn_rate("priority")
    print(
        f"| priority | {priority20[0]:.0f} / {priority20[1]:.0f} | {priority50[0]:.0f} / {priority50[1]:.0f} | 1.0 |"
        f" {priority_learn:,.0f} |"
    )
    for name in args.learners:
        at20, at50 = rank_latency(name, 20, 0), rank_latency(name, 50, 0)
        rate = statistics.median(throughput[name])
        print(
            f"| {name} | {at20[0]:.0f} / {at20[1]:.0f} | {at50[0]:.0f} / {at50[1]:.0f} |"
            f" {at20[1] / priority20[1]:.1f}x | {spread([r / 1000 for r in throughput[name]], 1)}k"
            f" ({rate / priority_learn:.3f}x priority's) |"
        )


def _learn_rate(name: str) -> float:
    world = World(0)
    run = drive(world, build(name, 0), 20_000, 0, max_delay=0)
    return run.learned / run.learn_seconds


def _variant(name: str) -> Variant:
    for variant in VARIANTS:
        if variant == name:
            return variant
    raise ValueError(name)


if __name__ == "__main__":
    main()

"""Exploration distributions with exact propensities, drawn slot by slot without replacement.

For each slot the policy's rule gives a probability to every action still unplaced; one is drawn with a single
``rng.random()``, and the probability it had is its propensity (conditional on the earlier slots, as
:class:`~kairos.decide.records.Ranked` says). The greedy pick of a slot is the first action with the highest
score among those left (ties go to the caller's order, which is the baseline's priority order); ``explored``
says the draw differs from it. Every rule here gives every remaining action a probability of at least
``floor / n`` so that off-policy evaluation of the log never divides by zero.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from kairos.decide.records import Ranked

__all__ = ["Rule", "draw_ranking", "epsilon_rule", "igw_rule", "uniform_rule"]

FloatArray = npt.NDArray[np.float64]
# scores of the remaining actions (caller's order), index of the greedy one among them -> probabilities
Rule = Callable[[FloatArray, int], FloatArray]


def epsilon_rule(epsilon: float) -> Rule:
    """``1 - epsilon`` on the greedy action, ``epsilon`` spread evenly over all remaining (greedy included)."""

    def rule(scores: FloatArray, greedy: int) -> FloatArray:
        probabilities = np.full(len(scores), epsilon / len(scores))
        probabilities[greedy] += 1.0 - epsilon
        return probabilities

    return rule


def uniform_rule(scores: FloatArray, greedy: int) -> FloatArray:
    return np.full(len(scores), 1.0 / len(scores))


def igw_rule(gamma: float, floor: float) -> Rule:
    """Inverse gap weighting (Abe & Long; SquareCB, Foster & Rakhlin 2020): an action ``gap`` below the best
    gets ``1 / (n + gamma * gap)``, the best the rest; mixed with ``floor`` of uniform mass."""

    def rule(scores: FloatArray, greedy: int) -> FloatArray:
        n = len(scores)
        gaps = np.maximum(scores[greedy] - scores, 0.0)
        probabilities = 1.0 / (n + gamma * gaps)
        probabilities[greedy] = 0.0
        probabilities[greedy] = max(0.0, 1.0 - float(probabilities.sum()))
        mixed: FloatArray = (1.0 - floor) * probabilities + floor / n
        return mixed

    return rule


def draw_ranking(scores: FloatArray, estimates: FloatArray, limit: int, rng: random.Random, rule: Rule) -> Ranked:
    """Draw ``min(limit, len(scores))`` slots; ``scores`` decide the greedy pick (already times the weights)."""
    n = len(scores)
    slots = max(0, min(limit, n))
    # A NaN score must neither win nor crash the draw: it ranks below every real score.
    if np.isnan(scores).any():
        scores = np.where(np.isnan(scores), -math.inf, scores)
    remaining = list(range(n))
    order: list[int] = []
    propensities: list[float] = []
    explored: list[bool] = []
    means = estimates.tolist()
    left = scores
    for slot in range(slots):
        if slot:
            left = scores[remaining]
        greedy = int(left.argmax())  # the first of the highest: ties keep the caller's order
        probabilities = rule(left, greedy)
        total = float(probabilities.sum())
        position = int(probabilities.cumsum().searchsorted(rng.random() * total, side="right"))
        position = min(position, len(remaining) - 1)
        while probabilities[position] <= 0.0:  # rounding at the very top of the cumulative sum
            position -= 1
        propensity = min(1.0, float(probabilities[position]) / total)
        index = remaining.pop(position)
        order.append(index)
        propensities.append(propensity)
        explored.append(position != greedy)
    return Ranked(tuple(order), tuple(propensities), tuple(explored), tuple(means[i] for i in order), tuple(means))

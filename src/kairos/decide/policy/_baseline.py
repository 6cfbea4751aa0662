"""Policies that do not learn: the priority order (the control group's baseline) and uniform random order.

Both count the rewards they are given (``learned``) so that the decision path treats every policy alike, and
both estimate 0.0 for every action: they have no model, and a made-up number would pollute the reports that
compare estimates with outcomes.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from kairos.decide.policy._base import Policy, clean_weights
from kairos.decide.policy._explore import draw_ranking, uniform_rule
from kairos.decide.records import Action, Features, Ranked

__all__ = ["PriorityPolicy", "UniformPolicy"]


class _Unlearned(Policy):
    def estimate(self, shared: Features, actions: Sequence[Action]) -> list[float]:
        return [0.0] * len(actions)

    def learn(self, shared: Features, action: Action, reward: float, propensity: float) -> None:
        self.learned += 1

    def explain(self, shared: Features, action: Action, top: int = 3) -> list[tuple[str, float]]:
        return []

    def _config(self) -> dict[str, Any]:
        return {"seed": self.seed}

    def _state(self) -> dict[str, Any]:
        return {}

    def _restore(self, state: Mapping[str, Any]) -> None:
        if state:
            raise ValueError(f"{self.name} has no learned state")


class PriorityPolicy(_Unlearned):
    """The given order re-sorted by weight (stable: equal weights keep the given order); never explores.

    >>> from kairos.decide.records import Action
    >>> offers = [Action("a", {}), Action("b", {}), Action("c", {})]
    >>> PriorityPolicy().rank({}, offers, 2, rng=random.Random(0), weights=[1.0, 3.0, 1.0]).order
    (1, 0)
    """

    name: ClassVar[str] = "priority"

    def rank(
        self,
        shared: Features,
        actions: Sequence[Action],
        limit: int,
        *,
        rng: random.Random,
        weights: Sequence[float] | None = None,
    ) -> Ranked:
        w = clean_weights(weights, len(actions))
        order = sorted(range(len(actions)), key=lambda i: -w[i])[: max(0, limit)]
        n = len(order)
        return Ranked(tuple(order), (1.0,) * n, (False,) * n, (0.0,) * n)


class UniformPolicy(_Unlearned):
    """Every remaining action equally likely in every slot: the simulator's floor, and a pure-exploration log."""

    name: ClassVar[str] = "uniform"

    def rank(
        self,
        shared: Features,
        actions: Sequence[Action],
        limit: int,
        *,
        rng: random.Random,
        weights: Sequence[float] | None = None,
    ) -> Ranked:
        w = clean_weights(weights, len(actions))
        return draw_ranking(w, np.zeros(len(actions)), limit, rng, uniform_rule)

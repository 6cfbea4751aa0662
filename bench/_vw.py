"""Vowpal Wabbit's ``cb_explore_adf`` behind the policy interface, for ``learners.py`` only (not a runtime
dependency: ``pip install -e '.[bench]'``).

Each shared namespace and the offer namespace become VW namespaces (VW keys a namespace by its first letter,
so they are given distinct letters) and every shared namespace is crossed with the offer's (``-q``), the same
interactions the linear learners use. Exploration is VW's own (``--squarecb`` by default): the pmf it
returns gives the propensities.
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from kairos.decide.policy import Policy
from kairos.decide.policy._explore import draw_ranking
from kairos.decide.records import ACTION_NAMESPACE, SHARED_NAMESPACES, Action, Features, Ranked

__all__ = ["VWPolicy", "available"]

_LETTERS = dict(zip((*SHARED_NAMESPACES, ACTION_NAMESPACE), "rcpgsmo", strict=True))
_UNSAFE = re.compile(r"[\s|:]")


def available() -> bool:
    try:
        import vowpalwabbit  # noqa: F401
    except ImportError:
        return False
    return True


def _line(features: Features) -> str:
    parts = []
    for namespace, values in features.items():
        letter = _LETTERS.get(namespace)
        if letter is None:
            continue
        tokens = [
            f"{_UNSAFE.sub('_', name)}:{value:g}" if value != 1.0 else _UNSAFE.sub("_", name)
            for name, value in values.items()
        ]
        parts.append(f"|{letter} {' '.join(tokens)}")
    return " ".join(parts)


class VWPolicy(Policy):
    name: ClassVar[str] = "vw_squarecb"

    def __init__(self, *, seed: int = 0, explore: str = "--squarecb") -> None:
        super().__init__(seed=seed)
        import vowpalwabbit

        interactions = " ".join(f"-q {letter}o" for letter in "rcpgsm")
        self.explore = explore
        self.vw: Any = vowpalwabbit.Workspace(f"--cb_explore_adf {explore} {interactions} --quiet --random_seed {seed}")

    def _examples(
        self, shared: Features, actions: Sequence[Action], label: tuple[int, float, float] | None
    ) -> list[str]:
        lines = [f"shared {_line(shared)}"]
        for i, action in enumerate(actions):
            prefix = f"0:{-label[1]:g}:{label[2]:g} " if label is not None and label[0] == i else ""
            lines.append(prefix + _line(action.features))
        return lines

    def estimate(self, shared: Features, actions: Sequence[Action]) -> list[float]:
        return [0.0] * len(actions)  # VW's explore reduction exposes a pmf, not the regressor's scores

    def rank(
        self,
        shared: Features,
        actions: Sequence[Action],
        limit: int,
        *,
        rng: random.Random,
        weights: Sequence[float] | None = None,
    ) -> Ranked:
        if not actions or limit <= 0:
            return Ranked((), (), (), ())
        import numpy as np

        pmf = np.asarray(self.vw.predict(self._examples(shared, actions, None)), dtype=np.float64)
        # Sampling VW's own pmf: the rule ignores the scores and returns it (slot 0 only is exact).
        return draw_ranking(pmf, np.zeros(len(actions)), min(limit, 1), rng, lambda scores, greedy: scores)

    def learn(self, shared: Features, action: Action, reward: float, propensity: float) -> None:
        self.vw.learn(self._examples(shared, [action], (0, reward, propensity)))
        self.learned += 1

    def explain(self, shared: Features, action: Action, top: int = 3) -> list[tuple[str, float]]:
        return []

    def _config(self) -> dict[str, Any]:
        return {"seed": self.seed, "explore": self.explore}

    def _state(self) -> dict[str, Any]:
        raise NotImplementedError("the bench adapter keeps no snapshots")

    def _restore(self, state: Mapping[str, Any]) -> None:
        raise NotImplementedError("the bench adapter keeps no snapshots")

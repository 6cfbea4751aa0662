"""Learners on one shared linear model of every shared x offer interaction (:mod:`._features`, :mod:`._ridge`).

They differ only in how they explore around it:

- ``linucb``: greedy by the optimistic score ``(mean + alpha * sigma * sd) * weight`` (LinUCB, Li et al. 2010),
  with ``epsilon`` of uniform mass so that every eligible action keeps a propensity >= ``epsilon / n``.
  The optimism sends traffic to what is uncertain *and* possibly good, and it vanishes as data accumulates.
- ``squarecb``: inverse gap weighting around the mean (SquareCB, Foster & Rakhlin 2020; VW's
  ``--squarecb``), ``gamma = gamma_scale * sqrt(learned + 1)`` in units of ``sigma``.
- ``epsilon_greedy``: greedy by mean, ``epsilon`` uniform: the textbook comparison.

The model ignores the logged propensity: it is a direct regression of reward on features, which stays
unbiased under the shift in which actions were shown (the log's propensities serve off-line evaluation).
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from kairos.decide.policy._base import Policy, clean_weights, pack_array, unpack_array
from kairos.decide.policy._explore import FloatArray, Rule, draw_ranking, epsilon_rule, igw_rule
from kairos.decide.policy._features import IntArray, Interactions, Side
from kairos.decide.policy._ridge import Ridge
from kairos.decide.records import Action, Features, Ranked

__all__ = ["EpsilonGreedyPolicy", "LinUCBPolicy", "SquareCBPolicy"]

_OFFER_CACHE = 4096
_ARRAYS_CACHE = 64
_BATCH = 128  # rewards per Woodbury update: the d^2 k product dominates, and k = 128 keeps it cache-friendly


class _LinearPolicy(Policy):
    def __init__(
        self,
        *,
        seed: int = 0,
        l2: float = 10.0,
        max_features: int = 4096,
        max_dim: int = 1024,
        cells: Sequence[str] = (),
    ) -> None:
        super().__init__(seed=seed)
        if max_dim < 1 or max_features < 2:
            raise ValueError("max_dim must be >= 1 and max_features >= 2")
        self.l2 = float(l2)
        self.max_features = int(max_features)
        self.max_dim = int(max_dim)
        self.cells = tuple(cells)
        self.index = Interactions(max_features=self.max_features, max_dim=self.max_dim, cells=self.cells)
        self.model = Ridge(l2=self.l2, max_dim=self.max_dim)
        # An offer's side of the pairs, by the Action object: the decision path hands the same objects for
        # the same offer version, and encoding it is most of a decision's Python work. An entry is good
        # while the offer vocabulary has not grown (a feature then unknown may have an id now).
        self._offers: dict[int, tuple[Action, int, Side]] = {}
        self._arrays: dict[tuple[int, ...], tuple[int, tuple[Action, ...], IntArray, FloatArray]] = {}

    # -- what each learner decides ------------------------------------------------------------------
    def _scores(self, mean: FloatArray, variance: FloatArray) -> FloatArray:
        return mean

    def _rule(self) -> Rule:
        raise NotImplementedError

    # -- the interface --------------------------------------------------------------------------------
    def _offer_side(self, action: Action) -> Side:
        size = len(self.index.offer.names)
        found = self._offers.get(id(action))
        if found is not None and found[0] is action and found[1] == size:
            return found[2]
        side = self.index.side(action.features, shared=False, add=False)
        if len(self._offers) >= _OFFER_CACHE:
            self._offers.clear()
        self._offers[id(action)] = (action, size, side)  # holding the action keeps its id from being reused
        return side

    def _offer_arrays(self, actions: Sequence[Action]) -> tuple[IntArray, FloatArray]:
        """The candidates' arrays, kept for the last few lists of candidates (one decision asks several times)."""
        size = len(self.index.offer.names)
        key = tuple(map(id, actions))
        found = self._arrays.get(key)
        if found is not None and found[0] == size and all(a is b for a, b in zip(found[1], actions, strict=True)):
            return found[2], found[3]
        ids, values = self.index.offer_arrays([self._offer_side(action) for action in actions])
        if len(self._arrays) >= _ARRAYS_CACHE:
            self._arrays.pop(next(iter(self._arrays)))
        self._arrays[key] = (size, tuple(actions), ids, values)
        return ids, values

    def _design(self, shared: Features, actions: Sequence[Action]) -> tuple[IntArray, FloatArray]:
        side = self.index.side(shared, shared=True, add=False)
        return self.index.design_of(side, *self._offer_arrays(actions))

    def _predict(self, shared: Features, actions: Sequence[Action]) -> tuple[FloatArray, FloatArray]:
        mean, variance = self.model.predict(*self._design(shared, actions))
        return np.nan_to_num(mean, nan=0.0, posinf=0.0, neginf=0.0), variance

    def estimate(self, shared: Features, actions: Sequence[Action]) -> list[float]:
        if not actions:
            return []
        mean = self.model.mean(*self._design(shared, actions))  # no variance: only rank explores
        return [float(m) for m in np.nan_to_num(mean, nan=0.0, posinf=0.0, neginf=0.0)]

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
        if not actions or limit <= 0:
            return Ranked((), (), (), ())
        mean, variance = self._predict(shared, actions)
        return draw_ranking(self._scores(mean, variance) * w, mean, limit, rng, self._rule())

    def _row(self, shared: Features, action: Action, reward: Any) -> tuple[IntArray, FloatArray, float] | None:
        """The design row of one reward (new features and pairs get ids and slots); None to drop it."""
        try:
            reward = float(reward)
        except (TypeError, ValueError):
            return None
        if not math.isfinite(reward):
            return None
        shared_ids, shared_values, _ = self.index.side(shared, shared=True, add=True)
        offer_ids, offer_values, _ = self.index.side(action.features, shared=False, add=True)
        slots = self.index.assign(shared_ids, offer_ids)
        values = (np.asarray(shared_values)[:, None] * np.asarray(offer_values)[None, :]).reshape(-1)
        return slots, values, reward

    def learn(self, shared: Features, action: Action, reward: float, propensity: float) -> None:
        """Learn one reward; a reward that is not a finite number is dropped (and not counted)."""
        row = self._row(shared, action, reward)
        if row is None:
            return
        self.model.reserve(self.index.dim)
        self.model.update(*row)
        self.learned += 1

    def relabel(self, corrections: Sequence[tuple[Features, Action, float]]) -> None:
        """Move the regression's target of pairs already learned (:meth:`Ridge.shift`): O(d) per row."""
        rows = [row for s, a, delta in corrections if (row := self._row(s, a, delta)) is not None]
        self.model.reserve(self.index.dim)
        self.model.shift(rows)

    def learn_many(self, rewards: Sequence[tuple[Features, Action, float, float]]) -> None:
        """One Woodbury update per ``_BATCH`` rewards (:meth:`Ridge.update_many`)."""
        for start in range(0, len(rewards), _BATCH):
            rows = [row for s, a, r, _ in rewards[start : start + _BATCH] if (row := self._row(s, a, r)) is not None]
            self.model.reserve(self.index.dim)
            if len(rows) == 1:
                self.model.update(*rows[0])
            else:
                self.model.update_many(rows)
            self.learned += len(rows)

    def explain(self, shared: Features, action: Action, top: int = 3) -> list[tuple[str, float]]:
        shared_ids, shared_values, shared_names = self.index.side(shared, shared=True, add=False)
        offer_ids, offer_values, offer_names = self._offer_side(action)
        rows, cols = self.index.table.shape
        s = np.asarray(shared_ids, dtype=np.int64)
        o = np.asarray(offer_ids, dtype=np.int64)
        s_ok, o_ok = (s >= 0) & (s < rows), (o >= 0) & (o < cols)
        slots = np.where(
            s_ok[:, None] & o_ok[None, :], self.index.table[np.where(s_ok, s, 0)][:, np.where(o_ok, o, 0)], -1
        )
        known = (slots >= 0).reshape(-1)
        flat = np.where(known, self.model.theta[np.where(known, slots.reshape(-1), 0)], 0.0)
        flat = flat * np.outer(shared_values, offer_values).reshape(-1)
        # Names only for the few that can make the top (building them is most of the cost); ties by name.
        order = [int(i) for i in np.argsort(-np.abs(flat), kind="stable")[: max(0, top) + 2] if known[i]]
        width = len(offer_ids)

        def name(i: int) -> str:
            pair = (shared_names[i // width], offer_names[i % width])
            return " x ".join(f"{ns}:{n}" for ns, n in pair if ns) or "bias"

        ranked = sorted(((name(i), float(flat[i])) for i in order), key=lambda item: (-abs(item[1]), item[0]))
        return [(n, value) for n, value in ranked[: max(0, top)] if math.isfinite(value)]

    # -- snapshots ------------------------------------------------------------------------------------
    def _config(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "l2": self.l2,
            "max_features": self.max_features,
            "max_dim": self.max_dim,
            "cells": list(self.cells),
        }

    def _state(self) -> dict[str, Any]:
        def names(vocab: list[tuple[str, str]]) -> list[list[bytes]]:
            # Feature names may hold lone surrogates, which msgpack's str cannot: keep them as bytes.
            return [[ns.encode("utf-8", "surrogatepass"), n.encode("utf-8", "surrogatepass")] for ns, n in vocab]

        table = self.index.table
        pairs = np.argwhere(table >= 0)
        return {
            "shared": names(self.index.shared.names[1:]),
            "offer": names(self.index.offer.names[1:]),
            "table_shape": list(table.shape),
            "pairs": pack_array(pairs.astype(np.int64)),
            "pair_slots": pack_array(table[table >= 0].astype(np.int64)),
            "dim": self.index.dim,
            "model": self.model.state(self.index.dim),
        }

    def _restore(self, state: Mapping[str, Any]) -> None:
        def names(raw: Any) -> list[tuple[str, str]]:
            return [(ns.decode("utf-8", "surrogatepass"), n.decode("utf-8", "surrogatepass")) for ns, n in raw]

        self.index.shared.load(names(state["shared"]))
        self.index.offer.load(names(state["offer"]))
        dim = int(state["dim"])
        rows, cols = (int(n) for n in state["table_shape"])
        pairs, pair_slots = unpack_array(state["pairs"]), unpack_array(state["pair_slots"])
        if pairs.shape != (len(pair_slots), 2) or not 0 <= dim <= self.max_dim:
            raise ValueError("pair table is malformed")
        if len(pair_slots) and (pairs.min() < 0 or pair_slots.min() < 0 or pair_slots.max() >= max(dim, 1)):
            raise ValueError("pair table is malformed")
        table = np.full((rows, cols), -1, dtype=np.int64)
        table[pairs[:, 0], pairs[:, 1]] = pair_slots
        self.index.table, self.index.dim = table, dim
        self.model.restore(state["model"], dim)


class LinUCBPolicy(_LinearPolicy):
    name: ClassVar[str] = "linucb"

    def __init__(self, *, alpha: float = 0.3, epsilon: float = 0.02, **options: Any) -> None:
        super().__init__(**options)
        if not (alpha >= 0 and 0 < epsilon <= 1):
            raise ValueError("linucb needs alpha >= 0 and 0 < epsilon <= 1")
        self.alpha, self.epsilon = float(alpha), float(epsilon)

    def _scores(self, mean: FloatArray, variance: FloatArray) -> FloatArray:
        return mean + self.alpha * self.model.sigma * np.sqrt(variance)

    def _rule(self) -> Rule:
        return epsilon_rule(self.epsilon)

    def _config(self) -> dict[str, Any]:
        return {**super()._config(), "alpha": self.alpha, "epsilon": self.epsilon}


class SquareCBPolicy(_LinearPolicy):
    name: ClassVar[str] = "squarecb"

    def __init__(self, *, gamma_scale: float = 10.0, floor: float = 0.01, **options: Any) -> None:
        super().__init__(**options)
        if not (gamma_scale > 0 and 0 < floor <= 1):
            raise ValueError("squarecb needs gamma_scale > 0 and 0 < floor <= 1")
        self.gamma_scale, self.floor = float(gamma_scale), float(floor)

    def _rule(self) -> Rule:
        gamma = self.gamma_scale * math.sqrt(self.learned + 1) / max(self.model.sigma, 1e-9)
        return igw_rule(gamma, self.floor)

    def _config(self) -> dict[str, Any]:
        return {**super()._config(), "gamma_scale": self.gamma_scale, "floor": self.floor}


class EpsilonGreedyPolicy(_LinearPolicy):
    name: ClassVar[str] = "epsilon_greedy"

    def __init__(self, *, epsilon: float = 0.1, **options: Any) -> None:
        super().__init__(**options)
        if not 0 < epsilon <= 1:
            raise ValueError("epsilon_greedy needs 0 < epsilon <= 1")
        self.epsilon = float(epsilon)

    def _rule(self) -> Rule:
        return epsilon_rule(self.epsilon)

    def _config(self) -> dict[str, Any]:
        return {**super()._config(), "epsilon": self.epsilon}

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
import threading
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from kairos.decide.policy._base import Policy, pack_array, unpack_array
from kairos.decide.policy._explore import FloatArray, Rule, epsilon_rule, igw_rule
from kairos.decide.policy._features import IntArray, Interactions, Side
from kairos.decide.policy._ridge import Ridge
from kairos.decide.policy._scoring import LinearScoring, Memo
from kairos.decide.records import Action, Features, Ranked

__all__ = ["EpsilonGreedyPolicy", "LinUCBPolicy", "SquareCBPolicy"]

_OFFER_CACHE = 4096
_MEMOS = 64  # lists of candidates remembered (channels x placements x eligibility)
_MEMO_FLOATS = 2_000_000  # 16 MB
_WARM_MEMOS = 16  # a new snapshot warms the memos of the lists of candidates seen last...
_WARM_SHAPES = 256  # ... for the sets of shared features seen last
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
        # What the model gives for a list of candidates (:class:`Memo`), by the actions' ids, until it learns.
        self._memos: dict[tuple[int, ...], tuple[tuple[Action, ...], Memo]] = {}
        self._memo_floats = 0
        self._memo_lock = threading.Lock()

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

    def _memo(self, actions: Sequence[Action]) -> Memo:
        """The :class:`Memo` of this list of candidates (kept for the last few lists until the model learns)."""
        # By the actions' ids: an entry holds its actions, so while it lives no other object has those ids.
        key = tuple(map(id, actions))
        found = self._memos.get(key)
        if found is not None:
            return found[1]
        ids, values = self.index.offer_arrays([self._offer_side(action) for action in actions])
        memo = Memo(self, ids, values)
        with self._memo_lock:
            if len(self._memos) >= _MEMOS:
                self._memo_floats -= self._memos.pop(next(iter(self._memos)))[1].size
            self._memos[key] = (tuple(actions), memo)  # holding the actions keeps their ids from being reused
        return memo

    def _memo_grew(self, floats: int) -> None:
        """Bounded memory: past ``_MEMO_FLOATS`` floats remembered, start afresh (a memo in use stays valid)."""
        with self._memo_lock:
            self._memo_floats += floats
            if self._memo_floats > _MEMO_FLOATS:
                self._memos, self._memo_floats = {}, 0

    def warm(self, previous: Policy) -> None:
        """The memos of the lists of candidates ``previous`` remembered last, filled for the sets of shared
        features it saw last (a feature keeps its id from one snapshot to the next: ids are only added)."""
        if not isinstance(previous, _LinearPolicy):
            return
        for actions, memo in list(previous._memos.values())[-_WARM_MEMOS:]:
            shapes = list(memo.shapes)[-_WARM_SHAPES:]
            if shapes:
                self._memo(actions).warm(shapes)

    def _changed(self) -> None:
        """The model learned: what the memos remember is stale."""
        with self._memo_lock:
            self._memos, self._memo_floats = {}, 0

    def scoring(self, shared: Features, actions: Sequence[Action]) -> LinearScoring:
        return LinearScoring(self, shared, actions)

    def estimate(self, shared: Features, actions: Sequence[Action]) -> list[float]:
        return LinearScoring(self, shared, actions).estimate()  # no variance: only rank explores

    def rank(
        self,
        shared: Features,
        actions: Sequence[Action],
        limit: int,
        *,
        rng: random.Random,
        weights: Sequence[float] | None = None,
    ) -> Ranked:
        return LinearScoring(self, shared, actions).rank(limit, rng=rng, weights=weights)

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
        self._changed()

    def relabel(self, corrections: Sequence[tuple[Features, Action, float]]) -> None:
        """Move the regression's target of pairs already learned (:meth:`Ridge.shift`): O(d) per row."""
        rows = [row for s, a, delta in corrections if (row := self._row(s, a, delta)) is not None]
        self.model.reserve(self.index.dim)
        self.model.shift(rows)
        self._changed()

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
        self._changed()

    def explain(self, shared: Features, action: Action, top: int = 3) -> list[tuple[str, float]]:
        return LinearScoring(self, shared, [action]).explain(0, top)

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
        self._changed()


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

"""One decision's questions to a linear learner (:mod:`._linear`), answered from what its model gives for each
shared feature and each pair of shared features, remembered for the candidates at hand.

The design vector of (shared, action) is the outer product of the shared side ``xs`` (``S`` features) and the
action's side ``xo`` (``W`` features), each pair with its parameter slot. So, for one list of candidates and
a model that does not change:

- the mean of action ``a`` is ``sum_i xs_i * part_i[a]`` with ``part_i[a] = sum_w theta[slot(i, w)] * xo_w``;
- its posterior variance (over ``sigma^2``) is ``sum_ij xs_i xs_j pair_ij[a] + sum_i xs_i^2 prior_i[a]`` with
  ``pair_ij[a] = sum_wv xo_w xo_v ainv[slot(i, w), slot(j, v)]`` over the pairs learned, and ``prior_i[a]``
  the prior variance ``xo_w^2 / l2`` of the pairs never learned;
- the estimate without some shared namespaces is the same sum over the other shared features (a feature's
  id never depends on the others'; the ``cells`` feature does, so a ``cells`` policy asks again when a cell
  namespace is left out).

``part``, ``prior`` and ``pair`` depend on a shared feature's id, not on its value, and the same features
come back decision after decision (the daypart, the channel, a segment...), so a :class:`Memo` keeps them
per list of candidates until the model learns: a decision then costs a few lookups and two small products
instead of gathering ``A * (S * W)^2`` entries of ``ainv``, which grows with the square of the features.
"""

from __future__ import annotations

import functools
import math
import random
import weakref
from collections.abc import Collection, Sequence
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from kairos.decide.features import without
from kairos.decide.policy._base import Scoring, clean_weights
from kairos.decide.policy._explore import FloatArray, draw_ranking
from kairos.decide.policy._features import IntArray
from kairos.decide.records import Action, Features, Ranked

if TYPE_CHECKING:
    from kairos.decide.policy._linear import _LinearPolicy

__all__ = ["LinearScoring", "Memo", "Shape"]

Pair = tuple[int, int]
_SHAPES = 1024  # tuples of shared feature ids remembered per list of candidates
_EXPLANATIONS = 16  # sets of shared feature values whose explanations a shape remembers


class Memo:
    """What the model gives for one list of candidates, per shared feature id, per pair of them and per set of
    them (a :class:`Shape`); valid while the model does not learn (the policy drops it then). Several threads
    may use one: entries are only added, each computed alike by whoever comes first."""

    def __init__(self, policy: _LinearPolicy, offer_ids: IntArray, offer_values: FloatArray) -> None:
        # The policy's model and index, not the policy: it holds its memos, and a cycle would keep a replaced
        # policy (megabytes of model) alive until a full collection, which servers make rare (kairos._gc).
        self.model = policy.model
        self.index = policy.index
        self._on_grow = weakref.WeakMethod(policy._memo_grew)
        self.offer_ids = offer_ids  # (actions, width), padded with -1
        self.offer_values = offer_values  # (actions, width), padded with 0
        self.slots: dict[int, IntArray] = {}  # shared id -> (actions, width) slot of each pair, -1 never learned
        self.thetas: dict[int, FloatArray] = {}  # shared id -> (actions, width) theta of each pair (0: never)
        self.parts: dict[int, FloatArray] = {}  # shared id -> (actions,)
        self.priors: dict[int, FloatArray] = {}  # shared id -> (actions,)
        self.pairs: dict[Pair, FloatArray] = {}  # (i, j), i <= j -> (actions,)
        self.shapes: dict[tuple[int, ...], Shape] = {}
        self.size = 0  # floats held

    def shape(self, ids: tuple[int, ...]) -> Shape:
        """The arrays of one decision's shared feature ids, in their order."""
        found = self.shapes.get(ids)
        if found is not None:
            return found
        self.features(ids)
        n = len(self.offer_ids)
        shape = Shape(
            ids,
            np.stack([self.parts[i] for i in ids]) if ids else np.zeros((0, n)),
            np.stack([self.priors[i] for i in ids]) if ids else np.zeros((0, n)),
        )
        if len(self.shapes) >= _SHAPES:
            self._grew(-sum(known.floats for known in self.shapes.values()))
            self.shapes = {}
        self.shapes[ids] = shape
        shape.floats = shape.parts.size + shape.priors.size
        self._grew(shape.floats)
        return shape

    def warm(self, shapes: Sequence[tuple[int, ...]]) -> None:
        """Compute these tuples of shared feature ids ahead of the decisions: features and pairs in bulk."""
        self.features(list({i for ids in shapes for i in ids}))
        self.pair_values(list({key for ids in shapes for key in _pair_keys(ids)}))
        for ids in shapes:
            self.shape(ids).pairs(self)

    def features(self, ids: Sequence[int]) -> None:
        """Compute what is missing for these shared feature ids, all at once."""
        missing = list(dict.fromkeys(i for i in ids if i not in self.parts))
        if not missing:
            return
        s = np.asarray(missing, dtype=np.int64)
        slots = self.index.slots(s[:, None, None], self.offer_ids[None])  # (missing, actions, width)
        known = slots >= 0
        xo = self.offer_values[None]
        thetas = np.where(known, self.model.theta[np.where(known, slots, 0)], 0.0)
        parts = (thetas * xo).sum(axis=2)
        priors = np.where(known, 0.0, xo * xo).sum(axis=2) / self.model.l2
        for k, i in enumerate(missing):
            self.slots[i], self.thetas[i], self.parts[i], self.priors[i] = slots[k], thetas[k], parts[k], priors[k]
        self._grew(slots.size * 2 + parts.size * 2)

    def pair_values(self, keys: Sequence[Pair]) -> list[FloatArray]:
        """``pair_ij`` of each ``(i, j)`` (both ids already known to :meth:`features`)."""
        pairs = self.pairs
        out: list[FloatArray | None] = [pairs.get(key) for key in keys]
        missing = list(dict.fromkeys(key for key, value in zip(keys, out, strict=True) if value is None))
        if not missing:
            return out  # type: ignore[return-value]
        model = self.model
        left = np.stack([self.slots[i] for i, _ in missing])  # (missing, actions, width)
        right = np.stack([self.slots[j] for _, j in missing])
        xl = np.where(left >= 0, self.offer_values[None], 0.0)
        xr = np.where(right >= 0, self.offer_values[None], 0.0)
        at_left, at_right = np.maximum(left, 0), np.maximum(right, 0)
        # One flat gather of every (w, v) block (ainv is C-contiguous), then a batched product.
        gathered = model.ainv.ravel().take((at_left * len(model.ainv))[..., :, None] + at_right[..., None, :])
        values = (np.matmul(gathered, xr[..., None])[..., 0] * xl).sum(axis=2)  # (missing, actions)
        computed = dict(zip(missing, values, strict=True))
        pairs.update(computed)
        self._grew(values.size)
        return [value if value is not None else computed[key] for key, value in zip(keys, out, strict=True)]

    def _grew(self, floats: int) -> None:
        self.size += floats
        grew = self._on_grow()
        if grew is not None:
            grew(floats)


class Shape:
    """A memo's arrays for one tuple of shared feature ids: each one's ``part`` and ``prior`` (shared,
    actions) and, once the variance is asked (estimates alone do not need it), each pair's ``pair`` in
    :func:`_upper`'s order (pairs, actions)."""

    def __init__(self, ids: tuple[int, ...], parts: FloatArray, priors: FloatArray):
        self.ids = ids
        self.parts = parts
        self.priors = priors
        self.floats = 0  # held, as counted by the memo
        self._pairs: FloatArray | None = None
        self._thetas: tuple[FloatArray, npt.NDArray[np.bool_]] | None = None
        # Explanations by (values and names of the shared features, top): action index -> its explanation.
        self.explanations: dict[tuple[object, ...], dict[int, list[tuple[str, float]]]] = {}

    def pairs(self, memo: Memo) -> FloatArray:
        """Each pair's ``pair_ij`` (pairs, actions), from the memo it belongs to (not held: a memo holds its
        shapes); gathering them from ``ainv`` is most of a cold shape's cost."""
        if self._pairs is None:
            keys = _pair_keys(self.ids)
            pairs = np.stack(memo.pair_values(keys)) if keys else np.zeros((0, len(memo.offer_ids)))
            self._pairs = pairs
            self.floats += pairs.size
            memo._grew(pairs.size)
        return self._pairs

    def thetas(self, memo: Memo) -> tuple[FloatArray, npt.NDArray[np.bool_]]:
        """Each pair's theta and whether it was learned, (shared, actions, width), from the memo it belongs to
        (not held: a memo holds its shapes): for explanations."""
        if self._thetas is None:
            dims = memo.offer_ids.shape
            thetas = np.stack([memo.thetas[i] for i in self.ids]) if self.ids else np.zeros((0, *dims))
            slots = np.stack([memo.slots[i] for i in self.ids]) if self.ids else np.zeros((0, *dims), np.int64)
            self._thetas = (thetas, slots >= 0)
        return self._thetas


class LinearScoring(Scoring):
    """One decision's ranking, estimates without some namespaces and explanations, from one :class:`Memo`.

    The model must not learn while it is in use (the decision path holds a snapshot that never does)."""

    def __init__(self, policy: _LinearPolicy, shared: Features, actions: Sequence[Action]) -> None:
        super().__init__(policy, shared, actions)
        self.linear = policy
        ids, values, self.shared_names = policy.index.side(shared, shared=True, add=False)
        self.xs = np.asarray(values)
        self.memo = policy._memo(actions) if actions else None
        self.shape = self.memo.shape(tuple(ids)) if self.memo is not None else None
        self.means: FloatArray = _finite(self.xs @ self.shape.parts) if self.shape is not None else np.zeros(0)

    def estimate(self, drop: Collection[str] = ()) -> list[float]:
        if not drop or self.shape is None:
            return self.means.tolist()  # type: ignore[no-any-return]
        if any(namespace in drop for namespace in self.linear.cells):
            return LinearScoring(self.linear, without(self.shared, drop), self.actions).estimate()
        keep = np.array([namespace not in drop for namespace, _ in self.shared_names])
        return _finite(np.where(keep, self.xs, 0.0) @ self.shape.parts).tolist()  # type: ignore[no-any-return]

    def variance(self) -> FloatArray:
        """``x' ainv x`` of each action (its posterior variance over ``sigma^2``), priors included."""
        shape, xs = self.shape, self.xs
        if shape is None:
            return np.zeros(0)
        _, first, second, twice = _upper(len(xs))
        # Each pair p < q stands for both (p, q) and (q, p) of the symmetric form.
        assert self.memo is not None
        pairs = shape.pairs(self.memo)
        variance: FloatArray = (xs[first] * xs[second] * twice) @ pairs + (xs * xs) @ shape.priors
        # Rounding in a long run of rank-1 updates can leave ainv a hair from positive definite.
        return np.maximum(variance, 0.0)

    def rank(self, limit: int, *, rng: random.Random, weights: Sequence[float] | None = None) -> Ranked:
        w = clean_weights(weights, len(self.actions))
        if not self.actions or limit <= 0:
            return Ranked((), (), (), ())
        scores = self.linear._scores(self.means, self.variance())
        return draw_ranking(scores * w, self.means, limit, rng, self.linear._rule())

    def explain(self, index: int, top: int = 3) -> list[tuple[str, float]]:
        return self.explain_many([index], top)[0]

    def explain_many(self, indexes: Sequence[int], top: int = 3) -> list[list[tuple[str, float]]]:
        """Each action's pairs ranked by the absolute size of ``theta * value``, ties in the order of the
        design (shared feature, then offer feature), pairs never learned left out; then the first ``top`` by
        size and name. All the actions' products in one pass."""
        shape = self.shape
        if shape is None or not indexes or top <= 0:
            return [[] for _ in indexes]
        # The same features with the same values (all categorical ones: 1.0) get the same explanations.
        key = (tuple(self.xs.tolist()), tuple(self.shared_names), top)
        known_ones = shape.explanations.get(key)
        if known_ones is None:
            if len(shape.explanations) >= _EXPLANATIONS:
                shape.explanations = {}
            known_ones = shape.explanations[key] = {}
        missing = [index for index in dict.fromkeys(indexes) if index not in known_ones]
        if missing:
            known_ones.update(zip(missing, self._explain(missing, top), strict=True))
        return [list(known_ones[index]) for index in indexes]

    def _explain(self, at: list[int], top: int) -> list[list[tuple[str, float]]]:
        shape, memo = self.shape, self.memo
        assert shape is not None and memo is not None
        thetas, learned = shape.thetas(memo)  # (shared, actions, width)
        products = thetas[:, at, :] * (self.xs[:, None, None] * memo.offer_values[at][None, :, :])
        flat = products.transpose(1, 0, 2).reshape(len(at), -1)  # (shown, shared x width)
        known = learned[:, at, :].transpose(1, 0, 2).reshape(len(at), -1)
        # Names only for the few that can make the top (building them is most of the cost).
        candidates = np.argsort(np.where(known, -np.abs(flat), np.inf), axis=1, kind="stable")[:, : top + 2]
        width = memo.offer_values.shape[1]
        shared_names = self.shared_names
        out = []
        for row, index in enumerate(at):
            offer_names = self.linear._offer_side(self.actions[index])[2]
            values = flat[row]
            picked = [
                (_pair_name(shared_names[i // width], offer_names[i % width]), float(values[i]))
                for i in candidates[row].tolist()
                if known[row, i]
            ]
            picked.sort(key=lambda item: (-abs(item[1]), item[0]))
            out.append([(n, value) for n, value in picked[:top] if math.isfinite(value)])
        return out


def _pair_name(shared: tuple[str, str], offer: tuple[str, str]) -> str:
    """``context:daypart=evening x offer:category=shoes``; the constant and the bias have no name."""
    return " x ".join(f"{ns}:{n}" for ns, n in (shared, offer) if ns) or "bias"


def _pair_keys(ids: tuple[int, ...]) -> list[Pair]:
    """The memo's keys of the pairs of ``ids``, in :func:`_upper`'s order (the smaller id first)."""
    return [(ids[p], ids[q]) if ids[p] <= ids[q] else (ids[q], ids[p]) for p, q in _upper(len(ids))[0]]


@functools.lru_cache(maxsize=128)
def _upper(n: int) -> tuple[list[tuple[int, int]], IntArray, IntArray, FloatArray]:
    """The positions ``(p, q)``, ``p <= q``, of an ``n x n`` symmetric form, as pairs and as two arrays, and
    how many times each stands for (1 on the diagonal, else 2)."""
    first, second = np.triu_indices(n)
    twice = np.where(first == second, 1.0, 2.0)
    return list(zip(first.tolist(), second.tolist(), strict=True)), first, second, twice


def _finite(values: FloatArray) -> FloatArray:
    """A hostile model or value must not give a NaN or infinite estimate: those count as 0."""
    if np.isfinite(values).all():
        return values
    return np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0)

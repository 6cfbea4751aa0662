"""Bayesian linear regression with a full covariance, learned one reward at a time (recursive least squares).

The model is ``reward = theta . x + noise``, prior ``theta ~ N(0, sigma^2 / l2 * I)``. It keeps ``ainv``, the
inverse of ``A = l2 * I + sum x x'``, and ``theta = ainv @ b``; a reward updates both with Sherman-Morrison in
O(dim^2) (one in-place BLAS rank-1 update, no temporary matrix) and the result equals the batch ridge solution
up to rounding, whatever order the rewards came in. The posterior variance of an estimate is
``sigma^2 * x' ainv x``; ``sigma^2`` is the running mean of the squared one-step-ahead errors (with a weak prior
of 0.25, the largest variance of a 0/1 reward), so the exploration bonus follows the scale of the rewards.

Slots are allocated in blocks of ``_BLOCK``: the unused part of ``ainv`` is ``I / l2`` and ``theta`` is zero
there, exactly the prior of a parameter never seen, so growing never changes an estimate. A slot that a
decision's pair does not have yet contributes its prior variance ``x^2 / l2`` and no mean.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy.linalg.blas import dger

from kairos.decide.policy._base import pack_array, unpack_array

__all__ = ["Ridge"]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
_BLOCK = 128
_PRIOR_VARIANCE = 0.25
_PRIOR_WEIGHT = 10.0


class Ridge:
    def __init__(self, *, l2: float, max_dim: int) -> None:
        if not l2 > 0:
            raise ValueError("l2 must be positive")
        self.l2 = l2
        self.max_dim = max_dim
        self.ainv = np.eye(min(_BLOCK, max_dim)) / l2
        self.theta = np.zeros(len(self.ainv))
        self.sse = 0.0  # sum of squared one-step-ahead errors
        self.n = 0

    @property
    def sigma(self) -> float:
        return math.sqrt((_PRIOR_VARIANCE * _PRIOR_WEIGHT + self.sse) / (_PRIOR_WEIGHT + self.n))

    def reserve(self, dim: int) -> None:
        capacity = len(self.ainv)
        if dim <= capacity:
            return
        grown_to = min(self.max_dim, -(-dim // _BLOCK) * _BLOCK)
        ainv = np.eye(grown_to) / self.l2
        ainv[:capacity, :capacity] = self.ainv
        theta = np.zeros(grown_to)
        theta[:capacity] = self.theta
        self.ainv, self.theta = ainv, theta

    def update(self, slots: IntArray, values: FloatArray, reward: float) -> None:
        """Learn one (x, reward); every slot must already be allocated (``reserve``)."""
        u = self.ainv[:, slots] @ values  # ainv x: slots may repeat (a hash collision), the sum is right
        denominator = 1.0 + float(values @ u[slots])
        error = reward - float(self.theta[slots] @ values)
        self.theta += u * (error / denominator)
        # ainv is symmetric, so its transpose is the Fortran-ordered view BLAS updates in place.
        dger(-1.0 / denominator, u, u, a=self.ainv.T, overwrite_a=1)
        self.sse += error * error
        self.n += 1

    def update_many(self, rows: list[tuple[IntArray, FloatArray, float]]) -> None:
        """Learn several (x, reward) at once with the Woodbury identity: the same ``ainv`` and ``theta`` as
        learning them one by one (up to rounding), in BLAS-3 products instead of one rank-1 pass over ``ainv``
        per reward (memory-bound: about 1 ms each at 1024 slots). ``sigma``'s errors are taken against the
        model before the batch. Every slot must already be allocated."""
        if not rows:
            return
        k = len(rows)
        slots = np.concatenate([slots for slots, _, _ in rows])
        used, columns = np.unique(slots, return_inverse=True)
        x = np.zeros((k, len(used)))  # the batch's design, on the slots it uses only
        at = np.repeat(np.arange(k), [len(row[0]) for row in rows])
        np.add.at(x, (at, columns), np.concatenate([values for _, values, _ in rows]))  # a slot may repeat
        rewards = np.array([reward for _, _, reward in rows], dtype=np.float64)
        errors = rewards - x @ self.theta[used]
        # (ainv X')' from whole rows of ainv (it is symmetric): a gather of contiguous rows, not of columns.
        ut = x @ self.ainv[used]  # (k x d)
        s = np.eye(k) + ut[:, used] @ x.T  # I + X ainv X'
        w = np.linalg.solve(s, ut)  # (I + X ainv X')^-1 X ainv
        self.ainv -= ut.T @ w
        # The new ainv X' is w' (Woodbury: u - u s^-1 (s - I) = u s^-1), so theta += ainv_new X' errors is
        # a (d x k) product, not another gather.
        self.theta += w.T @ errors
        self.sse += float(errors @ errors)
        self.n += k

    def shift(self, rows: list[tuple[IntArray, FloatArray, float]]) -> None:
        """Add ``delta * x`` to ``b`` for each (x, delta), ``A`` unchanged: ``theta += ainv X' delta``. The
        rows were learned already (their ``x x'`` is in ``A``) with another reward: this relabels them."""
        if not rows:
            return
        used = np.unique(np.concatenate([slots for slots, _, _ in rows]))
        where = {int(slot): i for i, slot in enumerate(used)}
        pushed = np.zeros(len(used))  # X' delta, on the slots the rows use
        for slots, values, delta in rows:
            for slot, value in zip(slots.tolist(), values.tolist(), strict=True):
                pushed[where[slot]] += value * delta
        self.theta += self.ainv[:, used] @ pushed

    def state(self, dim: int) -> dict[str, Any]:
        return {
            "ainv": pack_array(self.ainv[:dim, :dim]),
            "theta": pack_array(self.theta[:dim]),
            "capacity": len(self.ainv),
            "sse": self.sse,
            "n": self.n,
        }

    def restore(self, state: Mapping[str, Any], dim: int) -> None:
        ainv, theta = unpack_array(state["ainv"]), unpack_array(state["theta"])
        capacity = int(state["capacity"])
        if ainv.shape != (dim, dim) or theta.shape != (dim,) or not dim <= capacity <= self.max_dim:
            raise ValueError("model arrays do not match the feature index")
        if not (np.isfinite(ainv).all() and np.isfinite(theta).all()):
            raise ValueError("model arrays are not finite")
        self.ainv = np.eye(capacity) / self.l2
        self.ainv[:dim, :dim] = ainv
        self.theta = np.zeros(capacity)
        self.theta[:dim] = theta
        self.sse, self.n = float(state["sse"]), int(state["n"])

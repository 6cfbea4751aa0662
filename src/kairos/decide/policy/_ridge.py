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
        return float(np.sqrt((_PRIOR_VARIANCE * _PRIOR_WEIGHT + self.sse) / (_PRIOR_WEIGHT + self.n)))

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

    def predict(self, slots: IntArray, values: FloatArray) -> tuple[FloatArray, FloatArray]:
        """Mean and ``x' ainv x`` (variance over sigma^2) of each row; ``slots`` -1 marks a pair never learned."""
        known = slots >= 0
        at = np.where(known, slots, 0)
        x = np.where(known, values, 0.0)
        mean = np.einsum("ak,ak->a", self.theta[at], x)
        gathered = self.ainv[at[:, :, None], at[:, None, :]]
        variance = np.einsum("ai,aij,aj->a", x, gathered, x)
        variance += np.where(known, 0.0, values * values).sum(axis=1) / self.l2
        # Rounding in a long run of rank-1 updates can leave ainv a hair from positive definite.
        return mean, np.maximum(variance, 0.0)

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

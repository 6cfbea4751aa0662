"""Off-policy estimates from the decision log: what would a *target* policy have earned on the same people?

Each usable decision contributes its slot-0 item: the logged action ``a`` (an index into the candidates),
the probability ``p`` the logging policy had of putting it first, and its reward ``r``. For a target policy
``pi`` and a reward model ``q(x, a)`` (the learner's own estimate), with ``w = pi(a | x) / p``:

* IPS (inverse propensity scoring): ``mean(w * r)``. Unbiased when ``p > 0`` wherever ``pi`` acts.
* SNIPS (self-normalised IPS): ``sum(w * r) / sum(w)``. Slightly biased, far lower variance, always within
  the range of the rewards.
* DR (doubly robust, Dudik, Langford and Li 2011): ``mean(sum_b pi(b | x) q(x, b) + w * (r - q(x, a)))``.
  Unbiased if either the propensities or the reward model are right.

Intervals are normal approximations on the per-decision terms (``w * r`` for IPS, the DR term for DR, the
delta-method linearisation ``w * (r - V) / mean(w)`` for SNIPS). The effective sample size is Kish's
``sum(w)^2 / sum(w^2)``: how many on-policy decisions the estimate is worth; a small one means a wide,
fragile estimate whatever the interval says.

Which decisions are used: those of group ``policy`` whose slot-0 item is closed (has a reward) and whose
logged propensity is in ``(0, 1]``. ``not_personalized`` decisions are excluded (consent denied: they are
not learned from). ``control`` decisions are excluded too: their logging policy is the deterministic
baseline, which gives every other action probability 0, so they carry no information about a target that
differs from it; the baseline's on-policy value is the control group's measured rate, and the baseline
estimate below, made from the policy group's log, is a check on the logged propensities when set beside it.

The two targets are deterministic: ``policy`` picks ``argmax(estimate * weight)`` over the logged
candidates with the current :class:`Estimator` (ties by list order), ``baseline`` picks the first candidate
(``DecisionRecord.candidates`` is in the baseline's priority order).

No maintained library fits (``docs/decisions.md``, "Off-policy estimates written in numpy"); the estimators
are checked on a synthetic uniform-random log whose true values are known (``tests/decide``).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import numpy as np
from numpy.typing import NDArray

from kairos.decide._intervals import Estimate, sig, z_value
from kairos.decide.records import Action, Closed, DecisionRecord, Features

__all__ = ["Estimator", "Logged", "Target", "estimates", "evaluate", "greedy", "usable"]

Target = Literal["policy", "baseline"]
Skip = Literal["not_personalized", "control", "no_items", "open", "unknown_offer", "invalid_propensity"]


class Estimator(Protocol):
    """What the reports need from a learner: the expected reward of each action for these shared features."""

    def estimate(self, shared: Features, actions: Sequence[Action]) -> list[float]: ...


@dataclass(frozen=True, slots=True)
class Logged:
    """One usable decision: the slot-0 action's index among the candidates, its propensity and reward."""

    record: DecisionRecord
    action: int
    propensity: float
    reward: float


def usable(closed: Iterable[Closed]) -> tuple[list[Logged], Counter[Skip]]:
    """The decisions an off-policy estimate may use, and how many were skipped for which reason."""
    out: list[Logged] = []
    skipped: Counter[Skip] = Counter()
    for c in closed:
        d = c.decision
        first = next((item for item in d.items if item.slot == 0), None)
        keys = [a.key for a in d.candidates]
        if d.group != "policy":
            skipped[d.group] += 1
        elif first is None:
            skipped["no_items"] += 1
        elif first.offer not in c.rewards:
            skipped["open"] += 1
        elif first.offer not in keys:
            skipped["unknown_offer"] += 1
        elif not 0 < first.propensity <= 1:  # also refuses NaN
            skipped["invalid_propensity"] += 1
        else:
            out.append(Logged(d, keys.index(first.offer), first.propensity, c.rewards[first.offer]))
    return out, skipped


def greedy(estimates: Sequence[float], weights: Sequence[float]) -> int:
    """The index of the best ``estimate * weight``; the first one on a tie, as the baseline's order breaks ties."""
    scores = [e * w for e, w in zip(estimates, weights, strict=True)]
    return scores.index(max(scores))


def _interval(terms: NDArray[np.float64], value: float, z: float, method: str) -> Estimate:
    n = len(terms)
    half = z * float(np.std(terms, ddof=1)) / math.sqrt(n)
    return Estimate(value, value - half, value + half, n, method)


def estimates(
    rewards: NDArray[np.float64],
    propensities: NDArray[np.float64],
    target_of_logged: NDArray[np.float64],
    model_of_target: NDArray[np.float64] | None,
    model_of_logged: NDArray[np.float64] | None,
    confidence: float = 0.95,
) -> tuple[dict[str, Estimate], float]:
    """IPS, SNIPS and DR of a target from aligned arrays, and the effective sample size.

    ``target_of_logged[i]`` is ``pi(a_i | x_i)``; ``model_of_target[i]`` is ``sum_b pi(b | x_i) q(x_i, b)``
    and ``model_of_logged[i]`` is ``q(x_i, a_i)`` (both ``None`` without a reward model: DR is then missing).
    """
    n = len(rewards)
    z = z_value(confidence)
    w = target_of_logged / propensities
    ess = float(w.sum() ** 2 / (w**2).sum()) if w.any() else 0.0
    out: dict[str, Estimate] = {}
    if n < 2:
        reason = f"{n} usable decision(s): an estimate needs at least 2"
        return {k: Estimate.missing(n, "normal", reason) for k in ("ips", "snips", "dr")}, ess
    if w.any():
        ips_terms = w * rewards
        out["ips"] = _interval(ips_terms, float(ips_terms.mean()), z, "normal")
        snips = float((w * rewards).sum() / w.sum())
        out["snips"] = _interval(w * (rewards - snips) / w.mean(), snips, z, "delta")
    else:
        reason = "the target never chose the logged action: effective sample size 0"
        out["ips"] = Estimate.missing(n, "normal", reason)
        out["snips"] = Estimate.missing(n, "delta", reason)
    if model_of_target is None or model_of_logged is None:
        out["dr"] = Estimate.missing(n, "normal", "no reward model: DR needs the learner's estimates")
    else:
        dr_terms = model_of_target + w * (rewards - model_of_logged)
        out["dr"] = _interval(dr_terms, float(dr_terms.mean()), z, "normal")
    return out, ess


def evaluate(
    logged: Sequence[Logged], target: Target, estimator: Estimator | None, confidence: float = 0.95
) -> dict[str, Any]:
    """The OPE block of one target (shape in :mod:`kairos.decide.evaluation`)."""
    n = len(logged)
    if target == "policy" and estimator is None:
        missing = Estimate.missing(n, "normal", "no learner to evaluate")
        return {"n": n, "matches": 0, "ess": None, **{k: missing.to_dict() for k in ("ips", "snips", "dr")}}
    picks = np.zeros(n, dtype=np.float64)
    q_target = np.zeros(n, dtype=np.float64)
    q_logged = np.zeros(n, dtype=np.float64)
    for i, entry in enumerate(logged):
        d = entry.record
        q: list[float] | None = None
        if estimator is not None:
            q = estimator.estimate(d.shared, d.candidates)
            if len(q) != len(d.candidates):
                raise ValueError(f"estimator returned {len(q)} estimates for {len(d.candidates)} candidates")
        choice = greedy(q, d.weights) if target == "policy" and q is not None else 0
        picks[i] = 1.0 if choice == entry.action else 0.0
        if q is not None:
            q_target[i], q_logged[i] = q[choice], q[entry.action]
    rewards = np.array([e.reward for e in logged], dtype=np.float64)
    props = np.array([e.propensity for e in logged], dtype=np.float64)
    with_model = estimator is not None
    found, ess = estimates(
        rewards, props, picks, q_target if with_model else None, q_logged if with_model else None, confidence
    )
    return {
        "n": n,
        "matches": int(picks.sum()),
        "ess": sig(ess) if n else None,
        **{k: v.to_dict() for k, v in found.items()},
    }

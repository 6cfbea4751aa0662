"""Confidence intervals for the reports: a rate, a difference of rates, a ratio of rates.

Every function returns an :class:`Estimate`; when the data cannot support a number it returns one whose
``value`` is ``None`` and whose ``reason`` says why ("no closed decisions in the control group"), so that a
report never invents a number and a client tests one field.

Methods, chosen per sample:

* A sample whose values are all 0 or 1 is a proportion: the **Wilson score** interval (Wilson 1927), which
  stays inside ``[0, 1]`` and keeps its coverage near 0 and 1 and for small ``n``, unlike the Wald interval.
* Any other sample (revenue, a count of items): the **normal** interval on the mean, ``mean +- z * s /
  sqrt(n)`` with the sample standard deviation ``s``; it needs ``n >= 2``.
* A difference of two proportions: **Newcombe's hybrid score** interval (Newcombe 1998, method 10), built
  from the two Wilson intervals. Otherwise Welch's normal interval, ``sqrt(s1^2/n1 + s0^2/n0)``.
* A ratio of means (relative uplift is ``ratio - 1``): the **log method** (Katz et al. 1978 for risk ratios),
  ``exp(log(m1/m0) +- z * sqrt(v1/m1^2 + v0/m0^2))`` where ``v`` is the variance of each mean; it needs both
  means above zero.

These are written out rather than imported: the formulas are a few lines each, ``scipy.stats`` (the only
maintained candidate already installed) has Wilson but not Newcombe or the log ratio, and importing it costs
0.6 s at start-up. The tests check Wilson against ``scipy`` and Newcombe against the paper's worked example.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

__all__ = ["Estimate", "difference", "is_binary", "mean_interval", "rate", "ratio", "wilson", "z_value"]


@dataclass(frozen=True, slots=True)
class Estimate:
    """A number with its interval; ``value is None`` means "not enough data" and ``reason`` says why."""

    value: float | None
    low: float | None
    high: float | None
    n: int
    method: str
    reason: str | None = None

    @classmethod
    def missing(cls, n: int, method: str, reason: str) -> Estimate:
        return cls(None, None, None, n, method, reason)

    def to_dict(self, digits: int = 4) -> dict[str, Any]:
        return {
            "value": sig(self.value, digits),
            "low": sig(self.low, digits),
            "high": sig(self.high, digits),
            "n": self.n,
            "method": self.method,
            "reason": self.reason,
        }


def sig(x: float | None, digits: int = 4) -> float | None:
    """``x`` to ``digits`` significant digits (a rate of 0.000123 keeps its digits); NaN and inf become None."""
    if x is None or not math.isfinite(x):
        return None
    return 0.0 if x == 0 else float(f"{x:.{digits}g}")


def z_value(confidence: float) -> float:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be strictly between 0 and 1, not {confidence!r}")
    return NormalDist().inv_cdf(0.5 + confidence / 2)


def is_binary(values: Sequence[float]) -> bool:
    return all(v in (0.0, 1.0) for v in values)


def wilson(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for ``successes`` out of ``n > 0``."""
    z = z_value(confidence)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def mean_interval(values: Sequence[float], confidence: float = 0.95) -> Estimate:
    """The normal interval on the mean of ``values`` (needs two values to know their spread)."""
    n = len(values)
    if n < 2:
        return Estimate.missing(n, "normal", f"{n} value(s): an interval needs at least 2")
    mean = math.fsum(values) / n
    sd = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
    half = z_value(confidence) * sd / math.sqrt(n)
    return Estimate(mean, mean - half, mean + half, n, "normal")


def rate(values: Sequence[float], confidence: float = 0.95, *, empty: str = "no closed items") -> Estimate:
    """The mean reward: Wilson when every value is 0 or 1, else the normal interval on the mean."""
    n = len(values)
    if is_binary(values):
        if n == 0:
            return Estimate.missing(0, "wilson", empty)
        k = sum(1 for v in values if v == 1.0)
        low, high = wilson(k, n, confidence)
        return Estimate(k / n, low, high, n, "wilson")
    return mean_interval(values, confidence)


def _variance_of_mean(values: Sequence[float]) -> float:
    """The variance of the sample mean: ``p(1-p)/n`` for a proportion (as Katz's interval uses), else
    ``s^2/n`` with the unbiased sample variance."""
    n = len(values)
    mean = math.fsum(values) / n
    if is_binary(values):
        return mean * (1 - mean) / n
    return math.fsum((v - mean) ** 2 for v in values) / (n - 1) / n


def difference(treated: Sequence[float], control: Sequence[float], confidence: float = 0.95) -> Estimate:
    """``mean(treated) - mean(control)``: Newcombe for two proportions, Welch's normal interval otherwise."""
    n1, n0 = len(treated), len(control)
    n = n1 + n0
    binary = is_binary(treated) and is_binary(control)
    method = "newcombe" if binary else "welch"
    if n1 == 0 or n0 == 0:
        which = "policy" if n1 == 0 else "control"
        return Estimate.missing(n, method, f"no closed decisions in the {which} group")
    p1, p0 = math.fsum(treated) / n1, math.fsum(control) / n0
    if binary:
        l1, u1 = wilson(round(p1 * n1), n1, confidence)
        l0, u0 = wilson(round(p0 * n0), n0, confidence)
        d = p1 - p0
        low = d - math.sqrt((p1 - l1) ** 2 + (u0 - p0) ** 2)
        high = d + math.sqrt((u1 - p1) ** 2 + (p0 - l0) ** 2)
        return Estimate(d, low, high, n, method)
    if n1 < 2 or n0 < 2:
        return Estimate.missing(n, method, "each group needs at least 2 closed decisions for an interval")
    half = z_value(confidence) * math.sqrt(_variance_of_mean(treated) + _variance_of_mean(control))
    return Estimate(p1 - p0, p1 - p0 - half, p1 - p0 + half, n, method)


def ratio(treated: Sequence[float], control: Sequence[float], confidence: float = 0.95) -> Estimate:
    """``mean(treated) / mean(control) - 1`` (relative uplift) with the log-ratio interval."""
    n1, n0 = len(treated), len(control)
    n = n1 + n0
    if n1 < 2 or n0 < 2:
        return Estimate.missing(n, "log-ratio", "each group needs at least 2 closed decisions")
    m1, m0 = math.fsum(treated) / n1, math.fsum(control) / n0
    if m1 <= 0 or m0 <= 0:
        which = "control" if m0 <= 0 else "policy"
        return Estimate.missing(n, "log-ratio", f"the {which} group's mean reward is not above zero")
    se = math.sqrt(_variance_of_mean(treated) / m1**2 + _variance_of_mean(control) / m0**2)
    half = z_value(confidence) * se
    log_ratio = math.log(m1 / m0)
    return Estimate(m1 / m0 - 1, math.exp(log_ratio - half) - 1, math.exp(log_ratio + half) - 1, n, "log-ratio")

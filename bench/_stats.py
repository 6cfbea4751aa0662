"""Repeated measurements and targets: medians, spreads, paired ratios, and how numbers are shown.

A figure measured several times is a :class:`Stat`: its median is the figure, min-max its spread. A
comparison of two code versions pairs the runs of the same repeat (old run i, new run i, measured back to
back) and takes the median of the per-pair ratios, so a slow patch of the shared machine that hits both
runs of a pair cancels out. A target is judged on the median, never on the best run.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TypeGuard

from _common import percentile

__all__ = ["Stat", "Target", "fmt", "median_index", "table"]


def _finite(value: float | None) -> TypeGuard[float]:
    return value is not None and math.isfinite(value)


@dataclass(frozen=True, slots=True)
class Stat:
    """A figure measured ``n`` times; values that could not be measured are left out."""

    values: tuple[float, ...]

    @classmethod
    def of(cls, values: Iterable[float | None]) -> Stat:
        return cls(tuple(float(v) for v in values if _finite(v)))

    @classmethod
    def ratios(cls, new: Sequence[float | None], old: Sequence[float | None]) -> Stat:
        """new / old per pair (same repeat), for the pairs where both were measured."""
        return cls.of(n / o for n, o in zip(new, old, strict=False) if _finite(n) and _finite(o) and o)

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def median(self) -> float:
        return statistics.median(self.values) if self.values else float("nan")

    @property
    def lo(self) -> float:
        return min(self.values) if self.values else float("nan")

    @property
    def hi(self) -> float:
        return max(self.values) if self.values else float("nan")

    def spread(self, suffix: str = "") -> str:
        if not self.values:
            return "n/a"
        if self.n == 1:
            return "(1 run)"
        return f"{fmt(self.lo)}-{fmt(self.hi)}{suffix}"

    def show(self, suffix: str = "") -> str:
        """``median (min-max)``, e.g. ``21,400 (20,100-22,050)``."""
        if not self.values:
            return "n/a"
        if self.n == 1:
            return fmt(self.median) + suffix
        return f"{fmt(self.median)}{suffix} ({self.spread(suffix)})"


def median_index(values: Sequence[float | None]) -> int | None:
    """Index of the run whose value is the median (the lower one for an even count): its details are shown."""
    ranked = sorted((v, i) for i, v in enumerate(values) if _finite(v))
    return ranked[(len(ranked) - 1) // 2][1] if ranked else None


@dataclass(frozen=True, slots=True)
class Target:
    """One target of the brief and how this run fared against it: judged on the median."""

    name: str
    stat: Stat
    target: float
    unit: str
    higher_is_better: bool = True
    basis: str = ""  # what the figure is, e.g. "median of 3 paired ratios new / old"

    @property
    def measured(self) -> float:
        return self.stat.median

    @property
    def met(self) -> bool | None:
        if not self.stat.n:
            return None
        return self.measured >= self.target if self.higher_is_better else self.measured < self.target

    @property
    def ratio(self) -> float:
        """Measured relative to the target, > 1 when better than the target in either direction."""
        m = self.measured
        if not self.stat.n:
            return float("nan")
        if self.higher_is_better:
            return m / self.target if self.target else float("inf")
        return self.target / m if m else float("inf")

    def _with_unit(self, value: float) -> str:
        return fmt(value) + ("x" if self.unit == "x" else f" {self.unit}")

    def shortfall(self) -> str:
        """How far a missed target is, in its unit and relative to the target."""
        op = "≥" if self.higher_is_better else "<"
        spread = f"; spread {self.stat.spread()} over {self.stat.n} runs" if self.stat.n > 1 else ""
        return (
            f"{self.name}: {self._with_unit(self.measured)} against {op} {self._with_unit(self.target)}, missed by"
            f" {self._with_unit(abs(self.target - self.measured))} ({self.ratio:.2f}x of the target{spread})"
        )

    def row(self) -> list[str]:
        op = "≥" if self.higher_is_better else "<"
        verdict = {None: "not measured", True: "met", False: "**missed**"}[self.met]
        return [
            self.name,
            self._with_unit(self.measured) if self.stat.n else "n/a",
            self.stat.spread(),
            str(self.stat.n),
            f"{op} {self._with_unit(self.target)}",
            f"{self.ratio:.2f}x" if self.stat.n else "n/a",
            verdict,
        ]


def fmt(value: float | None) -> str:
    """Numbers as a person reads them: thousands separated, few decimals."""
    if value is None:
        return "n/a"
    if isinstance(value, int):
        return f"{value:,}"
    if value != value:  # NaN
        return "n/a"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(row) + " |" for row in rows]
    return out


def fmt_percentile(values: Sequence[float], p: float) -> str:
    """The ``p``-th percentile (nearest rank) of ``values``, formatted; ``n/a`` when there are none."""
    return fmt(percentile(sorted(values), p)) if values else "n/a"

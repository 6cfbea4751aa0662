"""What the decisions earned: rates with intervals, uplift over the control group, off-policy estimates.

:func:`offer_stats` answers ``GET /v1/offers/{key}/stats`` and :func:`decisions_report` answers
``GET /v1/reports/decisions``; both take closed decisions (:class:`~kairos.decide.records.Closed`) already
chosen by the caller (period, channel) and return plain JSON values: ``str``, ``int``, ``float``, ``None``,
``list`` and ``dict``, never NaN or infinity. Estimates keep 4 significant digits, sums 6 decimals. The
formulas and how to read them are in ``docs/reports.md``. The dict shapes are an API contract::

    Estimate = {"value": float | None, "low": float | None, "high": float | None,
                "n": int, "method": "wilson" | "normal" | "newcombe" | "welch" | "log-ratio" | "delta",
                "reason": str | None}    # value None: not enough data, and reason says why

    Counts = {"decisions": int,          # decisions counted (offer stats: decisions that showed the offer)
              "impressions": int,        # items shown
              "closed": int,             # items whose reward is known (the first that arrived, or the default)
              "rewarded": int,           # closed items with reward > 0
              "reward_sum": float,       # sum of the closed items' rewards
              "rate": Estimate,          # mean reward per closed item (a conversion rate for 0/1 rewards)
              "exploration": {"slot0": int, "explored": int, "share": float | None}}  # slot-0 items picked
                                         # by exploration rather than greedily

    Uplift = {"unit": "impression" | "decision",
              "absolute": Estimate,      # policy mean - control mean
              "relative": Estimate}      # policy mean / control mean - 1

    OffPolicy = {"n": int,               # usable decisions (group policy, slot-0 item closed)
                 "matches": int,         # of which the target would have shown the logged slot-0 offer
                 "ess": float | None,    # effective sample size, sum(w)^2 / sum(w^2)
                 "ips": Estimate, "snips": Estimate, "dr": Estimate}

    offer_stats(...) = {"offer": str, "confidence": float,
                        "eligible": int,                 # decisions in which the offer was a candidate
                        "total": Counts,
                        "groups": {"policy": Counts, "control": Counts, "not_personalized": Counts},
                        "slots": [{"slot": int, "impressions": int, "closed": int, "rewarded": int,
                                   "rate": Estimate}, ...],   # ascending slot, only slots it was shown in
                        "uplift": Uplift}                # unit "impression": reward per impression of the offer

    decisions_report(...) = {"confidence": float,
                             "first_at": int | None, "last_at": int | None,   # epoch ms of the decisions given
                             "total": Counts & {"per_decision": Estimate},
                             "groups": {"policy": ..., "control": ..., "not_personalized": ...},  # same shape
                             "uplift": Uplift,           # unit "decision"
                             "off_policy": {"logged": {"used": int, "skipped": {reason: int}},
                                            "policy": OffPolicy, "baseline": OffPolicy}}

``per_decision`` is the mean of a decision's total reward (the sum over its items), over decisions whose
items are all closed. Uplift in the decisions report compares these per-decision totals, because people,
not items, are assigned to the control group: items of one decision are shown together, so treating them
as independent would narrow the interval. An offer appears at most once per decision, so per impression is
per decision for :func:`offer_stats`. ``not_personalized`` decisions (consent denied, served the baseline)
are counted in ``total`` and in their own group but never in uplift or off-policy estimates: who ends up
there is not random, so comparing them would measure consent, not the policy.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any, get_args

from kairos.decide._intervals import difference, rate, ratio
from kairos.decide.offpolicy import Estimator, evaluate, usable
from kairos.decide.records import Closed, Group

__all__ = ["Estimator", "decisions_report", "offer_stats"]

GROUPS: tuple[Group, ...] = get_args(Group)


def _sum(values: Iterable[float]) -> float:
    return round(math.fsum(values), 6)


def _counts(closed: Sequence[Closed], offer: str | None, confidence: float) -> dict[str, Any]:
    """The ``Counts`` block over ``closed``, for one offer's items or (``offer is None``) all items."""
    shown = [(c, i) for c in closed for i in c.decision.items if offer is None or i.offer == offer]
    rewards = [c.rewards[i.offer] for c, i in shown if i.offer in c.rewards]
    first = [i for _, i in shown if i.slot == 0]
    explored = sum(1 for i in first if i.explored)
    return {
        "decisions": len({id(c) for c, _ in shown}) if offer is not None else len(closed),
        "impressions": len(shown),
        "closed": len(rewards),
        "rewarded": sum(1 for r in rewards if r > 0),
        "reward_sum": _sum(rewards),
        "rate": rate(rewards, confidence).to_dict(),
        "exploration": {
            "slot0": len(first),
            "explored": explored,
            "share": round(explored / len(first), 4) if first else None,
        },
    }


def _uplift(treated: list[float], control: list[float], unit: str, confidence: float) -> dict[str, Any]:
    return {
        "unit": unit,
        "absolute": difference(treated, control, confidence).to_dict(),
        "relative": ratio(treated, control, confidence).to_dict(),
    }


def offer_stats(closed: Iterable[Closed], offer: str, *, confidence: float = 0.95) -> dict[str, Any]:
    """Impressions, rewards and rates of one offer, per group and per slot, and its uplift over control."""
    everything = list(closed)
    shown = [c for c in everything if any(i.offer == offer for i in c.decision.items)]
    by_group = {g: [c for c in shown if c.decision.group == g] for g in GROUPS}
    per_slot = []
    for slot in sorted({i.slot for c in shown for i in c.decision.items if i.offer == offer}):
        at_slot = [c for c in shown if any(i.offer == offer and i.slot == slot for i in c.decision.items)]
        rewards = [c.rewards[offer] for c in at_slot if offer in c.rewards]
        per_slot.append(
            {
                "slot": slot,
                "impressions": len(at_slot),
                "closed": len(rewards),
                "rewarded": sum(1 for r in rewards if r > 0),
                "rate": rate(rewards, confidence).to_dict(),
            }
        )
    treated = [c.rewards[offer] for c in by_group["policy"] if offer in c.rewards]
    control = [c.rewards[offer] for c in by_group["control"] if offer in c.rewards]
    return {
        "offer": offer,
        "confidence": confidence,
        "eligible": sum(1 for c in everything if any(a.key == offer for a in c.decision.candidates)),
        "total": _counts(shown, offer, confidence),
        "groups": {g: _counts(by_group[g], offer, confidence) for g in GROUPS},
        "slots": per_slot,
        "uplift": _uplift(treated, control, "impression", confidence),
    }


def _decision_total(c: Closed) -> float | None:
    """A decision's total reward, or ``None`` while any of its items is open (or it showed nothing)."""
    items = c.decision.items
    if not items or any(i.offer not in c.rewards for i in items):
        return None
    return math.fsum(c.rewards[i.offer] for i in items)


def _with_per_decision(closed: Sequence[Closed], confidence: float) -> tuple[dict[str, Any], list[float]]:
    totals = [t for t in map(_decision_total, closed) if t is not None]
    block = _counts(closed, None, confidence)
    block["per_decision"] = rate(totals, confidence, empty="no closed decisions").to_dict()
    return block, totals


def decisions_report(
    closed: Iterable[Closed], estimator: Estimator | None, *, confidence: float = 0.95
) -> dict[str, Any]:
    """The decisions report: totals, groups, uplift over control and off-policy estimates.

    ``estimator`` is the current learner (the ``policy`` target and the DR reward model); ``None`` when there
    is none yet, which leaves the ``policy`` block and the baseline's DR without a value, with a reason.
    """
    everything = list(closed)
    total, _ = _with_per_decision(everything, confidence)
    groups: dict[str, dict[str, Any]] = {}
    outcomes: dict[str, list[float]] = {}
    for g in GROUPS:
        groups[g], outcomes[g] = _with_per_decision([c for c in everything if c.decision.group == g], confidence)
    logged, skipped = usable(everything)
    times = [c.decision.at for c in everything]
    return {
        "confidence": confidence,
        "first_at": min(times, default=None),
        "last_at": max(times, default=None),
        "total": total,
        "groups": groups,
        "uplift": _uplift(outcomes["policy"], outcomes["control"], "decision", confidence),
        "off_policy": {
            "logged": {"used": len(logged), "skipped": dict(sorted(skipped.items()))},
            "policy": evaluate(logged, "policy", estimator, confidence),
            "baseline": evaluate(logged, "baseline", estimator, confidence),
        },
    }

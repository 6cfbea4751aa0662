"""Which experience does the business deliver? Peppers and Rogers' matrix, measured from the decision log.

Peppers and Rogers place an enterprise on two axes (the Enterprise Strategy Map of *Enterprise One to One*,
Doubleday/Currency 1997, reproduced as Exhibit 1.2 of *Managing Customer Experience and Relationships: A
Strategic Framework*, Wiley): **interactivity** (up: it recognises individual customers, sends different
messages to different ones and remembers each one's responses) and **tailoring**, i.e. customization (right:
what is offered is made for the customer rather than the same for everybody). Their four quadrants, with the
names this report uses:

============================  ==================  ======================  ======================
quadrant (book's name)        interaction         customization           code
============================  ==================  ======================  ======================
I   Mass marketing            low                 low                     ``mass``
II  Niche marketing           low                 high                    ``niche``
III Database marketing        high                low                     ``targeted``
IV  Learning relationships    high                high                    ``one-to-one``
============================  ==================  ======================  ======================

Here the axes are shares of decisions, and a share at or above ``threshold`` (0.5 unless told) is "high":

* ``interaction``: the share of decisions whose answer used this person's own behaviour or current context:
  the answer would differ for someone else.
* ``customization``: the share of decisions shaped by the person's own stated input (stated traits,
  preferences), rather than by a segment or by nothing.

**How the decide path sets the two flags** of :class:`~kairos.decide.records.DecisionRecord` (a
counterfactual, so a feature that was present but changed nothing does not count). Let ``S`` be the served
answer: the offers in their slots, and the channel when the decision chose it. Re-run eligibility, ranking
and arbitration *with the same random draws* (so exploration alone never counts) on reduced inputs:

* ``interaction = S != answer(without B)`` where ``B`` is the namespaces ``request``, ``context``,
  ``profile``, ``segments`` and ``moments`` emptied, and eligibility rules evaluated as if those fields were
  absent (``has(...)`` false). Segments count here: membership comes from the person's own behaviour.
* ``customization = S != answer(without stated)``, the ``stated`` namespace emptied and stated traits or
  preferences absent from eligibility; or the channel was picked by the person's stated channel preference.

A baseline answer (``control``, ``not_personalized``) can still be interactive when an eligibility rule read
the profile; a decision with one eligible offer is neither, as nothing could have differed.

Each placement (``overall`` and one per channel) is::

    {"decisions": int, "interaction": float | None, "customization": float | None,   # None: no decisions
     "quadrant": "mass" | "niche" | "targeted" | "one-to-one" | None,
     "trend": [{"start": int, "decisions": int, "interaction": ..., "customization": ..., "quadrant": ...}],
     "change": {"interaction": float | None, "customization": float | None},  # 2nd half - 1st half
     "inputs": {name: float | None},     # diagnostic shares of decisions, see INPUTS
     "moves": [{"axis": "interaction" | "customization", "reason": str, "share": float, "decisions": int,
                "text": str}]}           # what would move it right or up, largest share first

and the report is ``{"from": int, "to": int, "threshold": float, "bucket": "day" | "week",
"overall": Placement, "channels": {channel: Placement}}``. Trend buckets start at UTC midnight (day) or
Monday 00:00 UTC (week); ``auto`` picks days for a period up to 31 days, weeks beyond.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Literal

from kairos.decide.records import STATED_NAMESPACE, DecisionRecord

__all__ = ["INPUTS", "Quadrant", "experience_report", "quadrant"]

Quadrant = Literal["mass", "niche", "targeted", "one-to-one"]
Buckets = Literal["auto", "day", "week"]

DAY = 86_400_000
WEEK = 7 * DAY
_MONDAY = 4 * DAY  # 1970-01-01 was a Thursday; 1970-01-05 the first Monday
BEHAVIOUR = ("profile", "segments", "moments")
CONTEXT = ("request", "context")

_Test = Callable[[DecisionRecord], bool]


def _has(d: DecisionRecord, namespaces: Sequence[str]) -> bool:
    return any(d.shared.get(ns) for ns in namespaces)


# The diagnostic shares reported as "inputs": each is the share of decisions for which the test holds.
INPUTS: dict[str, _Test] = {
    "control": lambda d: d.group == "control",
    "not_personalized": lambda d: d.group == "not_personalized",
    "anonymous": lambda d: d.profile_pk is None,
    "single_offer": lambda d: len(d.candidates) <= 1,
    "no_behaviour": lambda d: not _has(d, BEHAVIOUR),
    "no_context": lambda d: not _has(d, CONTEXT),
    "unused_inputs": lambda d: (
        d.group == "policy" and not d.interaction and len(d.candidates) > 1 and _has(d, BEHAVIOUR + CONTEXT)
    ),
    "no_stated": lambda d: not _has(d, (STATED_NAMESPACE,)),
    "unused_stated": lambda d: not d.customization and len(d.candidates) > 1 and _has(d, (STATED_NAMESPACE,)),
}

_I, _C, _BOTH = ("interaction",), ("customization",), ("interaction", "customization")
# reason -> (the axes it holds down, advice); a move's text is "<share> of decisions <advice>".
_MOVES: dict[str, tuple[tuple[str, ...], str]] = {
    "not_personalized": (_BOTH, "were not personalised (consent denied): a ceiling on both shares"),
    "control": (_BOTH, "went to the control group (the baseline, by design): lower its share once uplift is known"),
    "single_offer": (_BOTH, "had one eligible offer, nothing to choose from: add offers or loosen eligibility"),
    "anonymous": (_I, "were for people not known yet: identify them earlier (login, email capture)"),
    "no_context": (_I, "had no request or derived context: send page, device and locale with the request"),
    "no_behaviour": (_I, "had no profile, segment or moment features: collect events for these people"),
    "unused_inputs": (_I, "had behaviour or context the policy did not act on: more rewards or more distinct offers"),
    "no_stated": (_C, "had no stated input: ask for preferences in the preference centre"),
    "unused_stated": (_C, "had stated input that changed nothing: use stated traits in eligibility and as features"),
}


def quadrant(interaction: float, customization: float, threshold: float = 0.5) -> Quadrant:
    """The quadrant of two shares; a share equal to the threshold counts as high.

    >>> quadrant(0.2, 0.1), quadrant(0.2, 0.5), quadrant(0.9, 0.1), quadrant(0.5, 0.5)
    ('mass', 'niche', 'targeted', 'one-to-one')
    """
    high_i, high_c = interaction >= threshold, customization >= threshold
    if high_i:
        return "one-to-one" if high_c else "targeted"
    return "niche" if high_c else "mass"


def _share(count: int, n: int) -> float | None:
    return round(count / n, 4) if n else None


def _shares(ds: Sequence[DecisionRecord], threshold: float) -> dict[str, Any]:
    """Decisions, the two shares (rounded for output) and the quadrant (placed on the exact shares)."""
    n = len(ds)
    inter, cust = sum(d.interaction for d in ds), sum(d.customization for d in ds)
    placed = quadrant(inter / n, cust / n, threshold) if n else None
    return {"decisions": n, "interaction": _share(inter, n), "customization": _share(cust, n), "quadrant": placed}


def _moves(ds: Sequence[DecisionRecord], shares: dict[str, Any], threshold: float) -> list[dict[str, Any]]:
    """What would move the placement: for each axis below the threshold, the gap and the inputs behind it."""
    n = len(ds)
    out: list[dict[str, Any]] = []
    for axis in ("interaction", "customization"):
        have = sum(getattr(d, axis) for d in ds)
        if not n or have / n >= threshold:
            continue
        need = math.ceil(threshold * n - 1e-9) - have
        if axis == "interaction":
            target = quadrant(1.0, shares["customization"], threshold)
        else:
            target = quadrant(shares["interaction"], 1.0, threshold)
        word = "used the person's behaviour or context" if axis == "interaction" else "used their stated input"
        gap = f"{need} more of {n} decisions must have {word} to reach {target}"
        out.append({"axis": axis, "reason": "gap", "share": round(need / n, 4), "decisions": need, "text": gap})
        found = []
        for reason, (axes, advice) in _MOVES.items():
            count = sum(1 for d in ds if INPUTS[reason](d))
            if axis in axes and count:
                share = round(count / n, 4)
                text = f"{count / n:.0%} of decisions {advice}"
                found.append({"axis": axis, "reason": reason, "share": share, "decisions": count, "text": text})
        out += sorted(found, key=lambda m: -m["share"])
    return out


def _bucket_start(at: int, size: int) -> int:
    offset = _MONDAY if size == WEEK else 0
    return (at - offset) // size * size + offset


def _placement(ds: Sequence[DecisionRecord], start: int, end: int, size: int, threshold: float) -> dict[str, Any]:
    shares = _shares(ds, threshold)
    by_bucket: dict[int, list[DecisionRecord]] = {}
    for d in ds:
        by_bucket.setdefault(_bucket_start(d.at, size), []).append(d)
    trend = [
        {"start": b, **_shares(by_bucket.get(b, []), threshold)} for b in range(_bucket_start(start, size), end, size)
    ]
    mid = start + (end - start) // 2
    early = _shares([d for d in ds if d.at < mid], threshold)
    late = _shares([d for d in ds if d.at >= mid], threshold)
    change = {
        axis: None if early[axis] is None or late[axis] is None else round(late[axis] - early[axis], 4)
        for axis in ("interaction", "customization")
    }
    return {
        **shares,
        "trend": trend,
        "change": change,
        "inputs": {name: _share(sum(1 for d in ds if test(d)), len(ds)) for name, test in INPUTS.items()},
        "moves": _moves(ds, shares, threshold),
    }


def experience_report(
    decisions: Iterable[DecisionRecord],
    start: int,
    end: int,
    *,
    threshold: float = 0.5,
    buckets: Buckets = "auto",
) -> dict[str, Any]:
    """Place each channel and the business as a whole in the matrix, over decisions with ``start <= at < end``.

    ``start`` and ``end`` are epoch ms; ``threshold`` is the share from which an axis counts as high.
    """
    if end <= start:
        raise ValueError(f"the period must end after it starts ({start} >= {end})")
    if not 0 < threshold <= 1:
        raise ValueError(f"threshold must be in (0, 1], not {threshold!r}")
    if buckets not in ("auto", "day", "week"):
        raise ValueError(f"buckets must be auto, day or week, not {buckets!r}")
    size = DAY if buckets == "day" or (buckets == "auto" and end - start <= 31 * DAY) else WEEK
    inside = sorted((d for d in decisions if start <= d.at < end), key=lambda d: d.at)
    channels = sorted({d.channel for d in inside})
    return {
        "from": start,
        "to": end,
        "threshold": threshold,
        "bucket": "day" if size == DAY else "week",
        "overall": _placement(inside, start, end, size, threshold),
        "channels": {
            c: _placement([d for d in inside if d.channel == c], start, end, size, threshold) for c in channels
        },
    }

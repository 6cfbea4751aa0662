"""The reports over the decision log, for the API and the CLI: one offer's stats, the decisions report, and the
experience report. They read the decisions of a period (``from`` / ``to``, by default the last 30 days) with
their rewards, at most ``MAX_DECISIONS`` of them (the answer says when it was cut), and hand them to the
pure functions of :mod:`kairos.decide.evaluation` and :mod:`kairos.decide.experience`."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from kairos.decide.evaluation import decisions_report, offer_stats
from kairos.decide.experience import experience_report
from kairos.decide.learning import decode_record
from kairos.decide.policy import Policy
from kairos.decide.records import Closed
from kairos.errors import ValidationError
from kairos.store import DecisionRow, SqlDecisions

__all__ = ["MAX_DECISIONS", "Period", "decisions", "experience", "offer", "period"]

DAY = 86_400_000
DEFAULT_DAYS = 30
MAX_DECISIONS = 200_000
PAGE = 5_000
MAX_EXPERIENCE_DAYS = 1830
MIN_MS, MAX_MS = -62135596800000, 253402300799999  # 0001-01-01 .. 9999-12-31T23:59:59.999 UTC
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


@dataclass(frozen=True, slots=True)
class Period:
    start: int  # epoch ms, included
    end: int  # epoch ms, excluded


def _when(text: str | None, field: str) -> int | None:
    if text is None or text == "":
        return None
    if len(text) > 40 or not text.isascii():
        raise ValidationError(
            f"{field} is an ISO 8601 date or time, e.g. 2026-06-01", code="invalid_query", field=field
        )
    try:
        at = dt.datetime.fromisoformat(text)
    except ValueError:
        raise ValidationError(
            f"{field} is an ISO 8601 date or time, e.g. 2026-06-01", code="invalid_query", field=field
        ) from None
    if at.tzinfo is None:
        at = at.replace(tzinfo=dt.UTC)
    ms = (at - _EPOCH) // dt.timedelta(milliseconds=1)  # exact: a float timestamp rounds 9999's last µs up
    if not MIN_MS <= ms <= MAX_MS:  # 0001-01-01T00:00+14:00 is in year 0 in UTC: no report can name it
        raise ValidationError(f"{field} is outside the years 1 to 9999 in UTC", code="invalid_query", field=field)
    return ms


def period(start: str | None, end: str | None, now: int) -> Period:
    """``from`` and ``to`` (ISO 8601; a date is its midnight UTC) → epoch ms; ``to`` defaults to now and
    ``from`` to 30 days before ``to`` (not before year 1)."""
    to = _when(end, "to")
    to = now if to is None else to
    frm = _when(start, "from")
    if frm is None:
        frm = max(MIN_MS, to - DEFAULT_DAYS * DAY)
        if frm >= to:
            raise ValidationError("to must be after 0001-01-01T00:00:00Z", code="invalid_query", field="to")
    if frm >= to:
        raise ValidationError("from must be before to", code="invalid_query", field="from")
    return Period(frm, to)


def _rows(store: SqlDecisions, p: Period, stats: dict[str, Any]) -> Iterator[DecisionRow]:
    after = 0
    seen = 0
    while True:
        rows = store.between(p.start, p.end, PAGE, after)
        if not rows:
            return
        for row in rows:
            if seen >= MAX_DECISIONS:
                stats["truncated"] = True
                return
            seen += 1
            yield row
        after = rows[-1].seq


def _closed(store: SqlDecisions, p: Period, offer: str | None, stats: dict[str, Any]) -> list[Closed]:
    out: list[Closed] = []
    batch: list[DecisionRow] = []

    def flush() -> None:
        rewards: dict[str, dict[str, float]] = {}
        for r in store.rewards_of([d.id for d in batch]):
            rewards.setdefault(r.decision_id, {})[r.offer] = r.reward
        out.extend(Closed(decode_record(d.record), rewards.get(d.id, {})) for d in batch)
        batch.clear()

    for row in _rows(store, p, stats):
        if offer is not None and offer not in row.offers:
            continue
        batch.append(row)
        if len(batch) >= PAGE:
            flush()
    if batch:
        flush()
    return out


def _framed(body: dict[str, Any], p: Period, stats: dict[str, Any]) -> dict[str, Any]:
    return {
        **body,
        "period": {"from": _iso(p.start), "to": _iso(p.end)},
        "truncated": bool(stats.get("truncated")),
    }


def _iso(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).isoformat().replace("+00:00", "Z")


def offer(store: SqlDecisions, key: str, p: Period) -> dict[str, Any]:
    stats: dict[str, Any] = {}
    return _framed(offer_stats(_closed(store, p, key, stats), key), p, stats)


def decisions(store: SqlDecisions, policy: Policy | None, p: Period) -> dict[str, Any]:
    stats: dict[str, Any] = {}
    return _framed(decisions_report(_closed(store, p, None, stats), policy), p, stats)


def experience(store: SqlDecisions, p: Period, threshold: float) -> dict[str, Any]:
    if p.end - p.start > MAX_EXPERIENCE_DAYS * DAY:  # its trend has a bucket per week, empty ones included
        raise ValidationError(
            f"the experience report spans at most {MAX_EXPERIENCE_DAYS} days (about 5 years): narrow from and to",
            code="invalid_query",
            field="from",
        )
    stats: dict[str, Any] = {}
    records = [decode_record(r.record) for r in _rows(store, p, stats)]
    report = experience_report(records, p.start, p.end, threshold=threshold)
    report["truncated"] = bool(stats.get("truncated"))
    return report

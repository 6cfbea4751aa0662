"""RFM (recency, frequency, monetary), as a projection: three 1-5 scores and the classic named cell.

Scores come from fixed, configured breakpoints (``[rfm]`` settings), never from population quantiles, so a
profile's scores are a function of its own purchases and the time only: replay, batch sizes and merges give
equal state (``docs/decisions.md``). Recency is the only score that changes with time alone; a durable timer
wakes the profile when the last purchase crosses the next recency breakpoint.

>>> from kairos.config import RfmSettings
>>> model = RfmModel(RfmSettings())
>>> model.frequency(3), model.monetary(12_000), model.recency(last=0, now=8 * DAY)
(3, 2, 4)
>>> segment(4, 2)
'potential_loyalists'
>>> parse_cents("12.345"), parse_cents(19.99), parse_cents("free"), parse_cents(True)
(1234, 1999, None, None)
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Collection, Mapping, Sequence
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import Any

import msgspec

from kairos.collect import iso
from kairos.config import RfmSettings
from kairos.pipeline.projection import Context, Entry, Projection, Timer
from kairos.store.schema import Column, Index

__all__ = ["DAY", "Rfm", "RfmModel", "RfmState", "parse_cents", "segment"]

DAY = 86_400_000
MAX_ORDER_CENTS = 10**11  # one order above a billion is a bad value, not revenue
MAX_TOTAL_CENTS = 2**62  # stays inside a signed 64-bit column whatever arrives
TIMER = "recency"


def parse_cents(value: Any) -> int | None:
    """An amount in integer cents (half-even rounding), or None when it is not a usable amount.

    Numbers and numeric strings count; booleans, NaN, infinities, negatives and amounts above a billion do not.
    """
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    try:
        amount = Decimal(
            value.strip() if isinstance(value, str) else repr(value) if isinstance(value, float) else value
        )
    except (InvalidOperation, ValueError):
        return None
    # Compared before scaling: ``amount * 100`` of "1e999999" overflows the decimal context and raises.
    if not amount.is_finite() or amount < 0 or amount > MAX_ORDER_CENTS // 100:
        return None
    return int((amount * 100).quantize(Decimal(1), rounding=ROUND_HALF_EVEN))


# The R x F grid of the classic RFM segment names (rows: recency score 1-5, columns: frequency score 1-5).
_GRID = (
    ("lost", "hibernating", "at_risk", "at_risk", "cant_lose_them"),
    ("hibernating", "hibernating", "at_risk", "at_risk", "cant_lose_them"),
    ("about_to_sleep", "about_to_sleep", "need_attention", "loyal_customers", "loyal_customers"),
    ("promising", "potential_loyalists", "potential_loyalists", "loyal_customers", "loyal_customers"),
    ("new_customers", "potential_loyalists", "potential_loyalists", "champions", "champions"),
)


def segment(recency: int, frequency: int) -> str:
    """The named cell of an R and an F score (1-5 each)."""
    return _GRID[recency - 1][frequency - 1]


class RfmModel:
    """Scores from the configured breakpoints (each list: 4 increasing values)."""

    def __init__(self, settings: RfmSettings) -> None:
        self.recency_ms = [int(d * DAY) for d in settings.recency_days]
        self.frequency_at = list(settings.frequency)
        self.monetary_cents = [round(m * 100) for m in settings.monetary]

    def recency(self, last: int, now: int) -> int:
        """5 within the first breakpoint (inclusive), ... 1 past the last one."""
        return 5 - bisect.bisect_left(self.recency_ms, max(0, now - last))

    def next_change(self, last: int, now: int) -> int | None:
        """When the recency score drops next (epoch ms), or None once it is 1."""
        for limit in self.recency_ms:
            if now - last <= limit:
                return last + limit + 1
        return None

    def frequency(self, count: int) -> int:
        """1 below the first breakpoint, +1 for each breakpoint reached."""
        return 1 + bisect.bisect_right(self.frequency_at, count)

    def monetary(self, cents: int) -> int:
        return 1 + bisect.bisect_right(self.monetary_cents, cents)


class RfmState(msgspec.Struct, frozen=True):
    last: int = 0  # event time of the latest purchase (epoch ms)
    count: int = 0  # purchases; 0 = none, and no RFM traits
    cents: int = 0  # total spend in cents
    recency: int = 0  # the recency score as of the last apply/merge/wake (it depends on the time)


TRAIT_NAMES = (
    *("rfm_recency", "rfm_frequency", "rfm_monetary", "rfm_score", "rfm_segment"),
    *("rfm_orders", "rfm_spend", "rfm_last_purchase_at"),
)


class Rfm(Projection[RfmState]):
    """Purchases (``rfm.event``) → last purchase time, count and spend; scores and named cell as traits."""

    name = "rfm"
    columns = (
        Column("rfm_last", "int", default="0"),
        Column("rfm_count", "int", default="0"),
        Column("rfm_cents", "int", default="0"),
        Column("rfm_recency", "int", default="0"),
        Column("rfm_frequency", "int", default="0"),
        Column("rfm_monetary", "int", default="0"),
        Column("rfm_segment", "text", nullable=True),
    )
    indexes = (Index("profiles_rfm_segment", ("rfm_segment",), where="rfm_segment IS NOT NULL"),)

    def __init__(self, settings: RfmSettings) -> None:
        self.settings = settings
        self.model = RfmModel(settings)

    def initial(self) -> RfmState:
        return RfmState()

    def _amount(self, properties: Mapping[str, Any] | None) -> int:
        """Cents of a purchase; a missing or bad amount counts as 0 (the order still happened)."""
        if not properties:
            return 0
        raw = properties.get(self.settings.amount_property)
        if raw is None and self.settings.revenue_fallback:
            raw = properties.get("revenue")
        return parse_cents(raw) or 0

    def _rescore(self, state: RfmState, ctx: Context, now: int) -> RfmState:
        """``state`` with its recency as of ``now``, and the timer set for the next drop (always after
        ``now``: a timer never re-fires within the pass that fired it)."""
        due = self.model.next_change(state.last, now)
        if due is None:
            ctx.cancel(TIMER)
        else:
            ctx.schedule(TIMER, due)
        recency = self.model.recency(state.last, now)
        return state if recency == state.recency else msgspec.structs.replace(state, recency=recency)

    def apply(self, state: RfmState, entry: Entry, ctx: Context) -> RfmState:
        event = entry.event
        if event.type != "track" or event.event != self.settings.event:
            return state
        cents = min(MAX_TOTAL_CENTS, state.cents + self._amount(event.properties))
        return self._rescore(RfmState(max(state.last, entry.ts), state.count + 1, cents, state.recency), ctx, ctx.now)

    def merge(self, winner: RfmState, loser: RfmState, ctx: Context) -> RfmState:
        if not loser.count:
            return winner
        if not winner.count:
            return loser
        merged = RfmState(
            max(winner.last, loser.last),
            winner.count + loser.count,
            min(MAX_TOTAL_CENTS, winner.cents + loser.cents),
        )
        return self._rescore(merged, ctx, ctx.now)

    def wake(self, state: RfmState, timer: Timer, ctx: Context) -> RfmState:
        if timer.key != TIMER or not state.count:
            return state
        # The processor's clock, but never before the due time: clocks of other hosts may lag a little.
        return self._rescore(state, ctx, max(ctx.now, timer.due_at))

    def scores(self, state: RfmState) -> tuple[int, int, int]:
        return state.recency, self.model.frequency(state.count), self.model.monetary(state.cents)

    def encode(self, state: RfmState) -> tuple[Any, ...]:
        if not state.count:
            return 0, 0, 0, 0, 0, 0, None
        r, f, m = self.scores(state)
        return state.last, state.count, state.cents, r, f, m, segment(r, f)

    def decode(self, values: Sequence[Any]) -> RfmState:
        return RfmState(int(values[0]), int(values[1]), int(values[2]), int(values[3]))

    def trait_names(self) -> Collection[str]:
        return TRAIT_NAMES

    def traits(self, state: RfmState) -> Mapping[str, Any]:
        if not state.count:
            return {}
        r, f, m = self.scores(state)
        return {
            "rfm_recency": r,
            "rfm_frequency": f,
            "rfm_monetary": m,
            "rfm_score": f"{r}{f}{m}",
            "rfm_segment": segment(r, f),
            "rfm_orders": state.count,
            "rfm_spend": state.cents / 100,
            "rfm_last_purchase_at": iso(state.last),
        }

    def view(self, state: RfmState) -> dict[str, Any]:
        traits = dict(self.traits(state))
        if not traits:
            return {}
        meta = {"kind": "observed", "source": "computed", "updated_at": iso(state.last)}
        return {"traits": traits, "trait_meta": {name: dict(meta) for name in traits}}

"""Counters, as a projection: how many events a profile holds, and the first and last event time."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from kairos.collect import iso
from kairos.pipeline.projection import Context, Entry, Projection
from kairos.store.schema import Column

__all__ = ["Counters", "Counts"]


class Counts(msgspec.Struct, frozen=True):
    event_count: int = 0
    created_at: int = 0  # earliest event time (ms); meaningless while event_count is 0
    updated_at: int = 0  # latest event time (ms)


class Counters(Projection[Counts]):
    name = "counters"
    columns = (
        Column("created_at", "int", default="0"),
        Column("updated_at", "int", default="0"),
        Column("event_count", "int", default="0"),
    )

    def initial(self) -> Counts:
        return Counts()

    def apply(self, state: Counts, entry: Entry, ctx: Context) -> Counts:
        if not state.event_count:
            return Counts(1, entry.ts, entry.ts)
        return Counts(state.event_count + 1, min(state.created_at, entry.ts), max(state.updated_at, entry.ts))

    def merge(self, winner: Counts, loser: Counts, ctx: Context) -> Counts:
        if not loser.event_count:
            return winner
        if not winner.event_count:
            return loser
        return Counts(
            winner.event_count + loser.event_count,
            min(winner.created_at, loser.created_at),
            max(winner.updated_at, loser.updated_at),
        )

    def encode(self, state: Counts) -> tuple[Any, ...]:
        return state.created_at, state.updated_at, state.event_count

    def decode(self, values: Sequence[Any]) -> Counts:
        return Counts(values[2], values[0], values[1])

    def view(self, state: Counts) -> dict[str, Any]:
        return {
            "created_at": iso(state.created_at),
            "updated_at": iso(state.updated_at),
            "event_count": state.event_count,
        }

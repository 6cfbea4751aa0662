"""The timeline, as a projection: one row per applied event, plus items other projections record.

Rows are keyed ``(profile, ts, seq, sub)``: ``sub`` is 0 for the event itself and numbers the items that
other projections derive from it (``record``), e.g. a segment entered because of that event. On a merge the
store moves the loser's rows to the winner (``profile_column``).
"""

from __future__ import annotations

import zlib
from typing import Any

import msgspec

from kairos.pipeline.projection import Context, Entry, Projection
from kairos.store.schema import Column, Table

__all__ = ["TIMELINE", "Timeline", "record"]

_encode = msgspec.json.Encoder().encode

TIMELINE = Table(
    "timeline",
    (
        Column("profile_pk", "int"),
        Column("ts", "int"),
        Column("seq", "int"),
        Column("sub", "int"),
        Column("type", "text"),
        Column("name", "text", nullable=True),
        Column("data", "json", nullable=True),
    ),
    ("profile_pk", "ts", "seq", "sub"),
    profile_column="profile_pk",
    without_rowid=True,
)


class Timeline(Projection[None]):
    name = "timeline"
    tables = (TIMELINE,)

    def initial(self) -> None:
        return None

    def apply(self, state: None, entry: Entry, ctx: Context) -> None:
        event = entry.event
        name = event.event if event.type == "track" else event.name
        ctx.insert(TIMELINE, (ctx.profile.pk, entry.ts, entry.seq, 0, event.type, name, None))
        return None

    def merge(self, winner: None, loser: None, ctx: Context) -> None:
        return None


def record(ctx: Context, ts: int, type: str, name: str | None, data: Any = None) -> None:
    """Add an item derived by another projection (a segment entered, a moment) at time ``ts``.

    Its ``sub`` is a digest of what it says, so two different items at the same time and log position never
    collide, and a replay writes the same rows."""
    sub = 1 + zlib.crc32(_encode([type, name, data])) % (2**31 - 2)
    ctx.insert(TIMELINE, (ctx.profile.pk, ts, ctx.seq, sub, type, name, data))

"""Consents per purpose, as a projection: from Segment's ``context.consent.categoryPreferences``.

Consent is the customer's latest word whatever its source: the newest (event time, then log position) wins,
live and when two profiles merge, so an older grant never overwrites a newer denial.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from kairos.collect import iso
from kairos.pipeline.projection import Context, Entry, Projection, fold
from kairos.store.schema import Column

__all__ = ["Consents"]

ConsentMap = Mapping[str, Mapping[str, Any]]  # purpose → {granted, source, updated_at, seq}


def _newer(new: Mapping[str, Any], old: Mapping[str, Any] | None) -> bool:
    return old is None or (new["updated_at"], new["seq"]) >= (old["updated_at"], old["seq"])


def _fold(state: ConsentMap, incoming: ConsentMap) -> ConsentMap:
    return fold(state, incoming, _newer)


class Consents(Projection[ConsentMap]):
    name = "consents"
    columns = (Column("consents", "json", default="'{}'"),)

    def initial(self) -> ConsentMap:
        return {}

    def apply(self, state: ConsentMap, entry: Entry, ctx: Context) -> ConsentMap:
        context = entry.event.context
        consent = context.get("consent") if context else None
        prefs = consent.get("categoryPreferences") if isinstance(consent, dict) else None
        if not isinstance(prefs, dict):
            return state
        incoming = {
            purpose: {"granted": granted, "source": entry.source, "updated_at": entry.ts, "seq": entry.seq}
            for purpose, granted in prefs.items()
            if isinstance(granted, bool)
        }
        return _fold(state, incoming)

    def merge(self, winner: ConsentMap, loser: ConsentMap, ctx: Context) -> ConsentMap:
        return _fold(winner, loser)

    def encode(self, state: ConsentMap) -> tuple[Any, ...]:
        return (dict(state),)

    def decode(self, values: Sequence[Any]) -> ConsentMap:
        return dict(values[0])

    def view(self, state: ConsentMap) -> dict[str, Any]:
        return {
            "consents": {
                purpose: {"granted": c["granted"], "source": c["source"], "updated_at": iso(c["updated_at"])}
                for purpose, c in sorted(state.items())
            }
        }

"""Traits with provenance, as a projection; and the precedence rule that decides which value a profile keeps.

With the default ``kind_then_time`` rule a value is never replaced by one of a weaker kind, and within a
kind the newest (by event time, then log position) wins:

>>> from kairos.config import ProfileSettings
>>> rules = TraitRules(ProfileSettings())
>>> stated = TraitValue("email", "stated", "web", updated_at=1_000, seq=1)
>>> observed_later = TraitValue("sms", "observed", "app", updated_at=2_000, seq=2)
>>> rules.wins(observed_later, stated)
False
>>> rules.wins(TraitValue("push", "stated", "app", updated_at=3_000, seq=3), stated)
True
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kairos.collect import iso
from kairos.config import ProfileSettings
from kairos.pipeline.projection import Context, Entry, Projection, fold
from kairos.store.schema import Column, Index

__all__ = ["TraitRules", "TraitValue", "Traits"]

TraitMap = Mapping[str, "TraitValue"]


@dataclass(frozen=True, slots=True)
class TraitValue:
    value: Any
    kind: str
    source: str
    updated_at: int  # epoch ms of the event that set it
    seq: int  # log position of that event: breaks ties deterministically

    def to_meta(self) -> dict[str, Any]:
        return {"kind": self.kind, "source": self.source, "updated_at": self.updated_at, "seq": self.seq}


class TraitRules:
    def __init__(self, settings: ProfileSettings) -> None:
        self.by_time = settings.precedence == "time"
        self.rank: dict[str, int] = {kind: i for i, kind in enumerate(settings.kind_precedence)}
        self.weakest = len(self.rank)

    def wins(self, new: TraitValue, old: TraitValue | None) -> bool:
        """True when ``new`` should replace ``old``."""
        if old is None:
            return True
        if not self.by_time:
            new_rank = self.rank.get(new.kind, self.weakest)
            old_rank = self.rank.get(old.kind, self.weakest)
            if new_rank != old_rank:
                return new_rank < old_rank
        return (new.updated_at, new.seq) >= (old.updated_at, old.seq)

    def claimed_kind(self, entry: Entry) -> str:
        """The kind of an event's traits: its source's, or a weaker one the event claims.

        The source's kind is the strongest its events may claim: a public write key must not be able to
        pass its data off as the customer's own (stated) words. (Collect validates ``context.kairos``; the
        log is still read defensively: it outlives any validator.)
        """
        kind = entry.trait_kind
        context = entry.event.context
        override = context.get("kairos") if context else None
        claimed = override.get("trait_kind") if isinstance(override, dict) else None
        if isinstance(claimed, str) and self.rank.get(claimed, 99) >= self.rank.get(kind, 99):
            kind = claimed
        return kind

    def fold(self, state: TraitMap, values: TraitMap) -> TraitMap:
        """``state`` with every value of ``values`` that wins; ``state`` itself when none does."""
        return fold(state, values, self.wins)


class Traits(Projection[TraitMap]):
    """``identify`` traits, each with its kind, source and time; merged by the same precedence rule."""

    name = "traits"
    columns = (Column("traits", "json", default="'{}'"), Column("trait_meta", "json", default="'{}'"))
    indexes = (Index("profiles_traits", ("traits",), gin=True),)

    def __init__(self, settings: ProfileSettings) -> None:
        self.rules = TraitRules(settings)

    def initial(self) -> TraitMap:
        return {}

    def apply(self, state: TraitMap, entry: Entry, ctx: Context) -> TraitMap:
        event = entry.event
        if event.type != "identify" or not event.traits:
            return state
        kind = self.rules.claimed_kind(entry)
        incoming = {
            name: TraitValue(value, kind, entry.source, entry.ts, entry.seq) for name, value in event.traits.items()
        }
        return self.rules.fold(state, incoming)

    def merge(self, winner: TraitMap, loser: TraitMap, ctx: Context) -> TraitMap:
        return self.rules.fold(winner, loser)

    def encode(self, state: TraitMap) -> tuple[Any, ...]:
        return {k: t.value for k, t in state.items()}, {k: t.to_meta() for k, t in state.items()}

    def decode(self, values: Sequence[Any]) -> TraitMap:
        traits, meta = values
        return {
            k: TraitValue(v, meta[k]["kind"], meta[k]["source"], meta[k]["updated_at"], meta[k]["seq"])
            for k, v in traits.items()
        }

    def trait_changes(self, old: TraitMap, new: TraitMap) -> Collection[str]:
        # Copied on write (fold): a trait that did not change keeps the very same TraitValue.
        return {k for k in old.keys() | new.keys() if old.get(k) is not new.get(k)}

    def traits(self, state: TraitMap) -> Mapping[str, Any]:
        return {k: t.value for k, t in state.items()}

    def view(self, state: TraitMap) -> dict[str, Any]:
        ordered = sorted(state.items())
        return {
            "traits": {name: t.value for name, t in ordered},
            "trait_meta": {
                name: {"kind": t.kind, "source": t.source, "updated_at": iso(t.updated_at)} for name, t in ordered
            },
        }

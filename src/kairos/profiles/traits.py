"""Trait precedence: which of two values of the same trait a profile keeps.

With the default ``kind_then_time`` rule a value is never replaced by one of a weaker kind, and within a
kind the newest (by event time, then log position) wins:

>>> from kairos.config import ProfileSettings
>>> from kairos.store import TraitValue
>>> rules = TraitRules(ProfileSettings())
>>> stated = TraitValue("email", "stated", "web", updated_at=1_000, seq=1)
>>> observed_later = TraitValue("sms", "observed", "app", updated_at=2_000, seq=2)
>>> rules.wins(observed_later, stated)
False
>>> rules.wins(TraitValue("push", "stated", "app", updated_at=3_000, seq=3), stated)
True
"""

from __future__ import annotations

from typing import Any

from kairos.config import ProfileSettings
from kairos.store import Profile, TraitValue

__all__ = ["TraitRules"]


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

    def set(self, profile: Profile, name: str, new: TraitValue) -> None:
        if self.wins(new, profile.traits.get(name)):
            profile.traits[name] = new
            profile.full_write = True

    def combine(self, winner: Profile, loser: Profile) -> None:
        """Fold ``loser``'s traits and consents into ``winner`` by the same rules as live updates."""
        for name, value in loser.traits.items():
            self.set(winner, name, value)
        for purpose, consent in loser.consents.items():
            set_consent(winner, purpose, consent)


def set_consent(profile: Profile, purpose: str, consent: dict[str, Any]) -> None:
    """Consent is the customer's latest word: newest wins whatever its source."""
    old = profile.consents.get(purpose)
    if old is None or (consent["updated_at"], consent["seq"]) >= (old["updated_at"], old["seq"]):
        profile.consents[purpose] = consent
        profile.full_write = True

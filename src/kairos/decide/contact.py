"""Contact policies and budgets at decision time: how often an offer was shown to this person, and whether they
ignored it, from the decision log (``store.decisions``)::

    {"max_impressions": 3, "window": "7d"}                  # at most 3 impressions in any 7 days
    {"suppress_after_ignored": 5, "suppress_for": "30d"}    # 5 ignored in a row: not shown for 30 days

An impression is ignored when its item closed with a reward no better than ``decide.default_reward`` (no
reward arrived within ``decide.reward_wait_seconds``, or a reward of 0); an impression still waiting counts
towards ``max_impressions`` but not as ignored.
"""

from __future__ import annotations

from collections.abc import Sequence

from kairos.config import DecideSettings
from kairos.decide.offers import Offer
from kairos.store import SqlDecisions

__all__ = ["ContactHistory"]


class ContactHistory:
    """What the contact policies and budgets need: the person's recent decisions and their outcomes, and each
    budgeted offer's impressions. Read only when some offer has a contact policy or a budget."""

    def __init__(self) -> None:
        self.shown: dict[str, list[int]] = {}  # offer → times it was shown to the person, newest first
        self.ignored: dict[str, list[tuple[int, bool]]] = {}  # offer → (time, ignored) of closed impressions
        self.totals: dict[str, int] = {}

    @classmethod
    def load(
        cls,
        decisions: SqlDecisions,
        settings: DecideSettings,
        subjects: Sequence[str],
        offers: Sequence[Offer],
        now: int,
    ) -> ContactHistory:
        """What ``offers`` need about the person known by ``subjects`` (their profile id and identity digests)."""
        out = cls()
        budgeted = [o.key for o in offers if o.budget is not None]
        if budgeted:
            out.totals = decisions.impressions(budgeted)
        spans = [max(o.contact.window or 0, o.contact.suppress_for or 0) for o in offers if not o.contact.empty]
        if not spans:
            return out
        wait = int(settings.reward_wait_seconds * 1000)
        rows, rewards = decisions.history(list(subjects), now - max(spans) - wait, records=False)
        default = settings.default_reward
        outcome = {(r.decision_id, r.offer): r.reward <= default for r in rewards}
        for row in rows:  # newest first
            for offer in row.offers:
                out.shown.setdefault(offer, []).append(row.at)
                ignored = outcome.get((row.id, offer))
                if ignored is not None:
                    out.ignored.setdefault(offer, []).append((row.at, ignored))
        return out

    def impressions_total(self, offer: str) -> int:
        return self.totals.get(offer, 0)

    def blocked(self, offer: Offer, now: int) -> bool:
        """The contact policy forbids showing ``offer`` now: too many impressions in the window, or suppressed
        after ``suppress_after_ignored`` ignored impressions in a row (for ``suppress_for`` after the last)."""
        policy = offer.contact
        if policy.empty:
            return False
        if policy.max_impressions is not None and policy.window is not None:
            recent = sum(1 for at in self.shown.get(offer.key, ()) if at > now - policy.window)
            if recent >= policy.max_impressions:
                return True
        if policy.suppress_after_ignored is not None and policy.suppress_for is not None:
            streak = 0
            last_ignored = None
            for at, ignored in self.ignored.get(offer.key, ()):  # newest first
                if not ignored:
                    break
                streak += 1
                last_ignored = last_ignored or at
            if streak >= policy.suppress_after_ignored and last_ignored is not None:
                return now < last_ignored + policy.suppress_for
        return False

"""The consent gate of model training: whose decisions the learner may learn from now.

A decision is learned from shortly after it is logged, and its reward relabels it later; at both moments the
learner asks this gate, so a person who withdraws ``personalization`` (or is erased) in between is not learned
from any more. Decisions of someone Kairos did not know yet (a digest subject) used no profile data: they pass.
"""

from __future__ import annotations

from collections.abc import Sequence

from kairos.decide.learning import Gate
from kairos.runtime import Kairos

__all__ = ["TRAINING_PURPOSE", "training_gate"]

TRAINING_PURPOSE = "personalization"


def training_gate(kairos: Kairos) -> Gate:
    policy = kairos.consent_policy
    state = kairos.store.state

    def denied(subjects: Sequence[str]) -> set[str]:
        ids = [s for s in subjects if not s.startswith("h:")]
        found = state.consents_of(ids) if ids else {}
        return {s for s in ids if s not in found or not policy.allows({"consents": found[s]}, TRAINING_PURPOSE)}

    return denied

"""Consents per purpose, as a projection: the person's current word, and the append-only ledger of changes.

Consent arrives in ``context.consent.categoryPreferences`` (Segment's consent spec) from any source: a
consent-management platform's category names are mapped onto purposes (``consent.categories``), and the
consent API and the preference centre write the same kind of event (:mod:`kairos.privacy.consents`), with
the version of each purpose's text the person was shown in ``context.consent.textVersions``. So the log stays
the one source of truth: a replay rebuilds the state and the ledger exactly.

The current word per purpose follows :func:`kairos.consent.newer` (newest event time; a denial wins a tie),
live and when two profiles merge, so an older grant never overwrites a newer denial. Every stated choice is a
row of ``consent_ledger`` (state, event time, source, text version, log position), kept even when it did not
change the current word (an out-of-order older grant is recorded, and visibly lost); on a merge the loser's
rows move to the winner.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from kairos.collect import iso
from kairos.consent import ConsentPolicy, newer
from kairos.pipeline.projection import Context, Entry, Projection, fold
from kairos.store.schema import Column, Index, Table

__all__ = ["CONSENT_LEDGER", "Consents", "consent_choices"]

ConsentMap = Mapping[str, Mapping[str, Any]]  # purpose → {granted, source, updated_at, seq, text_version}

CONSENT_LEDGER = Table(
    "consent_ledger",
    (
        Column("profile_pk", "int"),
        Column("seq", "int"),
        Column("purpose", "text"),
        Column("granted", "int"),
        Column("at", "int"),
        Column("source", "text"),
        Column("text_version", "text", nullable=True),
    ),
    ("seq", "purpose"),
    (Index("consent_ledger_profile", ("profile_pk", "at")),),
    profile_column="profile_pk",
)


def consent_choices(
    policy: ConsentPolicy, source: str, context: Mapping[str, Any] | None
) -> list[tuple[str, bool, str | None]]:
    """``(purpose, granted, text version)`` for each choice an event's context states, categories mapped to
    purposes; anything malformed or unmapped is ignored (the log outlives any validator)."""
    consent = context.get("consent") if context else None
    if not isinstance(consent, dict):
        return []
    prefs = consent.get("categoryPreferences")
    if not isinstance(prefs, dict):
        return []
    versions = consent.get("textVersions")
    versions = versions if isinstance(versions, dict) else {}
    out: dict[str, tuple[str, bool, str | None]] = {}
    for category, granted in prefs.items():
        purpose = policy.purpose_for(source, category) if isinstance(granted, bool) else None
        if purpose is None:
            continue
        version = versions.get(purpose, versions.get(category))
        out[purpose] = (purpose, bool(granted), version if isinstance(version, str) else None)
    return list(out.values())


class Consents(Projection[ConsentMap]):
    name = "consents"
    columns = (Column("consents", "json", default="'{}'"),)
    tables = (CONSENT_LEDGER,)

    def __init__(self, policy: ConsentPolicy) -> None:
        self.policy = policy

    def initial(self) -> ConsentMap:
        return {}

    def apply(self, state: ConsentMap, entry: Entry, ctx: Context) -> ConsentMap:
        choices = consent_choices(self.policy, entry.source, entry.event.context)
        if not choices:
            return state
        incoming = {}
        for purpose, granted, version in choices:
            incoming[purpose] = {
                "granted": granted,
                "source": entry.source,
                "updated_at": entry.ts,
                "seq": entry.seq,
                "text_version": version,
            }
            ctx.insert(
                CONSENT_LEDGER, (ctx.profile.pk, entry.seq, purpose, int(granted), entry.ts, entry.source, version)
            )
        return fold(state, incoming, newer)

    def merge(self, winner: ConsentMap, loser: ConsentMap, ctx: Context) -> ConsentMap:
        return fold(winner, loser, newer)

    def encode(self, state: ConsentMap) -> tuple[Any, ...]:
        return (dict(state),)

    def decode(self, values: Sequence[Any]) -> ConsentMap:
        return dict(values[0])

    def view(self, state: ConsentMap) -> dict[str, Any]:
        return {
            "consents": {
                purpose: {
                    "granted": c["granted"],
                    "source": c["source"],
                    "updated_at": iso(c["updated_at"]),
                    "text_version": c.get("text_version"),
                }
                for purpose, c in sorted(state.items())
            }
        }

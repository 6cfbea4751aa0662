"""The data-use ledger: every use of a person's data for a purpose, which the person can see.

Two durable records make it, each written with the use itself (never after, so a use cannot happen without
its entry):

- the **decision log**: every decision, written before its answer, says who it was for, on which channel,
  which offers it showed and whether it was personalized; a decision uses the person's data for
  ``personalization`` when it was personalized, and for each shown offer's purpose;
- the ``data_uses`` table, for everything else: a delivery to a destination (written in the transaction that
  records it as delivered), a message streamed to a pull subscription, an export, a segment export.

:func:`data_uses` merges both, newest first. Entries hold no personal data of their own: a profile id, a
purpose, what was done, to whom, and a reference (decision id, delivery id, request id).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from kairos.collect import iso
from kairos.decide.attribution import subjects as decision_subjects
from kairos.runtime import Kairos
from kairos.store import UseRow

__all__ = ["Use", "UseKind", "data_uses", "record_uses"]

UseKind = Literal["decision", "delivery", "stream", "export", "segment_export"]
Use = UseRow


def record_uses(kairos: Kairos, uses: Sequence[UseRow]) -> None:
    """Write ``uses`` in a transaction of their own (exports: the use is the answer that follows)."""
    kairos.store.uses.record(uses)


def data_uses(kairos: Kairos, pk: int, limit: int = 100) -> list[dict[str, Any]]:
    """The uses of profile ``pk``'s data (and of the profiles merged into it), newest first."""
    view = kairos.view(pk)
    if view is None:
        return []
    ids = [view["id"], *view.get("merged_ids", [])]
    out: list[dict[str, Any]] = [
        {"at": u.at, "purpose": u.purpose, "use": u.use, "recipient": u.recipient, "ref": u.ref}
        for u in kairos.store.uses.of(ids, limit)
    ]
    # Decisions are logged under the profile id of the day, or a digest of the identity of someone not known yet.
    identities = [(i["type"], i["value"]) for i in view.get("identities") or ()]
    subjects = [*ids, *decision_subjects(view["id"], identities)[1:]]
    # An offer's purpose as defined now (a decision logs the keys it showed, not their definitions).
    offers = kairos.store.admin.definitions("offer")
    purpose_of = {d.key: str(d.body.get("purpose") or "personalization") for d in offers}
    decisions, _ = kairos.store.decisions.history(sorted(set(subjects)), 0, limit, records=False)
    for d in decisions:
        recipient = d.channel if d.placement is None else f"{d.channel}/{d.placement}"
        purposes = {"personalization"} if d.group == "policy" else set()
        purposes |= {purpose_of[k] for k in d.offers if purpose_of.get(k, "personalization") != "personalization"}
        for purpose in sorted(purposes):
            out.append({"at": d.at, "purpose": purpose, "use": "decision", "recipient": recipient, "ref": d.id})
    out.sort(key=lambda u: (-u["at"], u["use"], u["purpose"]))
    return [{**u, "at": iso(u["at"])} for u in out[:limit]]

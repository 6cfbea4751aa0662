"""Export on request: everything Kairos holds about one person, as one JSON document.

``POST /v1/privacy/export`` and ``kairos privacy export`` answer with :func:`export`. The document is
versioned (``format``: :data:`FORMAT`; a new section or field keeps the version, a changed or removed one moves
it) and JSON-safe (times as RFC 3339 text). Sections:

- ``profile``: the profile as ``GET /v1/profiles/{ref}`` shows it; ``merged_ids``: profiles merged into it.
- ``identities``: every identifier, with the log position that first linked it.
- ``events``: the person's events as stored in the log (oldest first), each with where and when it arrived.
- ``decisions``: decision-log rows of the person (by profile id and by the digest of each identity), each
  with what the policy saw, the offers shown (propensity, estimate, score) and their rewards.
- ``deliveries``: messages about the person for destinations (which one, what, when, status).
- ``moments``: moments that happened to the person (timeline items of type ``moment``).
- ``records``: the rows of every table a projection keeps per profile (the consent ledger among them), by
  table name, found generically: a new projection's table appears without this module naming it.
- ``data_uses``: the data-use ledger (:mod:`kairos.privacy.uses`: who used the person's data, for what).

An export is itself a use of the person's data: it joins the data-use ledger (use ``export``, purpose
``access``, reference ``export_id``) after the document is built, so it shows in the next export.
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING, Any

import msgspec

from kairos.collect import iso
from kairos.decide.attribution import subject_of
from kairos.decide.learning import decode_record
from kairos.errors import NotFoundError, ValidationError
from kairos.identity import profile_id_for
from kairos.privacy import _hooks
from kairos.profiles import TIMELINE
from kairos.store import TOMBSTONE

if TYPE_CHECKING:
    from kairos.runtime import Kairos

__all__ = ["FORMAT", "export", "person"]

FORMAT = "kairos.export/1"
MAX_DECISIONS = 100_000
MAX_MOMENTS = 100_000
_json = msgspec.json.Decoder()


def person(kairos: Kairos, ref: Any, field: str = "profile") -> int:
    """The canonical profile key of a reference (a profile id or ``type:value``), validated: a
    :class:`ValidationError` for what is not a reference, :class:`NotFoundError` for nobody. Messages never
    quote the reference (it may be an e-mail address)."""
    if not isinstance(ref, str):
        raise ValidationError(f"{field} must be a string: a profile id or type:value", code="invalid_ref", field=field)
    if not 1 <= len(ref) <= 600 or "\x00" in ref or not ref.strip():
        raise ValidationError(f"{field} is 1 to 600 characters, without NUL", code="invalid_ref", field=field)
    try:
        ref.encode()
    except UnicodeEncodeError:
        raise ValidationError(f"{field} must be valid Unicode text", code="invalid_ref", field=field) from None
    try:
        pk = kairos.resolve(ref)
    except ValidationError as exc:  # an unknown identity type or no value (the message never quotes the reference)
        raise ValidationError(exc.message, code=exc.code, field=field) from None
    if pk is None or kairos.view(pk) is None:
        raise NotFoundError(f"no profile matches this {field} reference", field=field)
    return pk


def _stamp(value: Any) -> Any:
    return iso(value) if isinstance(value, int) and not isinstance(value, bool) else value


def _event(kairos: Kairos, seqs: list[int]) -> list[dict[str, Any]]:
    entries = kairos.store.log.get(seqs)
    out = []
    for seq in seqs:
        e = entries.get(seq)
        if e is None or e.payload == TOMBSTONE:
            continue
        try:
            body = _json.decode(e.payload)
        except msgspec.DecodeError:
            body = None
        out.append(
            {
                "seq": e.seq,
                "source": e.source,
                "message_id": e.message_id,
                "received_at": iso(e.received_at),
                "timestamp": iso(e.ts),
                "event": body,
            }
        )
    return out


def _decisions(kairos: Kairos, subjects: list[str], view: dict[str, Any]) -> list[dict[str, Any]]:
    """The person's decisions; text features, logged under keyed hashes of their values, are named in clear
    where the person's own current traits (or the parts of the day) name them back."""
    from kairos.privacy.centre import clear_names  # the page and the export read the log alike

    clear = clear_names(kairos, view)
    rows, rewards = kairos.store.decisions.history(subjects, 0, MAX_DECISIONS)
    by_decision: dict[str, list[dict[str, Any]]] = {}
    for r in rewards:
        by_decision.setdefault(r.decision_id, []).append(
            {"offer_id": r.offer, "reward": r.reward, "at": iso(r.at), "source": r.source}
        )
    out = []
    for row in sorted(rows, key=lambda d: (d.at, d.seq)):
        record = decode_record(row.record)
        out.append(
            {
                "decision_id": row.id,
                "at": iso(row.at),
                "channel": row.channel,
                "placement": row.placement,
                "group": row.group,
                "policy": row.policy,
                "policy_version": row.policy_version,
                "features": {
                    ns: {clear.get(name, name): value for name, value in values.items()}
                    for ns, values in record.shared.items()
                },
                "items": [
                    {
                        "offer_id": i.offer,
                        "slot": i.slot,
                        "propensity": i.propensity,
                        "explored": i.explored,
                        "estimate": i.estimate,
                        "score": i.score,
                    }
                    for i in record.items
                ],
                "interaction": row.interaction,
                "customization": row.customization,
                "rewards": by_decision.get(row.id, []),
            }
        )
    return out


def export(kairos: Kairos, pk: int) -> dict[str, Any]:
    """Everything held about the person whose canonical profile key is ``pk`` (see the module doc)."""
    view = kairos.view(pk)
    if view is None:
        raise NotFoundError("no such profile", field="profile")
    state = kairos.store.state
    pks = [pk, *state.merged_keys(pk)]
    profile_ids = [profile_id_for(k) for k in pks]
    privacy = kairos.store.privacy
    records = privacy.owned_rows(pks, skip=(TIMELINE.name,))
    identities = [
        {"type": r["type"], "value": r["value"], "seq": r["seq"]}
        for r in sorted(records.pop("identities", []), key=lambda r: (r["seq"], r["type"], r["value"]))
    ]
    seqs = sorted({s for ss in state.history(pks).values() for s in ss})
    subjects = [*profile_ids, *(subject_of(i["type"], i["value"]) for i in identities)]
    moments = [
        {"key": r.name, "at": iso(r.ts), "seq": r.seq, "data": r.data}
        for r in reversed(state.timeline(pk, MAX_MOMENTS, None, type="moment"))
    ]
    deliveries = [
        {**d, "created_at": _stamp(d["created_at"]), "updated_at": _stamp(d["updated_at"])}
        for d in privacy.deliveries_of(profile_ids)
    ]
    export_id = "ex_" + secrets.token_hex(16)
    document: dict[str, Any] = {
        "format": FORMAT,
        "export_id": export_id,
        "exported_at": iso(kairos.clock.now()),
        "profile": view,
        "merged_ids": profile_ids[1:],
        "identities": identities,
        "events": _event(kairos, seqs),
        "decisions": _decisions(kairos, subjects, view),
        "deliveries": deliveries,
        "moments": moments,
        "records": records,
        "data_uses": _hooks.data_uses(kairos, pk),
    }
    _hooks.record_export(kairos, profile_ids[0], export_id)
    return document

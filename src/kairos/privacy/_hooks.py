"""Where export and erasure meet the parts of trust that other modules own: the data-use ledger
(:mod:`kairos.privacy.uses`) and the audit log (``kairos.audit``).

An export joins the data-use ledger; requests, exports and completed erasures join the audit log.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kairos.store import UseRow

if TYPE_CHECKING:
    from kairos.runtime import Kairos

__all__ = ["audit", "data_uses", "record_export"]

EXPORT_PURPOSE = "access"  # the person's right of access: what an export serves


def data_uses(kairos: Kairos, pk: int) -> list[dict[str, Any]]:
    """The person's data-use ledger, newest first (all of it an export can carry)."""
    from kairos.privacy.uses import data_uses as uses

    return uses(kairos, pk, limit=10_000)


def record_export(kairos: Kairos, profile_id: str, export_id: str) -> None:
    """An export is a use of the person's data: it joins the data-use ledger."""
    from kairos.privacy.uses import record_uses

    record_uses(kairos, [UseRow(profile_id, kairos.clock.now(), EXPORT_PURPOSE, "export", "self", export_id)])


def audit(kairos: Kairos, action: str, target: str, actor: str) -> None:
    """An audit entry (:func:`kairos.audit.record`) for work no API key did: the command line (``cli``) or
    the processor carrying an erasure out (``processor``). ``target``: a request or export id, never a
    reference to the person. API requests are audited by their endpoint, with the key that made them."""
    from kairos import audit as audit_log

    audit_log.record(kairos, None, action, target, 200, actor=actor)

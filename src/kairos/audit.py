"""The audit log: who changed what through the admin and privacy APIs and the CLI's key commands.

One function writes it, :func:`record`; ``GET /v1/audit`` (scope ``admin``) and ``kairos`` read it. An entry
holds no personal data: the *target* names a definition key, an API key id, a profile id or a request id,
never an identity value, an e-mail or a trait value, and *detail* is a small JSON object of the same kind
(an error code, a count). Callers are responsible for what they pass; :func:`record` bounds the sizes.

>>> from kairos.runtime import Kairos
>>> from kairos.config import load_settings
>>> import tempfile, pathlib
>>> path = pathlib.Path(tempfile.mkdtemp()) / "k.db"
>>> kairos = Kairos(load_settings(store={"url": f"sqlite:///{path}"}))
>>> entry = record(kairos, None, "keys.revoke", "8f14e45f", 200)
>>> (entry.actor, entry.action, entry.target, entry.outcome) if entry else None
('cli', 'keys.revoke', '8f14e45f', 200)
>>> kairos.close()
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Mapping
from typing import Any

import msgspec

from kairos.errors import KairosError
from kairos.runtime import Kairos
from kairos.store import ApiKey, AuditEntry

__all__ = ["ACTION", "MAX_DETAIL_BYTES", "MAX_TARGET", "record"]

log = logging.getLogger("kairos.audit")

ACTION = re.compile(r"[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+")  # area.verb: segments.put, privacy.erase
MAX_TARGET = 200
MAX_DETAIL_BYTES = 2048
_encode = msgspec.json.Encoder()


def record(
    kairos: Kairos,
    key: ApiKey | None,
    action: str,
    target: str,
    outcome: int,
    detail: Mapping[str, Any] | None = None,
    *,
    actor: str | None = None,
) -> AuditEntry | None:
    """Append one entry: ``key`` that acted (None: the command line), ``action`` such as ``segments.put`` or
    ``privacy.erase``, ``target`` it acted on (no personal data), ``outcome`` (an HTTP status; 200 for a
    command that succeeded) and an optional small ``detail`` (JSON, at most 2 KB, no personal data).

    Returns the stored entry. A store failure does not fail the action that was already done: it is logged
    (action and target only) and None is returned, so a caller never answers an error for a change it made.
    """
    if not ACTION.fullmatch(action) or len(action) > 64:
        raise ValueError(f"audit action must look like 'area.verb', got {action[:64]!r}")
    target = "".join(c if c.isprintable() else "?" for c in target[:MAX_TARGET])
    stored: dict[str, Any] | None = dict(detail) if detail is not None else None
    if stored is not None and len(_encode.encode(stored)) > MAX_DETAIL_BYTES:
        stored = {"truncated": True}
    entry = AuditEntry(
        0,
        kairos.clock.now(),
        actor or ("api" if key is not None else "cli"),
        key.id if key is not None else None,
        key.name if key is not None else None,
        action,
        target,
        outcome,
        stored,
    )
    errors: tuple[type[BaseException], ...] = (KairosError, *kairos.store.driver_errors)
    try:
        entry_id = kairos.store.audit.append(entry)
    except errors:
        log.exception("audit entry not written", extra={"action": action, "target": target, "outcome": outcome})
        return None
    return dataclasses.replace(entry, id=entry_id)

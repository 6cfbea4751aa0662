"""The audit log's table (``audit``): appended to by :mod:`kairos.audit`, read newest first by ``GET /v1/audit``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from kairos.store._db import Database
from kairos.store._model import AuditEntry
from kairos.store.schema import AUDIT

__all__ = ["SqlAudit"]

_COLUMNS = ("at", "actor", "key_id", "key_name", "action", "target", "outcome", "detail")


class SqlAudit:
    """Kept beside the API keys (on SQLite, in the log database): an audit entry names a key by its id."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def append(self, entry: AuditEntry) -> int:
        detail = self.db.d.dump_json(entry.detail) if entry.detail is not None else None
        values = (entry.at, entry.actor, entry.key_id, entry.key_name, entry.action, entry.target, entry.outcome)
        with self.db.tx(write=True) as conn:
            text = f"INSERT INTO {AUDIT.name} ({', '.join(_COLUMNS)}) VALUES ({', '.join(['{p}'] * 8)}) RETURNING id"
            return int(self.db.rows(conn, text, (*values, detail))[0][0])

    def list(self, limit: int, before: int | None = None, action: str | None = None) -> list[AuditEntry]:
        """Newest first: at most ``limit`` entries with an id below ``before``, of ``action`` if given."""
        where: list[str] = []
        params: list[Any] = []
        if before is not None:
            where.append("id < {p}")
            params.append(before)
        if action is not None:
            where.append("action = {p}")
            params.append(action)
        clause = f"WHERE {' AND '.join(where)} " if where else ""
        with self.db.conn() as conn:
            rows = self.db.rows(
                conn,
                f"SELECT id, {', '.join(_COLUMNS)} FROM {AUDIT.name} {clause}ORDER BY id DESC LIMIT {{p}}",
                (*params, limit),
            )
        return [self._entry(r) for r in rows]

    def _entry(self, r: Sequence[Any]) -> AuditEntry:
        detail = self.db.d.load_json(r[8]) if r[8] is not None else None
        return AuditEntry(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], detail)

"""The data-use ledger's table (``data_uses``): written with each use, read by the person (kairos.privacy.uses)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from kairos.store._db import Database

__all__ = ["SqlUses", "UseRow"]

_INSERT = "INSERT INTO data_uses (profile_id, at, purpose, use, recipient, ref) VALUES ({p}, {p}, {p}, {p}, {p}, {p})"


@dataclass(frozen=True, slots=True)
class UseRow:
    profile_id: str
    at: int  # epoch ms
    purpose: str
    use: str  # delivery | stream | export | segment_export
    recipient: str
    ref: str


class SqlUses:
    def __init__(self, db: Database) -> None:
        self.db = db

    def insert(self, conn: Any, uses: Iterable[UseRow]) -> None:
        """Write ``uses`` inside the caller's transaction (the one that records the use itself)."""
        self.db.many(conn, _INSERT, [(u.profile_id, u.at, u.purpose, u.use, u.recipient, u.ref) for u in uses])

    def record(self, uses: Sequence[UseRow]) -> None:
        if uses:
            with self.db.tx(write=True) as conn:
                self.insert(conn, uses)

    def of(self, profile_ids: Sequence[str], limit: int) -> list[UseRow]:
        """The uses of these profiles' data, newest first."""
        out: list[UseRow] = []
        with self.db.conn() as conn:
            for where, params in self.db.where_in("profile_id", list(profile_ids)):
                rows = self.db.rows(
                    conn,
                    f"SELECT profile_id, at, purpose, use, recipient, ref FROM data_uses WHERE {where}"
                    " ORDER BY at DESC, id DESC LIMIT {p}",
                    [*params, limit],
                )
                out.extend(UseRow(*r) for r in rows)
        out.sort(key=lambda u: -u.at)
        return out[:limit]

"""Delivery bookkeeping on SQL: per-destination cursors and the deliveries table (see ``kairos.activate``).

Planning moves a destination's cursor and inserts its new deliveries in ONE transaction, so a crash loses
both or neither; a delivery's id is derived from (destination, message), and inserting one that exists is
a no-op, so planning again after a crash never duplicates a delivery.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import Any

from kairos.store._db import Database
from kairos.store._model import Cursor, Delivery
from kairos.store._uses import SqlUses, UseRow
from kairos.store.schema import DELIVERIES

__all__ = ["SqlDeliveries"]

_COLUMNS = DELIVERIES.column_names
_ROW = operator.attrgetter(*_COLUMNS)  # a Delivery as its row, in the table's column order
_SELECT = f"SELECT {', '.join(_COLUMNS)} FROM deliveries"


def _delivery(r: Sequence[Any]) -> Delivery:
    return Delivery(*r)


class SqlDeliveries:
    def __init__(self, db: Database) -> None:
        self.db = db
        self.uses = SqlUses(db)

    def start(self, destination: str, outbox: int, log: int, now: int) -> Cursor:
        """The destination's cursor, created at (``outbox``, ``log``) if it has none."""
        with self.db.tx(write=True) as conn:
            conn.execute(
                self.db.sql(
                    "INSERT INTO delivery_cursors (destination, outbox, log, created_at) VALUES ({p}, {p}, {p}, {p})"
                    " ON CONFLICT (destination) DO NOTHING"
                ),
                (destination, outbox, log, now),
            )
        found = self.cursor(destination)
        assert found is not None
        return found

    def cursor(self, destination: str) -> Cursor | None:
        row = self.db.one(
            "SELECT destination, outbox, log, created_at FROM delivery_cursors WHERE destination = {p}",
            (destination,),
        )
        return None if row is None else Cursor(*row)

    def drop(self, destination: str) -> None:
        """Forget the cursor and what was still pending (a deleted destination); the history stays."""
        with self.db.tx(write=True) as conn:
            conn.execute(self.db.sql("DELETE FROM delivery_cursors WHERE destination = {p}"), (destination,))
            conn.execute(
                self.db.sql("DELETE FROM deliveries WHERE destination = {p} AND status = 'pending'"), (destination,)
            )

    def plan(self, destination: str, rows: Sequence[Delivery], outbox: int, log: int) -> None:
        """Insert new deliveries (known ones are left alone) and move the cursor to (``outbox``, ``log``), in
        one transaction. The cursor only moves forward."""
        with self.db.tx(write=True) as conn:
            self.db.many(
                conn,
                f"INSERT INTO deliveries ({', '.join(_COLUMNS)}) VALUES ({', '.join(['{p}'] * len(_COLUMNS))})"
                " ON CONFLICT (destination, id) DO NOTHING",
                [_ROW(d) for d in rows],
            )
            conn.execute(
                self.db.sql(
                    "UPDATE delivery_cursors SET outbox = CASE WHEN outbox > {p} THEN outbox ELSE {p} END,"
                    " log = CASE WHEN log > {p} THEN log ELSE {p} END WHERE destination = {p}"
                ),
                (outbox, outbox, log, log, destination),
            )

    def due(self, destination: str, now: int, limit: int) -> list[Delivery]:
        """Pending deliveries whose time has come, oldest first."""
        with self.db.conn() as conn:
            rows = self.db.rows(
                conn,
                _SELECT + " WHERE destination = {p} AND status = 'pending' AND next_attempt_at <= {p}"
                " ORDER BY next_attempt_at, created_at, position LIMIT {p}",
                (destination, now, limit),
            )
        return [_delivery(r) for r in rows]

    def next_due(self, destination: str) -> int | None:
        """When the earliest pending delivery is due (epoch ms), if any."""
        row = self.db.one(
            "SELECT MIN(next_attempt_at) FROM deliveries WHERE destination = {p} AND status = 'pending'",
            (destination,),
        )
        return None if row is None or row[0] is None else int(row[0])

    def record(self, destination: str, outcomes: Sequence[Delivery], purpose: str | None = None) -> None:
        """Store the outcome of attempts (status, attempts, next time, last status/error, latency); each delivered
        message about a person is a use of their data for ``purpose``, written to the data-use ledger in the same
        transaction."""
        with self.db.tx(write=True) as conn:
            if purpose is not None:
                uses = [
                    UseRow(d.profile_id, d.updated_at, purpose, "delivery", destination, d.id)
                    for d in outcomes
                    if d.status == "delivered" and d.profile_id is not None
                ]
                self.uses.insert(conn, uses)
            self.db.many(
                conn,
                "UPDATE deliveries SET status = {p}, attempts = {p}, next_attempt_at = {p}, updated_at = {p},"
                " last_status = {p}, last_error = {p}, latency_ms = {p} WHERE destination = {p} AND id = {p}",
                [
                    (
                        d.status,
                        d.attempts,
                        d.next_attempt_at,
                        d.updated_at,
                        d.last_status,
                        d.last_error,
                        d.latency_ms,
                        destination,
                        d.id,
                    )
                    for d in outcomes
                ],
            )

    def received_by(self, profile_ids: Sequence[str]) -> list[tuple[str, int, int, int]]:
        """(destination, deliveries, first, last time) of what was delivered about any of ``profile_ids`` (a
        person and the profiles merged into it): the preference centre's "where your data went"."""
        found: dict[str, tuple[int, int, int]] = {}
        with self.db.conn() as conn:
            for where, params in self.db.where_in("profile_id", list(profile_ids)):
                for destination, n, first, last in self.db.rows(
                    conn,
                    "SELECT destination, COUNT(*), MIN(updated_at), MAX(updated_at) FROM deliveries"
                    f" WHERE {where} AND status = 'delivered' GROUP BY destination",
                    params,
                ):
                    had = found.get(destination, (0, first, last))
                    found[destination] = (had[0] + int(n), min(had[1], first), max(had[2], last))
        return sorted(((d, *v) for d, v in found.items()), key=lambda r: (-r[3], r[0]))

    def list(self, destination: str, status: str | None, limit: int) -> list[Delivery]:
        """Newest first."""
        where, params = "WHERE destination = {p}", [destination]
        if status is not None:
            where += " AND status = {p}"
            params.append(status)
        with self.db.conn() as conn:
            rows = self.db.rows(
                conn, f"{_SELECT} {where} ORDER BY created_at DESC, position DESC LIMIT {{p}}", [*params, limit]
            )
        return [_delivery(r) for r in rows]

    def retry(self, destination: str, now: int) -> int:
        """Dead deliveries of ``destination`` become pending again, due now, with their attempts reset."""
        with self.db.tx(write=True) as conn:
            cur = conn.execute(
                self.db.sql(
                    "UPDATE deliveries SET status = 'pending', attempts = 0, next_attempt_at = {p}, updated_at = {p}"
                    " WHERE destination = {p} AND status = 'dead'"
                ),
                (now, now, destination),
            )
            return int(cur.rowcount)

    def depth(self) -> dict[str, int]:
        """Pending deliveries per destination (the queue depth)."""
        with self.db.conn() as conn:
            rows = self.db.rows(
                conn, "SELECT destination, COUNT(*) FROM deliveries WHERE status = 'pending' GROUP BY destination"
            )
        return {r[0]: int(r[1]) for r in rows}

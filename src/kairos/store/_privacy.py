"""Privacy requests, suppressions and the erasing statements, on SQL (see :mod:`kairos.privacy.erasure`).

Requests and suppressions live beside the log (embedded: ``kairos.db``). The erasing statements run in the
database that holds each kind of data: the log (tombstones), derived state with the outbox and deliveries
(one transaction that also moves the checkpoint version, so a processor holding the person in memory drops
it), and the decision log. Embedded, each erasing transaction runs with SQLite's ``secure_delete``: what it
deletes is overwritten, not merely unlinked.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from kairos.errors import CheckpointConflict
from kairos.store._db import Database
from kairos.store._decisions import ERASURES
from kairos.store._state import MAIN

__all__ = ["ERASURES", "TOMBSTONE", "ErasePlan", "PrivacyRequest", "SqlPrivacy"]

# The payload of an erased log entry. No accepted event is empty (collect stores a JSON object), so an empty
# payload is unambiguous; the row keeps its seq (seqs stay gap-free: appends take MAX(seq) + 1, so deleting
# the last row would hand its seq to the next event, which a processor past it would never apply).
TOMBSTONE = b""
_REQUEST_COLUMNS = (
    "id, kind, status, created_at, finished_at, log_seq, target, suppress, lease_until, attempts, steps, error"
)


@dataclass(frozen=True, slots=True)
class PrivacyRequest:
    id: str
    kind: str
    status: str  # pending | running | complete | failed
    created_at: int
    finished_at: int | None
    log_seq: int
    target: int | None
    suppress: bool
    lease_until: int
    attempts: int
    steps: dict[str, Any]
    error: str | None


@dataclass(slots=True)
class ErasePlan:
    """What one erasure removes from derived state: internal keys and positions only."""

    pks: list[int]  # the profile and every profile merged into it
    profile_ids: list[str]
    seqs: list[int]  # log positions of the person's events
    seen: list[bytes] = field(default_factory=list)  # their de-duplication digests


def _plain(db: Database, kind: str, value: Any) -> Any:
    """A column's value as JSON can carry it."""
    if value is None:
        return None
    if kind == "json":
        return db.d.load_json(value)
    if kind == "bytes":
        return bytes(value).hex()
    return value


class SqlPrivacy:
    def __init__(self, log_db: Database, state_db: Database, decisions_db: Database) -> None:
        self.log_db = log_db
        self.state_db = state_db
        self.decisions_db = decisions_db

    # -- requests ------------------------------------------------------------------------------------
    def _request(self, r: Sequence[Any]) -> PrivacyRequest:
        return PrivacyRequest(
            r[0], r[1], r[2], r[3], r[4], r[5], r[6], bool(r[7]), r[8], r[9], self.log_db.d.load_json(r[10]), r[11]
        )

    def create(self, kind: str, target: int, suppress: bool, now: int) -> PrivacyRequest:
        """A pending request; ``log_seq`` is the end of the log now (read under the log's lock)."""
        db = self.log_db
        request_id = "pr_" + secrets.token_hex(16)
        with db.tx(write=True) as conn:
            db.d.lock(conn, "log")
            log_seq = int(db.rows(conn, "SELECT COALESCE(MAX(seq), 0) FROM log")[0][0])
            conn.execute(
                db.sql(
                    f"INSERT INTO privacy_requests ({_REQUEST_COLUMNS}) VALUES"
                    " ({p}, {p}, 'pending', {p}, NULL, {p}, {p}, {p}, 0, 0, {p}, NULL)"
                ),
                (request_id, kind, now, log_seq, target, int(suppress), db.d.dump_json({})),
            )
        found = self.get(request_id)
        assert found is not None
        return found

    def get(self, request_id: str) -> PrivacyRequest | None:
        r = self.log_db.one(f"SELECT {_REQUEST_COLUMNS} FROM privacy_requests WHERE id = {{p}}", (request_id,))
        return None if r is None else self._request(r)

    def open_requests(self, now: int, limit: int = 10) -> list[PrivacyRequest]:
        """Pending requests, and running ones whose lease ran out (their runner stopped), oldest first."""
        rows = self.log_db.rows_of(
            f"SELECT {_REQUEST_COLUMNS} FROM privacy_requests WHERE status IN ('pending', 'running')"
            " ORDER BY created_at, id LIMIT {p}",
            (limit,),
        )
        return [r for r in map(self._request, rows) if r.status == "pending" or r.lease_until < now]

    def claim(self, request: PrivacyRequest, now: int, lease_ms: int) -> PrivacyRequest | None:
        """Take ``request`` (compare-and-set on its status and lease): only one runner executes it at a time."""
        db = self.log_db
        with db.tx(write=True) as conn:
            cur = conn.execute(
                db.sql(
                    "UPDATE privacy_requests SET status = 'running', lease_until = {p}, attempts = attempts + 1"
                    " WHERE id = {p} AND status = {p} AND lease_until = {p}"
                ),
                (now + lease_ms, request.id, request.status, request.lease_until),
            )
            if cur.rowcount != 1:
                return None
        return self.get(request.id)

    def progress(self, request_id: str, steps: dict[str, Any], lease_until: int) -> None:
        db = self.log_db
        with db.tx(write=True) as conn:
            conn.execute(
                db.sql("UPDATE privacy_requests SET steps = {p}, lease_until = {p} WHERE id = {p}"),
                (db.d.dump_json(steps), lease_until, request_id),
            )

    def release(self, request_id: str) -> None:
        """Give a running request up at once (its lease ends now): the next runner takes it over."""
        db = self.log_db
        with db.tx(write=True) as conn:
            conn.execute(db.sql("UPDATE privacy_requests SET lease_until = 0 WHERE id = {p}"), (request_id,))

    def finish(self, request_id: str, status: str, steps: dict[str, Any], now: int, error: str | None = None) -> None:
        """End a request: from now on it holds no reference to the person (``target`` is cleared)."""
        db = self.log_db
        with db.tx(write=True) as conn:
            db.d.secure_delete(conn, True)
            try:
                conn.execute(
                    db.sql(
                        "UPDATE privacy_requests SET status = {p}, steps = {p}, finished_at = {p}, target = NULL,"
                        " error = {p} WHERE id = {p}"
                    ),
                    (status, db.d.dump_json(steps), now, error, request_id),
                )
            finally:
                db.d.secure_delete(conn, False)

    def has_open(self) -> bool:
        return (
            self.log_db.one("SELECT 1 FROM privacy_requests WHERE status IN ('pending', 'running') LIMIT 1") is not None
        )

    # -- suppressions --------------------------------------------------------------------------------
    def suppress(self, hashes: Sequence[str], now: int) -> int:
        """Store keyed hashes (idempotent); how many were new."""
        db = self.log_db
        added = 0
        with db.tx(write=True) as conn:
            for h in sorted(set(hashes)):
                cur = conn.execute(
                    db.sql(
                        "INSERT INTO suppressions (hash, created_at) VALUES ({p}, {p}) ON CONFLICT (hash) DO NOTHING"
                    ),
                    (h, now),
                )
                added += max(0, cur.rowcount)
        return added

    def suppression_revision(self) -> int:
        return int(self.log_db.one("SELECT COALESCE(MAX(id), 0) FROM suppressions")[0])

    def suppressions_after(self, after: int) -> list[tuple[int, str]]:
        return [
            (int(i), str(h))
            for i, h in self.log_db.rows_of("SELECT id, hash FROM suppressions WHERE id > {p}", (after,))
        ]

    # -- export ---------------------------------------------------------------------------------------
    def owned_rows(self, pks: Sequence[int], skip: Sequence[str] = ()) -> dict[str, list[dict[str, Any]]]:
        """Every row of every derived table keyed by profile (``profile_column``) that belongs to ``pks``,
        by table name: the tables projections own (consent ledger included) as well as identities and
        timers. JSON columns decoded; bytes as hex."""
        db = self.state_db
        out: dict[str, list[dict[str, Any]]] = {}
        with db.conn() as conn:
            for table in db.derived:
                if not table.profile_column or table.name in skip:
                    continue
                names = table.column_names
                kinds = db.types(table, names)
                rows: list[dict[str, Any]] = []
                order = ", ".join(table.primary_key)
                for cond, params in db.where_in(table.profile_column, list(pks)):
                    sql = f"SELECT {', '.join(names)} FROM {table.name} WHERE {cond} ORDER BY {order}"
                    for r in db.rows(conn, sql, params):
                        rows.append({n: _plain(db, k, v) for n, k, v in zip(names, kinds, r, strict=True)})
                out[table.name] = rows
        return out

    def deliveries_of(self, profile_ids: Sequence[str]) -> list[dict[str, Any]]:
        db = self.state_db
        out: list[dict[str, Any]] = []
        with db.conn() as conn:
            for cond, params in db.where_in("profile_id", list(profile_ids)):
                out += [
                    {
                        "destination": r[0],
                        "id": r[1],
                        "type": r[2],
                        "key": r[3],
                        "profile_id": r[4],
                        "status": r[5],
                        "attempts": r[6],
                        "created_at": r[7],
                        "updated_at": r[8],
                    }
                    for r in db.rows(
                        conn,
                        "SELECT destination, id, type, key, profile_id, status, attempts, created_at, updated_at"
                        f" FROM deliveries WHERE {cond} ORDER BY created_at, destination, id",
                        params,
                    )
                ]
        return out

    # -- erasing -------------------------------------------------------------------------------------
    @contextmanager
    def _erasing(self, db: Database) -> Iterator[Any]:
        """A write transaction whose deletions overwrite the deleted content (SQLite's ``secure_delete``)."""
        with db.tx(write=True) as conn:
            db.d.secure_delete(conn, True)
            try:
                yield conn
            finally:
                db.d.secure_delete(conn, False)

    def same_messages(self, seqs: Sequence[int]) -> list[int]:
        """Log positions of entries carrying the same (source, messageId) as the entries at ``seqs``: the
        copies a client sent again, which the processor skipped as duplicates (they are the person's too).
        No index serves this: a scan of the log per erasure, a rare operation, instead of an index that
        every append would pay for."""
        db = self.log_db
        keys: set[tuple[str, str]] = set()
        out: set[int] = set()
        with db.conn() as conn:
            for cond, params in db.where_in("seq", list(seqs)):
                keys.update(
                    (s, m) for s, m in db.rows(conn, f"SELECT source, message_id FROM log WHERE {cond}", params)
                )
            keys.discard(("", ""))
            ids = sorted({m for _, m in keys if m})
            for cond, params in db.where_in("message_id", ids):
                for seq, source, message_id in db.rows(
                    conn, f"SELECT seq, source, message_id FROM log WHERE {cond}", params
                ):
                    if (source, message_id) in keys:
                        out.add(int(seq))
        return sorted(out - set(seqs))

    def tombstone(self, seqs: Sequence[int]) -> int:
        """Erase the log entries at ``seqs``: the payload and messageId are overwritten, the event time set
        to the time received; seq, source and received_at stay (log order and timer firing depend on them)."""
        db = self.log_db
        n = 0
        with self._erasing(db) as conn:
            for cond, params in db.where_in("seq", list(seqs)):
                cur = conn.execute(
                    db.sql(
                        f"UPDATE log SET payload = {{p}}, message_id = '', ts = received_at WHERE {cond}"
                        " AND (message_id <> '' OR ts <> received_at OR LENGTH(payload) > 0)"
                    ),
                    [TOMBSTONE, *params],
                )
                n += max(0, cur.rowcount)
        return n

    def erase_decisions(self, subjects: Sequence[str]) -> tuple[int, int]:
        """Delete the decisions of ``subjects`` and their rewards, and move the ``privacy_erasures`` counter
        that tells learners to drop what they learned in memory since their last snapshot."""
        db = self.decisions_db
        with self._erasing(db) as conn:
            ids: list[str] = []
            for cond, params in db.where_in("subject", list(subjects)):
                ids += [str(r[0]) for r in db.rows(conn, f"SELECT id FROM decisions WHERE {cond}", params)]
            rewards = decisions = 0
            for cond, params in db.where_in("decision_id", ids):
                rewards += max(0, conn.execute(db.sql(f"DELETE FROM rewards WHERE {cond}"), params).rowcount)
            for cond, params in db.where_in("id", ids):
                conn.execute(db.sql(f"DELETE FROM decision_records WHERE {cond}"), params)
                decisions += max(0, conn.execute(db.sql(f"DELETE FROM decisions WHERE {cond}"), params).rowcount)
            db.d.lock(conn, "meta")
            found = db.rows(conn, "SELECT value FROM meta WHERE key = {p}", (ERASURES,))
            if found:
                conn.execute(
                    db.sql("UPDATE meta SET value = {p} WHERE key = {p}"), (str(int(found[0][0]) + 1), ERASURES)
                )
            else:
                conn.execute(db.sql("INSERT INTO meta (key, value) VALUES ({p}, {p})"), (ERASURES, "1"))
        return decisions, rewards

    def erase_state(self, plan: ErasePlan, expect: tuple[int, int]) -> dict[str, int]:
        """Delete the person from derived state, the outbox and deliveries in one transaction that also
        moves the checkpoint version (compare-and-set on ``expect`` = (seq, version)): a processor that
        committed since the plan was made fails this (:class:`CheckpointConflict`, nothing changed), and a
        processor holding the person in its cache drops it before its next batch."""
        db = self.state_db
        counts: dict[str, int] = {}

        def delete(table: str, column: str, values: Sequence[Any], extra: str = "") -> None:
            for cond, params in db.where_in(column, list(values)):
                cur = conn.execute(db.sql(f"DELETE FROM {table} WHERE {cond}{extra}"), params)
                counts[table] = counts.get(table, 0) + max(0, cur.rowcount)

        with self._erasing(db) as conn:
            cur = conn.execute(
                db.sql("UPDATE checkpoints SET version = version + 1 WHERE name = {p} AND seq = {p} AND version = {p}"),
                (MAIN, *expect),
            )
            if cur.rowcount != 1 and expect != (0, 0):
                raise CheckpointConflict("the processor committed while the erasure was planned; planning again")
            delete("profiles", "pk", plan.pks)
            delete("profiles", "merged_into", plan.pks)
            delete("merges", "winner", plan.pks)
            delete("merges", "loser", plan.pks)
            for table in db.derived:  # identities, timers, the timeline, every table a projection owns
                if table.profile_column:
                    delete(table.name, table.profile_column, plan.pks)
            delete("seen", "key", plan.seen)
            delete("deadletters", "seq", plan.seqs)
            for table in db.durable:  # the outbox, deliveries, the data-use ledger: whatever names the profile
                if "profile_id" in table.column_names:
                    delete(table.name, "profile_id", plan.profile_ids)
            delete("deliveries", "position", plan.seqs, " AND source = 'log'")
        return {k: v for k, v in counts.items() if v}

    def compact(self) -> bool:
        """After an erasure: no write-ahead log keeps a copy of what was erased (True if done everywhere)."""
        done = True
        for db in dict.fromkeys((self.log_db, self.state_db, self.decisions_db)):
            done = db.d.compact() and done
        return done

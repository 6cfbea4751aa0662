"""The decision log on SQL: decisions, their rewards, policy snapshots and offer impressions.

Durable (a decision cannot be rebuilt from the event log). Embedded, these tables have a SQLite file of their
own, so the decision path never waits on the log writer or the processor; on PostgreSQL they sit beside the
rest. Exactly-once learning rests on two rules: an item has at most one reward row (``rewards_item`` is
unique: the first that arrives wins, the default is written only if none did), and a reward is marked learned
by the snapshot that learned it, which is refused unless the snapshot it was built on is still the latest
(compare-and-set), so two learners never both count one reward. The snapshot's row names what it learned (runs
of seqs, :data:`MARK_CHUNK`); the rows' ``learned`` flags are set after it, in short transactions, and set again
by any learner that starts from that snapshot (:meth:`SqlDecisions.finish_marks`) before it reads the log.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from kairos.store._db import Database
from kairos.store.schema import DECISION_RECORDS, DECISIONS

ERASURES = "privacy_erasures"  # meta key: moved by every erasure (kairos.store._privacy)

__all__ = ["DecisionRow", "RewardRow", "Snapshot", "SqlDecisions"]

KEEP_SNAPSHOTS = 3
MODEL_GRACE_MS = 600_000  # a model younger than this, named by no snapshot, may be a racing learner's
# Seqs marked learned per transaction after a snapshot: the decision log's write lock, which every decision's
# group commit takes, is held ~0.2 ms at a time (5,000 marks in the snapshot's own transaction held it 3.3 ms,
# and SQLite's busy handler made a decision wait 5-10 ms behind it).
MARK_CHUNK = 250
# Between two of those transactions: SQLite hands its write lock to no one in particular, and a decision writer
# sleeping in the busy handler (1, 2, 5, 10 ms) would find it taken again by the next one.
MARK_PAUSE = 0.002
_INSERTED = tuple(c.name for c in DECISIONS.columns if c.name != "seq")  # seq: the serial


@dataclass(frozen=True, slots=True)
class DecisionRow:
    seq: int
    id: str
    at: int
    subject: str
    channel: str
    placement: str | None
    group: str
    policy: str
    policy_version: int
    offers: list[str]
    interaction: bool
    customization: bool
    closes_at: int
    closed: bool
    record: bytes


@dataclass(frozen=True, slots=True)
class RewardRow:
    seq: int
    decision_id: str
    offer: str
    reward: float
    at: int
    source: str
    learned: bool


@dataclass(frozen=True, slots=True)
class Snapshot:
    version: int
    policy: str
    at: int
    learned: int  # rewards learned in total
    model: bytes


_DECISION_COLUMNS = (
    "d.seq, d.id, d.at, d.subject, d.channel, d.placement, d.grp, d.policy, d.policy_version, d.offers,"
    " d.interaction, d.customization, d.closes_at, d.closed"
)
# A decision with its record (kept in a table of its own, see ``schema.DECISION_RECORDS``); ``_BARE``: the
# decision's row alone, for who only counts or joins decisions (``record`` then is empty).
_WITH_RECORDS = f"SELECT {_DECISION_COLUMNS}, r.record FROM decisions d JOIN decision_records r ON r.id = d.id"
_BARE = f"SELECT {_DECISION_COLUMNS}, NULL FROM decisions d"
_REWARD_COLUMNS = "seq, decision_id, offer, reward, at, source, learned"


def runs(seqs: Sequence[int]) -> list[list[int]]:
    """Runs of consecutive seqs as ``[first, last]``: exact, since every seq of a run is one that was read (a
    range over a gap could take in a row PostgreSQL committed late, which was never learned)."""
    out: list[list[int]] = []
    for seq in sorted(set(seqs)):
        if out and out[-1][1] == seq - 1:
            out[-1][1] = seq
        else:
            out.append([seq, seq])
    return out


def _chunks(marks: Sequence[Sequence[int]]) -> Iterator[list[tuple[int, int]]]:
    """The runs cut and grouped so that each group covers at most :data:`MARK_CHUNK` seqs."""
    group: list[tuple[int, int]] = []
    size = 0
    for first, last in marks:
        while first <= last:
            end = min(last, first + MARK_CHUNK - size - 1)
            group.append((first, end))
            size += end - first + 1
            first = end + 1
            if size == MARK_CHUNK:
                yield group
                group, size = [], 0
    if group:
        yield group


class SqlDecisions:
    def __init__(self, db: Database, models: Database | None = None) -> None:
        self.db = db
        self.models = models or db  # where snapshots' models are (embedded: a file of their own)

    def _decision(self, r: Sequence[Any], record: bool = True) -> DecisionRow:
        return DecisionRow(
            r[0],
            r[1],
            r[2],
            r[3],
            r[4],
            r[5],
            r[6],
            r[7],
            r[8],
            self.db.d.load_json(r[9]),
            bool(r[10]),
            bool(r[11]),
            r[12],
            bool(r[13]),
            bytes(r[14]) if record else b"",
        )

    @staticmethod
    def _reward(r: Sequence[Any]) -> RewardRow:
        return RewardRow(r[0], r[1], r[2], float(r[3]), r[4], r[5], bool(r[6]))

    # -- the decision path ---------------------------------------------------------------------------
    def record(self, row: DecisionRow) -> None:
        """Log one decision and count its impressions, in one transaction."""
        self.record_many([row])

    def record_many(self, rows: Sequence[DecisionRow]) -> list[None]:
        """Log decisions and count their impressions, in one transaction (the decide path's group commit)."""
        db = self.db
        impressions: dict[str, int] = {}
        for row in rows:
            for offer in dict.fromkeys(row.offers):
                impressions[offer] = impressions.get(offer, 0) + 1
        with db.tx(write=True) as conn:
            # Multi-row inserts (Database.insert_new): one statement step per table, not one per decision, so
            # the group-commit thread does not wait for the event loop to hand back the GIL once per row.
            db.insert_new(
                conn,
                DECISIONS,
                [
                    (
                        row.id,
                        row.at,
                        row.subject,
                        row.channel,
                        row.placement,
                        row.group,
                        row.policy,
                        row.policy_version,
                        list(row.offers),
                        int(row.interaction),
                        int(row.customization),
                        row.closes_at,
                        0,
                        0,
                    )
                    for row in rows
                ],
                _INSERTED,
            )
            db.insert_new(conn, DECISION_RECORDS, [(row.id, row.record) for row in rows])
            db.many(
                conn,
                "INSERT INTO offer_impressions (offer, impressions) VALUES ({p}, {p}) ON CONFLICT (offer)"
                " DO UPDATE SET impressions = offer_impressions.impressions + excluded.impressions",
                sorted(impressions.items()),  # a fixed order: concurrent writers lock rows alike (PostgreSQL)
            )
        return [None] * len(rows)

    def impressions(self, offers: Sequence[str]) -> dict[str, int]:
        out: dict[str, int] = {}
        with self.db.conn() as conn:
            for where, params in self.db.where_in("offer", list(offers)):
                for offer, n in self.db.rows(
                    conn, f"SELECT offer, impressions FROM offer_impressions WHERE {where}", params
                ):
                    out[offer] = int(n)
        return out

    def history(
        self, subjects: Sequence[str], since: int, limit: int = 500, *, records: bool = True
    ) -> tuple[list[DecisionRow], list[RewardRow]]:
        """The subjects' decisions since ``since`` (newest first, at most ``limit``) and their rewards;
        ``records=False``: without their records (``record`` is empty), for who only counts or joins them."""
        if not subjects:
            return [], []
        db = self.db
        rows: list[DecisionRow] = []
        select = _WITH_RECORDS if records else _BARE
        with db.conn() as conn:
            for where, params in db.where_in("d.subject", list(subjects)):
                found = db.rows(
                    conn,
                    f"{select} WHERE {where} AND d.at >= {{p}} ORDER BY d.at DESC LIMIT {{p}}",
                    [*params, since, limit],
                )
                rows.extend(self._decision(r, records) for r in found)
            rows.sort(key=lambda d: -d.at)
            rows = rows[:limit]
            rewards: list[RewardRow] = []
            for where, params in db.where_in("decision_id", [d.id for d in rows]):
                rewards.extend(
                    self._reward(r)
                    for r in db.rows(conn, f"SELECT {_REWARD_COLUMNS} FROM rewards WHERE {where}", params)
                )
        return rows, rewards

    # -- rewards ---------------------------------------------------------------------------------------
    def decision(self, decision_id: str) -> DecisionRow | None:
        r = self.db.one(f"{_WITH_RECORDS} WHERE d.id = {{p}}", (decision_id,))
        return None if r is None else self._decision(r)

    def decisions(self, ids: Sequence[str]) -> dict[str, DecisionRow]:
        out: dict[str, DecisionRow] = {}
        with self.db.conn() as conn:
            for where, params in self.db.where_in("d.id", list(ids)):
                for r in self.db.rows(conn, f"{_WITH_RECORDS} WHERE {where}", params):
                    out[r[1]] = self._decision(r)
        return out

    def add_rewards(self, rows: Sequence[tuple[str, str, float, int, str]]) -> list[bool]:
        """Record (decision_id, offer, reward, at, source) outcomes; each answer says whether it was the first
        for its item (a later one is ignored: the first reward wins)."""
        db = self.db
        out = []
        with db.tx(write=True) as conn:
            for decision_id, offer, reward, at, source in rows:
                cur = conn.execute(
                    db.sql(
                        "INSERT INTO rewards (decision_id, offer, reward, at, source, learned)"
                        " VALUES ({p}, {p}, {p}, {p}, {p}, 0) ON CONFLICT (decision_id, offer) DO NOTHING"
                    ),
                    (decision_id, offer, reward, at, source),
                )
                out.append(cur.rowcount == 1)
        return out

    def rewards_of(self, decision_ids: Sequence[str]) -> list[RewardRow]:
        out: list[RewardRow] = []
        with self.db.conn() as conn:
            for where, params in self.db.where_in("decision_id", list(decision_ids)):
                out.extend(
                    self._reward(r)
                    for r in self.db.rows(conn, f"SELECT {_REWARD_COLUMNS} FROM rewards WHERE {where}", params)
                )
        return out

    def close_due(self, now: int, default: float, limit: int = 1000) -> int:
        """Give every open item of decisions whose wait is over the default reward, and close them."""
        db = self.db
        with db.tx(write=True) as conn:
            due = db.rows(
                conn,
                "SELECT seq, id, offers FROM decisions WHERE closed = 0 AND closes_at <= {p} ORDER BY closes_at"
                " LIMIT {p}",
                (now, limit),
            )
            if not due:
                return 0
            db.many(
                conn,
                "INSERT INTO rewards (decision_id, offer, reward, at, source, learned)"
                " VALUES ({p}, {p}, {p}, {p}, 'default', 0) ON CONFLICT (decision_id, offer) DO NOTHING",
                [
                    (decision_id, offer, default, now)
                    for _seq, decision_id, offers in due
                    for offer in db.d.load_json(offers)
                ],
            )
            for where, params in db.where_in("seq", [seq for seq, _id, _offers in due]):
                conn.execute(db.sql(f"UPDATE decisions SET closed = 1 WHERE {where}"), params)
        return len(due)

    def unlearned_decisions(self, after: int, limit: int) -> list[DecisionRow]:
        """Decisions whose shown items no stored snapshot has learned yet, after ``after``, in log order."""
        return [
            self._decision(r)
            for r in self.db.rows_of(
                f"{_WITH_RECORDS} WHERE d.learned = 0 AND d.seq > {{p}} ORDER BY d.seq LIMIT {{p}}",
                (after, limit),
            )
        ]

    def unlearned(self, after: int, limit: int) -> list[RewardRow]:
        return [
            self._reward(r)
            for r in self.db.rows_of(
                f"SELECT {_REWARD_COLUMNS} FROM rewards WHERE learned = 0 AND seq > {{p}} ORDER BY seq LIMIT {{p}}",
                (after, limit),
            )
        ]

    # -- snapshots -------------------------------------------------------------------------------------
    def latest_version(self) -> int:
        r = self.db.one("SELECT MAX(version) FROM policy_snapshots")
        return int(r[0]) if r and r[0] is not None else 0

    def latest(self) -> Snapshot | None:
        """The latest snapshot with its model; None if there is none, or if its model is gone (a newer one
        replaced it meanwhile: ask again)."""
        r = self.db.one(
            "SELECT version, policy, at, learned, model, model_id FROM policy_snapshots ORDER BY version DESC LIMIT 1"
        )
        if r is None:
            return None
        model = bytes(r[4])
        if r[5] is not None:
            found = self.models.one("SELECT model FROM policy_models WHERE id = {p}", (r[5],))
            if found is None:
                return None
            model = bytes(found[0])
        return Snapshot(r[0], r[1], r[2], r[3], model)

    def save_snapshot(
        self,
        expect: int,
        snapshot: Snapshot,
        learned: Sequence[int],
        decisions: Sequence[int] = (),
        erasures: int | None = None,
    ) -> bool:
        """Store ``snapshot`` (its version must be ``expect + 1``) and mark the rewards ``learned`` and the
        ``decisions`` (their seqs) as learned, unless another snapshot came after ``expect``, or (``erasures``
        given) an erasure moved the ``privacy_erasures`` counter since the learner read it: what it learned
        may then include a deleted decision. False then, and nothing is written.

        The model (megabytes) is written first, in a transaction of its own in ``policy_models``, and the
        compare-and-set names it: the decision log's write lock, which every decision's group commit takes, is
        held for the bookkeeping only (embedded, that lock was held ~10 ms each snapshot, a stall of the
        decision path). A model no snapshot names (a lost compare-and-set, a crash between the two) is
        removed (:meth:`_drop_models`)."""
        model_id = f"{snapshot.version}-{uuid.uuid4().hex}"
        with self.models.tx(write=True) as conn:
            conn.execute(
                self.models.sql("INSERT INTO policy_models (id, at, model) VALUES ({p}, {p}, {p})"),
                (model_id, snapshot.at, snapshot.model),
            )
        try:
            marks = {"rewards": runs(learned), "decisions": runs(decisions)}
            replaced = self._compare_and_set(expect, snapshot, model_id, marks, erasures)
        except Exception:
            with contextlib.suppress(Exception):  # the store failing: the model is removed next time
                self._drop_models(model_id, False, set(), snapshot.at)
            raise
        self._drop_models(model_id, replaced is not None, replaced or set(), snapshot.at)
        if replaced is None:
            return False
        # If this fails, the snapshot is stored but rows it learned may still read as unlearned: the caller
        # must not read the log on it (the trainer's next compare-and-set then fails, and it starts again from
        # this snapshot, through finish_marks).
        self._mark(marks)
        return True

    def finish_marks(self, version: int) -> None:
        """Mark learned what snapshot ``version`` learned (a learner that stored it may have stopped before it
        was done): before a learner that starts from that snapshot reads the log. Nothing if it is gone (a
        newer one replaced it: that learner's compare-and-set will fail)."""
        r = self.db.one("SELECT marks FROM policy_snapshots WHERE version = {p}", (version,))
        if r is not None and r[0] is not None:
            self._mark(self.db.d.load_json(r[0]), check=True)

    def _mark(self, marks: dict[str, list[list[int]]], check: bool = False) -> None:
        """Set ``learned`` on the rows of these runs of seqs, :data:`MARK_CHUNK` seqs per transaction;
        ``check``: only where a read finds one still unlearned (most often none: no write lock taken)."""
        db = self.db
        groups = [(table, group) for table in ("rewards", "decisions") for group in _chunks(marks.get(table, []))]
        if check:
            groups = [(table, group) for table, group in groups if self._unlearned_in(table, group)]
        for i, (table, group) in enumerate(groups):
            if i:
                time.sleep(MARK_PAUSE)
            with db.tx(write=True) as conn:
                for first, last in group:
                    conn.execute(
                        db.sql(f"UPDATE {table} SET learned = 1 WHERE seq BETWEEN {{p}} AND {{p}} AND learned = 0"),
                        (first, last),
                    )

    def _unlearned_in(self, table: str, group: Sequence[tuple[int, int]]) -> bool:
        where = " OR ".join(["seq BETWEEN {p} AND {p}"] * len(group))
        params = [seq for run in group for seq in run]
        return self.db.one(f"SELECT 1 FROM {table} WHERE learned = 0 AND ({where}) LIMIT 1", params) is not None

    def _compare_and_set(
        self,
        expect: int,
        snapshot: Snapshot,
        model_id: str,
        marks: dict[str, list[list[int]]],
        erasures: int | None,
    ) -> set[str] | None:
        """The models of the snapshots the stored one replaced; None if it was not stored."""
        db = self.db
        with db.tx(write=True) as conn:
            db.d.lock(conn, "policy_snapshots")
            r = db.rows(conn, "SELECT MAX(version) FROM policy_snapshots")
            if (r[0][0] or 0) != expect:
                return None
            if erasures is not None:
                db.d.lock(conn, "meta")  # the erasure's transaction moves the counter under this lock
                found = db.rows(conn, "SELECT value FROM meta WHERE key = {p}", (ERASURES,))
                if (int(found[0][0]) if found else 0) != erasures:
                    return None
            conn.execute(
                db.sql(
                    "INSERT INTO policy_snapshots (version, policy, at, learned, model, model_id, marks)"
                    " VALUES ({p}, {p}, {p}, {p}, {p}, {p}, {p})"
                ),
                (
                    snapshot.version,
                    snapshot.policy,
                    snapshot.at,
                    snapshot.learned,
                    b"",
                    model_id,
                    db.d.dump_json(marks),
                ),
            )
            oldest = snapshot.version - KEEP_SNAPSHOTS
            replaced = db.rows(
                conn, "SELECT model_id FROM policy_snapshots WHERE version <= {p} AND model_id IS NOT NULL", (oldest,)
            )
            conn.execute(db.sql("DELETE FROM policy_snapshots WHERE version <= {p}"), (oldest,))
        return {r[0] for r in replaced}

    def _drop_models(self, own: str, stored: bool, replaced: set[str], at: int) -> None:
        """Remove the models no snapshot names: ``own`` unless it was ``stored``, those of the ``replaced``
        snapshots, and the others written over ``MODEL_GRACE_MS`` before ``at`` (a younger one may be another
        learner's, before its compare-and-set)."""
        named = {r[0] for r in self.db.rows_of("SELECT model_id FROM policy_snapshots WHERE model_id IS NOT NULL")}
        models = self.models
        stale = [
            r[0]
            for r in models.rows_of("SELECT id, at FROM policy_models")
            if r[0] not in named and (r[0] == own or r[0] in replaced or r[1] < at - MODEL_GRACE_MS)
        ]
        if stored and own in stale:  # defensive: the snapshot just stored names it
            stale.remove(own)
        if stale:
            with models.tx(write=True) as conn:
                for where, params in models.where_in("id", stale):
                    conn.execute(models.sql(f"DELETE FROM policy_models WHERE {where}"), params)

    # -- bookkeeping -----------------------------------------------------------------------------------
    def meta_int(self, key: str) -> int:
        r = self.db.one("SELECT value FROM meta WHERE key = {p}", (key,))
        return int(r[0]) if r else 0

    def set_meta_int(self, key: str, value: int) -> None:
        """Move a cursor forward (never back: two learners may race)."""
        db = self.db
        with db.tx(write=True) as conn:
            db.d.lock(conn, "meta")
            found = db.rows(conn, "SELECT value FROM meta WHERE key = {p}", (key,))
            if not found:
                conn.execute(db.sql("INSERT INTO meta (key, value) VALUES ({p}, {p})"), (key, str(value)))
            elif int(found[0][0]) < value:
                conn.execute(db.sql("UPDATE meta SET value = {p} WHERE key = {p}"), (str(value), key))

    # -- reports ---------------------------------------------------------------------------------------
    def between(self, start: int, end: int, limit: int, after_seq: int = 0) -> list[DecisionRow]:
        """Decisions with ``start <= at < end``, in log order, after ``after_seq`` (paging)."""
        return [
            self._decision(r)
            for r in self.db.rows_of(
                f"{_WITH_RECORDS} WHERE d.at >= {{p}} AND d.at < {{p}} AND d.seq > {{p}} ORDER BY d.seq LIMIT {{p}}",
                (start, end, after_seq, limit),
            )
        ]

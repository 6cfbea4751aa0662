"""Derived state on a SQL :class:`~kairos.store._db.Database`: what the processor loads and commits, and the
reads the profile API makes. Nothing here knows which projections exist: their columns and tables come from
their declarations."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from typing import Any

from kairos.errors import CheckpointConflict
from kairos.store._db import Database
from kairos.store._model import (
    Checkpoint,
    DeadLetter,
    IdentityKey,
    Job,
    MergeRecord,
    ProfileRow,
    TimelineRow,
    TimerRow,
    Writes,
)
from kairos.store.schema import CORE_PROFILE_COLUMNS, IDENTITIES, SEEN, TIMERS, Table

__all__ = ["MAIN", "SqlState", "digest"]

MAIN = "profiles"  # the processor's checkpoint
_CORE = len(CORE_PROFILE_COLUMNS)


def digest(key: str) -> bytes:
    """De-duplication keys are stored as 128-bit digests: a third of the index pages of the text, and
    therefore of what each commit rewrites; a collision is as likely as a random UUID repeating."""
    return hashlib.blake2b(key.encode(), digest_size=16).digest()


class SqlState:
    def __init__(self, db: Database, profiles: Table) -> None:
        self.db = db
        self.profiles = profiles
        self.columns = profiles.column_names
        self._json = self.db.json_columns(profiles, self.columns)
        self._json_names = {self.columns[i] for i in self._json}
        self._select = f"SELECT {', '.join(self.columns)} FROM profiles"
        # Tables whose rows follow their profile into a merge (timers are moved by the processor instead:
        # two profiles may hold a timer under the same key, and it decides which survives).
        self.rekeyed = [t for t in db.derived if t.profile_column and t is not TIMERS]  # owned tables included

    # -- processor side ----------------------------------------------------------------------------
    def checkpoint(self, name: str = MAIN) -> Checkpoint:
        row = self.db.one("SELECT seq, version FROM checkpoints WHERE name = {p}", (name,))
        return Checkpoint(int(row[0]), int(row[1])) if row else Checkpoint(0, 0)

    def find_identities(self, keys: Iterable[IdentityKey]) -> dict[IdentityKey, int]:
        keys = list(keys)
        out: dict[IdentityKey, int] = {}
        if not keys:
            return out
        with self.db.conn() as conn:
            for source, params in self.db.d.keys_join(keys):
                sql = (
                    f"SELECT i.type, i.value, i.profile_pk FROM {source}"
                    " JOIN identities i ON i.type = k.t AND i.value = k.v"
                )
                for t, v, pk in self.db.rows(conn, sql, params):
                    out[(t, v)] = pk
        return out

    def _row(self, r: Sequence[Any]) -> ProfileRow:
        values = list(r)
        for i in self._json:
            if values[i] is not None:
                values[i] = self.db.d.load_json(values[i])
        return ProfileRow(values[0], values[1], values[2], tuple(values[_CORE:]))

    def load_profiles(self, pks: Iterable[int]) -> dict[int, ProfileRow]:
        pks = list(dict.fromkeys(pks))
        out: dict[int, ProfileRow] = {}
        if not pks:
            return out
        with self.db.tx() as conn:
            for cond, params in self.db.where_in("pk", pks):
                for r in self.db.rows(conn, f"{self._select} WHERE {cond}", params):
                    out[r[0]] = self._row(r)
            for cond, params in self.db.where_in("profile_pk", pks):
                for pk, t, v in self.db.rows(
                    conn, f"SELECT profile_pk, type, value FROM identities WHERE {cond}", params
                ):
                    if pk in out:
                        out[pk].identities.add((t, v))
        return out

    def seen(self, digests: Iterable[bytes]) -> set[bytes]:
        wanted = list(dict.fromkeys(digests))
        out: set[bytes] = set()
        with self.db.conn() as conn:
            for cond, params in self.db.where_in("key", wanted):
                out.update(bytes(r[0]) for r in self.db.rows(conn, f"SELECT key FROM seen WHERE {cond}", params))
        return out

    def timers_of(self, pks: Iterable[int]) -> list[TimerRow]:
        out = []
        with self.db.conn() as conn:
            for cond, params in self.db.where_in("profile_pk", list(pks)):
                sql = f"SELECT profile_pk, projection, key, due_at, payload FROM timers WHERE {cond}"
                out += [TimerRow(r[0], r[1], r[2], r[3], self._load(r[4])) for r in self.db.rows(conn, sql, params)]
        return out

    def due_timers(self, until: int, limit: int) -> list[TimerRow]:
        """Timers due at or before ``until``, in firing order, at most ``limit``."""
        with self.db.conn() as conn:
            rows = self.db.rows(
                conn,
                "SELECT profile_pk, projection, key, due_at, payload FROM timers WHERE due_at <= {p}"
                " ORDER BY due_at, profile_pk, projection, key LIMIT {p}",
                (until, limit),
            )
        return [TimerRow(r[0], r[1], r[2], r[3], self._load(r[4])) for r in rows]

    def _load(self, value: Any) -> Any:
        return None if value is None else self.db.d.load_json(value)

    def commit(self, writes: Writes, expect: Checkpoint, to_seq: int, name: str = MAIN, dry_run: bool = False) -> None:
        """Apply ``writes`` and move checkpoint ``name`` from ``expect`` to ``to_seq`` in one transaction.

        Raises :class:`~kairos.errors.CheckpointConflict` (and changes nothing) if another processor committed
        since ``expect`` was read. ``dry_run`` executes everything and rolls back: it finds what the database
        would refuse.
        """
        db = self.db
        with db.tx(write=True, dry_run=dry_run) as conn:
            cur = conn.execute(
                db.sql(
                    "UPDATE checkpoints SET seq = {p}, version = version + 1"
                    " WHERE name = {p} AND seq = {p} AND version = {p}"
                ),
                (to_seq, name, expect.seq, expect.version),
            )
            if cur.rowcount != 1 and expect.version == 0:  # the first commit since the store was (re)built
                cur = conn.execute(
                    db.sql(
                        "INSERT INTO checkpoints (name, seq, version) VALUES ({p}, {p}, 1)"
                        " ON CONFLICT (name) DO NOTHING"
                    ),
                    (name, to_seq),
                )
            if cur.rowcount != 1:
                raise CheckpointConflict(f"checkpoint {name} moved past {expect.seq}: another processor is running")
            self._write(conn, writes)

    def _write(self, conn: Any, w: Writes) -> None:
        db = self.db
        # Redirects first, so that rows moved from a loser meet the winner's rows written below.
        moves = [(winner, loser) for loser, winner in w.redirects.items()]
        if moves:
            for table in self.rekeyed:
                col = table.profile_column
                db.many(conn, f"UPDATE {table.name} SET {col} = {{p}} WHERE {col} = {{p}}", moves)
            db.many(conn, "UPDATE profiles SET merged_into = {p} WHERE merged_into = {p}", moves)
        db.insert_new(conn, self.profiles, w.new_profiles)
        for columns, rows in w.updates.items():
            db.update_many(conn, self.profiles, columns, rows)
        # Identities, timeline rows and seen keys are new by construction (an identity is written only when
        # no profile held it, and the checkpoint compare-and-set above admits one processor per batch): they
        # go in by the fastest bulk path.
        db.insert_new(conn, IDENTITIES, w.identities)
        for name, rows in w.inserts.items():
            db.insert_new(conn, db.tables[name], rows)
        db.many(
            conn,
            "INSERT INTO merges (winner, loser, at, seq, message_id, reason, identities)"
            " VALUES ({p}, {p}, {p}, {p}, {p}, {p}, {p})",
            (
                (
                    m.winner,
                    m.loser,
                    m.at,
                    m.seq,
                    m.message_id,
                    m.reason,
                    db.d.dump_json([list(k) for k in m.identities]),
                )
                for m in w.merges
            ),
        )
        db.insert_new(conn, SEEN, [(k,) for k in w.seen])
        db.many(conn, "DELETE FROM timers WHERE profile_pk = {p} AND projection = {p} AND key = {p}", w.timers_deleted)
        db.many(
            conn,
            "INSERT INTO timers (profile_pk, projection, key, due_at, payload) VALUES ({p}, {p}, {p}, {p}, {p})"
            " ON CONFLICT (profile_pk, projection, key) DO UPDATE SET due_at = excluded.due_at,"
            " payload = excluded.payload",
            (
                (t.profile_pk, t.projection, t.key, t.due_at, None if t.payload is None else db.d.dump_json(t.payload))
                for t in w.timers_set
            ),
        )
        db.many(
            conn,
            "INSERT INTO outbox (key, type, profile_id, payload, created_at) VALUES ({p}, {p}, {p}, {p}, {p})"
            " ON CONFLICT (key) DO NOTHING",
            ((k, t, pid, db.d.dump_json(payload), at) for k, t, pid, payload, at in w.outbox),
        )
        db.many(
            conn,
            "INSERT INTO deadletters (seq, source, error_class, message, failed_at) VALUES ({p}, {p}, {p}, {p}, {p})"
            " ON CONFLICT (seq) DO UPDATE SET error_class = excluded.error_class, message = excluded.message,"
            " failed_at = excluded.failed_at, retried_at = NULL",
            ((d.seq, d.source, d.error_class, d.message, d.failed_at) for d in w.deadletters),
        )
        db.many(conn, "UPDATE deadletters SET retried_at = {p} WHERE seq = {p}", ((at, seq) for seq, at in w.retried))
        for name, counts in w.counts.items():
            table = db.tables[name]
            keys = table.primary_key
            values = [c for c in table.column_names if c not in keys]
            db.many(
                conn,
                f"INSERT INTO {name} ({', '.join((*keys, *values))})"
                f" VALUES ({', '.join(['{p}'] * (len(keys) + len(values)))})"
                f" ON CONFLICT ({', '.join(keys)}) DO UPDATE SET "
                + ", ".join(f"{c} = {name}.{c} + excluded.{c}" for c in values),
                ((*key, *deltas) for key, deltas in counts.items()),
            )
        db.many(
            conn,
            "INSERT INTO jobs (kind, key, version, deleted, status, upto, cursor, redo, total, done, started_at,"
            " finished_at) VALUES ({p}, {p}, {p}, {p}, {p}, {p}, {p}, {p}, {p}, {p}, {p}, {p})"
            " ON CONFLICT (kind, key) DO UPDATE SET version = excluded.version, deleted = excluded.deleted,"
            " status = excluded.status, upto = excluded.upto, cursor = excluded.cursor, redo = excluded.redo,"
            " total = excluded.total, done = excluded.done, started_at = excluded.started_at,"
            " finished_at = excluded.finished_at",
            (
                (
                    *(j.kind, j.key, j.version, int(j.deleted), j.status, j.upto, j.cursor),
                    *(db.d.dump_json(list(j.redo)), j.total, j.done, j.started_at, j.finished_at),
                )
                for j in w.jobs
            ),
        )

    def reset(self) -> None:
        """Delete all derived state and rewind every checkpoint to 0 (``kairos replay``). The outbox stays."""
        with self.db.tx(write=True) as conn:
            for table in self.db.derived:
                conn.execute(f"DELETE FROM {table.name}")

    def jobs(self) -> list[Job]:
        with self.db.conn() as conn:
            rows = self.db.rows(
                conn,
                "SELECT kind, key, version, deleted, status, upto, cursor, redo, total, done, started_at, finished_at"
                " FROM jobs ORDER BY kind, key",
            )
        return [
            Job(r[0], r[1], r[2], bool(r[3]), r[4], r[5], r[6], tuple(self.db.d.load_json(r[7])), *r[8:]) for r in rows
        ]

    def live_pks(self, after: int, upto: int, limit: int) -> list[int]:
        """Keys of profiles not merged away with ``after < pk <= upto``, in order, at most ``limit``."""
        with self.db.conn() as conn:
            rows = self.db.rows(
                conn,
                "SELECT pk FROM profiles WHERE pk > {p} AND pk <= {p} AND merged_into IS NULL ORDER BY pk LIMIT {p}",
                (after, upto, limit),
            )
        return [r[0] for r in rows]

    def count_live(self, upto: int) -> int:
        row = self.db.one("SELECT COUNT(*) FROM profiles WHERE pk <= {p} AND merged_into IS NULL", (upto,))
        return int(row[0])

    def history(self, pks: Sequence[int]) -> dict[int, list[int]]:
        """The log positions of every event applied to each profile (its own and its merged ones'), in order."""
        out: dict[int, list[int]] = {pk: [] for pk in pks}
        with self.db.conn() as conn:
            for cond, params in self.db.where_in("profile_pk", list(pks)):
                sql = f"SELECT profile_pk, seq FROM timeline WHERE sub = 0 AND {cond}"
                for pk, seq in self.db.rows(conn, sql, params):
                    out[pk].append(seq)
        for seqs in out.values():
            seqs.sort()
        return out

    def counts(self, table: str, where: str = "", params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Rows of a counter table (``Context.count``), ``where`` in the store's placeholder syntax."""
        t = self.db.tables[table]
        sql = f"SELECT {', '.join(t.column_names)} FROM {table} {where} ORDER BY {', '.join(t.primary_key)}"
        with self.db.conn() as conn:
            return [tuple(r) for r in self.db.rows(conn, sql, params)]

    def profiles_in(self, column: str, member: str, limit: int, after: int | None) -> list[int]:
        """Keys of live profiles whose JSON object column ``column`` has the key ``member``, in order."""
        cond, params = self.db.d.has_key(column, member)
        where = ["merged_into IS NULL", cond]
        if after is not None:
            where.append("pk > {p}")
            params = [*params, after]
        sql = f"SELECT pk FROM profiles WHERE {' AND '.join(where)} ORDER BY pk LIMIT {{p}}"
        with self.db.conn() as conn:
            return [r[0] for r in self.db.rows(conn, sql, [*params, limit])]

    def scan_profiles(
        self,
        after: int,
        limit: int,
        sample: tuple[int, int] | None = None,
        columns: Sequence[str] | None = None,
        identities: bool = True,
    ) -> list[ProfileRow]:
        """Live profiles with ``pk > after`` in order, at most ``limit`` (for previews and exports).

        ``sample`` = (m, r): only those with ``pk % m < r``, a spread sample of about r/m of them (a profile's
        key is the log position of its first event, unrelated to what it did since). ``columns``: read only
        these projection columns (the row's ``values`` are theirs, in this order), so a scan decodes only the
        state it needs; ``identities=False`` leaves them unread."""
        where = "pk > {p} AND merged_into IS NULL"
        params: list[Any] = [after]
        if sample is not None:
            where += " AND pk - (pk / {p}) * {p} < {p}"  # pk mod m, in integer arithmetic both dialects share
            params += [sample[0], sample[0], sample[1]]
        if columns is None:
            with self.db.conn() as conn:
                pks = [
                    r[0]
                    for r in self.db.rows(
                        conn, f"SELECT pk FROM profiles WHERE {where} ORDER BY pk LIMIT {{p}}", [*params, limit]
                    )
                ]
            loaded = self.load_profiles(pks)
            return [loaded[pk] for pk in pks if pk in loaded]
        unknown = [c for c in columns if c not in self.columns]
        if unknown:
            raise ValueError(f"no profiles column {unknown[0]!r}")
        json_at = [i for i, c in enumerate(columns) if c in self._json_names]
        select = ", ".join(("pk", "id", "merged_into", *columns))
        out: dict[int, ProfileRow] = {}
        with self.db.tx() as conn:
            sql = f"SELECT {select} FROM profiles WHERE {where} ORDER BY pk LIMIT {{p}}"
            for r in self.db.rows(conn, sql, [*params, limit]):
                values = list(r[3:])
                for i in json_at:
                    if values[i] is not None:
                        values[i] = self.db.d.load_json(values[i])
                out[r[0]] = ProfileRow(r[0], r[1], r[2], tuple(values))
            if identities and out:
                for cond, ps in self.db.where_in("profile_pk", list(out)):
                    for pk, t, v in self.db.rows(
                        conn, f"SELECT profile_pk, type, value FROM identities WHERE {cond}", ps
                    ):
                        if pk in out:
                            out[pk].identities.add((t, v))
        return list(out.values())

    # -- read side ---------------------------------------------------------------------------------
    def resolve_id(self, profile_id: str) -> int | None:
        """Canonical key of the profile with public id ``profile_id`` (following merges)."""
        row = self.db.one("SELECT pk, merged_into FROM profiles WHERE id = {p}", (profile_id,))
        return None if row is None else int(row[1] or row[0])

    def consents_of(self, profile_ids: Sequence[str]) -> dict[str, Any]:
        """The consents section of each profile id's canonical profile (following merges); ids of profiles
        that no longer exist (erased) are absent."""
        out: dict[str, Any] = {}
        with self.db.conn() as conn:
            for where, params in self.db.where_in("p.id", list(profile_ids)):
                for pid, consents in self.db.rows(
                    conn,
                    "SELECT p.id, COALESCE(w.consents, p.consents) FROM profiles p"
                    f" LEFT JOIN profiles w ON w.pk = p.merged_into WHERE {where}",
                    params,
                ):
                    out[pid] = self._load(consents) or {}
        return out

    def resolve_identity(self, key: IdentityKey) -> int | None:
        row = self.db.one("SELECT profile_pk FROM identities WHERE type = {p} AND value = {p}", key)
        return None if row is None else int(row[0])

    def list_profiles(self, traits: dict[str, Any], limit: int, after: int | None) -> list[ProfileRow]:
        where = ["merged_into IS NULL"]
        params: list[Any] = []
        for name, value in traits.items():
            sql, p = self.db.d.trait_filter(name, value)
            where.append(sql)
            params.extend(p)
        if after is not None:
            where.append("pk > {p}")
            params.append(after)
        sql = f"SELECT pk FROM profiles WHERE {' AND '.join(where)} ORDER BY pk LIMIT {{p}}"
        with self.db.conn() as conn:
            pks = [r[0] for r in self.db.rows(conn, sql, [*params, limit])]
        loaded = self.load_profiles(pks)
        return [loaded[pk] for pk in pks if pk in loaded]

    def timeline(
        self, pk: int, limit: int, before: tuple[int, int, int] | None, type: str | None = None
    ) -> list[TimelineRow]:
        sql = "SELECT profile_pk, ts, seq, sub, type, name, data FROM timeline WHERE profile_pk = {p}"
        params: list[Any] = [pk]
        if type is not None:
            sql += " AND type = {p}"
            params.append(type)
        if before is not None:
            sql += " AND (ts < {p} OR (ts = {p} AND (seq < {p} OR (seq = {p} AND sub < {p}))))"
            params += [before[0], before[0], before[1], before[1], before[2]]
        sql += " ORDER BY ts DESC, seq DESC, sub DESC LIMIT {p}"
        with self.db.conn() as conn:
            rows = self.db.rows(conn, sql, [*params, limit])
        return [TimelineRow(r[0], r[1], r[2], r[3], r[4], r[5], self._load(r[6])) for r in rows]

    def merged_keys(self, pk: int) -> list[int]:
        """Keys of profiles merged (directly or through a chain) into ``pk``."""
        with self.db.conn() as conn:
            return [
                r[0] for r in self.db.rows(conn, "SELECT pk FROM profiles WHERE merged_into = {p} ORDER BY pk", (pk,))
            ]

    def merges(self, pk: int) -> list[MergeRecord]:
        """Every merge whose winner is, or has since been merged into, ``pk``."""
        out: list[MergeRecord] = []
        with self.db.conn() as conn:
            for cond, params in self.db.where_in("winner", [pk, *self.merged_keys(pk)]):
                sql = f"SELECT winner, loser, at, seq, message_id, reason, identities FROM merges WHERE {cond}"
                for r in self.db.rows(conn, sql, params):
                    ids = [(t, v) for t, v in self.db.d.load_json(r[6])]
                    out.append(MergeRecord(r[0], r[1], r[2], r[3], r[4], r[5], ids))
        out.sort(key=lambda m: m.seq)
        return out

    def count_profiles(self) -> int:
        return int(self.db.one("SELECT COUNT(*) FROM profiles WHERE merged_into IS NULL")[0])

    def deadletters(self, limit: int = 1000, seqs: Sequence[int] | None = None) -> list[DeadLetter]:
        sql = "SELECT seq, source, error_class, message, failed_at, retried_at FROM deadletters"
        params: list[Any] = []
        if seqs is not None:
            conds = list(self.db.where_in("seq", list(seqs)))
            if not conds:
                return []
            sql += " WHERE " + " OR ".join(c for c, _ in conds)
            params = [p for _, ps in conds for p in ps]
        with self.db.conn() as conn:
            rows = self.db.rows(conn, sql + " ORDER BY seq LIMIT {p}", [*params, limit])
        return [DeadLetter(*r) for r in rows]

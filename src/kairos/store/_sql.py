"""The store on a SQL database, shared by the SQLite and PostgreSQL backends.

A backend supplies a :class:`Dialect`: how to connect, its migrations, and the few statements that differ.
Each thread gets its own connection; every write is one explicit transaction.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import secrets
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Protocol

import msgspec

from kairos.collect.ingest import NewEvent
from kairos.errors import CheckpointConflict, NotFoundError, ValidationError
from kairos.store._model import (
    ApiKey,
    Changes,
    IdentityKey,
    LogEntry,
    MergeRecord,
    Profile,
    ProfilePage,
    Source,
    TimelineRow,
    TraitValue,
)

__all__ = ["Dialect", "SqlStore"]

_json = msgspec.json.Encoder()
_unjson = msgspec.json.Decoder()
CHUNK = 500
PROCESSOR = "profiles"


class Dialect(Protocol):
    name: str
    param: str  # "?" or "%s"
    array_params: bool  # the driver binds a list to one parameter (``= ANY(?)``)

    @property
    def driver_errors(self) -> tuple[type[Exception], ...]:
        """What the driver raises: the store's fault, never an event's."""
        ...

    def connect(self) -> Any: ...

    def begin(self, conn: Any, write: bool) -> None: ...

    def lock_log(self, conn: Any) -> None:
        """Serialize appends so that seqs become visible in order (no-op where writes are serial anyway)."""
        ...

    def migrate(self, conn: Any) -> None: ...

    def load_json(self, value: Any) -> Any: ...

    def insert_new(self, conn: Any, table: str, columns: tuple[str, ...], rows: list[tuple[Any, ...]]) -> None:
        """Insert rows known not to exist yet, by the driver's fastest bulk path."""
        ...

    def trait_filter(self, name: str, value: Any) -> tuple[str, list[Any]]: ...


def _chunks(items: Sequence[Any], size: int = CHUNK) -> Iterator[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _digest(key: str) -> bytes:
    """De-duplication keys are stored as 128-bit digests: a third of the index pages of the text, and
    therefore of what each commit rewrites; a collision is as likely as a random UUID repeating."""
    return hashlib.blake2b(key.encode(), digest_size=16).digest()


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class SqlStore:
    """Implements :class:`~kairos.store.EventLog`, ``StateStore`` and ``AdminStore`` on one database."""

    def __init__(self, dialect: Dialect) -> None:
        self.d = dialect
        self.driver_errors = dialect.driver_errors
        self._local = threading.local()
        self._all: list[Any] = []
        self._lock = threading.Lock()
        self.log = self
        self.state = self
        self.admin = self
        with self._tx(write=True) as conn:
            self.d.migrate(conn)

    # -- connections -------------------------------------------------------------------------------
    def _conn(self) -> Any:
        conn = getattr(self._local, "conn", None)
        if conn is not None and (getattr(conn, "closed", False) or getattr(conn, "broken", False)):
            # PostgreSQL restarted or killed the session: reconnect instead of failing for ever.
            with self._lock:
                if conn in self._all:
                    self._all.remove(conn)
            conn = None
        if conn is None:
            conn = self.d.connect()
            self._local.conn = conn
            with self._lock:
                self._all.append(conn)
        return conn

    @contextmanager
    def _tx(self, write: bool = False) -> Iterator[Any]:
        conn = self._conn()
        self.d.begin(conn, write)
        try:
            yield conn
        except BaseException:
            with contextlib.suppress(Exception):  # a dead connection must not hide the original error
                conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def _q(self, sql: str) -> str:
        return sql if self.d.param == "?" else sql.replace("?", "%s")

    def _rows(self, conn: Any, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        return list(conn.execute(self._q(sql), params).fetchall())

    def _many(self, conn: Any, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        rows = list(rows)
        if rows:
            conn.cursor().executemany(self._q(sql), rows)

    def close(self) -> None:
        with self._lock:
            for conn in self._all:
                with contextlib.suppress(Exception):  # a dead connection is already closed
                    conn.close()
            self._all.clear()
        self._local = threading.local()

    # -- event log ---------------------------------------------------------------------------------
    def append_many(self, groups: Sequence[tuple[str, Sequence[NewEvent]]]) -> list[list[int]]:
        rows = [
            (src, e.received_at, e.message_id, e.payload, e.ts, e.trait_kind) for src, events in groups for e in events
        ]
        if not rows:
            return [[] for _ in groups]
        with self._tx(write=True) as conn:
            # Seqs are assigned under the log lock, so they are gap-free and visible in commit order.
            self.d.lock_log(conn)
            first = int(self._rows(conn, "SELECT COALESCE(MAX(seq), 0) FROM log")[0][0]) + 1
            seqs = list(range(first, first + len(rows)))
            self._many(
                conn,
                "INSERT INTO log (seq, source, received_at, message_id, payload, ts, trait_kind)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(seq, *row) for seq, row in zip(seqs, rows, strict=True)],
            )
        out: list[list[int]] = []
        i = 0
        for _, events in groups:
            out.append(seqs[i : i + len(events)])
            i += len(events)
        return out

    def read(self, after: int, limit: int) -> list[LogEntry]:
        conn = self._conn()
        rows = self._rows(
            conn,
            "SELECT seq, source, received_at, message_id, payload, ts, trait_kind FROM log"
            " WHERE seq > ? ORDER BY seq LIMIT ?",
            (after, limit),
        )
        return [LogEntry(r[0], r[1], r[2], r[3], bytes(r[4]), r[5], r[6]) for r in rows]

    def _where_in(self, column: str, values: Sequence[Any]) -> Iterator[tuple[str, list[Any]]]:
        """``column IN (values)`` as SQL and parameters: one array parameter, or chunks of placeholders."""
        if self.d.array_params:
            yield f"{column} = ANY(?)", [list(values)]
            return
        for chunk in _chunks(values):
            yield f"{column} IN ({','.join('?' * len(chunk))})", list(chunk)

    def get(self, seqs: Sequence[int]) -> dict[int, LogEntry]:
        out: dict[int, LogEntry] = {}
        conn = self._conn()
        for cond, params in self._where_in("seq", list(seqs)):
            sql = f"SELECT seq, source, received_at, message_id, payload, ts, trait_kind FROM log WHERE {cond}"
            for r in self._rows(conn, sql, params):
                out[r[0]] = LogEntry(r[0], r[1], r[2], r[3], bytes(r[4]), r[5], r[6])
        return out

    def last_seq(self) -> int:
        return int(self._rows(self._conn(), "SELECT COALESCE(MAX(seq), 0) FROM log")[0][0])

    def count(self) -> int:
        return int(self._rows(self._conn(), "SELECT COUNT(*) FROM log")[0][0])

    # -- state: processor side ---------------------------------------------------------------------
    def checkpoint(self) -> int:
        rows = self._rows(self._conn(), "SELECT seq FROM checkpoint WHERE name = ?", (PROCESSOR,))
        return int(rows[0][0]) if rows else 0

    def find_identities(self, keys: Iterable[IdentityKey]) -> dict[IdentityKey, str]:
        keys = list(keys)
        out: dict[IdentityKey, str] = {}
        conn = self._conn()
        # A join on the keys drives the primary key (type, value) on both databases; SQLite 3.40 scans
        # the whole table for `(type, value) IN (VALUES ...)`.
        select = "SELECT i.type, i.value, i.profile_id FROM {} JOIN identities i ON i.type = k.t AND i.value = k.v"
        if not keys:
            batches = []
        elif self.d.array_params:
            batches = [
                (select.format("unnest(?::text[], ?::text[]) AS k(t, v)"), [[k[0] for k in keys], [k[1] for k in keys]])
            ]
        else:
            batches = [
                (
                    select.format(
                        f"(SELECT column1 AS t, column2 AS v FROM (VALUES {','.join(['(?, ?)'] * len(chunk))})) AS k"
                    ),
                    [p for key in chunk for p in key],
                )
                for chunk in _chunks(keys)
            ]
        for sql, params in batches:
            for t, v, pid in self._rows(conn, sql, params):
                out[(t, v)] = pid
        return out

    def load_profiles(self, ids: Iterable[str]) -> dict[str, Profile]:
        ids = list(dict.fromkeys(ids))
        out: dict[str, Profile] = {}
        with self._tx() as conn:
            for cond, params in self._where_in("id", ids):
                sql = (
                    "SELECT id, created_seq, created_at, updated_at, traits, trait_meta, consents, event_count,"
                    f" merged_into FROM profiles WHERE {cond}"
                )
                for r in self._rows(conn, sql, params):
                    out[r[0]] = self._profile(r)
            for cond, params in self._where_in("profile_id", ids):
                sql = f"SELECT profile_id, type, value FROM identities WHERE {cond}"
                for pid, t, v in self._rows(conn, sql, params):
                    if pid in out:
                        out[pid].identities.add((t, v))
        return out

    def _profile(self, r: Sequence[Any]) -> Profile:
        traits = self.d.load_json(r[4])
        meta = self.d.load_json(r[5])
        return Profile(
            id=r[0],
            created_seq=r[1],
            created_at=r[2],
            updated_at=r[3],
            traits={
                k: TraitValue(v, meta[k]["kind"], meta[k]["source"], meta[k]["updated_at"], meta[k]["seq"])
                for k, v in traits.items()
            },
            consents=self.d.load_json(r[6]),
            event_count=r[7],
            merged_into=r[8],
            full_write=False,
        )

    def seen(self, keys: Iterable[str]) -> set[str]:
        by_digest = {_digest(k): k for k in keys}
        out: set[str] = set()
        conn = self._conn()
        for cond, params in self._where_in("key", list(by_digest)):
            out.update(by_digest[bytes(r[0])] for r in self._rows(conn, f"SELECT key FROM seen WHERE {cond}", params))
        return out

    def commit(self, changes: Changes, from_seq: int, to_seq: int) -> None:
        with self._tx(write=True) as conn:
            cur = conn.execute(
                self._q("UPDATE checkpoint SET seq = ? WHERE name = ? AND seq = ?"),
                (
                    to_seq,
                    PROCESSOR,
                    from_seq,
                ),
            )
            if cur.rowcount != 1:
                raise CheckpointConflict(f"checkpoint moved past {from_seq}: another processor is running")
            # Redirects first, so that rows moved from a loser meet the winner's rows written below.
            moves = [(winner, loser) for loser, winner in changes.redirects.items()]
            for sql in (
                "UPDATE identities SET profile_id = ? WHERE profile_id = ?",
                "UPDATE timeline SET profile_id = ? WHERE profile_id = ?",
                "UPDATE profiles SET merged_into = ? WHERE merged_into = ?",
            ):
                self._many(conn, sql, moves)
            self._many(
                conn,
                (
                    "INSERT INTO profiles (id, created_seq, created_at, updated_at, traits, trait_meta, consents,"
                    " event_count, merged_into) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET"
                    " created_at = excluded.created_at, updated_at = excluded.updated_at,"
                    " traits = excluded.traits, trait_meta = excluded.trait_meta,"
                    " consents = excluded.consents, event_count = excluded.event_count,"
                    " merged_into = excluded.merged_into"
                ),
                (
                    (
                        p.id,
                        p.created_seq,
                        p.created_at,
                        p.updated_at,
                        _json.encode({k: t.value for k, t in p.traits.items()}).decode(),
                        _json.encode({k: t.to_meta() for k, t in p.traits.items()}).decode(),
                        _json.encode(p.consents).decode(),
                        p.event_count,
                        p.merged_into,
                    )
                    for p in changes.profiles.values()
                    if p.full_write
                ),
            )
            self._many(
                conn,
                "UPDATE profiles SET created_at = ?, updated_at = ?, event_count = ? WHERE id = ?",
                (
                    (p.created_at, p.updated_at, p.event_count, p.id)
                    for p in changes.profiles.values()
                    if not p.full_write
                ),
            )
            self._many(
                conn,
                (
                    "INSERT INTO identities (type, value, profile_id, seq) VALUES (?, ?, ?, ?)"
                    " ON CONFLICT (type, value) DO UPDATE SET profile_id = excluded.profile_id"
                ),
                ((t, v, pid, seq) for (t, v), (pid, seq) in changes.identities.items()),
            )
            # Timeline rows and seen keys are new by construction (one per applied event, and the checkpoint
            # compare-and-set above admits one processor per batch): they go in by the fastest bulk path.
            self.d.insert_new(
                conn,
                "timeline",
                ("profile_id", "ts", "seq", "type", "name"),
                [(r.profile_id, r.ts, r.seq, r.type, r.name) for r in changes.timeline],
            )
            self._many(
                conn,
                (
                    "INSERT INTO merges (winner, loser, at, seq, message_id, reason, identities)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?)"
                ),
                (
                    (
                        m.winner,
                        m.loser,
                        m.at,
                        m.seq,
                        m.message_id,
                        m.reason,
                        _json.encode(m.identities).decode(),
                    )
                    for m in changes.merges
                ),
            )
            self.d.insert_new(conn, "seen", ("key",), [(_digest(k),) for k in changes.seen])

    def reset(self) -> None:
        with self._tx(write=True) as conn:
            for table in ("profiles", "identities", "timeline", "merges", "seen"):
                conn.execute(f"DELETE FROM {table}")
            conn.execute(self._q("UPDATE checkpoint SET seq = 0 WHERE name = ?"), (PROCESSOR,))

    # -- state: read side --------------------------------------------------------------------------
    def resolve(self, ref: str) -> str | None:
        conn = self._conn()
        kind, sep, value = ref.partition(":")
        if sep:
            rows = self._rows(conn, "SELECT profile_id FROM identities WHERE type = ? AND value = ?", (kind, value))
            return str(rows[0][0]) if rows else None
        rows = self._rows(conn, "SELECT id, merged_into FROM profiles WHERE id = ?", (ref,))
        if not rows:
            return None
        return str(rows[0][1] or rows[0][0])

    def profile(self, profile_id: str) -> Profile | None:
        return self.load_profiles([profile_id]).get(profile_id)

    def list_profiles(self, traits: dict[str, Any], limit: int, cursor: str | None) -> ProfilePage:
        where = ["merged_into IS NULL"]
        params: list[Any] = []
        for name, value in traits.items():
            sql, p = self.d.trait_filter(name, value)
            where.append(sql)
            params.extend(p)
        if cursor is not None:
            where.append("id > ?")
            params.append(cursor)
        sql = f"SELECT id FROM profiles WHERE {' AND '.join(where)} ORDER BY id LIMIT ?"
        ids = [r[0] for r in self._rows(self._conn(), sql, [*params, limit + 1])]
        more = len(ids) > limit
        ids = ids[:limit]
        loaded = self.load_profiles(ids)
        return ProfilePage([loaded[i] for i in ids if i in loaded], ids[-1] if more and ids else None)

    def timeline(self, profile_id: str, limit: int, before: tuple[int, int] | None) -> list[TimelineRow]:
        sql = "SELECT profile_id, ts, seq, type, name FROM timeline WHERE profile_id = ?"
        params: list[Any] = [profile_id]
        if before is not None:
            sql += " AND (ts < ? OR (ts = ? AND seq < ?))"
            params += [before[0], before[0], before[1]]
        sql += " ORDER BY ts DESC, seq DESC LIMIT ?"
        return [TimelineRow(*r) for r in self._rows(self._conn(), sql, [*params, limit])]

    def merged_ids(self, profile_id: str) -> list[str]:
        rows = self._rows(self._conn(), "SELECT id FROM profiles WHERE merged_into = ? ORDER BY id", (profile_id,))
        return [r[0] for r in rows]

    def merges(self, profile_id: str) -> list[MergeRecord]:
        ids = [profile_id, *self.merged_ids(profile_id)]
        out: list[MergeRecord] = []
        conn = self._conn()
        for cond, params in self._where_in("winner", ids):
            sql = f"SELECT winner, loser, at, seq, message_id, reason, identities FROM merges WHERE {cond}"
            for r in self._rows(conn, sql, params):
                ids_ = [tuple(x) for x in self.d.load_json(r[6])]
                out.append(MergeRecord(r[0], r[1], r[2], r[3], r[4], r[5], ids_))
        out.sort(key=lambda m: m.seq)
        return out

    def count_profiles(self) -> int:
        return int(self._rows(self._conn(), "SELECT COUNT(*) FROM profiles WHERE merged_into IS NULL")[0][0])

    # -- admin -------------------------------------------------------------------------------------
    def add_source(self, name: str, trait_kind: str) -> Source:
        if not name or len(name) > 100 or not all(c.isalnum() or c in "-_." for c in name):
            raise ValidationError(
                "source name must be 1-100 letters, digits, '-', '_' or '.'",
                code="invalid_field",
                field="name",
            )
        src = Source(uuid.uuid4().hex, name, secrets.token_urlsafe(24), True, trait_kind, int(time.time() * 1000))
        with self._tx(write=True) as conn:
            if self._rows(conn, "SELECT 1 FROM sources WHERE name = ?", (name,)):
                raise ValidationError(f"a source named {name!r} exists", code="already_exists", field="name")
            conn.execute(
                self._q(
                    "INSERT INTO sources (id, name, write_key, enabled, trait_kind, created_at)"
                    " VALUES (?, ?, ?, ?, ?, ?)"
                ),
                (src.id, src.name, src.write_key, 1, src.trait_kind, src.created_at),
            )
        return src

    def _sources(self, where: str, params: Sequence[Any]) -> list[Source]:
        sql = f"SELECT id, name, write_key, enabled, trait_kind, created_at FROM sources {where}"
        return [Source(r[0], r[1], r[2], bool(r[3]), r[4], r[5]) for r in self._rows(self._conn(), sql, params)]

    def sources(self) -> list[Source]:
        return self._sources("ORDER BY name", ())

    def source_by_key(self, write_key: str) -> Source | None:
        found = self._sources("WHERE write_key = ?", (write_key,))
        return found[0] if found else None

    def set_source_enabled(self, name: str, enabled: bool) -> Source:
        with self._tx(write=True) as conn:
            conn.execute(self._q("UPDATE sources SET enabled = ? WHERE name = ?"), (int(enabled), name))
        found = self._sources("WHERE name = ?", (name,))
        if not found:
            raise NotFoundError(f"no source named {name!r}", field="name")
        return found[0]

    def add_api_key(self, name: str, scopes: frozenset[str]) -> tuple[ApiKey, str]:
        secret = "kk_" + secrets.token_urlsafe(32)
        key = ApiKey(uuid.uuid4().hex, name, scopes, True, int(time.time() * 1000))
        with self._tx(write=True) as conn:
            conn.execute(
                self._q(
                    "INSERT INTO api_keys (id, name, key_hash, scopes, enabled, created_at) VALUES (?, ?, ?, ?, ?, ?)"
                ),
                (key.id, name, hash_secret(secret), ",".join(sorted(scopes)), 1, key.created_at),
            )
        return key, secret

    def _keys(self, where: str, params: Sequence[Any]) -> list[ApiKey]:
        sql = f"SELECT id, name, scopes, enabled, created_at FROM api_keys {where}"
        return [
            ApiKey(r[0], r[1], frozenset(s for s in r[2].split(",") if s), bool(r[3]), r[4])
            for r in self._rows(self._conn(), sql, params)
        ]

    def api_key(self, secret: str) -> ApiKey | None:
        found = self._keys("WHERE key_hash = ?", (hash_secret(secret),))
        return found[0] if found else None

    def api_keys(self) -> list[ApiKey]:
        return self._keys("ORDER BY name", ())


def encode_cursor(ts: int, seq: int) -> str:
    return base64.urlsafe_b64encode(f"{ts}:{seq}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[int, int]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        ts, seq = (int(x) for x in raw.split(":"))
        if not (-(2**63) <= ts < 2**63 and 0 <= seq < 2**63):
            raise ValueError("out of range")
        return ts, seq
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValidationError("cursor is not one this API returned", code="invalid_cursor", field="cursor") from exc

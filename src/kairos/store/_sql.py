"""The event log, the admin store and the outbox on a SQL :class:`~kairos.store._db.Database`."""

from __future__ import annotations

import base64
import hashlib
import secrets
import uuid
from collections.abc import Sequence
from typing import Any

from kairos.collect.ingest import NewEvent
from kairos.errors import DefinitionsChanged, NotFoundError, ValidationError
from kairos.store._db import Database
from kairos.store._model import ApiKey, Definition, LogEntry, OutboxMessage, Source
from kairos.store.schema import LOG

__all__ = ["SqlAdmin", "SqlLog", "SqlOutbox", "decode_cursor", "encode_cursor", "hash_secret"]

_SELECT_LOG = "SELECT seq, source, received_at, message_id, payload, ts, trait_kind FROM log"
_SELECT_OUTBOX = "SELECT id, key, type, profile_id, payload, created_at FROM outbox"


def _entry(r: Sequence[Any]) -> LogEntry:
    return LogEntry(r[0], r[1], r[2], r[3], bytes(r[4]), r[5], r[6])


class SqlLog:
    def __init__(self, db: Database) -> None:
        self.db = db

    def append_many(self, groups: Sequence[tuple[str, Sequence[NewEvent]]]) -> list[list[int]]:
        sizes = [len(events) for _, events in groups]
        if not any(sizes):
            return [[] for _ in groups]
        with self.db.tx(write=True) as conn:
            # Seqs are assigned under the log lock, so they are gap-free and visible in commit order.
            self.db.d.lock(conn, "log")
            seq = int(self.db.rows(conn, "SELECT COALESCE(MAX(seq), 0) FROM log")[0][0])
            rows = []
            for source, events in groups:
                for e in events:
                    seq += 1
                    rows.append((seq, source, e.received_at, e.message_id, e.payload, e.ts, e.trait_kind))
            self.db.insert_new(conn, LOG, rows)
        out: list[list[int]] = []
        first = rows[0][0]
        for n in sizes:
            out.append(list(range(first, first + n)))
            first += n
        return out

    def read(self, after: int, limit: int) -> list[LogEntry]:
        with self.db.conn() as conn:
            rows = self.db.rows(conn, _SELECT_LOG + " WHERE seq > {p} ORDER BY seq LIMIT {p}", (after, limit))
        return [_entry(r) for r in rows]

    def get(self, seqs: Sequence[int]) -> dict[int, LogEntry]:
        out: dict[int, LogEntry] = {}
        with self.db.conn() as conn:
            for cond, params in self.db.where_in("seq", list(seqs)):
                for r in self.db.rows(conn, f"{_SELECT_LOG} WHERE {cond}", params):
                    out[r[0]] = _entry(r)
        return out

    def last_seq(self) -> int:
        return int(self.db.one("SELECT COALESCE(MAX(seq), 0) FROM log")[0])

    def count(self) -> int:
        return int(self.db.one("SELECT COUNT(*) FROM log")[0])


class SqlOutbox:
    """Messages for subscribers, written by the processor in its state transaction; read in id order."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def read(self, after: int, limit: int) -> list[OutboxMessage]:
        with self.db.conn() as conn:
            rows = self.db.rows(conn, _SELECT_OUTBOX + " WHERE id > {p} ORDER BY id LIMIT {p}", (after, limit))
        return [self._message(r) for r in rows]

    def get(self, ids: Sequence[int]) -> dict[int, OutboxMessage]:
        out: dict[int, OutboxMessage] = {}
        with self.db.conn() as conn:
            for cond, params in self.db.where_in("id", list(ids)):
                for r in self.db.rows(conn, f"{_SELECT_OUTBOX} WHERE {cond}", params):
                    out[r[0]] = self._message(r)
        return out

    def last_id(self) -> int:
        return int(self.db.one("SELECT COALESCE(MAX(id), 0) FROM outbox")[0])

    def _message(self, r: Sequence[Any]) -> OutboxMessage:
        return OutboxMessage(r[0], r[1], r[2], r[3], self.db.d.load_json(r[4]), r[5])


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class SqlAdmin:
    def __init__(self, db: Database) -> None:
        self.db = db

    def add_source(self, name: str, trait_kind: str, now: int) -> Source:
        if not name or len(name) > 100 or not all(c.isalnum() or c in "-_." for c in name):
            raise ValidationError(
                "source name must be 1-100 letters, digits, '-', '_' or '.'", code="invalid_field", field="name"
            )
        src = Source(uuid.uuid4().hex, name, secrets.token_urlsafe(24), True, trait_kind, now)
        with self.db.tx(write=True) as conn:
            if self.db.rows(conn, "SELECT 1 FROM sources WHERE name = {p}", (name,)):
                raise ValidationError(f"a source named {name!r} exists", code="already_exists", field="name")
            conn.execute(
                self.db.sql(
                    "INSERT INTO sources (id, name, write_key, enabled, trait_kind, created_at)"
                    " VALUES ({p}, {p}, {p}, {p}, {p}, {p})"
                ),
                (src.id, src.name, src.write_key, 1, src.trait_kind, src.created_at),
            )
        return src

    def _sources(self, where: str, params: Sequence[Any]) -> list[Source]:
        with self.db.conn() as conn:
            rows = self.db.rows(
                conn, f"SELECT id, name, write_key, enabled, trait_kind, created_at FROM sources {where}", params
            )
        return [Source(r[0], r[1], r[2], bool(r[3]), r[4], r[5]) for r in rows]

    def sources(self) -> list[Source]:
        return self._sources("ORDER BY name", ())

    def source_by_key(self, write_key: str) -> Source | None:
        found = self._sources("WHERE write_key = {p}", (write_key,))
        return found[0] if found else None

    def set_source_enabled(self, name: str, enabled: bool) -> Source:
        with self.db.tx(write=True) as conn:
            conn.execute(self.db.sql("UPDATE sources SET enabled = {p} WHERE name = {p}"), (int(enabled), name))
        found = self._sources("WHERE name = {p}", (name,))
        if not found:
            raise NotFoundError(f"no source named {name!r}", field="name")
        return found[0]

    def add_api_key(self, name: str, scopes: frozenset[str], now: int) -> tuple[ApiKey, str]:
        secret = "kk_" + secrets.token_urlsafe(32)
        key = ApiKey(uuid.uuid4().hex, name, scopes, True, now)
        with self.db.tx(write=True) as conn:
            conn.execute(
                self.db.sql(
                    "INSERT INTO api_keys (id, name, key_hash, scopes, enabled, created_at)"
                    " VALUES ({p}, {p}, {p}, {p}, {p}, {p})"
                ),
                (key.id, name, hash_secret(secret), ",".join(sorted(scopes)), 1, key.created_at),
            )
        return key, secret

    def _keys(self, where: str, params: Sequence[Any]) -> list[ApiKey]:
        with self.db.conn() as conn:
            rows = self.db.rows(conn, f"SELECT id, name, scopes, enabled, created_at FROM api_keys {where}", params)
        return [ApiKey(r[0], r[1], frozenset(s for s in r[2].split(",") if s), bool(r[3]), r[4]) for r in rows]

    def api_key(self, secret: str) -> ApiKey | None:
        found = self._keys("WHERE key_hash = {p}", (hash_secret(secret),))
        return found[0] if found else None

    def api_keys(self) -> list[ApiKey]:
        return self._keys("ORDER BY name", ())

    # -- definitions (computed traits, segments, ...) ------------------------------------------------
    def put_definition(
        self, kind: str, key: str, body: dict[str, Any], now: int, expect_revision: int | None = None
    ) -> tuple[Definition, bool]:
        """Create or replace; returns the stored definition and whether anything changed (a new version)."""
        db = self.db
        with db.tx(write=True) as conn:
            db.d.lock(conn, "definitions")
            found = self._definitions(conn, "WHERE kind = {p} AND key = {p}", (kind, key))
            old = found[0] if found else None
            if old is not None and not old.deleted and old.body == body:
                return old, False
            revision = self._next_revision(conn, expect_revision)
            if old is None:
                conn.execute(
                    db.sql(
                        "INSERT INTO definitions (kind, key, version, revision, body, deleted, created_at, updated_at)"
                        " VALUES ({p}, {p}, 1, {p}, {p}, 0, {p}, {p})"
                    ),
                    (kind, key, revision, db.d.dump_json(body), now, now),
                )
            else:
                created = now if old.deleted else old.created_at
                conn.execute(
                    db.sql(
                        "UPDATE definitions SET version = version + 1, revision = {p}, body = {p}, deleted = 0,"
                        " created_at = {p}, updated_at = {p} WHERE kind = {p} AND key = {p}"
                    ),
                    (revision, db.d.dump_json(body), created, now, kind, key),
                )
            return self._definitions(conn, "WHERE kind = {p} AND key = {p}", (kind, key))[0], True

    def delete_definition(self, kind: str, key: str, now: int, expect_revision: int | None = None) -> Definition:
        db = self.db
        with db.tx(write=True) as conn:
            db.d.lock(conn, "definitions")
            found = self._definitions(conn, "WHERE kind = {p} AND key = {p} AND deleted = 0", (kind, key))
            if not found:
                raise NotFoundError(f"no {kind} named {key!r}", field="key")
            revision = self._next_revision(conn, expect_revision)
            conn.execute(
                db.sql(
                    "UPDATE definitions SET version = version + 1, revision = {p}, deleted = 1, updated_at = {p}"
                    " WHERE kind = {p} AND key = {p}"
                ),
                (revision, now, kind, key),
            )
            return self._definitions(conn, "WHERE kind = {p} AND key = {p}", (kind, key))[0]

    def definitions(self, kind: str | None = None, deleted: bool = False) -> list[Definition]:
        where = ["1 = 1"]
        params: list[Any] = []
        if kind is not None:
            where.append("kind = {p}")
            params.append(kind)
        if not deleted:
            where.append("deleted = 0")
        with self.db.conn() as conn:
            return self._definitions(conn, f"WHERE {' AND '.join(where)} ORDER BY kind, key", params)

    def definition(self, kind: str, key: str) -> Definition | None:
        with self.db.conn() as conn:
            found = self._definitions(conn, "WHERE kind = {p} AND key = {p} AND deleted = 0", (kind, key))
        return found[0] if found else None

    def _next_revision(self, conn: Any, expect: int | None) -> int:
        """The revision a write takes, under the definitions lock; the compare-and-set of ``expect``."""
        current = int(self.db.rows(conn, "SELECT COALESCE(MAX(revision), 0) FROM definitions")[0][0])
        if expect is not None and current != expect:
            raise DefinitionsChanged("the definitions changed while this one was checked; try again")
        return current + 1

    def definitions_revision(self) -> int:
        return int(self.db.one("SELECT COALESCE(MAX(revision), 0) FROM definitions")[0])

    def _definitions(self, conn: Any, where: str, params: Sequence[Any]) -> list[Definition]:
        rows = self.db.rows(
            conn,
            f"SELECT kind, key, version, revision, body, deleted, created_at, updated_at FROM definitions {where}",
            params,
        )
        return [Definition(r[0], r[1], r[2], r[3], self.db.d.load_json(r[4]), bool(r[5]), r[6], r[7]) for r in rows]


def encode_cursor(*parts: int) -> str:
    return base64.urlsafe_b64encode(":".join(map(str, parts)).encode()).decode().rstrip("=")


def decode_cursor(cursor: str, width: int) -> tuple[int, ...]:
    """The integers of a cursor this API made; anything else is a 400 ``invalid_cursor``."""
    try:
        if len(cursor) > 200:
            raise ValueError("too long")
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        parts = tuple(int(x) for x in raw.split(":"))
        if len(parts) != width or not all(-(2**63) <= x < 2**63 for x in parts):
            raise ValueError("out of range")
        return parts
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValidationError("cursor is not one this API returned", code="invalid_cursor", field="cursor") from exc

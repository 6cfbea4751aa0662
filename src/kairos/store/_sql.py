"""The event log, the admin store and the outbox on a SQL :class:`~kairos.store._db.Database`."""

from __future__ import annotations

import base64
import hashlib
import secrets
import uuid
from collections.abc import Sequence
from typing import Any

from kairos.collect.ingest import NewEvent
from kairos.errors import ConflictError, DefinitionsChanged, NotFoundError, ValidationError
from kairos.scopes import parse_scopes
from kairos.store._db import Database
from kairos.store._model import ApiKey, Definition, LogEntry, OutboxMessage, Source
from kairos.store.schema import LOG

__all__ = ["SqlAdmin", "SqlLog", "SqlOutbox", "decode_cursor", "encode_cursor", "hash_secret", "new_secret"]

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
    """What is stored of an API key: its SHA-256. Keys are 256 random bits, so a plain hash cannot be
    reversed by guessing and needs no salt or pepper (docs/decisions.md)."""
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def new_secret() -> str:
    """A new API key: ``kk_`` and 256 random bits."""
    return "kk_" + secrets.token_urlsafe(32)


def _check_key_name(name: str) -> None:
    if not name or len(name) > 100 or not name.isprintable() or name != name.strip():
        raise ValidationError(
            "a key name is 1-100 printable characters, without spaces around it", code="invalid_field", field="name"
        )


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
        _check_key_name(name)
        scopes = frozenset(parse_scopes(scopes))
        secret = new_secret()
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

    def _keys(self, conn: Any, where: str, params: Sequence[Any], expires: bool = False) -> list[ApiKey]:
        rows = self.db.rows(
            conn,
            "SELECT id, name, scopes, enabled, created_at, rotated_at, revoked_at, prev_expires_at"
            f" FROM api_keys {where}",
            params,
        )
        return [
            ApiKey(
                r[0],
                r[1],
                frozenset(s for s in r[2].split(",") if s),
                bool(r[3]) and r[6] is None,
                r[4],
                r[5],
                r[6],
                (r[7] or 0) if expires else None,
            )
            for r in rows
        ]

    def api_key(self, secret: str) -> ApiKey | None:
        """The key whose current secret is ``secret``, or whose previous one (replaced by a rotation) it is:
        then ``expires_at`` says until when it is accepted (the caller compares it with its clock)."""
        digest = hash_secret(secret)
        with self.db.conn() as conn:
            found = self._keys(conn, "WHERE key_hash = {p}", (digest,))
            if not found:
                found = self._keys(conn, "WHERE prev_hash = {p}", (digest,), expires=True)
        return found[0] if found else None

    def api_keys(self) -> list[ApiKey]:
        with self.db.conn() as conn:
            return self._keys(conn, "ORDER BY created_at, name, id", ())

    def _find_key(self, conn: Any, ref: str) -> ApiKey:
        """A key by its id, else by its name (which must then be unique)."""
        if not ref or len(ref) > 100 or not ref.isprintable():
            raise ValidationError("name a key by its id or name (1-100 printable characters)", field="key")
        found = self._keys(conn, "WHERE id = {p}", (ref,)) or self._keys(conn, "WHERE name = {p}", (ref,))
        if not found:
            raise NotFoundError("no API key with this id or name", field="key")
        if len(found) > 1:
            raise ValidationError(
                f"{len(found)} keys have this name: name the one you mean by its id (kairos keys list)",
                code="ambiguous",
                field="key",
            )
        return found[0]

    def revoke_api_key(self, ref: str, now: int) -> ApiKey:
        """Refuse the key (and a previous secret still in its grace period) from now on."""
        with self.db.tx(write=True) as conn:
            key = self._find_key(conn, ref)
            if key.revoked_at is None:
                conn.execute(
                    self.db.sql(
                        "UPDATE api_keys SET enabled = 0, revoked_at = {p}, prev_hash = NULL, prev_expires_at = NULL"
                        " WHERE id = {p}"
                    ),
                    (now, key.id),
                )
            return self._keys(conn, "WHERE id = {p}", (key.id,))[0]

    def rotate_api_key(self, ref: str, now: int, grace_ms: int = 0) -> tuple[ApiKey, str]:
        """A new secret for the key; the one it replaces is accepted for ``grace_ms`` more (0: refused at once).
        A secret that an earlier rotation left in its grace period is refused from now on."""
        if grace_ms < 0:
            raise ValidationError("the grace period cannot be negative", field="grace")
        secret = new_secret()
        with self.db.tx(write=True) as conn:
            key = self._find_key(conn, ref)
            if key.revoked_at is not None:
                raise ConflictError("a revoked key cannot be rotated: add a new one", code="revoked", field="key")
            conn.execute(
                self.db.sql(
                    "UPDATE api_keys SET prev_hash = CASE WHEN {p} > 0 THEN key_hash END,"
                    " prev_expires_at = CASE WHEN {p} > 0 THEN {p} END, key_hash = {p}, rotated_at = {p}"
                    " WHERE id = {p}"
                ),
                (grace_ms, grace_ms, now + grace_ms, hash_secret(secret), now, key.id),
            )
            return self._keys(conn, "WHERE id = {p}", (key.id,))[0], secret

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

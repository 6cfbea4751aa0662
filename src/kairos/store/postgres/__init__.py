"""Scale-out backend: PostgreSQL holds the log and all state (``KAIROS__STORE__URL=postgresql://...``).

psycopg is imported only when this backend is opened (``pip install kairos[postgres]``).
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

from kairos.errors import ConfigError
from kairos.store._sql import SqlStore

__all__ = ["PostgresDialect", "open_postgres"]

# An arbitrary constant: the advisory lock that serializes log appends (see lock_log).
LOG_LOCK = 0x6B6169726F73

MIGRATIONS: list[str] = [
    """
    CREATE TABLE log (
        seq BIGINT PRIMARY KEY, source TEXT NOT NULL, received_at BIGINT NOT NULL,
        message_id TEXT NOT NULL, payload BYTEA NOT NULL, ts BIGINT NOT NULL,
        trait_kind TEXT NOT NULL);
    CREATE TABLE checkpoint (name TEXT PRIMARY KEY, seq BIGINT NOT NULL);
    INSERT INTO checkpoint (name, seq) VALUES ('profiles', 0);
    CREATE TABLE seen (key BYTEA PRIMARY KEY);
    CREATE TABLE profiles (
        id TEXT PRIMARY KEY, created_seq BIGINT NOT NULL, created_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL, traits JSONB NOT NULL, trait_meta JSONB NOT NULL, consents JSONB NOT NULL,
        event_count BIGINT NOT NULL, merged_into TEXT);
    CREATE INDEX profiles_merged_into ON profiles (merged_into) WHERE merged_into IS NOT NULL;
    CREATE INDEX profiles_traits ON profiles USING GIN (traits jsonb_path_ops);
    CREATE TABLE identities (
        type TEXT NOT NULL, value TEXT NOT NULL, profile_id TEXT NOT NULL, seq BIGINT NOT NULL,
        PRIMARY KEY (type, value));
    CREATE INDEX identities_profile ON identities (profile_id);
    CREATE TABLE timeline (
        profile_id TEXT NOT NULL, ts BIGINT NOT NULL, seq BIGINT NOT NULL, type TEXT NOT NULL, name TEXT,
        PRIMARY KEY (profile_id, ts, seq));
    CREATE TABLE merges (
        id BIGSERIAL PRIMARY KEY, winner TEXT NOT NULL, loser TEXT NOT NULL, at BIGINT NOT NULL,
        seq BIGINT NOT NULL, message_id TEXT NOT NULL, reason TEXT NOT NULL, identities JSONB NOT NULL);
    CREATE INDEX merges_winner ON merges (winner);
    CREATE TABLE sources (
        id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, write_key TEXT NOT NULL UNIQUE,
        enabled INTEGER NOT NULL, trait_kind TEXT NOT NULL, created_at BIGINT NOT NULL);
    CREATE TABLE api_keys (
        id TEXT PRIMARY KEY, name TEXT NOT NULL, key_hash TEXT NOT NULL UNIQUE, scopes TEXT NOT NULL,
        enabled INTEGER NOT NULL, created_at BIGINT NOT NULL);
    """,
]


class PostgresDialect:
    name = "postgresql"
    param = "%s"
    array_params = True

    @property
    def driver_errors(self) -> tuple[type[Exception], ...]:
        import psycopg

        return (psycopg.Error,)

    def __init__(self, url: str, schema: str) -> None:
        if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", schema):
            raise ConfigError(f"store.schema_name {schema!r} must be a lower-case SQL identifier")
        self.url = url
        self.schema = schema

    def connect(self) -> Any:
        import psycopg
        from psycopg.types.json import set_json_loads

        conn = psycopg.connect(self.url, autocommit=True)
        set_json_loads(msgspec.json.decode, conn)  # several times faster than the stdlib for profile rows
        conn.execute(f"CREATE SCHEMA IF NOT EXISTS {self.schema}")
        conn.execute(f"SET search_path TO {self.schema}")
        return conn

    def begin(self, conn: Any, write: bool) -> None:
        conn.execute("BEGIN" if write else "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")

    def lock_log(self, conn: Any) -> None:
        # Without it, two API processes could commit seq 11 before seq 10, and a processor that had read
        # up to 11 would never see 10. The lock makes commit order equal seq order.
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOG_LOCK,))

    def migrate(self, conn: Any) -> None:
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOG_LOCK + 1,))
        conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        row = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
        version = row[0] or 0
        for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
            conn.execute(script)
            conn.execute("INSERT INTO schema_version (version) VALUES (%s)", (number,))

    def insert_new(self, conn: Any, table: str, columns: tuple[str, ...], rows: list[tuple[Any, ...]]) -> None:
        if rows:
            with conn.cursor().copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)

    def load_json(self, value: Any) -> Any:
        return value  # psycopg decodes jsonb

    def trait_filter(self, name: str, value: Any) -> tuple[str, list[Any]]:
        return "traits @> %s::jsonb", [msgspec.json.encode({name: value}).decode()]


def open_postgres(url: str, schema: str = "public") -> SqlStore:
    try:
        import psycopg  # noqa: F401
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ConfigError("PostgreSQL needs the driver: pip install 'kairos[postgres]'") from exc
    return SqlStore(PostgresDialect(url, schema))

"""Embedded backend: one SQLite file in WAL mode holds the log and all state.

Durability: a commit in WAL mode with ``synchronous=NORMAL`` reaches the operating system before
``COMMIT`` returns, so it survives ``kill -9`` of Kairos; ``synchronous=FULL`` also fsyncs, for power loss.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import msgspec

from kairos.store._sql import SqlStore

__all__ = ["SqliteDialect", "open_sqlite"]

MIGRATIONS: list[str] = [
    # 1: the foundation
    """
    CREATE TABLE log (
        seq INTEGER PRIMARY KEY, source TEXT NOT NULL, received_at INTEGER NOT NULL,
        message_id TEXT NOT NULL, payload BLOB NOT NULL, ts INTEGER NOT NULL,
        trait_kind TEXT NOT NULL);
    CREATE TABLE checkpoint (name TEXT PRIMARY KEY, seq INTEGER NOT NULL);
    INSERT INTO checkpoint (name, seq) VALUES ('profiles', 0);
    CREATE TABLE seen (key BLOB PRIMARY KEY) WITHOUT ROWID;
    CREATE TABLE profiles (
        id TEXT PRIMARY KEY, created_seq INTEGER NOT NULL, created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL, traits TEXT NOT NULL, trait_meta TEXT NOT NULL, consents TEXT NOT NULL,
        event_count INTEGER NOT NULL, merged_into TEXT);
    CREATE INDEX profiles_merged_into ON profiles (merged_into) WHERE merged_into IS NOT NULL;
    CREATE TABLE identities (
        type TEXT NOT NULL, value TEXT NOT NULL, profile_id TEXT NOT NULL, seq INTEGER NOT NULL,
        PRIMARY KEY (type, value)) WITHOUT ROWID;
    CREATE INDEX identities_profile ON identities (profile_id);
    CREATE TABLE timeline (
        profile_id TEXT NOT NULL, ts INTEGER NOT NULL, seq INTEGER NOT NULL, type TEXT NOT NULL, name TEXT,
        PRIMARY KEY (profile_id, ts, seq)) WITHOUT ROWID;
    CREATE TABLE merges (
        id INTEGER PRIMARY KEY, winner TEXT NOT NULL, loser TEXT NOT NULL, at INTEGER NOT NULL,
        seq INTEGER NOT NULL, message_id TEXT NOT NULL, reason TEXT NOT NULL, identities TEXT NOT NULL);
    CREATE INDEX merges_winner ON merges (winner);
    CREATE TABLE sources (
        id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, write_key TEXT NOT NULL UNIQUE,
        enabled INTEGER NOT NULL, trait_kind TEXT NOT NULL, created_at INTEGER NOT NULL);
    CREATE TABLE api_keys (
        id TEXT PRIMARY KEY, name TEXT NOT NULL, key_hash TEXT NOT NULL UNIQUE, scopes TEXT NOT NULL,
        enabled INTEGER NOT NULL, created_at INTEGER NOT NULL);
    """,
]

_decode = msgspec.json.Decoder()


class SqliteDialect:
    name = "sqlite"
    param = "?"
    array_params = False
    driver_errors: tuple[type[Exception], ...] = (sqlite3.Error,)

    def __init__(self, path: str, synchronous: str = "normal") -> None:
        self.path = path
        self.synchronous = synchronous.upper()

    def connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={self.synchronous}")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA cache_size=-262144")  # 256 MiB of page cache per connection, at most
        # Checkpoints rewrite every page the WAL touched; random-key indexes touch many, so checkpoint
        # rarely (up to ~400 MB of WAL) and truncate the file back afterwards.
        conn.execute("PRAGMA wal_autocheckpoint=100000")
        conn.execute("PRAGMA journal_size_limit=67108864")
        conn.execute("PRAGMA temp_store=MEMORY")
        return conn

    def begin(self, conn: Any, write: bool) -> None:
        # IMMEDIATE takes the write lock up front: no deadlock from upgrading a read lock mid-transaction.
        conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")

    def lock_log(self, conn: Any) -> None:
        """SQLite has one writer at a time: BEGIN IMMEDIATE already serialized us."""

    def migrate(self, conn: Any) -> None:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
            for statement in script.split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {number}")

    def insert_new(self, conn: Any, table: str, columns: tuple[str, ...], rows: list[tuple[Any, ...]]) -> None:
        if rows:
            marks = ", ".join("?" * len(columns))
            conn.executemany(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})", rows)

    def load_json(self, value: Any) -> Any:
        return _decode.decode(value)

    def trait_filter(self, name: str, value: Any) -> tuple[str, list[Any]]:
        # json_each gives the JSON type, so true is not 1 and null matches null, as jsonb @> does.
        match = "EXISTS (SELECT 1 FROM json_each(profiles.traits) WHERE key = ? AND {})"
        if value is None or isinstance(value, bool):
            return match.format("type = ?"), [name, "null" if value is None else str(value).lower()]
        if isinstance(value, int | float):
            return match.format("type IN ('integer', 'real') AND value = ?"), [name, value]
        return match.format("type = 'text' AND value = ?"), [name, value]


def open_sqlite(path: str, synchronous: str = "normal") -> SqlStore:
    if path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    return SqlStore(SqliteDialect(path, synchronous))

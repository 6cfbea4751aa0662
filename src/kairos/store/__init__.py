"""Storage backends behind small interfaces: event log, state store, admin store, outbox.

:func:`open_store` picks the backend from ``store.url``: ``sqlite:///path`` (embedded default) or
``postgresql://...``; each backend is one folder whose driver is imported only when it is opened. The
schema is declared once (:mod:`kairos.store.schema`): core tables plus what the projections declare.
"""

from __future__ import annotations

from collections.abc import Sequence

from kairos.config import StoreSettings
from kairos.errors import ConfigError
from kairos.store._db import Database, Dialect
from kairos.store._interfaces import AdminStore, EventLog, Outbox, StateStore, Store
from kairos.store._model import (
    ApiKey,
    Checkpoint,
    DeadLetter,
    IdentityKey,
    LogEntry,
    MergeRecord,
    OutboxMessage,
    ProfileRow,
    Source,
    TimelineRow,
    TimerRow,
    Writes,
)
from kairos.store._sql import SqlAdmin, SqlLog, SqlOutbox, decode_cursor, encode_cursor
from kairos.store._state import MAIN, SqlState, digest
from kairos.store.schema import Column, Index, Table, derived_tables, profiles_table

__all__ = [
    "MAIN",
    "AdminStore",
    "ApiKey",
    "Checkpoint",
    "DeadLetter",
    "EventLog",
    "IdentityKey",
    "LogEntry",
    "MergeRecord",
    "Outbox",
    "OutboxMessage",
    "ProfileRow",
    "Source",
    "SqlStore",
    "StateStore",
    "Store",
    "TimelineRow",
    "TimerRow",
    "Writes",
    "decode_cursor",
    "digest",
    "encode_cursor",
    "open_store",
]


class SqlStore:
    """A :class:`Store` on one SQL database (SQLite or PostgreSQL)."""

    def __init__(self, dialect: Dialect, profiles: Table, owned: Sequence[Table], maintenance: object = None) -> None:
        self.db = Database(dialect, derived_tables(profiles, owned))
        self.name = dialect.name
        self.driver_errors = dialect.driver_errors
        self.transient_errors = dialect.transient_errors
        self.db.migrate()
        self.log = SqlLog(self.db)
        self.state = SqlState(self.db, profiles, owned)
        self.admin = SqlAdmin(self.db)
        self.outbox = SqlOutbox(self.db)
        self._maintenance = maintenance

    def start_maintenance(self) -> None:
        start = getattr(self._maintenance, "start", None)
        if start is not None:
            start()

    def close(self) -> None:
        stop = getattr(self._maintenance, "stop", None)
        if stop is not None:
            stop()
        self.db.close()


def open_store(
    settings: StoreSettings,
    columns: Sequence[Column] = (),
    indexes: Sequence[Index] = (),
    owned: Sequence[Table] = (),
) -> SqlStore:
    """Open (and migrate) the store ``settings.url`` names, with the projections' columns and tables."""
    profiles = profiles_table(columns, indexes)
    url = settings.url
    if url.startswith("sqlite://"):
        from kairos.store.sqlite import Checkpointer, SqliteDialect

        path = url.removeprefix("sqlite://")
        path = path[1:] if path.startswith("/") else path  # sqlite:///rel.db → rel.db; sqlite:////abs → /abs
        path = path or "kairos.db"
        checkpointer = Checkpointer(path) if path != ":memory:" else None
        store = SqlStore(SqliteDialect(path, settings.synchronous), profiles, owned, checkpointer)
        # Commits never checkpoint the WAL themselves (wal_autocheckpoint=0): every process that opens the
        # file copies it back in the background, so no writer stalls and the WAL cannot grow for ever.
        store.start_maintenance()
        return store
    if url.startswith(("postgresql://", "postgres://")):
        from kairos.store.postgres import PostgresDialect

        return SqlStore(PostgresDialect(url, settings.schema_name, settings.pool_size), profiles, owned)
    raise ConfigError(f"store.url {url!r}: use sqlite:///PATH or postgresql://...", field="store.url")

"""Storage backends behind small interfaces: event log, state store, admin store, outbox.

:func:`open_store` picks the backend from ``store.url``: ``sqlite:///path`` (embedded default) or
``postgresql://...``; each backend is one folder whose driver is imported only when it is opened. The
schema is declared once (:mod:`kairos.store.schema`): core tables plus what the projections declare.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kairos.config import StoreSettings
from kairos.errors import ConfigError
from kairos.store._audit import SqlAudit
from kairos.store._db import Database, Dialect
from kairos.store._decisions import DecisionRow, RewardRow, Snapshot, SqlDecisions
from kairos.store._deliveries import SqlDeliveries
from kairos.store._interfaces import AdminStore, Deliveries, EventLog, Outbox, StateStore, Store
from kairos.store._model import (
    ApiKey,
    AuditEntry,
    Checkpoint,
    Cursor,
    DeadLetter,
    Definition,
    Delivery,
    IdentityKey,
    Job,
    LogEntry,
    MergeRecord,
    OutboxMessage,
    ProfileRow,
    Source,
    TimelineRow,
    TimerRow,
    Writes,
)
from kairos.store._privacy import ERASURES, TOMBSTONE, ErasePlan, PrivacyRequest, SqlPrivacy
from kairos.store._sql import SqlAdmin, SqlLog, SqlOutbox, decode_cursor, encode_cursor
from kairos.store._state import MAIN, SqlState, digest
from kairos.store._uses import SqlUses, UseRow
from kairos.store.schema import (
    DECISION_TABLES,
    LOG_FILE,
    MODELS_FILE,
    STATE_FILE,
    Column,
    Index,
    Table,
    derived_tables,
    profiles_table,
)

__all__ = [
    "DECISIONS_PAGE_SIZE",
    "ERASURES",
    "MAIN",
    "TOMBSTONE",
    "AdminStore",
    "ApiKey",
    "AuditEntry",
    "Checkpoint",
    "Cursor",
    "DeadLetter",
    "DecisionRow",
    "Definition",
    "Deliveries",
    "Delivery",
    "ErasePlan",
    "EventLog",
    "IdentityKey",
    "Job",
    "LogEntry",
    "MergeRecord",
    "Outbox",
    "OutboxMessage",
    "PrivacyRequest",
    "ProfileRow",
    "RewardRow",
    "Snapshot",
    "Source",
    "SqlAudit",
    "SqlDecisions",
    "SqlPrivacy",
    "SqlStore",
    "SqlUses",
    "StateStore",
    "Store",
    "TimelineRow",
    "TimerRow",
    "UseRow",
    "Writes",
    "decisions_file",
    "decode_cursor",
    "digest",
    "encode_cursor",
    "models_file",
    "open_store",
    "state_file",
]


class SqlStore:
    """A :class:`Store` on SQL: one PostgreSQL database, or two SQLite files (log, and derived state).

    ``db`` holds derived state and the outbox; ``log_db`` the log, sources and keys (the same database
    when no ``log_dialect`` is given).
    """

    def __init__(
        self,
        dialect: Dialect,
        profiles: Table,
        owned: Sequence[Table],
        maintenance: Sequence[Any] = (),
        log_dialect: Dialect | None = None,
        decisions_dialect: Dialect | None = None,
        models_dialect: Dialect | None = None,
    ) -> None:
        derived = derived_tables(profiles, owned)
        if log_dialect is None:
            self.db = self.log_db = Database(dialect, derived)
        else:
            # Derived tables and the outbox of an earlier one-file layout are rebuilt in the state file.
            self.log_db = Database(log_dialect, (), LOG_FILE, drop_also=(*(t.name for t in derived), "outbox"))
            self.db = Database(dialect, derived, STATE_FILE)
            self.log_db.migrate()
        self.name = dialect.name
        self.driver_errors = dialect.driver_errors
        self.transient_errors = dialect.transient_errors
        self.db.migrate()
        self.log = SqlLog(self.log_db)
        self.state = SqlState(self.db, profiles)
        self.admin = SqlAdmin(self.log_db)
        self.audit = SqlAudit(self.log_db)
        self.outbox = SqlOutbox(self.db)
        self.deliveries = SqlDeliveries(self.db)
        self.uses = self.deliveries.uses  # the data-use ledger, beside the deliveries it records
        self.decisions_db = self.db
        if decisions_dialect is not None:
            self.decisions_db = Database(decisions_dialect, (), DECISION_TABLES)
            self.decisions_db.migrate()
        self.models_db = self.decisions_db
        if models_dialect is not None:
            self.models_db = Database(models_dialect, (), MODELS_FILE)
            self.models_db.migrate()
        self.decisions = SqlDecisions(self.decisions_db, self.models_db)
        self.privacy = SqlPrivacy(self.log_db, self.db, self.decisions_db)
        self._maintenance = list(maintenance)

    def start_maintenance(self) -> None:
        for task in self._maintenance:
            task.start()

    def close(self) -> None:
        for task in self._maintenance:
            task.stop()
        self.db.close()
        if self.log_db is not self.db:
            self.log_db.close()
        if self.decisions_db is not self.db:
            self.decisions_db.close()
        if self.models_db is not self.decisions_db:
            self.models_db.close()


# The decision log's pages (SQLite, for a file it creates). Every commit writes each page it touched whole
# into the WAL, and a decision touches ~12 (its row, five indexes, its record, the record's key, the
# impressions, the sequence, the header): 48.7 KB of WAL per decision at SQLite's 4 KB, 16.5 KB at 1 KB
# (docs/decisions.md, "The decision log's pages are 1 KB").
DECISIONS_PAGE_SIZE = 1024


def state_file(path: str) -> str:
    """Where derived state lives beside a SQLite log file: ``kairos.db`` → ``kairos-state.db``."""
    return _beside(path, "state")


def decisions_file(path: str) -> str:
    """Where the decision log lives beside a SQLite log file: ``kairos.db`` → ``kairos-decisions.db``."""
    return _beside(path, "decisions")


def models_file(path: str) -> str:
    """Where policy models live beside a SQLite log file: ``kairos.db`` → ``kairos-policy.db``."""
    return _beside(path, "policy")


def _beside(path: str, part: str) -> str:
    p = Path(path)
    return str(p.with_name(f"{p.stem}-{part}{p.suffix}")) if p.suffix else f"{path}-{part}"


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
        state_path = state_file(path)
        decisions_path = decisions_file(path)
        models_path = models_file(path)
        store = SqlStore(
            SqliteDialect(state_path, settings.synchronous),
            profiles,
            owned,
            [Checkpointer(p) for p in (path, state_path, decisions_path, models_path)],
            log_dialect=SqliteDialect(path, settings.synchronous),
            decisions_dialect=SqliteDialect(decisions_path, settings.synchronous, page_size=DECISIONS_PAGE_SIZE),
            models_dialect=SqliteDialect(models_path, settings.synchronous),
        )
        # Commits never checkpoint the WAL themselves (wal_autocheckpoint=0): every process that opens the
        # file copies it back in the background, so no writer stalls and the WAL cannot grow for ever.
        store.start_maintenance()
        return store
    if url.startswith(("postgresql://", "postgres://")):
        from kairos.store.postgres import PostgresDialect

        return SqlStore(PostgresDialect(url, settings.schema_name, settings.pool_size), profiles, owned)
    raise ConfigError(f"store.url {url!r}: use sqlite:///PATH or postgresql://...", field="store.url")

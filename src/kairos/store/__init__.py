"""Storage backends behind three small interfaces: event log, state store, admin store.

:func:`open_store` picks the backend from ``store.url``: ``sqlite:///path`` (embedded default) or
``postgresql://...``. Drivers are imported only by the backend that needs them.
"""

from __future__ import annotations

from kairos.config import StoreSettings
from kairos.errors import ConfigError
from kairos.store._interfaces import AdminStore, EventLog, StateStore, Store
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
from kairos.store._sql import SqlStore, decode_cursor, encode_cursor

__all__ = [
    "AdminStore",
    "ApiKey",
    "Changes",
    "EventLog",
    "IdentityKey",
    "LogEntry",
    "MergeRecord",
    "Profile",
    "ProfilePage",
    "Source",
    "SqlStore",
    "StateStore",
    "Store",
    "TimelineRow",
    "TraitValue",
    "decode_cursor",
    "encode_cursor",
    "open_store",
]


def open_store(settings: StoreSettings) -> SqlStore:
    url = settings.url
    if url.startswith("sqlite://"):
        from kairos.store.sqlite import open_sqlite

        path = url.removeprefix("sqlite://")
        path = path[1:] if path.startswith("/") else path  # sqlite:///rel.db → rel.db; sqlite:////abs → /abs
        return open_sqlite(path or "kairos.db", settings.synchronous)
    if url.startswith(("postgresql://", "postgres://")):
        from kairos.store.postgres import open_postgres

        return open_postgres(url, settings.schema_name)
    raise ConfigError(f"store.url {url!r}: use sqlite:///PATH or postgresql://...", field="store.url")

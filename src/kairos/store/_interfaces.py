"""The three small interfaces every backend implements: event log, state store, admin store.

The processor and the API only see these; a backend is one folder under ``kairos.store`` whose driver is
imported when its URL is opened. NATS JetStream (log) and Redis (cache) plug in here later.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol

from kairos.collect.ingest import NewEvent
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
)

__all__ = ["AdminStore", "EventLog", "StateStore", "Store"]


class EventLog(Protocol):
    def append_many(self, groups: Sequence[tuple[str, Sequence[NewEvent]]]) -> list[list[int]]:
        """Append each group (source name, events) in order, in ONE durable commit; return the seqs.

        Returning means the events survive a crash of this process. Seqs grow in commit order, so a
        reader that has seen seq N has seen every event before it.
        """
        ...

    def read(self, after: int, limit: int) -> list[LogEntry]:
        """Entries with ``seq > after`` in seq order, at most ``limit``."""
        ...

    def get(self, seqs: Sequence[int]) -> dict[int, LogEntry]: ...

    def last_seq(self) -> int: ...

    def count(self) -> int: ...


class StateStore(Protocol):
    """Everything the processor derives from the log, and the reads the profile API needs."""

    def checkpoint(self) -> int: ...

    def find_identities(self, keys: Iterable[IdentityKey]) -> dict[IdentityKey, str]:
        """Profile id currently holding each known key (unknown keys are absent)."""
        ...

    def load_profiles(self, ids: Iterable[str]) -> dict[str, Profile]:
        """Profiles with their traits, consents and identities; unknown ids are absent."""
        ...

    def seen(self, keys: Iterable[str]) -> set[str]:
        """Which de-duplication keys were already applied."""
        ...

    def commit(self, changes: Changes, from_seq: int, to_seq: int) -> None:
        """Apply ``changes`` and move the checkpoint ``from_seq`` → ``to_seq`` in one transaction.

        Raises :class:`kairos.errors.CheckpointConflict` (and changes nothing) if the checkpoint is no
        longer ``from_seq``: another processor got there first.
        """
        ...

    def reset(self) -> None:
        """Delete all derived state and rewind the checkpoint to 0 (``kairos replay``)."""
        ...

    def resolve(self, ref: str) -> str | None:
        """Canonical profile id for a profile id (following merges) or a ``type:value`` identity."""
        ...

    def list_profiles(self, traits: dict[str, str], limit: int, cursor: str | None) -> ProfilePage: ...

    def timeline(self, profile_id: str, limit: int, before: tuple[int, int] | None) -> list[TimelineRow]:
        """Newest first; ``before`` = (ts, seq) of the last row of the previous page."""
        ...

    def merges(self, profile_id: str) -> list[MergeRecord]:
        """Every merge whose winner is, or has since been merged into, ``profile_id``."""
        ...

    def merged_ids(self, profile_id: str) -> list[str]:
        """Ids of profiles that were merged (directly or through a chain) into ``profile_id``."""
        ...

    def count_profiles(self) -> int: ...


class AdminStore(Protocol):
    def add_source(self, name: str, trait_kind: str) -> Source: ...

    def sources(self) -> list[Source]: ...

    def source_by_key(self, write_key: str) -> Source | None: ...

    def set_source_enabled(self, name: str, enabled: bool) -> Source: ...

    def add_api_key(self, name: str, scopes: frozenset[str]) -> tuple[ApiKey, str]:
        """Create a key; the secret is returned once and only its hash is stored."""
        ...

    def api_key(self, secret: str) -> ApiKey | None: ...

    def api_keys(self) -> list[ApiKey]: ...


class Store(Protocol):
    driver_errors: tuple[type[Exception], ...]  # errors of the store itself (down, timeout), never retried away

    @property
    def log(self) -> EventLog: ...

    @property
    def state(self) -> StateStore: ...

    @property
    def admin(self) -> AdminStore: ...

    def close(self) -> None: ...

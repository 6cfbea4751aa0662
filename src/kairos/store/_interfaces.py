"""The small interfaces every backend implements: event log, state store, admin store, outbox.

The processor, the API and the CLI only see these (``Kairos.store`` is typed as :class:`Store`); a backend
is one folder under ``kairos.store`` whose driver is imported when its URL is opened. NATS JetStream (log)
and Redis (cache) plug in here later.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Protocol

from kairos.collect.ingest import NewEvent
from kairos.store._audit import SqlAudit
from kairos.store._decisions import SqlDecisions
from kairos.store._model import (
    ApiKey,
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
from kairos.store._privacy import SqlPrivacy
from kairos.store._uses import SqlUses

__all__ = ["AdminStore", "Deliveries", "EventLog", "Outbox", "StateStore", "Store"]


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

    def checkpoint(self, name: str = ...) -> Checkpoint: ...

    def find_identities(self, keys: Iterable[IdentityKey]) -> dict[IdentityKey, int]:
        """Profile key currently holding each known identifier (unknown ones are absent)."""
        ...

    def load_profiles(self, pks: Iterable[int]) -> dict[int, ProfileRow]: ...

    def seen(self, digests: Iterable[bytes]) -> set[bytes]:
        """Which de-duplication digests were already applied."""
        ...

    def timers_of(self, pks: Iterable[int]) -> list[TimerRow]: ...

    def due_timers(self, until: int, limit: int) -> list[TimerRow]: ...

    def commit(self, writes: Writes, expect: Checkpoint, to_seq: int, name: str = ..., dry_run: bool = ...) -> None:
        """Apply ``writes`` and move the checkpoint in one transaction (see :meth:`SqlState.commit`)."""
        ...

    def reset(self) -> None:
        """Delete all derived state and rewind the checkpoints to 0 (``kairos replay``)."""
        ...

    def resolve_id(self, profile_id: str) -> int | None: ...

    def resolve_identity(self, key: IdentityKey) -> int | None: ...

    def consents_of(self, profile_ids: Sequence[str]) -> dict[str, Any]:
        """The consents section of each profile id's canonical profile; erased ones are absent."""
        ...

    def list_profiles(self, traits: dict[str, Any], limit: int, after: int | None) -> list[ProfileRow]: ...

    def timeline(
        self, pk: int, limit: int, before: tuple[int, int, int] | None, type: str | None = ...
    ) -> list[TimelineRow]:
        """Newest first; ``before`` = (ts, seq, sub) of the last row of the previous page; only items of
        ``type`` if given."""
        ...

    def merges(self, pk: int) -> list[MergeRecord]: ...

    def merged_keys(self, pk: int) -> list[int]: ...

    def count_profiles(self) -> int: ...

    def deadletters(self, limit: int = ..., seqs: Sequence[int] | None = ...) -> list[DeadLetter]: ...

    def jobs(self) -> list[Job]: ...

    def live_pks(self, after: int, upto: int, limit: int) -> list[int]: ...

    def count_live(self, upto: int) -> int: ...

    def history(self, pks: Sequence[int]) -> dict[int, list[int]]:
        """Log positions of the events applied to each profile, in order (from the timeline)."""
        ...

    def counts(self, table: str, where: str = ..., params: Sequence[Any] = ...) -> list[tuple[Any, ...]]: ...

    def profiles_in(self, column: str, member: str, limit: int, after: int | None) -> list[int]: ...

    def scan_profiles(
        self,
        after: int,
        limit: int,
        sample: tuple[int, int] | None = ...,
        columns: Sequence[str] | None = ...,
        identities: bool = ...,
    ) -> list[ProfileRow]: ...


class AdminStore(Protocol):
    def add_source(self, name: str, trait_kind: str, now: int) -> Source: ...

    def sources(self) -> list[Source]: ...

    def source_by_key(self, write_key: str) -> Source | None: ...

    def set_source_enabled(self, name: str, enabled: bool) -> Source: ...

    def add_api_key(self, name: str, scopes: frozenset[str], now: int) -> tuple[ApiKey, str]:
        """Create a key; the secret is returned once and only its hash is stored."""
        ...

    def api_key(self, secret: str) -> ApiKey | None:
        """The key with this secret (current, or replaced by a rotation: then ``expires_at`` is set)."""
        ...

    def api_keys(self) -> list[ApiKey]: ...

    def revoke_api_key(self, ref: str, now: int) -> ApiKey:
        """Revoke the key with id or name ``ref``."""
        ...

    def rotate_api_key(self, ref: str, now: int, grace_ms: int = 0) -> tuple[ApiKey, str]:
        """A new secret for key ``ref``; the old one is accepted for ``grace_ms`` more."""
        ...

    def put_definition(
        self, kind: str, key: str, body: dict[str, Any], now: int, expect_revision: int | None = None
    ) -> tuple[Definition, bool]:
        """``expect_revision``: raise :class:`~kairos.errors.DefinitionsChanged` unless the definitions are
        still at that revision (what the caller checked the new one against)."""
        ...

    def delete_definition(self, kind: str, key: str, now: int, expect_revision: int | None = None) -> Definition: ...

    def definitions(self, kind: str | None = ..., deleted: bool = ...) -> list[Definition]: ...

    def definition(self, kind: str, key: str) -> Definition | None: ...

    def definitions_revision(self) -> int: ...


class Outbox(Protocol):
    def read(self, after: int, limit: int) -> list[OutboxMessage]:
        """Messages with ``id > after`` in id order (the order they were committed in)."""
        ...

    def get(self, ids: Sequence[int]) -> dict[int, OutboxMessage]: ...

    def last_id(self) -> int: ...


class Deliveries(Protocol):
    """Delivery bookkeeping of destinations: cursors over the outbox and the log, and one row per delivery
    (see :class:`kairos.store._deliveries.SqlDeliveries`)."""

    def start(self, destination: str, outbox: int, log: int, now: int) -> Cursor: ...

    def cursor(self, destination: str) -> Cursor | None: ...

    def drop(self, destination: str) -> None: ...

    def plan(self, destination: str, rows: Sequence[Delivery], outbox: int, log: int) -> None: ...

    def due(self, destination: str, now: int, limit: int) -> list[Delivery]: ...

    def next_due(self, destination: str) -> int | None: ...

    def record(self, destination: str, outcomes: Sequence[Delivery], purpose: str | None = None) -> None: ...

    def list(self, destination: str, status: str | None, limit: int) -> list[Delivery]: ...

    def retry(self, destination: str, now: int) -> int: ...

    def depth(self) -> dict[str, int]: ...


class Store(Protocol):
    name: str  # "sqlite" or "postgresql"
    driver_errors: tuple[type[Exception], ...]  # anything the driver raises
    transient_errors: tuple[type[Exception], ...]  # the store's own trouble (down, locked): retried

    @property
    def log(self) -> EventLog: ...

    @property
    def state(self) -> StateStore: ...

    @property
    def admin(self) -> AdminStore: ...

    @property
    def outbox(self) -> Outbox: ...

    @property
    def deliveries(self) -> Deliveries: ...

    @property
    def uses(self) -> SqlUses:
        """The data-use ledger (``kairos.privacy.uses``)."""
        ...

    @property
    def audit(self) -> SqlAudit:
        """The audit log of admin and privacy actions (``kairos.audit`` writes it)."""
        ...

    @property
    def decisions(self) -> SqlDecisions:
        """The decision log (``kairos.decide``): decisions, rewards, policy snapshots, impressions."""
        ...

    @property
    def privacy(self) -> SqlPrivacy:
        """Privacy requests, suppressions and the erasing statements (``kairos.privacy``)."""
        ...

    def start_maintenance(self) -> None:
        """Start background upkeep (SQLite: WAL checkpoints; ``open_store`` starts it)."""
        ...

    def close(self) -> None: ...

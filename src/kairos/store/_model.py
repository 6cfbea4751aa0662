"""Records that pass between the pipeline and the store backends."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "ApiKey",
    "AuditEntry",
    "Checkpoint",
    "Cursor",
    "DeadLetter",
    "Definition",
    "Delivery",
    "IdentityKey",
    "Job",
    "LogEntry",
    "MergeRecord",
    "OutboxMessage",
    "ProfileRow",
    "Source",
    "TimelineRow",
    "TimerRow",
    "Writes",
]

IdentityKey = tuple[str, str]  # (type, normalized value)


@dataclass(frozen=True, slots=True)
class LogEntry:
    seq: int
    source: str
    received_at: int  # epoch ms
    message_id: str
    payload: bytes
    ts: int  # event time, epoch ms (skew-corrected at collect)
    trait_kind: str  # the source's trait kind when the event was accepted


@dataclass(frozen=True, slots=True)
class Checkpoint:
    seq: int  # last log position applied
    version: int  # bumped by every commit (events or timers): the compare-and-set token


@dataclass(slots=True)
class ProfileRow:
    """A profile as stored: the core columns, the projections' columns (JSON decoded) and its identities."""

    pk: int
    id: str
    merged_into: int | None
    values: tuple[Any, ...]
    identities: set[IdentityKey] = field(default_factory=set)


@dataclass(frozen=True, slots=True)
class TimelineRow:
    profile_pk: int
    ts: int
    seq: int
    sub: int
    type: str
    name: str | None
    data: Any = None


@dataclass(frozen=True, slots=True)
class TimerRow:
    profile_pk: int
    projection: str
    key: str
    due_at: int
    payload: Any


@dataclass(frozen=True, slots=True)
class MergeRecord:
    winner: int  # profile keys
    loser: int
    at: int  # event time (ms) of the event that caused it
    seq: int
    message_id: str
    reason: str  # "alias" or "shared_identifier"
    identities: list[IdentityKey]  # what linked the two


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """An event that could not be applied. Only what identifies it and the error's class and place."""

    seq: int
    source: str
    error_class: str
    message: str
    failed_at: int  # epoch ms
    retried_at: int | None = None


@dataclass(frozen=True, slots=True)
class OutboxMessage:
    id: int
    key: str  # deterministic: a replay re-emits the same keys, which the outbox ignores
    type: str
    profile_id: str | None
    payload: Any
    created_at: int


@dataclass(slots=True)
class Writes:
    """Everything one processor batch changes; committed atomically with the checkpoint."""

    redirects: dict[int, int] = field(default_factory=dict)  # loser → final winner
    new_profiles: list[tuple[Any, ...]] = field(default_factory=list)  # whole rows, every profiles column
    updates: dict[tuple[str, ...], list[tuple[Any, ...]]] = field(default_factory=dict)  # columns → (*values, pk)
    identities: list[tuple[str, str, int, int]] = field(default_factory=list)  # new (type, value, pk, seq)
    inserts: dict[str, list[tuple[Any, ...]]] = field(default_factory=dict)  # table → new rows
    merges: list[MergeRecord] = field(default_factory=list)
    seen: list[bytes] = field(default_factory=list)  # de-duplication digests of applied events
    timers_set: list[TimerRow] = field(default_factory=list)
    timers_deleted: list[tuple[int, str, str]] = field(default_factory=list)
    outbox: list[tuple[str, str, str | None, Any, int]] = field(default_factory=list)  # key, type, pid, payload, at
    deadletters: list[DeadLetter] = field(default_factory=list)
    retried: list[tuple[int, int]] = field(default_factory=list)  # (seq, at): dead letters applied on retry
    counts: dict[str, dict[tuple[Any, ...], list[int]]] = field(default_factory=dict)  # table → key → deltas
    jobs: list[Job] = field(default_factory=list)  # backfill jobs started or moved on


@dataclass(frozen=True, slots=True)
class Definition:
    """A computed trait, a segment, ...: what someone defined, as stored (``body`` is the validated JSON)."""

    kind: str
    key: str
    version: int
    revision: int
    body: dict[str, Any]
    deleted: bool
    created_at: int
    updated_at: int


@dataclass(frozen=True, slots=True)
class Job:
    """Bringing every profile to a definition's version (see ``JOBS`` in :mod:`kairos.store.schema`)."""

    kind: str
    key: str
    version: int
    deleted: bool
    status: str  # "running" | "done"
    upto: int
    cursor: int
    redo: tuple[int, ...]
    total: int
    done: int
    started_at: int
    finished_at: int | None = None


@dataclass(frozen=True, slots=True)
class Source:
    id: str
    name: str
    write_key: str
    enabled: bool
    trait_kind: str
    created_at: int


@dataclass(frozen=True, slots=True)
class ApiKey:
    id: str
    name: str
    scopes: frozenset[str]
    enabled: bool  # false once revoked
    created_at: int
    rotated_at: int | None = None
    revoked_at: int | None = None
    # Set when the key was found by the secret a rotation replaced: that secret works until then (epoch ms).
    expires_at: int | None = None


@dataclass(frozen=True, slots=True)
class Cursor:
    """How far a destination has planned its deliveries: outbox id and log seq (``DELIVERY_CURSORS``)."""

    destination: str
    outbox: int
    log: int
    created_at: int


@dataclass(frozen=True, slots=True)
class Delivery:
    """One message for one destination, and how its delivery went (``DELIVERIES``; no personal data)."""

    destination: str
    id: str
    source: str  # "outbox" or "log"
    position: int  # outbox id or log seq
    type: str
    key: str
    profile_id: str | None
    status: str  # pending | delivered | dead | suppressed
    attempts: int
    next_attempt_at: int  # epoch ms
    created_at: int
    updated_at: int
    last_status: int | None = None
    last_error: str | None = None
    latency_ms: int | None = None


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One admin or privacy action (``kairos.audit``); ``id`` is 0 until stored."""

    id: int
    at: int  # epoch ms
    actor: str  # "api" or "cli"
    key_id: str | None
    key_name: str | None
    action: str
    target: str
    outcome: int  # HTTP status
    detail: dict[str, Any] | None

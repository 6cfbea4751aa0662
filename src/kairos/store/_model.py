"""Records that pass between the pipeline and the store backends."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "ApiKey",
    "Changes",
    "IdentityKey",
    "LogEntry",
    "MergeRecord",
    "Profile",
    "ProfilePage",
    "Source",
    "TimelineRow",
    "TraitValue",
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


@dataclass(slots=True)
class TraitValue:
    value: Any
    kind: str
    source: str
    updated_at: int  # epoch ms of the event that set it
    seq: int  # log position of that event: breaks ties deterministically

    def to_meta(self) -> dict[str, Any]:
        return {"kind": self.kind, "source": self.source, "updated_at": self.updated_at, "seq": self.seq}


@dataclass(slots=True)
class Profile:
    """A profile as the processor holds it. ``merged_into`` is set on the losing side of a merge."""

    id: str
    created_seq: int
    created_at: int
    updated_at: int
    traits: dict[str, TraitValue] = field(default_factory=dict)
    consents: dict[str, dict[str, Any]] = field(default_factory=dict)
    identities: set[IdentityKey] = field(default_factory=set)
    event_count: int = 0
    merged_into: str | None = None
    # False while traits, consents and merged_into are as stored: the commit then only updates the counters
    # (most events are tracks and page views that change no trait). New and changed profiles are written whole.
    full_write: bool = True


@dataclass(frozen=True, slots=True)
class TimelineRow:
    profile_id: str
    ts: int
    seq: int
    type: str
    name: str | None


@dataclass(frozen=True, slots=True)
class MergeRecord:
    winner: str
    loser: str
    at: int  # event time (ms) of the event that caused it
    seq: int
    message_id: str
    reason: str  # "alias" or "shared_identifier"
    identities: list[IdentityKey]  # what linked the two


@dataclass(slots=True)
class Changes:
    """Everything one processor batch changes; committed atomically with the checkpoint."""

    profiles: dict[str, Profile] = field(default_factory=dict)
    identities: dict[IdentityKey, tuple[str, int]] = field(default_factory=dict)  # key → (profile, seq)
    timeline: list[TimelineRow] = field(default_factory=list)
    redirects: dict[str, str] = field(default_factory=dict)  # loser → final winner
    merges: list[MergeRecord] = field(default_factory=list)
    seen: list[str] = field(default_factory=list)  # de-duplication keys of applied events


@dataclass(frozen=True, slots=True)
class ProfilePage:
    items: list[Profile]
    next_cursor: str | None


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
    enabled: bool
    created_at: int

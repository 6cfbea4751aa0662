"""Deterministic, real-time identity resolution over one processor batch.

:class:`Workspace` is the batch's in-memory view of the identity graph and profiles, loaded from the state
store in bulk and written back in one transaction. :class:`Resolver` decides, for each event, which
profile its identifiers belong to:

1. find the profiles that already hold any of the event's identifiers;
2. if folding them and the event's identifiers into one profile would exceed a per-type limit (by default
   one ``user_id``), drop the lowest-priority identifier that takes part in the conflict and try again,
   so a shared device or a re-used anonymous id never merges two known people;
3. merge what is left into the oldest profile, or create a profile when nothing matched.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import TYPE_CHECKING

from kairos.identity.normalize import Identifiers
from kairos.metrics import IDENTITY_CONFLICTS
from kairos.store import Changes, IdentityKey, MergeRecord, Profile, StateStore

if TYPE_CHECKING:  # profiles imports identity at run time; the type is all this module needs
    from kairos.profiles.traits import TraitRules

__all__ = ["Resolver", "Workspace", "profile_id_for"]

_NAMESPACE = uuid.UUID("6b616972-6f73-4000-8000-000000000000")


def profile_id_for(seq: int) -> str:
    """Profile ids derive from the log position that created them, so a replay yields the same ids."""
    return str(uuid.uuid5(_NAMESPACE, str(seq)))


class Workspace:
    """The part of the state one batch touches, plus the changes it has made."""

    def __init__(self, state: StateStore) -> None:
        self.state = state
        self.owner_of: dict[IdentityKey, str | None] = {}
        self.profiles: dict[str, Profile] = {}
        self.redirects: dict[str, str] = {}
        self.changes = Changes()
        self.seen: set[str] = set()

    def prefetch(self, keys: Iterable[IdentityKey], seen_keys: Iterable[str]) -> None:
        """Load in bulk everything the batch's events will look up."""
        wanted = [k for k in dict.fromkeys(keys) if k not in self.owner_of]
        found = self.state.find_identities(wanted)
        for key in wanted:
            self.owner_of[key] = found.get(key)
        missing = {pid for pid in found.values() if pid not in self.profiles}
        self.profiles.update(self.state.load_profiles(missing))
        self.seen.update(self.state.seen(seen_keys))

    def canonical(self, pid: str) -> str:
        while pid in self.redirects:
            pid = self.redirects[pid]
        return pid

    def owner(self, key: IdentityKey) -> str | None:
        if key not in self.owner_of:  # not prefetched: a key derived while applying the batch
            self.prefetch([key], ())
        pid = self.owner_of[key]
        return None if pid is None else self.canonical(pid)

    def profile(self, pid: str) -> Profile:
        return self.profiles[self.canonical(pid)]

    def touch(self, profile: Profile) -> None:
        self.changes.profiles[profile.id] = profile

    def finish(self) -> Changes:
        """Resolve every pointer written during the batch to its final profile."""
        changes = self.changes
        changes.redirects = {loser: self.canonical(loser) for loser in self.redirects}
        changes.identities = {k: (self.canonical(pid), seq) for k, (pid, seq) in changes.identities.items()}
        changes.timeline = [
            row
            if row.profile_id not in self.redirects
            else type(row)(self.canonical(row.profile_id), row.ts, row.seq, row.type, row.name)
            for row in changes.timeline
        ]
        for loser, winner in changes.redirects.items():
            changes.profiles[loser].merged_into = winner  # full_write already set by _merge
        return changes


class Resolver:
    def __init__(self, identifiers: Identifiers, rules: TraitRules) -> None:
        self.ids = identifiers
        self.rules = rules

    def _violations(self, keys: Iterable[IdentityKey]) -> set[str]:
        limits = self.ids.limits
        counts: dict[str, int] = {}
        for kind, _ in keys:
            if kind in limits:
                counts[kind] = counts.get(kind, 0) + 1
        return {k for k, n in counts.items() if n > limits[k]}

    def _admissible(self, ws: Workspace, keys: list[IdentityKey]) -> list[IdentityKey]:
        """Drop identifiers, lowest priority first, until no identity limit is exceeded."""
        keys = list(keys)
        while len(keys) > 1:
            owners = {k: ws.owner(k) for k in keys}
            union = set(keys)
            for pid in {p for p in owners.values() if p is not None}:
                union |= ws.profile(pid).identities
            violated = self._violations(union)
            if not violated:
                break
            anchor = owners[keys[0]]  # the highest-priority identifier is never dropped
            involved = [
                k
                for k in keys[1:]
                if k[0] in violated
                or (
                    owners[k] is not None
                    and owners[k] != anchor
                    and any(t in violated for t, _ in ws.profile(owners[k] or "").identities)
                )
            ]
            if not involved:
                break
            IDENTITY_CONFLICTS.inc()  # a merge that limits forbid: worth watching (shared devices, bad data)
            keys.remove(involved[-1])
        return keys

    def resolve(
        self, ws: Workspace, keys: list[IdentityKey], *, seq: int, ts: int, message_id: str, reason: str
    ) -> Profile | None:
        """The profile an event with identifiers ``keys`` (highest priority first) belongs to."""
        if not keys:
            return None
        keys = self._admissible(ws, keys)
        owners = [p for p in dict.fromkeys(ws.owner(k) for k in keys) if p is not None]
        if not owners:
            profile = Profile(id=profile_id_for(seq), created_seq=seq, created_at=ts, updated_at=ts)
            ws.profiles[profile.id] = profile
        else:
            candidates = sorted((ws.profile(p) for p in owners), key=lambda p: (p.created_seq, p.id))
            profile = candidates[0]
            for loser in candidates[1:]:
                linking = [k for k in keys if ws.owner(k) == loser.id]
                self._merge(ws, profile, loser, seq=seq, ts=ts, message_id=message_id, reason=reason, keys=linking)
        for key in keys:
            if key not in profile.identities:
                profile.identities.add(key)
                ws.owner_of[key] = profile.id
                ws.changes.identities[key] = (profile.id, seq)
        ws.touch(profile)
        return profile

    def _merge(
        self,
        ws: Workspace,
        winner: Profile,
        loser: Profile,
        *,
        seq: int,
        ts: int,
        message_id: str,
        reason: str,
        keys: list[IdentityKey],
    ) -> None:
        self.rules.combine(winner, loser)
        winner.identities |= loser.identities
        winner.event_count += loser.event_count
        winner.created_at = min(winner.created_at, loser.created_at)
        winner.updated_at = max(winner.updated_at, loser.updated_at)
        ws.redirects[loser.id] = winner.id
        # The loser stays as a tombstone so that its id still resolves (to the winner).
        loser.traits, loser.consents, loser.identities = {}, {}, set()
        loser.full_write = True
        ws.touch(loser)
        ws.touch(winner)
        ws.changes.merges.append(MergeRecord(winner.id, loser.id, ts, seq, message_id, reason, keys))

"""The processor: applies the event log, in order, to identities and profiles.

Each batch is read from the log, applied in memory (:class:`~kairos.identity.resolver.Workspace`) and
committed together with the new checkpoint in one transaction, so every event takes effect exactly once
even if the process dies at any instant: a batch is either wholly applied with its checkpoint, or not at
all and read again. A duplicate ``messageId`` from the same source is skipped.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import msgspec

from kairos.config import Settings
from kairos.errors import CheckpointConflict
from kairos.identity.normalize import Identifiers
from kairos.identity.resolver import Resolver, Workspace
from kairos.metrics import (
    EVENTS_APPLIED,
    EVENTS_DUPLICATE,
    EVENTS_FAILED,
    EVENTS_UNATTRIBUTED,
    MERGES,
    PROCESSOR_LAG,
)
from kairos.profiles.traits import TraitRules, set_consent
from kairos.store import Changes, IdentityKey, LogEntry, Profile, Store, TimelineRow, TraitValue

__all__ = ["Processor", "dedup_key"]

log = logging.getLogger("kairos.processor")
_decode = msgspec.json.Decoder()


def dedup_key(source: str, message_id: str) -> str:
    """What makes two log entries the same event: Segment's messageId, unique per source."""
    return f"{source}\x1f{message_id}"


class Processor:
    def __init__(self, store: Store, settings: Settings) -> None:
        self.store = store
        self.batch_size = settings.processor.batch_size
        self.identifiers = Identifiers(settings.identity)
        self.rules = TraitRules(settings.profiles)
        self.resolver = Resolver(self.identifiers, self.rules)
        self._stop = threading.Event()
        self.changed: list[str] = []  # profile ids changed by the last batch (for cache invalidation)

    # -- driving -----------------------------------------------------------------------------------
    def run_once(self) -> int:
        """Apply one batch; return how many log entries it consumed (0 = caught up)."""
        start = self.store.state.checkpoint()
        entries = self.store.log.read(start, self.batch_size)
        if not entries:
            PROCESSOR_LAG.set(0)
            return 0
        store_errors = self.store.driver_errors
        try:
            ws, applied, duplicates, unattributed = self._apply(entries)
        except store_errors:
            raise  # the store's fault (down, timeout): retry the batch later, skip nothing
        except Exception:
            if len(entries) == 1:
                return self._skip_poison(start, entries[0])
            # Some event of the batch cannot be applied: go one event at a time until it is found, so
            # that every other event still takes effect exactly once and the pipeline never stalls.
            entries = entries[:1]
            try:
                ws, applied, duplicates, unattributed = self._apply(entries)
            except store_errors:
                raise
            except Exception:
                return self._skip_poison(start, entries[0])
        changes = ws.finish()
        try:
            self.store.state.commit(changes, start, entries[-1].seq)
        except CheckpointConflict:
            log.warning("checkpoint moved under us; re-reading", extra={"from_seq": start})
            return 0
        self.changed = list(changes.profiles)
        EVENTS_APPLIED.inc(applied)
        EVENTS_DUPLICATE.inc(duplicates)
        EVENTS_UNATTRIBUTED.inc(unattributed)
        for merge in changes.merges:
            MERGES.labels(merge.reason).inc()
        PROCESSOR_LAG.set(max(0, self.store.log.last_seq() - entries[-1].seq))
        return len(entries)

    def _skip_poison(self, start: int, entry: LogEntry) -> int:
        """Step over an event that cannot be applied; it stays in the log (and fails the same way on replay)."""
        log.exception("event could not be applied; skipped", extra={"seq": entry.seq, "source": entry.source})
        try:
            self.store.state.commit(Changes(), start, entry.seq)
        except CheckpointConflict:
            return 0
        EVENTS_FAILED.inc()
        return 1

    def run_until_caught_up(self) -> int:
        total = 0
        while n := self.run_once():
            total += n
        return total

    def run_forever(self, poll_seconds: float, on_batch: Any = None) -> None:
        while not self._stop.is_set():
            try:
                n = self.run_once()
            except Exception:
                log.exception("processor batch failed; retrying")
                n = 0
                self._stop.wait(1.0)
            if n and on_batch is not None:
                on_batch(self.changed)
            if not n:
                self._stop.wait(poll_seconds)

    def stop(self) -> None:
        self._stop.set()

    # -- applying ----------------------------------------------------------------------------------
    def _apply(self, entries: list[LogEntry]) -> tuple[Workspace, int, int, int]:
        decoded = [(e, _decode.decode(e.payload)) for e in entries]
        ws = Workspace(self.store.state)
        keys: list[IdentityKey] = []
        per_event: list[list[IdentityKey]] = []
        for _, event in decoded:
            ids = self.identifiers.extract(event)
            if event.get("type") == "alias":
                keys += self._alias_candidates(event)
            per_event.append(ids)
            keys += ids
        dedup = [dedup_key(e.source, e.message_id) for e in entries]
        ws.prefetch(keys, dedup)
        applied = duplicates = unattributed = 0
        for (entry, event), ids, key in zip(decoded, per_event, dedup, strict=True):
            if key in ws.seen:
                duplicates += 1
                continue
            ws.seen.add(key)
            ws.changes.seen.append(key)
            if event.get("type") == "alias":
                ids = self._alias_resolved(ws, event, ids)
            ts = entry.ts
            reason = "alias" if event.get("type") == "alias" else "shared_identifier"
            profile = self.resolver.resolve(ws, ids, seq=entry.seq, ts=ts, message_id=entry.message_id, reason=reason)
            if profile is None:
                unattributed += 1
                continue
            self._update(ws, profile, entry, event, ts)
            applied += 1
        return ws, applied, duplicates, unattributed

    def _alias_candidates(self, event: dict[str, Any]) -> list[IdentityKey]:
        prev = event.get("previousId")
        return [(kind, v) for kind in ("user_id", "anonymous_id") if (v := self.identifiers.usable(kind, prev))]

    def _alias_resolved(self, ws: Workspace, event: dict[str, Any], ids: list[IdentityKey]) -> list[IdentityKey]:
        """``previousId`` is whichever known id it names: a user id if one is known, else an anonymous id."""
        candidates = self._alias_candidates(event)
        known = [k for k in candidates if ws.owner(k) is not None]
        previous = known[:1] or [k for k in candidates if k[0] == "anonymous_id"]
        # The event's own ids rank before previousId of the same type, so when a limit forbids the merge
        # (two user ids) it is previousId that is dropped, whatever the ids' spelling.
        rank = self.identifiers.rank
        return sorted(dict.fromkeys([*ids, *previous]), key=lambda k: (rank.get(k[0], len(rank)), k in previous, k[1]))

    def _update(self, ws: Workspace, profile: Profile, entry: LogEntry, event: dict[str, Any], ts: int) -> None:
        source = entry.source
        context = event.get("context") if isinstance(event.get("context"), dict) else {}
        override = context.get("kairos") if isinstance(context, dict) else None
        # The source's kind is the strongest its events may claim: a public write key must not be able to
        # pass its data off as the customer's own (stated) words. An event may claim a weaker kind.
        # (Collect validates context.kairos; the log is still read defensively: it outlives any validator.)
        kind = entry.trait_kind
        claimed = override.get("trait_kind") if isinstance(override, dict) else None
        if isinstance(claimed, str) and self.rules.rank.get(claimed, 99) >= self.rules.rank.get(kind, 99):
            kind = claimed
        if event.get("type") == "identify" and isinstance(event.get("traits"), dict):
            for name, value in event["traits"].items():
                self.rules.set(profile, name, TraitValue(value, kind, source, ts, entry.seq))
        consent = context.get("consent") if isinstance(context, dict) else None
        prefs = consent.get("categoryPreferences") if isinstance(consent, dict) else None
        if isinstance(prefs, dict):
            for purpose, granted in prefs.items():
                if isinstance(granted, bool):
                    set_consent(
                        profile,
                        purpose,
                        {"granted": granted, "source": source, "updated_at": ts, "seq": entry.seq},
                    )
        profile.event_count += 1
        profile.updated_at = max(profile.updated_at, ts)
        profile.created_at = min(profile.created_at, ts)
        etype = str(event.get("type"))
        name = event.get("event") if etype == "track" else event.get("name")
        ws.changes.timeline.append(
            TimelineRow(profile.id, ts, entry.seq, etype, name if isinstance(name, str) else None)
        )
        ws.touch(profile)

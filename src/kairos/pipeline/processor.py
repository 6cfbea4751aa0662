"""The processor: applies the event log, in order, through identity resolution to every projection.

Each batch is read from the log, applied in memory (:class:`~kairos.pipeline._batch.Batch`) and committed
with the new checkpoint in one transaction, so every event takes effect exactly once even if the process
dies at any instant. A duplicate ``messageId`` from the same source is skipped.

Timers fire in log order: a timer due at *T* fires before the first event (in log order) received at or
after *T*, and, when the log is idle, once the clock passes *T* plus a grace period (``timer_grace_ms``, so an
event received before *T* but still being appended is applied first). Replay and any batch size therefore
fire them at the same places.

Failures: an error of the store itself (connection lost, database locked) is retried, never blamed on an
event. Any other error is narrowed down to the event that causes it, by bisection over prefixes of the
batch (trial commits that roll back find what the database refuses); that event goes to the dead-letter
table, the rest of the batch is applied. After ``max_consecutive_failures`` dead letters in a row the
processor pauses and says why (``status()``, ``/healthz``): a bug should stop the pipeline, not skip the log.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import threading
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from kairos._gc import paused as gc_paused
from kairos.config import Settings
from kairos.definitions import KINDS, Catalog, catalog_of
from kairos.errors import CheckpointConflict, KairosError
from kairos.identity import Identifiers, Resolver
from kairos.metrics import (
    EVENTS_APPLIED,
    EVENTS_DEADLETTERED,
    EVENTS_DUPLICATE,
    EVENTS_SUPPRESSED,
    EVENTS_UNATTRIBUTED,
    MERGES,
    PROCESSOR_LAG,
    TIMERS_FIRED,
)
from kairos.pipeline._batch import Batch
from kairos.pipeline._cache import StateCache
from kairos.pipeline._codec import ProfileCodec
from kairos.pipeline.clock import Clock
from kairos.pipeline.projection import Entry, Event, Projection, Timer
from kairos.store import TOMBSTONE, Checkpoint, DeadLetter, IdentityKey, Job, LogEntry, Store, Writes, digest

if TYPE_CHECKING:
    from kairos.privacy.suppression import Suppressions

__all__ = ["Processor", "dedup_key"]

log = logging.getLogger("kairos.processor")
_decode = msgspec.json.Decoder(Event).decode
TIMER_LIMIT = 10_000  # most due timers loaded per batch
JOB_CHUNK = 1000  # profiles a backfill step brings to changed definitions, between two batches of events


def _replace(job: Job, **changes: Any) -> Job:
    return dataclasses.replace(job, **changes)


def dedup_key(source: str, message_id: str) -> str:
    """What makes two log entries the same event: Segment's messageId, unique per source."""
    return f"{source}\x1f{message_id}"


class _Failed(Exception):
    """Applying entry ``index`` of a batch raised ``cause``."""

    def __init__(self, index: int, cause: BaseException) -> None:
        super().__init__(f"entry {index}: {type(cause).__name__}")
        self.index = index
        self.cause = cause


@dataclass(slots=True)
class _Outcome:
    batch: Batch
    consumed: int  # log entries consumed (applied, duplicate, unattributed)
    applied: int
    duplicates: int
    unattributed: int
    suppressed: list[int]  # seqs of events naming a suppressed identifier: erased from the log before the commit
    skipped: int  # erased or suppressed entries passed over


def _store_trouble(exc: BaseException, store: Store) -> bool:
    """Errors that say the store is unavailable, not that an event is bad: they are retried, never blamed."""
    return isinstance(exc, store.transient_errors) or (isinstance(exc, KairosError) and exc.transient)


def describe(exc: BaseException) -> str:
    """An error's message without personal data: our own messages are written without it; for anything
    else only the place it was raised (file, line, function) is kept, never ``str(exc)``, which may quote a
    value from the event."""
    if isinstance(exc, KairosError):
        return exc.message[:500]
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return "raised outside any traceback"
    f = frames[-1]  # where it was raised: a file, a line and a function name hold no personal data
    return f"raised at {Path(f.filename).name}:{f.lineno} in {f.name}"


class Processor:
    def __init__(
        self,
        store: Store,
        settings: Settings,
        projections: Sequence[Projection[Any]],
        clock: Clock,
        catalog: Catalog | None = None,
    ) -> None:
        self.store = store
        self.catalog = catalog if catalog is not None else catalog_of(projections)
        self.kinds = {p.definition_kind for p in projections if p.definition_kind}
        self.history_kinds = {p.definition_kind for p in projections if p.definition_kind and p.needs_history}
        self.jobs: dict[tuple[str, str], Job] | None = None  # as committed; None: to be read
        self.pending: dict[tuple[str, str], Job] = {}  # started, committed with the next batch
        self.revision = -1  # of the definitions the jobs were compared with
        self.clock = clock
        self.codec = ProfileCodec(projections)
        self.batch_size = settings.processor.batch_size
        self.max_failures = settings.processor.max_consecutive_failures
        self.grace = settings.processor.timer_grace_ms
        self.identifiers = Identifiers(settings.identity)
        self.resolver = Resolver(self.identifiers)
        self._stop = threading.Event()
        self.changed: list[str] = []  # public ids of profiles changed by the last batch (cache invalidation)
        self.paused: str | None = None
        self.consecutive_failures = 0
        self.totals = {
            "applied": 0,
            "duplicates": 0,
            "unattributed": 0,
            "deadlettered": 0,
            "timers_fired": 0,
            "suppressed": 0,
        }
        self.last_batch_at: int | None = None
        self.cache = StateCache(settings.processor.cache_profiles)
        self.last_error: str | None = None
        # Privacy (``kairos.privacy``): the suppression list events are checked against, and work run between
        # batches (erasures), each returning the public ids of the profiles it removed (cache invalidation).
        self.suppressions: Suppressions | None = None
        self.between_batches: list[Callable[[], list[str]]] = []
        self.reported: list[str] = []  # ids the work between batches removed, not yet reported

    # -- driving -----------------------------------------------------------------------------------
    def run_once(self) -> int:
        """Apply one batch; return how many log entries it consumed (0 = caught up or paused)."""
        if self.paused:
            return 0
        # A batch allocates hundreds of thousands of small objects that reference counting frees (its
        # structures make no cycles); with the cached profiles alive, the cyclic collector would rescan
        # them again and again during the batch (measured: a third of the processor's time). It runs
        # between batches instead.
        with gc_paused():
            return self._run_once()

    def _between(self) -> None:
        """Work that runs between batches (erasures); a failure is logged and retried on a later call."""
        for task in self.between_batches:
            try:
                self.reported += task()
            except Exception as exc:
                if not _store_trouble(exc, self.store):
                    log.error("work between batches failed", extra={"error_class": type(exc).__name__})
                self.last_error = type(exc).__name__

    def take_reported(self) -> list[str]:
        out, self.reported = self.reported, []
        return out

    def _run_once(self) -> int:
        self._between()
        if self.suppressions is not None:
            self.suppressions.refresh()
        state = self.store.state
        cp = state.checkpoint()
        self.cache.valid_for(cp.version)  # anything committed by someone else drops what we kept
        self._sync_definitions(cp)
        entries = self.store.log.read(cp.seq, self.batch_size)
        idle_until = None if entries else self.clock.now() - self.grace
        horizon = max(e.received_at for e in entries) if entries else idle_until
        assert horizon is not None
        due = state.due_timers(horizon, TIMER_LIMIT)
        if len(due) == TIMER_LIMIT:  # too many due at once: stop this batch where the loaded timers end
            horizon = due[-1].due_at
            cut = next((i for i, e in enumerate(entries) if e.received_at > horizon), len(entries))
            entries = entries[:cut]
            idle_until = horizon if not entries else None
        if not entries and not due:
            PROCESSOR_LAG.set(0)
            return self._run_jobs(cp)
        due_pks = [t.profile_pk for t in due]
        try:
            outcome = self._apply(cp, entries, due_pks, idle_until)
            writes = outcome.batch.writes()
            jobs = self._jobs_after(outcome.batch)
            writes.jobs = list(jobs.values())
            self._erase_suppressed(outcome)
            state.commit(writes, cp, entries[-1].seq if entries else cp.seq)
        except CheckpointConflict:
            self._forget()  # the batch changed the cached states in place; another writer went first
            log.warning("checkpoint moved under us; re-reading", extra={"from_seq": cp.seq})
            return 0
        except Exception as exc:
            self._forget()
            cause = exc.cause if isinstance(exc, _Failed) else exc
            if _store_trouble(cause, self.store):
                raise cause from None  # the store's fault (down, locked): retry the batch later, skip nothing
            return self._narrow(cp, entries, due_pks, idle_until, exc)
        self._committed(jobs)
        self._done(outcome, entries)
        outcome.batch.remember(cp.version + 1)
        if self._running():  # backfills move on while events keep flowing: one step after each batch
            self._run_jobs(self.store.state.checkpoint(), after_batch=True)
        return outcome.consumed

    # -- definitions and their backfill jobs --------------------------------------------------------
    def _forget(self) -> None:
        """After a failed or refused commit: what we hold in memory may not be what is stored."""
        self.cache.clear()
        self.jobs = None
        self.pending.clear()

    def _committed(self, jobs: dict[tuple[str, str], Job]) -> None:
        assert self.jobs is not None or not jobs
        if self.jobs is not None:
            self.jobs.update(jobs)
        self.pending.clear()

    def _sync_definitions(self, cp: Checkpoint) -> None:
        """Follow the stored definitions: swap the catalog's content, and start a backfill job for each
        definition whose version the derived state does not follow yet (committed with the next batch:
        the events after ``cp`` are applied with the new version, the profiles up to ``cp`` backfilled)."""
        if self.catalog is None:
            return
        if self.jobs is None:
            self.jobs = {(j.kind, j.key): j for j in self.store.state.jobs()}
            self.revision = -1
        admin = self.store.admin
        revision = admin.definitions_revision()
        if revision == self.revision:
            return
        self.revision = revision
        stored = admin.definitions(deleted=True)
        self.catalog.replace([d for d in stored if d.kind in KINDS], revision)
        definitions = [d for d in stored if d.kind in self.kinds]  # the kinds whose changes need a backfill
        for error in self.catalog.errors:
            log.error("definition could not be compiled; skipped", extra={"definition": error})
        self.cache.clear()  # cached states were decoded for the previous definitions
        now = self.clock.now()
        for d in definitions:
            key = (d.kind, d.key)
            job = self.pending.get(key) or self.jobs.get(key)
            if job is not None and job.version == d.version:
                continue
            if job is None and d.deleted:
                continue
            if cp.seq == 0:  # nothing applied yet: the log will be applied with this version from the start
                self.pending[key] = Job(d.kind, d.key, d.version, d.deleted, "done", 0, 0, (), 0, 0, now, now)
            else:
                total = self.store.state.count_live(cp.seq)
                self.pending[key] = Job(d.kind, d.key, d.version, d.deleted, "running", cp.seq, 0, (), total, 0, now)

    def _running(self) -> list[Job]:
        jobs = {**(self.jobs or {}), **self.pending}
        return [j for j in jobs.values() if j.status == "running"]

    def _jobs_after(self, batch: Batch) -> dict[tuple[str, str], Job]:
        """Jobs to commit with a batch of events: those just started, and those whose finished profiles
        a merge made stale again (the winner absorbed state the backfill had not reached yet)."""
        out = dict(self.pending)
        if not batch.merges:
            return out
        winners = {batch.canonical(m.winner) for m in batch.merges}
        for job in self._running():
            stale = {pk for pk in winners if pk <= job.cursor} - set(job.redo)
            if stale:
                job = out.get((job.kind, job.key), job)
                out[(job.kind, job.key)] = _replace(job, redo=(*job.redo, *sorted(stale)))
        return out

    def _run_jobs(self, cp: Checkpoint, after_batch: bool = False) -> int:
        """One backfill step: bring the next ``JOB_CHUNK`` profiles to every running job's definition;
        the number of profiles done (0 when no job runs)."""
        running = self._running()
        if not running:
            if self.pending:  # finished on arrival (an empty store): just record them
                writes = Writes(jobs=list(self.pending.values()))
                try:
                    self.store.state.commit(writes, cp, cp.seq)
                except CheckpointConflict:
                    self._forget()
                    return 0
                self._committed(dict(self.pending))
            return 0
        state = self.store.state
        start = min(j.cursor for j in running)
        end = max(j.upto for j in running)
        pks = state.live_pks(start, end, JOB_CHUNK)
        redo = sorted({pk for j in running for pk in j.redo})[:JOB_CHUNK]
        reached = pks[-1] if len(pks) == JOB_CHUNK else end  # every job's cursor moves at least this far
        targets = list(dict.fromkeys([*redo, *pks]))
        keys: dict[int, dict[str, set[str]]] = {}
        for job in running:
            for pk in targets:
                if job.cursor < pk <= job.upto or pk in job.redo:
                    keys.setdefault(pk, {}).setdefault(job.kind, set()).add(job.key)
        batch = Batch(state, self.codec, self.clock.now(), cp.seq, self.cache)
        try:
            batch.load(keys)
            live = [pk for pk in keys if pk in batch.profiles and batch.profiles[pk].merged_into is None]
            need = [pk for pk in live if self.history_kinds & keys[pk].keys()]
            history = self._history(need)
            for pk in live:
                batch.refresh(batch.profiles[pk], keys[pk], history.get(pk), str(cp.version))
            batch.settle(self._settle_failed)
            writes = batch.writes()
            now = self.clock.now()
            done_redo = set(redo)
            jobs: dict[tuple[str, str], Job] = dict(self.pending)
            for job in running:
                cursor = max(job.cursor, min(reached, job.upto))
                left = tuple(pk for pk in job.redo if pk not in done_redo)
                counted = sum(1 for pk in pks if job.cursor < pk <= cursor)
                finished = cursor >= job.upto and not left
                jobs[(job.kind, job.key)] = _replace(
                    job,
                    cursor=cursor,
                    redo=left,
                    done=job.total if finished else min(job.total, job.done + counted),
                    status="done" if finished else "running",
                    finished_at=now if finished else None,
                )
            writes.jobs = list(jobs.values())
            state.commit(writes, cp, cp.seq)
        except CheckpointConflict:
            self._forget()
            return 0
        except Exception:
            self._forget()
            raise
        self._committed(jobs)
        self.changed = [*self.changed, *batch.changed_ids()] if after_batch else batch.changed_ids()
        batch.remember(cp.version + 1)
        return max(1, len(targets))

    def _history(self, pks: Sequence[int]) -> dict[int, list[Entry]]:
        if not pks:
            return {}
        seqs = self.store.state.history(pks)
        entries = self.store.log.get([s for ss in seqs.values() for s in ss])
        out: dict[int, list[Entry]] = {}
        for pk, ss in seqs.items():
            out[pk] = [
                Entry(e.seq, e.source, e.trait_kind, e.received_at, e.ts, e.message_id, _decode(e.payload))
                for s in ss
                if (e := entries.get(s)) is not None
            ]
        return out

    def backfilling(self) -> bool:
        return bool(self._running())

    def run_until_caught_up(self, progress: Callable[[int], Any] | None = None) -> int:
        """Apply everything in the log; the number of entries *this* processor consumed. A conflict with
        another processor is not "caught up": it re-reads and goes on until the checkpoint reaches the end
        of the log (or the processor pauses)."""
        total = 0
        while True:
            n = self.run_once()
            if n:
                total += n
                if progress is not None:
                    progress(n)
                continue
            if self.paused or (
                self.store.state.checkpoint().seq >= self.store.log.last_seq() and not self.backfilling()
            ):
                return total

    def run_forever(self, poll_seconds: float, on_batch: Callable[[list[str]], Any] | None = None) -> None:
        while not self._stop.is_set():
            try:
                n = self.run_once()
            except Exception as exc:
                log.exception("processor batch failed; retrying")
                self.last_error = type(exc).__name__
                n = 0
                self._stop.wait(1.0)
            reported = self.take_reported()
            if (n or reported) and on_batch is not None:
                on_batch([*(self.changed if n else []), *reported])
            if not n:
                self._stop.wait(poll_seconds)

    def stop(self) -> None:
        self._stop.set()

    def status(self) -> dict[str, Any]:
        """JSON-safe state for ``/healthz`` and ``/metrics``."""
        return {
            "state": "paused" if self.paused else "running",
            "reason": self.paused,
            "consecutive_failures": self.consecutive_failures,
            "last_batch_at": self.last_batch_at,
            "last_error": self.last_error,
            **self.totals,
        }

    # -- applying ----------------------------------------------------------------------------------
    def _apply(
        self, cp: Checkpoint, entries: Sequence[LogEntry], due_pks: Sequence[int], idle_until: int | None
    ) -> _Outcome:
        batch = Batch(self.store.state, self.codec, self.clock.now(), cp.seq, self.cache)
        decoded: list[tuple[Entry, list[IdentityKey], bytes]] = []
        keys: list[IdentityKey] = []
        # Erased entries (tombstones) and events naming a suppressed identifier are passed over as an
        # unattributed event is: timers fire around them at the same places on every run and replay.
        skipped: dict[int, LogEntry] = {}
        suppressed: list[int] = []
        for i, e in enumerate(entries):
            if e.payload == TOMBSTONE:
                skipped[i] = e
                continue
            try:
                event = _decode(e.payload)
                ids = self.identifiers.extract(event)
                alias = self._alias_candidates(event) if event.type == "alias" else []
            except Exception as exc:
                raise _Failed(i, exc) from exc
            if self.suppressions is not None and self.suppressions.blocks([*ids, *alias]):
                skipped[i] = e
                suppressed.append(e.seq)
                continue
            entry = Entry(e.seq, e.source, e.trait_kind, e.received_at, e.ts, e.message_id, event)
            decoded.append((entry, ids, digest(dedup_key(e.source, e.message_id))))
            keys += ids + alias
        batch.prefetch(keys, (d for _, _, d in decoded), due_pks)
        applied = duplicates = unattributed = 0
        at = iter(decoded)
        for i in range(len(entries)):
            if i in skipped:
                try:
                    batch.fire_until(skipped[i].received_at, self._timer_failed)
                except Exception as exc:
                    raise _Failed(i, exc) from exc
                batch.last_seq = skipped[i].seq
                continue
            entry, ids, key = next(at)
            try:
                batch.fire_until(entry.received_at, self._timer_failed)
                if key in batch.seen:
                    duplicates += 1
                    continue
                batch.seen.add(key)
                batch.applied_digests.append(key)
                event = entry.event
                if event.type == "alias":
                    ids = self._alias_resolved(batch, event, ids)
                resolution = self.resolver.resolve(batch, ids, entry.seq)
                if resolution is None:
                    unattributed += 1
                    batch.last_seq = entry.seq
                    continue
                profile = batch.resolve(resolution, entry, "alias" if event.type == "alias" else "shared_identifier")
                batch.apply(profile, entry)
                applied += 1
            except Exception as exc:
                raise _Failed(i, exc) from exc
        if idle_until is not None:
            batch.fire_until(idle_until, self._timer_failed)
        batch.settle(self._settle_failed)
        return _Outcome(batch, len(entries), applied, duplicates, unattributed, suppressed, len(skipped))

    def _erase_suppressed(self, outcome: _Outcome | None) -> None:
        """Tombstone the suppressed events a batch skipped, before it commits: should the commit fail, they
        are passed over as tombstones the next time."""
        if outcome is not None and outcome.suppressed:
            self.store.privacy.tombstone(outcome.suppressed)

    def _settle_failed(self, projection: str, exc: BaseException) -> None:
        log.error(
            "end-of-batch work failed; its effects dropped",
            extra={"projection": projection, "error_class": type(exc).__name__, "where": describe(exc)},
        )
        self.last_error = type(exc).__name__

    def _timer_failed(self, timer: Timer, exc: BaseException) -> None:
        log.error(
            "timer could not be fired; dropped",
            extra={"projection": timer.projection, "error_class": type(exc).__name__, "where": describe(exc)},
        )
        self.last_error = type(exc).__name__

    def _alias_candidates(self, event: Event) -> list[IdentityKey]:
        prev = event.previousId
        return [(kind, v) for kind in ("user_id", "anonymous_id") if (v := self.identifiers.usable(kind, prev))]

    def _alias_resolved(self, batch: Batch, event: Event, ids: list[IdentityKey]) -> list[IdentityKey]:
        """``previousId`` is whichever known id it names: a user id if one is known, else an anonymous id."""
        candidates = self._alias_candidates(event)
        known = [k for k in candidates if batch.owner(k) is not None]
        previous = known[:1] or [k for k in candidates if k[0] == "anonymous_id"]
        # The event's own ids rank before previousId of the same type, so when a limit forbids the merge
        # (two user ids) it is previousId that is dropped, whatever the ids' spelling.
        rank = self.identifiers.rank
        return sorted(dict.fromkeys([*ids, *previous]), key=lambda k: (rank.get(k[0], len(rank)), k in previous, k[1]))

    def _done(self, outcome: _Outcome, entries: Sequence[LogEntry]) -> None:
        """After a commit: counters, metrics, the ids to invalidate. Never before: a retried batch must not
        count twice."""
        batch = outcome.batch
        self.changed = batch.changed_ids()
        self.last_batch_at = self.clock.now()
        if outcome.applied:
            self.consecutive_failures = 0
        for name, n in (
            ("applied", outcome.applied),
            ("duplicates", outcome.duplicates),
            ("unattributed", outcome.unattributed),
            ("timers_fired", batch.fired),
            ("suppressed", len(outcome.suppressed)),
        ):
            self.totals[name] += n
        EVENTS_APPLIED.inc(outcome.applied)
        EVENTS_DUPLICATE.inc(outcome.duplicates)
        EVENTS_UNATTRIBUTED.inc(outcome.unattributed)
        EVENTS_SUPPRESSED.inc(len(outcome.suppressed))
        TIMERS_FIRED.inc(batch.fired)
        for merge in batch.merges:
            MERGES.labels(merge.reason).inc()
        if entries:
            PROCESSOR_LAG.set(max(0, self.store.log.last_seq() - entries[-1].seq))

    # -- failures ----------------------------------------------------------------------------------
    def _probe(self, cp: Checkpoint, entries: Sequence[LogEntry], due_pks: Sequence[int]) -> _Outcome:
        """Apply ``entries`` and commit them on trial (rolled back); raises what either step raises."""
        outcome = self._apply(cp, entries, due_pks, None)
        self.store.state.commit(outcome.batch.writes(), cp, entries[-1].seq if entries else cp.seq, dry_run=True)
        return outcome

    def _narrow(
        self,
        cp: Checkpoint,
        entries: Sequence[LogEntry],
        due_pks: Sequence[int],
        idle_until: int | None,
        error: BaseException,
    ) -> int:
        """Find the first event that cannot be applied, by bisection; apply what precedes it and dead-letter it."""
        if not entries:  # a timers-only batch: a timer's effects were refused by the database
            log.error("due timers could not be committed; dropped", extra={"error_class": type(error).__name__})
            self._drop_due_timers(cp, idle_until)
            return 0
        # Invariant: entries[:hi] fails, entries[:lo] applies and commits (the empty prefix is taken as good).
        lo, hi = 0, len(entries)
        if isinstance(error, _Failed):  # the failing event is known: first try everything before it
            hi, error = error.index + 1, error.cause
        probes = 0
        mid = hi - 1
        while hi - lo > 1:
            probes += 1
            try:
                self._probe(cp, entries[:mid], due_pks)
                lo = mid
            except _Failed as failed:
                if _store_trouble(failed.cause, self.store):
                    raise failed.cause from failed
                hi, error = failed.index + 1, failed.cause
            except Exception as exc:
                if _store_trouble(exc, self.store):
                    raise  # the store went away mid-way: retry the batch later, blame no event
                hi, error = mid, exc
            mid = (lo + hi) // 2
        bad = entries[lo]
        outcome = self._apply(cp, entries[:lo], due_pks, None) if lo else None
        writes = outcome.batch.writes() if outcome else Writes()
        self._erase_suppressed(outcome)
        writes.deadletters.append(
            DeadLetter(bad.seq, bad.source, type(error).__name__, describe(error), self.clock.now())
        )
        try:
            self.store.state.commit(writes, cp, bad.seq)
        except CheckpointConflict:
            return 0
        log.error(
            "event could not be applied; dead-lettered",
            extra={"seq": bad.seq, "source": bad.source, "error_class": type(error).__name__, "probes": probes},
        )
        self.last_error = type(error).__name__
        if outcome is not None:
            self._done(outcome, entries[:lo])  # resets the run of failures if an event before it applied
        self.consecutive_failures += 1
        self.totals["deadlettered"] += 1
        EVENTS_DEADLETTERED.inc()
        if self.consecutive_failures >= self.max_failures:
            self.paused = (
                f"{self.consecutive_failures} events in a row could not be applied (last: seq {bad.seq},"
                f" {type(error).__name__} {describe(error)}); fix the cause, then restart the processor and"
                " `kairos deadletters retry`"
            )
            log.error("processor paused", extra={"reason": self.paused})
        return lo + 1

    def _drop_due_timers(self, cp: Checkpoint, until: int | None) -> None:
        if until is None:
            return
        writes = Writes()
        writes.timers_deleted = [
            (t.profile_pk, t.projection, t.key) for t in self.store.state.due_timers(until, TIMER_LIMIT)
        ]
        with contextlib.suppress(CheckpointConflict):
            self.store.state.commit(writes, cp, cp.seq)

    def retry(self, seqs: Sequence[int]) -> list[DeadLetter]:
        """Apply dead-lettered events again (after a fix), out of order; what still fails stays dead-lettered."""
        self.cache.clear()
        # `kairos deadletters retry` runs in a process whose processor never ran a batch: without this its
        # catalog is empty, and the retried events would skip every computed trait and segment.
        self._sync_definitions(self.store.state.checkpoint())
        still: list[DeadLetter] = []
        letters = {d.seq: d for d in self.store.state.deadletters(seqs=list(seqs))}
        entries = self.store.log.get(list(letters))
        for seq in sorted(letters):
            cp = self.store.state.checkpoint()
            try:
                outcome = self._apply(cp, [entries[seq]], [], None)
                writes = outcome.batch.writes()
                writes.retried.append((seq, self.clock.now()))
                self._erase_suppressed(outcome)
                self.store.state.commit(writes, cp, cp.seq)
                self._done(outcome, [])
            except CheckpointConflict:
                raise
            except Exception as exc:
                cause = exc.cause if isinstance(exc, _Failed) else exc
                if _store_trouble(cause, self.store):
                    raise cause from None
                letter = DeadLetter(seq, letters[seq].source, type(cause).__name__, describe(cause), self.clock.now())
                writes = Writes(deadletters=[letter])
                self.store.state.commit(writes, cp, cp.seq)
                still.append(letter)
        return still

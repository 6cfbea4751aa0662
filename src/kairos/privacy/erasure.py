"""Erasure on request: the person leaves every store and cache, and (optionally) stays out.

``POST /v1/privacy/erase`` and ``kairos privacy erase`` only *record* a request (:func:`request_erasure`):
a row of the durable ``privacy_requests`` table holding no personal data (the internal profile key while
it runs, nothing once it ended), and the end of the log at that moment (``log_seq``). The processor carries it
out between two batches (:class:`ErasureTask`, at most every ``POLL_SECONDS``), once it has applied the log
up to ``log_seq``, so every event of the person received before the request is attributed to them. Runners
take a request with a compare-and-set on its status and a lease: one at a time, and a runner that died is
replaced once its lease ran out. The steps, in this order, are each idempotent, so a request resumed after a
crash at any point finishes the job:

1. **suppress** (if asked): keyed hashes of the person's normalized identifiers join the suppression list
   (:mod:`kairos.privacy.suppression`); collect drops their events from then on, the processor skips them.
2. **log**: the person's events (those the timeline says were applied to them, and copies a client sent
   again under the same messageId) become tombstones: payload and messageId overwritten, seq kept.
3. **decisions**: the decision log rows of the person's subjects (their profile ids and the digests of their
   identities) and their rewards are deleted; learners drop what they learned in memory since their last
   snapshot (the ``privacy_erasures`` counter moves, and a snapshot built before it is refused).
4. **state**: one transaction deletes the profile and every profile merged into it, identities, merges naming
   them, timers, the timeline and every table a projection owns, seen-keys, outbox and deliveries, and moves
   the checkpoint version (compare-and-set): a processor that committed meanwhile makes it start again, and
   a processor holding the person in memory drops its cache.
5. **compact**: SQLite checkpoints and truncates each write-ahead log, so no WAL frame keeps an erased page.

Steps 1-3 come first because step 4 removes what they are computed from. The request is ``complete`` only
after step 5; the API caches then drop the person (the ids go out as a batch's changed profiles do).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from kairos.collect import iso
from kairos.decide.attribution import subject_of
from kairos.errors import CheckpointConflict, KairosError, NotFoundError, ValidationError
from kairos.identity import profile_id_for
from kairos.metrics import ERASURES
from kairos.pipeline.processor import dedup_key
from kairos.privacy import _hooks
from kairos.store import ErasePlan, IdentityKey, PrivacyRequest, digest

if TYPE_CHECKING:
    from kairos.runtime import Kairos

__all__ = [
    "LEASE_MS",
    "POLL_SECONDS",
    "ErasureTask",
    "find_request",
    "request_erasure",
    "request_view",
    "run_pending",
    "wait_complete",
]

log = logging.getLogger("kairos.privacy")
LEASE_MS = 60_000  # a runner renews its lease at every step; a request whose lease ran out is taken over
POLL_SECONDS = 0.5  # how often a processor looks for requests between batches (one indexed query)


def request_erasure(kairos: Kairos, pk: int, suppress: bool) -> PrivacyRequest:
    """Record an erasure of profile ``pk`` (a canonical key from :meth:`Kairos.resolve`); it runs later."""
    return kairos.store.privacy.create("erase", pk, suppress, kairos.clock.now())


_ID = re.compile(r"pr_[0-9a-f]{32}")


def find_request(kairos: Kairos, request_id: Any) -> PrivacyRequest:
    """The request with this id; a :class:`ValidationError` for what cannot be one, else NotFoundError."""
    if not isinstance(request_id, str) or not _ID.fullmatch(request_id):
        raise ValidationError("a request id is pr_ and 32 hex digits", code="invalid_id", field="id")
    found = kairos.store.privacy.get(request_id)
    if found is None:
        raise NotFoundError("no privacy request with this id", field="id")
    return found


def wait_complete(kairos: Kairos, request_id: str, timeout: float, run: bool = True) -> PrivacyRequest:
    """Wait until the request ended (complete or failed), at most ``timeout`` seconds; ``run``: apply the
    log and carry the request out from this process meanwhile (safe beside a running processor)."""
    deadline = time.monotonic() + timeout
    while True:
        request = find_request(kairos, request_id)
        if request.status in ("complete", "failed") or time.monotonic() > deadline:
            return request
        if run:
            kairos.processor.run_until_caught_up()
            run_pending(kairos)
        time.sleep(0.05)


def request_view(request: PrivacyRequest) -> dict[str, Any]:
    """The request as ``GET /v1/privacy/requests/{id}`` shows it (no target, no personal data)."""
    return {
        "request_id": request.id,
        "kind": request.kind,
        "status": request.status,
        "created_at": iso(request.created_at),
        "finished_at": iso(request.finished_at) if request.finished_at is not None else None,
        "steps": request.steps,
    }


def _plan(kairos: Kairos, target: int | None) -> tuple[ErasePlan, list[IdentityKey]]:
    """What the state holds about the person now: empty once step 4 ran (a resumed request then finds
    nothing left to do)."""
    state = kairos.store.state
    canonical = state.resolve_id(profile_id_for(target)) if target is not None else None
    if canonical is None:
        return ErasePlan([], [], []), []
    pks = [canonical, *state.merged_keys(canonical)]
    identities: set[IdentityKey] = set()
    for row in state.load_profiles(pks).values():
        identities |= row.identities
    seqs = sorted({s for ss in state.history(pks).values() for s in ss})
    return ErasePlan(pks, [profile_id_for(pk) for pk in pks], seqs), sorted(identities)


def _add(steps: dict[str, Any], counts: dict[str, int]) -> None:
    for key, n in counts.items():
        steps[key] = int(steps.get(key, 0)) + n


def execute(kairos: Kairos, request: PrivacyRequest, pause: Callable[[str], None] | None = None) -> list[str]:
    """Carry out a claimed request (see the module doc); the public ids of the profiles removed.

    ``pause(step)`` is called after each step (tests use it to stop a run where a crash would)."""
    privacy = kairos.store.privacy
    state = kairos.store.state
    steps: dict[str, Any] = dict(request.steps)
    done: list[str] = list(steps.get("done", []))

    def step(name: str, counts: dict[str, int]) -> None:
        _add(steps, counts)
        if name not in done:
            done.append(name)
        steps["done"] = done
        privacy.progress(request.id, steps, kairos.clock.now() + LEASE_MS)
        if pause is not None:
            pause(name)

    cp = state.checkpoint()
    plan, identities = _plan(kairos, request.target)
    if request.suppress and identities:
        hashes = kairos.suppressions.hashes(identities)
        step("suppress", {"suppressed_identifiers": privacy.suppress(hashes, kairos.clock.now())})
        kairos.suppressions.refresh(force=True)
    else:
        step("suppress", {})
    seqs = sorted({*plan.seqs, *privacy.same_messages(plan.seqs)})
    plan.seqs = seqs
    plan.seen = [digest(dedup_key(e.source, e.message_id)) for e in kairos.store.log.get(seqs).values() if e.message_id]
    step("log", {"log_events": privacy.tombstone(seqs)})
    subjects = [*plan.profile_ids, *(subject_of(kind, value) for kind, value in identities)]
    decisions, rewards = privacy.erase_decisions(subjects) if subjects else (0, 0)
    step("decisions", {"decisions": decisions, "rewards": rewards})
    step("state", privacy.erase_state(plan, (cp.seq, cp.version)) if plan.pks else {})
    compacted = privacy.compact()
    steps["wal_truncated"] = compacted
    step("compact", {})
    privacy.finish(request.id, "complete", steps, kairos.clock.now())
    ERASURES.labels("complete").inc()
    _hooks.audit(kairos, "privacy.erased", request.id, "processor")
    kairos.cache.invalidate(plan.profile_ids)
    log.info("erasure complete", extra={"request_id": request.id, "wal_truncated": compacted})
    return plan.profile_ids


def run_pending(kairos: Kairos, pause: Callable[[str], None] | None = None) -> list[str]:
    """Carry out every open request whose creation point the processor has applied; the ids removed.

    Safe to call from any process at any time: requests are claimed by compare-and-set, and an erasure
    that meets a processor's commit starts again (:class:`CheckpointConflict`) on the next call."""
    privacy = kairos.store.privacy
    removed: list[str] = []
    for request in privacy.open_requests(kairos.clock.now()):
        if kairos.store.state.checkpoint().seq < request.log_seq:
            continue  # the processor has not attributed every event received before the request yet
        claimed = privacy.claim(request, kairos.clock.now(), LEASE_MS)
        if claimed is None:
            continue  # another runner took it
        try:
            removed += execute(kairos, claimed, pause)
        except CheckpointConflict:
            # Let it go at once: the next call plans again (every step is idempotent).
            privacy.release(claimed.id)
            log.info("erasure met a processor commit; planning again", extra={"request_id": claimed.id})
        except KairosError as exc:
            if exc.transient:
                privacy.release(claimed.id)
                raise
            privacy.finish(claimed.id, "failed", dict(claimed.steps), kairos.clock.now(), exc.code)
            ERASURES.labels("failed").inc()
            log.error("erasure failed", extra={"request_id": claimed.id, "error_class": type(exc).__name__})
    return removed


class ErasureTask:
    """Runs :func:`run_pending` between a processor's batches, looking at most every ``POLL_SECONDS``."""

    def __init__(self, kairos: Kairos, every: float = POLL_SECONDS) -> None:
        self.kairos = kairos
        self.every = every
        self._next = 0.0

    def __call__(self) -> list[str]:
        now = time.monotonic()
        if now < self._next:
            return []
        self._next = now + self.every
        if not self.kairos.store.privacy.has_open():
            return []
        return run_pending(self.kairos)

"""Learning from rewards: the trainer that turns logged outcomes into policy snapshots, and the holder that gives
every decision the latest one.

The :class:`Trainer` (``kairos serve`` runs it in a thread; ``kairos learn`` anywhere else) repeats: record
the rewards of conversion events, close the decisions whose wait is over (their open items get
``decide.default_reward``), learn every newly logged decision's shown items with the default reward, relabel
the items whose reward arrived since (from the default to the reward: the same model as learning the reward
at once), and every ``decide.snapshot_seconds`` store a snapshot that marks those decisions and rewards
learned, in one transaction that is refused if another learner stored one first (it then starts again from
that one; the rows' flags are set after that transaction, and by any learner that starts from the snapshot
before it reads the log). Each outcome is thus learned exactly once in effect, whatever crashes or how many
learners run.

A :class:`PolicyHolder` is what the decision path asks: it loads the latest snapshot when one is newer, at most
every ``max_age`` seconds, without blocking decisions (they keep the previous policy until the new one is in).
Decisions of people who denied ``personalization`` are never learned from: neither those made after the denial
(group ``not_personalized``) nor those made before it and not learned yet, nor the rewards that arrive after it
(the trainer's ``gate`` asks the consent of each decision's person when it learns).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import msgspec

from kairos.config import DecideSettings
from kairos.decide.attribution import BATCH as ATTRIBUTE_BATCH
from kairos.decide.attribution import attribute
from kairos.decide.policy import DEFAULT_POLICY, Policy, load_policy, make_policy
from kairos.decide.records import Action, DecisionRecord, Features
from kairos.errors import KairosError
from kairos.pipeline import Clock
from kairos.store import ERASURES, DecisionRow, Outbox, RewardRow, Snapshot, SqlDecisions

__all__ = ["Gate", "LearnerThread", "PolicyHolder", "Trainer", "decode_record", "encode_record", "policy_name"]

log = logging.getLogger("kairos.decide")
_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(DecisionRecord)
BATCH = 1000
Gate = Callable[[Sequence[str]], set[str]]  # decision subjects → those that may not be learned from


def encode_record(record: DecisionRecord) -> bytes:
    return _encoder.encode(record)


def decode_record(data: bytes) -> DecisionRecord:
    return _decoder.decode(data)


def limit_blas(settings: DecideSettings) -> None:
    """Cap the BLAS threads of this process (``decide.blas_threads``), for the decision path and the learner."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=settings.blas_threads, user_api="blas")


def policy_name(settings: DecideSettings) -> str:
    return DEFAULT_POLICY if settings.policy == "default" else settings.policy


@dataclass(frozen=True, slots=True)
class Current:
    policy: Policy
    version: int


class PolicyHolder:
    """The policy decisions use: the latest stored snapshot of the configured learner (or a fresh one).

    Serving (:meth:`start`), a newer snapshot is loaded by a background thread, never by the decision that
    notices it: reading and decoding several megabytes would be that decision's latency.
    """

    def __init__(self, decisions: SqlDecisions, settings: DecideSettings) -> None:
        self.decisions = decisions
        self.name = policy_name(settings)
        limit_blas(settings)
        self._current = Current(make_policy(self.name, seed=settings.seed), 0)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._checked = float("-inf")

    def current(self, max_age: float = 1.0) -> Current:
        """The policy to decide with. While :meth:`start`'s thread runs, it loads newer snapshots and this
        only reads; otherwise this looks for one when the last look is ``max_age`` seconds old (0: now)."""
        if self._thread is None and time.monotonic() - self._checked >= max_age:
            with self._lock:
                self._checked = time.monotonic()
                self.refresh()
        return self._current

    def start(self, every: float = 1.0) -> None:
        """Load newer snapshots in a background thread from now on (``kairos serve``), not in decisions."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._poll, args=(every,), name="kairos-policy-loader", daemon=True)
            self._thread.start()

    def _poll(self, every: float) -> None:
        while not self._stop.wait(every):
            try:
                with self._lock:
                    self.refresh()
            except Exception:  # the store restarting: the decisions keep the policy they have
                log.warning("could not look for a newer policy snapshot", exc_info=True)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def refresh(self) -> None:
        """Load the latest snapshot if it is newer than the one held (and of the configured learner)."""
        if self.decisions.latest_version() <= self._current.version:
            return
        snapshot = self.decisions.latest()
        if snapshot is None or snapshot.version <= self._current.version:
            return
        if snapshot.policy != self.name:  # the configuration changed learner: start from scratch
            return
        try:
            policy = load_policy(snapshot.model)
        except KairosError:
            log.exception("policy snapshot %d cannot be loaded; keeping version %d", snapshot.version, self.version)
            return
        policy.warm(self._current.policy)  # here, not on the first decisions that use it
        self._current = Current(policy, snapshot.version)

    def publish(self, policy: Policy, version: int) -> None:
        """A trainer in this process hands over the snapshot it just stored (no need to read it back)."""
        if version > self._current.version:
            policy.warm(self._current.policy)
            self._current = Current(policy, version)

    @property
    def version(self) -> int:
        return self._current.version


class Trainer:
    def __init__(
        self,
        decisions: SqlDecisions,
        settings: DecideSettings,
        clock: Clock,
        holder: PolicyHolder | None = None,
        outbox: Outbox | None = None,
        gate: Gate | None = None,
    ) -> None:
        self.decisions = decisions
        self.gate = gate  # the consent gate of training: who may not be learned from (kairos.privacy.training)
        self.outbox = outbox  # conversion messages of the reward attribution projection
        self.settings = settings
        self.clock = clock
        self.holder = holder
        self.name = policy_name(settings)
        limit_blas(settings)
        self.policy: Policy = make_policy(self.name, seed=settings.seed)
        self.version = 0
        self.pending: list[int] = []  # seqs of rewards taken in since the last snapshot
        self.pending_decisions: list[int] = []  # seqs of decisions whose shown items were learned since then
        self.after = 0  # the last reward seq read since the last snapshot
        self.after_decisions = 0  # the last decision seq read since then
        self.learned = 0
        self._last_snapshot = time.monotonic()
        self._resume()

    def _resume(self) -> None:
        """Start from the latest snapshot (what came after it is unlearned and will be learned again)."""
        # Erasures seen so far: one after this drops what was learned in memory (a decision it deleted
        # must not reach a snapshot), by resuming from the latest snapshot again.
        erasures = self.decisions.meta_int(ERASURES)
        snapshot = self.decisions.latest()
        if snapshot is not None:
            # What it learned is marked learned after it was stored: finish that before reading the log (the
            # learner that stored it may have stopped half-way), or it would be learned twice. Should this
            # fail, nothing here has changed yet: the next compare-and-set (or erasure check) fails again and
            # brings the learner back here.
            self.decisions.finish_marks(snapshot.version)
        self.erasures = erasures
        self.pending, self.pending_decisions = [], []
        self.after = self.after_decisions = 0
        if snapshot is None:  # nothing stored yet: start from scratch (what was learned in memory is dropped)
            self.policy = make_policy(self.name, seed=self.settings.seed)
            return
        self.version = snapshot.version
        if snapshot.policy == self.name:
            try:
                self.policy = load_policy(snapshot.model)
            except KairosError:
                log.exception("policy snapshot %d cannot be loaded; learning from scratch", snapshot.version)
                self.policy = make_policy(self.name, seed=self.settings.seed)
        else:
            self.policy = make_policy(self.name, seed=self.settings.seed)

    def step(self, force_snapshot: bool = False) -> int:
        """Attribute conversions, close due decisions, learn what arrived, snapshot when due; the number of
        outcomes taken in (shown items learned with the default reward, and rewards that relabel them).

        Every shown item is learned as soon as its decision is logged, with ``decide.default_reward``; a
        reward that arrives later moves that item's target to the reward (``Policy.relabel``), which equals
        having learned the reward at once. So the model never learns only the clicks while the non-clicks
        wait for the end of ``decide.reward_wait_seconds`` (a bias towards what was shown most), and an
        item nobody rewarded is already counted when its wait ends."""
        if self.decisions.meta_int(ERASURES) != self.erasures:
            log.info("an erasure deleted decisions; dropping what was learned since the last snapshot")
            self._resume()
        if self.outbox is not None:
            while attribute(self.outbox, self.decisions, self.settings, self.clock.now()) == ATTRIBUTE_BATCH:
                pass
        self.decisions.close_due(self.clock.now(), self.settings.default_reward)
        learned = 0
        while rows := self.decisions.unlearned_decisions(self.after_decisions, BATCH):
            learned += self._shown(rows)
            self.after_decisions = rows[-1].seq
            if len(rows) < BATCH:
                break
        while rewards := self.decisions.unlearned(self.after, BATCH):
            learned += self._rewarded(rewards)
            self.after = rewards[-1].seq
            if len(rewards) < BATCH:
                break
        due = time.monotonic() - self._last_snapshot >= self.settings.snapshot_seconds
        if (self.pending or self.pending_decisions) and (force_snapshot or due):
            self.snapshot()
        return learned

    def _shown(self, rows: list[DecisionRow]) -> int:
        """Learn every shown item of these decisions with the default reward (baseline-served control
        decisions too: their propensity is 1, and a regression learns from them as well)."""
        default = self.settings.default_reward
        batch: list[tuple[Features, Action, float, float]] = []
        denied = self._denied(rows)
        for row in rows:
            self.pending_decisions.append(row.seq)
            if row.group == "not_personalized" or row.subject in denied:
                continue
            record = decode_record(row.record)
            actions = {a.key: a for a in record.candidates}
            batch.extend(
                (record.shared, actions[i.offer], default, i.propensity) for i in record.items if i.offer in actions
            )
        before = self.policy.learned
        self.policy.learn_many(batch)
        learned = self.policy.learned - before
        self.learned += learned
        return learned

    def _rewarded(self, rows: list[RewardRow]) -> int:
        """Relabel the items these rewards are for, from the default to the reward (a default row: nothing)."""
        default = self.settings.default_reward
        wanted = [r for r in rows if r.source != "default"]
        found = self.decisions.decisions(list({r.decision_id for r in wanted}))
        records: dict[str, DecisionRecord] = {}
        corrections: list[tuple[Features, Action, float]] = []
        for r in rows:
            self.pending.append(r.seq)
        denied = self._denied(list(found.values()))
        for r in wanted:
            row = found.get(r.decision_id)
            # Clipped: a reward stored before ``decide.reward_range`` was narrowed must not swamp the model.
            reward = self.settings.clip_reward(r.reward)
            if row is None or row.group == "not_personalized" or row.subject in denied or reward == default:
                continue
            record = records.get(r.decision_id)
            if record is None:
                record = records[r.decision_id] = decode_record(row.record)
            action = next((a for a in record.candidates if a.key == r.offer), None)
            if action is not None and any(i.offer == r.offer for i in record.items):
                corrections.append((record.shared, action, reward - default))
        self.policy.relabel(corrections)
        return len(corrections)

    def _denied(self, rows: list[DecisionRow]) -> set[str]:
        """Subjects of these decisions whose data may not be learned from now (consent withdrawn, erased)."""
        if self.gate is None:
            return set()
        return self.gate(sorted({r.subject for r in rows if r.group != "not_personalized"}))

    def snapshot(self) -> bool:
        """Store the policy as the next version; False (and start again from the latest) if another learner
        stored one first."""
        model = self.policy.dumps()
        snapshot = Snapshot(self.version + 1, self.name, self.clock.now(), self.policy.learned, model)
        self._last_snapshot = time.monotonic()
        if not self.decisions.save_snapshot(
            self.version, snapshot, self.pending, self.pending_decisions, erasures=self.erasures
        ):
            log.info("another learner stored a snapshot first, or an erasure ran; continuing from the latest")
            self._resume()
            return False
        self.version = snapshot.version
        self.pending, self.pending_decisions = [], []
        # Re-read from the start: a row committed late with a lower seq (PostgreSQL) is not skipped.
        self.after = self.after_decisions = 0
        if self.holder is not None:
            self.holder.publish(load_policy(model), snapshot.version)
        return True


class LearnerThread:
    """``decide.learner_mode = "thread"``: the trainer in a thread of ``kairos serve`` (and in the learner's
    process, ``"process"``).

    Steps start at most every ``step_seconds``: a step learns what arrived since the last one in batches
    (:meth:`Policy.learn_many`), and part of a batch's cost does not depend on its size (the step's queries,
    the passes over the covariance), so back-to-back steps of a few decisions each cost more CPU per
    decision, on the cores the API needs (measured at 512 parameters: ~63 us per decision learned in steps
    of 20, ~53 in steps of 100-500). API processes only see snapshots, every ``decide.snapshot_seconds``, so
    nothing reaches them later."""

    def __init__(self, trainer: Trainer, idle_seconds: float = 0.2, step_seconds: float = 0.5) -> None:
        self.trainer = trainer
        self.idle_seconds = idle_seconds
        self.step_seconds = step_seconds
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="kairos-learner", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        try:
            if self.trainer.pending:
                self.trainer.snapshot()
        except Exception:  # the store may be closing; the rewards stay unlearned and are learned next time
            log.exception("final policy snapshot failed")

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                learned = self.trainer.step()
            except Exception:
                log.exception("learner step failed; retrying")
                learned = 0
                self._stop.wait(1.0)
            if not learned:
                self._stop.wait(self.idle_seconds)
            else:
                self._stop.wait(max(0.0, self.step_seconds - (time.monotonic() - started)))

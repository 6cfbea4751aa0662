"""One processor batch in memory: the profiles it touches, their timers, and what it will write.

:class:`Batch` is the identity graph the resolver sees (:class:`kairos.identity.Graph`), carries out
resolutions (creating and merging profiles, each projection merging its own state), runs every projection
over each event, fires due timers in order, and turns it all into one :class:`~kairos.store.Writes`.

Effects of one event or timer (rows, outbox messages, timer changes) are buffered by its :class:`_Ctx` and
kept only when every projection succeeded, so a failing timer leaves no half-written trace.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from kairos.identity import Resolution
from kairos.pipeline._cache import StateCache
from kairos.pipeline._codec import ProfileCodec
from kairos.pipeline.projection import Entry, ProfileState, Projection, Timer
from kairos.store import IdentityKey, MergeRecord, StateStore, TimerRow, Writes
from kairos.store.schema import Table

__all__ = ["Batch"]

TimerKey = tuple[str, str]  # (projection, key)


class _Ctx:
    """The :class:`~kairos.pipeline.projection.Context` of one event or timer, for one projection at a time."""

    __slots__ = (
        "_counts",
        "_emits",
        "_inserts",
        "_timers",
        "backfill",
        "batch",
        "merged",
        "name",
        "profile",
        "refreshed",
        "replaced",
        "seq",
        "source_key",
        "time",
    )

    def __init__(self, batch: Batch, profile: ProfileState, seq: int, source_key: str, time: int) -> None:
        self.batch = batch
        self.profile = profile
        self.seq = seq
        self.time = time
        self.source_key = source_key  # names what caused the effects: outbox keys derive from it
        self.name = ""
        self.merged: ProfileState | None = None
        self.backfill = False
        self.refreshed: Mapping[str, set[str]] = {}
        # Sections replaced so far for this event, by their value before it: ``before`` is built from it only
        # when a projection asks (most never do), instead of copying every section for every event.
        self.replaced: dict[str, Any] = {}
        self._inserts: list[tuple[Table, tuple[Any, ...]]] = []
        self._emits: list[tuple[str, dict[str, Any]]] = []
        self._timers: list[tuple[TimerKey, TimerRow | None]] = []
        self._counts: list[tuple[Table, tuple[Any, ...], tuple[int, ...]]] = []

    @property
    def before(self) -> Mapping[str, Any]:
        return {**self.profile.sections, **self.replaced}

    @property
    def now(self) -> int:
        return self.batch.now

    def schedule(self, key: str, due_at: int, payload: Any = None) -> None:
        self._timers.append(((self.name, key), TimerRow(self.profile.pk, self.name, key, int(due_at), payload)))

    def cancel(self, key: str) -> None:
        self._timers.append(((self.name, key), None))

    def timers(self) -> Mapping[str, Timer]:
        mine = self.batch.book.get(self.profile.pk, {})
        out = {k: Timer(p, k, t.due_at, t.payload) for (p, k), t in mine.items() if p == self.name}
        for (p, k), row in self._timers:  # this event's own changes so far
            if p == self.name:
                if row is None:
                    out.pop(k, None)
                else:
                    out[k] = Timer(p, k, row.due_at, row.payload)
        return out

    def emit(self, type: str, payload: dict[str, Any]) -> None:
        self._emits.append((type, payload))

    def insert(self, table: Table, row: tuple[Any, ...]) -> None:
        self._inserts.append((table, row))

    def count(self, table: Table, key: tuple[Any, ...], deltas: tuple[int, ...]) -> None:
        self._counts.append((table, key, deltas))

    def keep(self) -> None:
        """The event or timer succeeded: its effects join the batch."""
        b = self.batch
        for table, row, deltas in self._counts:
            rows = b.counts.setdefault(table.name, {})
            old = rows.get(row)
            rows[row] = list(deltas) if old is None else [x + y for x, y in zip(old, deltas, strict=True)]
        for table, values in self._inserts:
            b.inserts.setdefault(table.name, []).append(values)
        for n, (type_, payload) in enumerate(self._emits):
            b.outbox.append((f"{self.source_key}:{n}", type_, self.profile.id, payload, b.now))
        for (proj, key), timer in self._timers:
            b.set_timer(self.profile.pk, proj, key, timer)


class Batch:
    def __init__(
        self, state: StateStore, codec: ProfileCodec, now: int, last_seq: int, cache: StateCache | None = None
    ) -> None:
        self.state = state
        self.cache = cache
        self.codec = codec
        self.projections: Sequence[Projection[Any]] = codec.projections
        self.now = now
        self.last_seq = last_seq  # the last log position applied (timers fire "after" it)
        self.owner_of: dict[IdentityKey, int | None] = {}
        self.profiles: dict[int, ProfileState] = {}
        self.redirects: dict[int, int] = {}
        self.new_identities: dict[IdentityKey, tuple[int, int]] = {}
        self.inserts: dict[str, list[tuple[Any, ...]]] = {}
        self.counts: dict[str, dict[tuple[Any, ...], list[int]]] = {}
        self.merges: list[MergeRecord] = []
        self.outbox: list[tuple[str, str, str | None, Any, int]] = []
        self.seen: set[bytes] = set()
        self.applied_digests: list[bytes] = []
        # Timers: the book holds every timer of every loaded profile; the heap orders them for firing.
        self.book: dict[int, dict[TimerKey, TimerRow]] = {}
        self.stored_timers: dict[tuple[int, str, str], TimerRow] = {}
        self._heap: list[tuple[int, int, str, str]] = []
        self.fired = 0
        self.touched: set[int] = set()  # profiles an event, a merge, a timer or a refresh changed or woke
        self.settling = [p for p in self.projections if type(p).settle is not Projection.settle]

    # -- loading -----------------------------------------------------------------------------------
    def prefetch(self, keys: Iterable[IdentityKey], digests: Iterable[bytes], pks: Iterable[int] = ()) -> None:
        """Load in bulk everything the batch's events will look up."""
        wanted = [k for k in dict.fromkeys(keys) if k not in self.owner_of]
        known = self.cache.owners if self.cache is not None else {}
        ask = [k for k in wanted if k not in known]
        found = self.state.find_identities(ask)
        owners = set(pks)
        for key in wanted:
            pk = known[key] if key in known else found.get(key)
            self.owner_of[key] = pk
            if pk is not None:
                owners.add(pk)
        self.load(owners)
        self.seen.update(self.state.seen(digests))

    def load(self, pks: Iterable[int]) -> None:
        missing = [pk for pk in dict.fromkeys(pks) if pk not in self.profiles]
        if self.cache is not None and missing:
            rest = []
            for pk in missing:
                cached = self.cache.take(pk)
                if cached is None:
                    rest.append(pk)
                    continue
                profile, timers = cached
                self.profiles[pk] = profile
                for t in timers.values():
                    self._track(t)
            missing = rest
        if not missing:
            return
        for pk, row in self.state.load_profiles(missing).items():
            self.profiles[pk] = self.codec.state(row)
        for t in self.state.timers_of(missing):
            self._track(t)

    def _track(self, t: TimerRow) -> None:
        """A timer as stored: in the book, remembered as stored (for the diff at commit), and due in the heap."""
        self.book.setdefault(t.profile_pk, {})[(t.projection, t.key)] = t
        self.stored_timers[(t.profile_pk, t.projection, t.key)] = t
        heapq.heappush(self._heap, (t.due_at, t.profile_pk, t.projection, t.key))

    # -- the identity graph (kairos.identity.Graph) -------------------------------------------------
    def canonical(self, pk: int) -> int:
        while pk in self.redirects:
            pk = self.redirects[pk]
        return pk

    def owner(self, key: IdentityKey) -> int | None:
        if key not in self.owner_of:  # not prefetched: a key derived while applying the batch
            self.prefetch([key], ())
        pk = self.owner_of[key]
        return None if pk is None else self.canonical(pk)

    def identities(self, pk: int) -> set[IdentityKey]:
        return self.profiles[self.canonical(pk)].identities

    # -- applying ----------------------------------------------------------------------------------
    def resolve(self, resolution: Resolution, entry: Entry, reason: str) -> ProfileState:
        """Carry out a resolution: create or merge profiles, attach the event's new identifiers."""
        if resolution.created:
            profile = self.profiles[resolution.pk] = self.codec.new(resolution.pk)
        else:
            profile = self.profiles[resolution.pk]
        for loser_pk, linking in resolution.merges:
            self._merge(profile, self.profiles[loser_pk], entry, reason, linking)
        for key in resolution.keys:
            if key not in profile.identities:
                profile.identities.add(key)
                profile.identities_seq = entry.seq
                self.owner_of[key] = profile.pk
                self.new_identities[key] = (profile.pk, entry.seq)
        return profile

    def _merge(self, winner: ProfileState, loser: ProfileState, entry: Entry, reason: str, linking: list[Any]) -> None:
        ctx = _Ctx(self, winner, entry.seq, f"m{entry.seq}:{loser.pk}", entry.ts)
        ctx.merged = loser
        for p in self.projections:
            ctx.name = p.name
            old = winner.sections[p.name]
            new = p.merge(old, loser.sections[p.name], ctx)
            if new is not old:
                ctx.replaced.setdefault(p.name, old)
                winner.sections[p.name] = new
                winner.dirty.add(p.name)
        ctx.keep()
        winner.identities |= loser.identities
        winner.identities_seq = entry.seq
        # The loser stays as a tombstone so that its id still resolves (to the winner).
        loser.identities = set()
        loser.sections = {p.name: p.initial() for p in self.projections}
        loser.dirty.update(p.name for p in self.projections)
        loser.merged_into = winner.pk
        loser.dirty.add("merged_into")
        self.redirects[loser.pk] = winner.pk
        # Timers move with the profile; when both hold one under the same key, the earlier one stays.
        for tkey, row in self.book.pop(loser.pk, {}).items():
            mine = self.book.setdefault(winner.pk, {})
            if tkey not in mine or row.due_at < mine[tkey].due_at:
                self.set_timer(winner.pk, tkey[0], tkey[1], row)
        self.merges.append(MergeRecord(winner.pk, loser.pk, entry.ts, entry.seq, entry.message_id, reason, linking))

    def apply(self, profile: ProfileState, entry: Entry) -> None:
        self.touched.add(profile.pk)
        ctx = _Ctx(self, profile, entry.seq, f"e{entry.seq}", entry.ts)
        sections = profile.sections
        for p in self.projections:
            ctx.name = p.name
            old = sections[p.name]
            new = p.apply(old, entry, ctx)
            if new is not old:
                ctx.replaced.setdefault(p.name, old)
                sections[p.name] = new
                profile.dirty.add(p.name)
        ctx.keep()
        self.last_seq = entry.seq

    def refresh(
        self, profile: ProfileState, keys: Mapping[str, set[str]], history: Sequence[Entry] | None, tag: str
    ) -> None:
        """Bring ``profile`` to changed definitions: each projection that runs definitions of a kind in
        ``keys`` recomputes those; the others see the change (``changed``)."""
        self.touched.add(profile.pk)
        ctx = _Ctx(self, profile, self.last_seq, f"r{profile.pk}:{tag}", self.now)
        ctx.backfill = True
        ctx.refreshed = keys
        sections = profile.sections
        for p in self.projections:
            ctx.name = p.name
            old = sections[p.name]
            kind = p.definition_kind
            if kind is not None and keys.get(kind):
                new = p.refresh(old, ctx, keys[kind], history if p.needs_history else None)
            else:
                new = p.changed(old, ctx)
            if new is not old:
                ctx.replaced.setdefault(p.name, old)
                sections[p.name] = new
                profile.dirty.add(p.name)
        ctx.keep()

    # -- timers ------------------------------------------------------------------------------------
    def set_timer(self, pk: int, projection: str, key: str, row: TimerRow | None) -> None:
        mine = self.book.setdefault(pk, {})
        if row is None:
            mine.pop((projection, key), None)
            return
        row = TimerRow(pk, projection, key, row.due_at, row.payload)
        mine[(projection, key)] = row
        heapq.heappush(self._heap, (row.due_at, pk, projection, key))

    def next_due(self) -> int | None:
        return self._heap[0][0] if self._heap else None

    def fire_until(self, until: int, on_error: Any) -> None:
        """Fire, in time order, every timer due at or before ``until`` (``on_error(timer, exc)`` on failure)."""
        heap = self._heap
        while heap and heap[0][0] <= until:
            due, pk, projection, key = heapq.heappop(heap)
            pk = self.canonical(pk)
            row = self.book.get(pk, {}).get((projection, key))
            if row is None or row.due_at != due:
                continue  # cancelled, moved or already fired: a stale heap entry
            del self.book[pk][(projection, key)]
            profile = self.profiles[pk]
            self.touched.add(pk)
            timer = Timer(projection, key, due, row.payload)
            ctx = _Ctx(self, profile, self.last_seq, f"t{pk}:{projection}:{key}:{due}", due)
            ctx.name = projection
            p = self.codec.by_name[projection]
            old = profile.sections[projection]
            try:
                new = p.wake(old, timer, ctx)
            except Exception as exc:
                on_error(timer, exc)  # the timer is dropped with its effects; the state is as it was
                continue
            if new is not old:
                ctx.replaced[projection] = old
                profile.sections[projection] = new
                profile.dirty.add(projection)
                try:
                    self.react(profile, ctx, after=projection)
                except Exception as exc:
                    for name, value in ctx.replaced.items():  # undo: the timer is dropped with its effects
                        profile.sections[name] = value
                    on_error(timer, exc)
                    continue
            ctx.keep()
            self.fired += 1

    def react(self, profile: ProfileState, ctx: _Ctx, after: str | None = None) -> None:
        """Let the projections after ``after`` (all, if None) see a change not caused by an event."""
        sections = profile.sections
        started = after is None
        for p in self.projections:
            if not started:
                started = p.name == after
                continue
            ctx.name = p.name
            old = sections[p.name]
            new = p.changed(old, ctx)
            if new is not old:
                ctx.replaced.setdefault(p.name, old)
                sections[p.name] = new
                profile.dirty.add(p.name)

    def settle(self, on_error: Any) -> None:
        """Each touched profile's end-of-batch work (:meth:`Projection.settle`), once; a failure drops that
        projection's effects for that profile (``on_error(projection, exc)``), as a failing timer does."""
        if not self.settling:
            return
        for pk in sorted(self.touched):
            profile = self.profiles.get(pk)
            if profile is None or profile.merged_into is not None or pk in self.redirects:
                continue
            for p in self.settling:
                ctx = _Ctx(self, profile, self.last_seq, f"s{pk}:{p.name}:{self.now}", self.now)
                ctx.name = p.name
                old = profile.sections[p.name]
                try:
                    new = p.settle(old, ctx)
                except Exception as exc:
                    on_error(p.name, exc)
                    continue
                if new is not old:
                    profile.sections[p.name] = new
                    profile.dirty.add(p.name)
                ctx.keep()

    # -- the result --------------------------------------------------------------------------------
    def writes(self) -> Writes:
        """Everything to commit, every profile reference resolved to its final profile."""
        canon = self.canonical
        w = Writes(
            redirects={loser: canon(loser) for loser in self.redirects},
            identities=[(t, v, canon(pk), seq) for (t, v), (pk, seq) in self.new_identities.items()],
            merges=self.merges,
            seen=self.applied_digests,
            outbox=self.outbox,
            counts=self.counts,
        )
        for loser, winner in w.redirects.items():
            self.profiles[loser].merged_into = winner
        for profile in self.profiles.values():
            if profile.new:
                w.new_profiles.append(self.codec.row(profile))
            elif profile.dirty:
                columns, values = self.codec.changed(profile)
                if columns:
                    w.updates.setdefault(columns, []).append((*values, profile.pk))
        for name, rows in self.inserts.items():
            table = self.codec.tables_by_name[name]
            col = table.column_names.index(table.profile_column) if table.profile_column else None
            if col is not None and self.redirects:
                rows = [r if r[col] not in self.redirects else (*r[:col], canon(r[col]), *r[col + 1 :]) for r in rows]
            w.inserts[name] = rows
        final = {(pk, p, k): row for pk, timers in self.book.items() for (p, k), row in timers.items()}
        w.timers_deleted = sorted(self.stored_timers.keys() - final.keys())
        w.timers_set = [row for key, row in sorted(final.items()) if self.stored_timers.get(key) != row]
        return w

    def remember(self, version: int) -> None:
        """After a commit at checkpoint ``version``: keep this batch's profiles and owners for the next."""
        if self.cache is None:
            return
        canon = self.canonical
        if self.redirects:  # identifiers cached by earlier batches may point at a profile merged away now
            owners = self.cache.owners
            for key, pk in owners.items():
                if pk is not None and pk in self.redirects:
                    owners[key] = canon(pk)
        self.cache.put_owners({k: None if pk is None else canon(pk) for k, pk in self.owner_of.items()}, version)
        for pk, profile in self.profiles.items():
            self.cache.put(profile, self.book.get(pk, {}), version)

    def changed_ids(self) -> list[str]:
        return [p.id for p in self.profiles.values() if p.new or p.dirty]

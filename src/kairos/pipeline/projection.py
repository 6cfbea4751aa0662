"""The one interface every kind of derived state implements.

A projection keeps one piece of a profile's state current as events stream in. Like River's learners, it
has a handful of methods and its constructor arguments are its whole configuration:

- ``columns`` / ``indexes``: what it keeps on the profile row; the processor loads those columns for every
  profile a batch touches, in one query (its prefetch). ``tables``: rows it owns elsewhere (e.g. the
  timeline), moved to the winner when profiles merge.
- :meth:`Projection.apply`: one event → the profile's new state. It sees the profile as earlier projections
  left it for this event (``ctx.profile``) and as it was before the event (``ctx.before``).
- :meth:`Projection.merge`: the state of two profiles that turn out to be one person.
- :meth:`Projection.wake`: a durable timer it set (``ctx.schedule``) is due.
- :meth:`Projection.encode` / :meth:`Projection.decode`: its state ↔ its columns; :meth:`Projection.view`:
  what it adds to the profile API's answer.

Rules every projection follows (the conformance suite in ``tests/test_projections.py`` checks them):
state is a value: ``apply``/``merge``/``wake`` return a new object instead of changing the one they got
(``ctx.before`` depends on it), return the very same object when nothing changed (the commit then skips the
row), are deterministic functions of their inputs (time only through ``ctx.now`` and the event), and never
talk to the network or count a metric: side effects go through ``ctx.emit`` (the durable outbox).

A minimal projection, counting orders::

    class Orders(Projection[int]):
        name = "orders"
        columns = (Column("orders", "int", default="0"),)

        def initial(self) -> int:
            return 0

        def apply(self, state: int, entry: Entry, ctx: Context) -> int:
            return state + 1 if entry.event.event == "Order Completed" else state

        def merge(self, winner: int, loser: int, ctx: Context) -> int:
            return winner + loser

        def encode(self, state: int) -> tuple[Any, ...]:
            return (state,)

        def decode(self, values: Sequence[Any]) -> int:
            return int(values[0])
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, Protocol, TypeVar

import msgspec

from kairos.store.schema import Column, Index, Table

__all__ = [
    "Context",
    "Entry",
    "Event",
    "ProfileState",
    "Projection",
    "Timer",
    "fold",
]

S = TypeVar("S")
Id = str | int
IdentityKey = tuple[str, str]


V = TypeVar("V")


def fold(state: Mapping[str, V], incoming: Mapping[str, V], wins: Callable[[V, V | None], bool]) -> Mapping[str, V]:
    """``state`` with every entry of ``incoming`` that ``wins`` over the current one, copied on write:
    ``state`` itself (the same object) when none does, as the projection contract asks.

    >>> newer = lambda new, old: old is None or new > old
    >>> fold({"a": 1}, {"a": 2, "b": 0}, newer)
    {'a': 2, 'b': 0}
    >>> s = {"a": 3}
    >>> fold(s, {"a": 2}, newer) is s
    True
    """
    out: dict[str, V] | None = None
    for key, value in incoming.items():
        if wins(value, state.get(key)):
            if out is None:
                out = dict(state)
            out[key] = value
    return state if out is None else out


class Event(msgspec.Struct, kw_only=True):
    """The fields of a logged Segment event that Kairos reads, decoded straight from the log's bytes."""

    type: str = ""
    messageId: str | None = None
    userId: Id | None = None
    anonymousId: Id | None = None
    previousId: Id | None = None
    groupId: Id | None = None
    event: str | None = None
    name: str | None = None
    category: str | None = None
    properties: dict[str, Any] | None = None
    traits: dict[str, Any] | None = None
    context: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Entry:
    """One log entry as projections see it: where and when it was received, and the event."""

    seq: int
    source: str
    trait_kind: str  # the source's kind: the strongest kind its traits may claim
    received_at: int  # epoch ms
    ts: int  # event time, epoch ms, skew-corrected at collect
    message_id: str
    event: Event


@dataclass(frozen=True, slots=True)
class Timer:
    projection: str
    key: str
    due_at: int  # epoch ms
    payload: Any = None


@dataclass(slots=True)
class ProfileState:
    """A profile as the processor holds it during a batch.

    ``pk`` is the log position of the event that created the profile; ``id`` is the public uuid derived
    from it. ``sections`` holds each projection's state by projection name.
    """

    pk: int
    id: str
    sections: dict[str, Any]
    identities: set[IdentityKey] = field(default_factory=set)
    merged_into: int | None = None
    new: bool = False  # created in this batch: written whole
    identities_seq: int = -1  # the log position of the last event that added identifiers to it (this batch)
    dirty: set[str] = field(default_factory=set)  # sections changed in this batch


class Context(Protocol):
    """What a projection may see and do while it applies an event or a timer."""

    @property
    def profile(self) -> ProfileState:
        """The profile now, as earlier projections (in order) left it for this event."""
        ...

    @property
    def before(self) -> Mapping[str, Any]:
        """Every projection's state as it was before this event (or timer)."""
        ...

    @property
    def now(self) -> int:
        """The processor's clock, epoch ms (the injected clock: tests drive it)."""
        ...

    @property
    def seq(self) -> int:
        """The log position being applied (for a timer: the last position applied before it fired)."""
        ...

    @property
    def time(self) -> int:
        """When what is being applied happened, epoch ms: the event's time (also for the merge it causes),
        a timer's due time, the clock for a definition's backfill. Derived items are stamped with it, so a
        replay stamps them alike."""
        ...

    @property
    def backfill(self) -> bool:
        """True while a definition's backfill brings the profile to it: the person did nothing, so effects
        that announce a change in the person (moments) are not raised for it."""
        ...

    @property
    def refreshed(self) -> Mapping[str, AbstractSet[str]]:
        """During a backfill: the definitions it brings the profile to, by kind (``{"trait": {"orders"}}``);
        else empty. A changed definition may change its value for everyone, whatever the state shows (a trait
        of an old version reads as absent once its definition changed)."""
        ...

    @property
    def merged(self) -> ProfileState | None:
        """During :meth:`Projection.merge`: the profile being merged into this one (else None)."""
        ...

    def schedule(self, key: str, due_at: int, payload: Any = None) -> None:
        """Wake this profile at ``due_at`` (epoch ms); replaces this projection's timer ``key`` if set."""
        ...

    def cancel(self, key: str) -> None: ...

    def timers(self) -> Mapping[str, Timer]:
        """This projection's pending timers on this profile, by key."""
        ...

    def emit(self, type: str, payload: dict[str, Any]) -> None:
        """Queue a message for subscribers in the durable outbox, committed with the state."""
        ...

    def insert(self, table: Table, row: tuple[Any, ...]) -> None:
        """Add a row, new by construction, to a table this projection owns."""
        ...

    def count(self, table: Table, key: tuple[Any, ...], deltas: tuple[int, ...]) -> None:
        """Add ``deltas`` to the row ``key`` of a counter table this projection owns (created at 0)."""
        ...


class Projection(Generic[S]):
    """Base class of every projection; see the module docstring for the contract."""

    name: ClassVar[str]
    columns: ClassVar[tuple[Column, ...]] = ()
    indexes: ClassVar[tuple[Index, ...]] = ()
    tables: ClassVar[tuple[Table, ...]] = ()
    # Projections that run definitions people save (computed traits: "trait", segments: "segment"): when
    # one changes, a backfill job calls :meth:`refresh` on every profile, with the profile's events when
    # ``needs_history``.
    definition_kind: ClassVar[str | None] = None
    needs_history: ClassVar[bool] = False

    def initial(self) -> S:
        raise NotImplementedError

    def apply(self, state: S, entry: Entry, ctx: Context) -> S:
        raise NotImplementedError

    def merge(self, winner: S, loser: S, ctx: Context) -> S:
        raise NotImplementedError

    def wake(self, state: S, timer: Timer, ctx: Context) -> S:
        return state

    def encode(self, state: S) -> tuple[Any, ...]:
        """The values of ``columns`` for ``state`` (JSON columns take plain Python values)."""
        return ()

    def decode(self, values: Sequence[Any]) -> S:
        """The state stored in ``columns`` (JSON columns arrive decoded)."""
        return self.initial()

    def refresh(self, state: S, ctx: Context, keys: set[str], history: Sequence[Entry] | None) -> S:
        """Definitions ``keys`` changed (or went): bring this profile's state to them. ``history`` is
        every event applied to the profile, in log order, for projections that ``needs_history``."""
        return state

    def settle(self, state: S, ctx: Context) -> S:
        """Once per profile a batch touched, after its last event or timer, before the commit: work that
        depends only on where the profile ended (a rule's next change in time) goes here rather than in every
        :meth:`apply`. Effects are those of a timer (no event caused them)."""
        return state

    def changed(self, state: S, ctx: Context) -> S:
        """The profile changed other than by an event: another projection's timer fired, or a definition
        changed (:meth:`refresh`). Projections that derive from others (segments) re-evaluate here."""
        return state

    def trait_names(self) -> Collection[str]:
        """Names of the traits this projection may contribute, known without any profile (for warnings
        about rules that name a trait nothing provides)."""
        return ()

    def provides_none_of(self, keys: AbstractSet[str]) -> bool:
        """True when this projection's traits are a closed set (:meth:`trait_names`) holding none of ``keys``:
        a reader of only ``keys`` need not compute them (segments and moments skip computed traits, RFM)."""
        names = self.trait_names()
        return bool(names) and keys.isdisjoint(names)

    def trait_changes(self, old: S, new: S) -> Collection[str]:
        """The trait names whose value may differ between two states (all that differ must be named; naming
        more only costs a rule evaluation). Projections whose state is copied on write answer cheaply."""
        before, after = self.traits(old), self.traits(new)
        return {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}

    def traits(self, state: S) -> Mapping[str, Any]:
        """Trait values this projection contributes to the profile (name → value): what rules see as
        ``traits`` and the profile API shows under ``traits`` (``view`` adds their ``trait_meta``)."""
        return {}

    def view(self, state: S) -> dict[str, Any]:
        """Fields this projection adds to ``GET /v1/profiles/{ref}``; ``traits`` and ``trait_meta`` are
        merged with other projections' (a mapping value is merged, not replaced)."""
        return {}

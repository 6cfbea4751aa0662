"""Durable timers: stored with the state, fired once in log order, moved on merge, replay-safe."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import pytest

from kairos.pipeline.clock import ManualClock
from kairos.pipeline.projection import Context, Entry, Projection, Timer
from kairos.profiles import default_projections
from kairos.runtime import Kairos
from kairos.store import Source
from kairos.store.schema import Column
from tests.conftest import dump_state, make_settings

T0 = 1_700_000_000_000
HOUR = 3_600_000

# (fired, log): how many times wake ran, and what happened in order ("Cart@seq", "wake:remind@due", ...).
State = tuple[int, tuple[str, ...]]


class Reminder(Projection[State]):
    """Cart → remind in an hour; Order cancels; Snooze moves it; Bomb sets a timer whose wake raises."""

    name = "reminder"
    columns = (Column("reminder", "json", default="'{}'"),)

    def initial(self) -> State:
        return (0, ())

    def apply(self, state: State, entry: Entry, ctx: Context) -> State:
        ev = entry.event
        if ev.type != "track" or ev.event not in ("Cart", "Order", "Snooze", "Ping", "Bomb"):
            return state
        if ev.event == "Cart":
            ctx.schedule("remind", entry.ts + HOUR, {"cart": entry.message_id})
        elif ev.event == "Order":
            ctx.cancel("remind")
        elif ev.event == "Snooze":
            if "remind" in ctx.timers():
                ctx.schedule("remind", entry.ts + 2 * HOUR, {"snoozed": entry.message_id})
        elif ev.event == "Bomb":
            ctx.schedule("boom", entry.ts + HOUR, {"boom": True})
        return (state[0], (*state[1], f"{ev.event}@{entry.seq}"))

    def merge(self, winner: State, loser: State, ctx: Context) -> State:
        if not loser[0] and not loser[1]:
            return winner
        return (winner[0] + loser[0], (*winner[1], *loser[1]))

    def wake(self, state: State, timer: Timer, ctx: Context) -> State:
        ctx.emit("reminder.due", {"key": timer.key, "payload": timer.payload, "due": timer.due_at})
        if timer.key == "boom":
            ctx.schedule("after-boom", timer.due_at + HOUR)
            raise RuntimeError("wake failed")
        return (state[0] + 1, (*state[1], f"wake:{timer.key}@{timer.due_at}:{ctx.seq}"))

    def encode(self, state: State) -> tuple[Any, ...]:
        return ({"fired": state[0], "log": list(state[1])},)

    def decode(self, values: Sequence[Any]) -> State:
        d = values[0] or {}
        return (int(d.get("fired", 0)), tuple(d.get("log", ())))


class World:
    def __init__(self, store_settings: dict[str, Any], clock: ManualClock, batch_size: int = 5000) -> None:
        self.store_settings = store_settings
        self.clock = clock
        self.batch_size = batch_size
        self.n = 0
        self.kairos = self._open()
        self.source: Source = self.kairos.source_named("web", "observed")

    def _open(self) -> Kairos:
        settings = make_settings(self.store_settings, processor={"timer_grace_ms": 0, "batch_size": self.batch_size})
        return Kairos(settings, clock=self.clock, projections=[*default_projections(settings), Reminder()])

    def reopen(self) -> None:
        self.kairos.close()
        self.kairos = self._open()

    def send(self, *events: dict[str, Any], process: bool = True) -> list[int]:
        batch = []
        for e in events:
            self.n += 1
            batch.append({"messageId": f"m{self.n}", "type": "track", **e})
        result = self.kairos.ingest({"batch": batch}, "batch", self.source.write_key)
        assert not result.errors, result.errors
        if process:
            self.run()
        return result.seqs

    def run(self) -> None:
        self.kairos.processor.run_until_caught_up()
        self.kairos.processor.run_once()  # idle pass: fires what is due by now

    def state(self, ref: str) -> State:
        pk = self.kairos.resolve(ref)
        assert pk is not None
        p = self.kairos.profile(pk)
        assert p is not None
        s: State = p.sections["reminder"]
        return s

    def timers(self) -> list[Any]:
        return self.kairos.store.state.due_timers(2**62, 1000)

    def outbox(self) -> list[Any]:
        return [m for m in self.kairos.store.outbox.read(0, 1000) if m.type == "reminder.due"]


@pytest.fixture
def world(store_settings: dict[str, Any]) -> Iterator[World]:
    w = World(store_settings, ManualClock(T0))
    yield w
    w.kairos.close()


def test_timer_is_stored_in_the_same_transaction_as_the_state(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    state = world.kairos.store.state
    original = state.commit
    err = world.kairos.store.transient_errors[0]

    def failing_commit(writes: Any, expect: Any, to_seq: int, name: str = "main", dry_run: bool = False) -> None:
        original(writes, expect, to_seq, name, dry_run=True)  # everything executed, then rolled back
        raise err("database is locked")

    monkeypatch.setattr(state, "commit", failing_commit)
    world.send({"userId": "u1", "event": "Cart"}, process=False)
    with pytest.raises(err):
        world.kairos.processor.run_once()
    assert world.timers() == [] and state.checkpoint().seq == 0 and world.kairos.resolve("user_id:u1") is None
    monkeypatch.setattr(state, "commit", original)
    world.kairos.processor.run_once()
    pk = world.kairos.resolve("user_id:u1")
    [t] = world.timers()
    assert (t.profile_pk, t.projection, t.key, t.due_at) == (pk, "reminder", "remind", T0 + HOUR)
    assert t.payload == {"cart": "m1"}
    assert world.state("user_id:u1")[0] == 0


def test_fires_in_due_order_exactly_once(world: World) -> None:
    world.send({"userId": "late", "event": "Cart"})
    world.clock.advance(60_000)
    world.send({"userId": "early", "event": "Cart"})
    world.send({"userId": "early", "event": "Snooze"})  # early's timer moves past late's: fires after it
    world.clock.advance(HOUR - 60_001)  # now T0 + HOUR - 1: nothing due yet
    world.run()
    assert world.outbox() == [] and world.state("user_id:late")[0] == 0
    world.clock.advance(2 * HOUR + 60_001)
    for _ in range(5):
        world.run()
    assert world.state("user_id:late")[0] == 1 and world.state("user_id:early")[0] == 1
    msgs = world.outbox()
    assert [m.payload["due"] for m in msgs] == [T0 + HOUR, T0 + 60_000 + 2 * HOUR]
    assert [m.payload["payload"] for m in msgs] == [{"cart": "m1"}, {"snoozed": "m3"}]
    assert world.timers() == []


def test_cancelled_by_a_later_event(world: World) -> None:
    world.send({"userId": "u1", "event": "Cart"})
    world.clock.advance(1000)
    world.send({"userId": "u1", "event": "Order"})
    assert world.timers() == []
    world.clock.advance(2 * HOUR)
    world.run()
    assert world.state("user_id:u1")[0] == 0 and world.outbox() == []


def test_moved_by_a_later_event(world: World) -> None:
    world.send({"userId": "u1", "event": "Cart"})
    world.clock.advance(1000)
    world.send({"userId": "u1", "event": "Snooze"})
    [t] = world.timers()
    assert t.due_at == T0 + 1000 + 2 * HOUR
    world.clock.advance(HOUR)  # past the original due time: nothing fires
    world.run()
    assert world.state("user_id:u1")[0] == 0
    world.clock.advance(HOUR)
    world.run()
    assert world.state("user_id:u1")[0] == 1 and len(world.outbox()) == 1


def test_survives_a_restart(world: World) -> None:
    world.send({"userId": "u1", "event": "Cart"})
    world.reopen()
    assert len(world.timers()) == 1
    world.clock.advance(HOUR)
    world.run()
    world.reopen()
    world.run()
    assert world.state("user_id:u1")[0] == 1 and len(world.outbox()) == 1 and world.timers() == []


def test_moves_with_the_profile_on_merge(world: World) -> None:
    world.send({"type": "identify", "userId": "u1", "traits": {"plan": "pro"}})  # B: older
    world.clock.advance(1000)
    world.send({"anonymousId": "a1", "event": "Cart"})  # A: has the timer
    b = world.kairos.resolve("user_id:u1")
    a = world.kairos.resolve("anonymous_id:a1")
    assert a != b and [t.profile_pk for t in world.timers()] == [a]
    world.clock.advance(1000)
    world.send({"type": "identify", "anonymousId": "a1", "userId": "u1"})  # A merges into B
    assert world.kairos.resolve("anonymous_id:a1") == b
    assert [t.profile_pk for t in world.timers()] == [b]
    world.clock.advance(HOUR)
    world.run()
    world.run()
    assert world.state("user_id:u1")[0] == 1
    msgs = world.outbox()
    winner = world.kairos.profile(b) if b is not None else None
    assert winner is not None and len(msgs) == 1 and msgs[0].profile_id == winner.id


@pytest.mark.parametrize("batch_size", [1, 1000])
def test_events_after_the_due_time_apply_after_the_timer(store_settings: dict[str, Any], batch_size: int) -> None:
    w = World(store_settings, ManualClock(T0), batch_size)
    try:
        w.send({"userId": "u1", "event": "Cart"}, process=False)
        w.clock.advance(HOUR - 1)
        w.send({"userId": "u1", "event": "Ping"}, process=False)  # received before due
        w.clock.advance(2)
        w.send({"userId": "u1", "event": "Ping"}, process=False)  # received after due
        w.kairos.processor.run_until_caught_up()
        log = w.state("user_id:u1")[1]
        assert [x.split("@")[0] for x in log] == ["Cart", "Ping", "wake:remind", "Ping"]
        assert log[2] == f"wake:remind@{T0 + HOUR}:2"  # fired after seq 2, the last event before it
    finally:
        w.kairos.close()


def scenario(w: World) -> None:
    w.send({"userId": "u1", "event": "Cart"}, {"userId": "u2", "event": "Cart"}, {"anonymousId": "a1", "event": "Cart"})
    w.clock.advance(10_000)
    w.send({"userId": "u2", "event": "Order"}, {"userId": "u3", "event": "Cart"})
    w.clock.advance(10_000)
    w.send({"type": "identify", "anonymousId": "a1", "userId": "u3"}, {"userId": "u3", "event": "Snooze"})
    w.clock.advance(HOUR)
    w.send({"userId": "u1", "event": "Ping"}, {"userId": "u4", "event": "Cart"})
    w.clock.advance(3 * HOUR)
    w.send({"userId": "u3", "event": "Ping"}, {"userId": "u4", "event": "Ping"})
    w.clock.advance(10_000)
    w.send({"userId": "u5", "event": "Cart"})  # still pending at the end


def test_replay_and_batch_sizes_give_equal_state(world: World) -> None:
    scenario(world)
    expected = dump_state(world.kairos)
    assert expected["timers"] and any(world.state(f"user_id:{u}")[0] for u in ("u1", "u3", "u4"))
    for size in (1, 3, 1000):
        world.kairos.processor.batch_size = size
        world.kairos.store.state.reset()
        world.kairos.processor.run_until_caught_up()
        assert dump_state(world.kairos) == expected, f"batch size {size}"


def test_a_failing_wake_drops_the_timer_without_effects(world: World) -> None:
    world.send({"userId": "u1", "event": "Bomb"}, {"userId": "u2", "event": "Cart"})
    before = world.state("user_id:u1")
    world.clock.advance(HOUR)
    world.send({"userId": "u1", "event": "Ping"})
    assert world.kairos.processor.last_error == "RuntimeError"
    after = world.state("user_id:u1")
    assert after[0] == 0 and after[1] == (*before[1], "Ping@3")
    assert world.timers() == []  # dropped, and its schedule("after-boom") was not kept
    msgs = world.outbox()
    assert [m.payload["key"] for m in msgs] == ["remind"]  # only u2's timer emitted
    assert world.state("user_id:u2")[0] == 1
    assert world.kairos.store.state.deadletters() == []

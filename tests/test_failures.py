"""Failures: poison events are found cheaply and dead-lettered, store errors are retried, pauses, retry."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from kairos.cli import app
from kairos.pipeline.clock import ManualClock
from kairos.pipeline.projection import Context, Entry, Projection
from kairos.profiles import default_projections
from kairos.profiles.counters import Counters
from kairos.runtime import Kairos
from kairos.store.schema import Column, Table
from tests.conftest import make_settings, point_cli_at

T0 = 1_700_000_000_000
SECRET = "jane.secret@example.com"

STRICT = Table(
    "strict_rows",
    (Column("profile_pk", "int"), Column("seq", "int"), Column("v", "text")),  # v is NOT NULL
    ("seq",),
    profile_column="profile_pk",
)


class Poison(Projection[None]):
    """Raises on track "Poison" (quoting a value of the event); on "Null" writes a row the database refuses."""

    name = "poison"
    tables = (STRICT,)
    broken = True

    def initial(self) -> None:
        return None

    def apply(self, state: None, entry: Entry, ctx: Context) -> None:
        ev = entry.event
        if self.broken and ev.event == "Poison":
            raise ValueError(f"cannot handle {(ev.properties or {}).get('email')}")
        if ev.event in ("Null", "Fine"):
            ctx.insert(STRICT, (ctx.profile.pk, entry.seq, None if self.broken and ev.event == "Null" else "ok"))
        return None

    def merge(self, winner: None, loser: None, ctx: Context) -> None:
        return None


class Env:
    def __init__(self, store_settings: dict[str, Any], **processor: Any) -> None:
        settings = make_settings(store_settings, processor={"timer_grace_ms": 0, **processor})
        self.poison = Poison()
        self.kairos = Kairos(settings, clock=ManualClock(T0), projections=[*default_projections(settings), self.poison])
        self.source = self.kairos.source_named("web", "observed")
        self.n = 0

    def send(self, events: Sequence[dict[str, Any]]) -> list[int]:
        seqs: list[int] = []
        for i in range(0, len(events), 1000):
            batch = []
            for e in events[i : i + 1000]:
                self.n += 1
                batch.append({"messageId": f"m{self.n}", "type": "track", **e})
            result = self.kairos.ingest({"batch": batch}, "batch", self.source.write_key)
            assert not result.errors, result.errors
            seqs += result.seqs
        return seqs

    def count(self, ref: str) -> int:
        pk = self.kairos.resolve(ref)
        assert pk is not None
        p = self.kairos.profile(pk)
        assert p is not None
        return int(p.sections["counters"].event_count)


@pytest.fixture
def env_factory(store_settings: dict[str, Any]) -> Iterator[Any]:
    opened: list[Env] = []

    def make(**processor: Any) -> Env:
        e = Env(store_settings, **processor)
        opened.append(e)
        return e

    yield make
    for e in opened:
        e.kairos.close()


def counting(monkeypatch: pytest.MonkeyPatch, obj: Any, name: str) -> list[int]:
    calls: list[int] = []
    original = getattr(obj, name)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        calls.append(len(args[1]))  # (cp, entries, ...)
        return original(*args, **kwargs)

    monkeypatch.setattr(obj, name, wrapper)
    return calls


def test_bad_event_at_the_end_of_a_big_batch(env_factory: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    env = env_factory(batch_size=5000)
    events = [{"userId": f"u{i % 50}", "event": "Fine"} for i in range(2999)]
    seqs = env.send([*events, {"userId": "u7", "event": "Poison", "properties": {"email": SECRET}}])
    applies = counting(monkeypatch, env.kairos.processor, "_apply")
    env.kairos.processor.run_until_caught_up()
    assert len(applies) <= 3, applies
    assert env.kairos.store.state.checkpoint().seq == seqs[-1]
    assert sum(env.count(f"user_id:u{i}") for i in range(50)) == 2999
    [d] = env.kairos.store.state.deadletters()
    assert (d.seq, d.source, d.error_class) == (seqs[-1], "web", "ValueError")
    assert SECRET not in d.message and "jane" not in d.message
    assert d.message.startswith("raised at ") and ".py:" in d.message
    assert env.kairos.processor.status()["deadlettered"] == 1


def test_commit_time_failure_is_found_by_bisection(env_factory: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    env = env_factory()
    n = 64
    events = [{"userId": f"u{i % 7}", "event": "Null" if i == 40 else "Fine"} for i in range(n)]
    seqs = env.send(events)
    probes = counting(monkeypatch, env.kairos.processor, "_probe")
    env.kairos.processor.run_until_caught_up()
    assert [d.seq for d in env.kairos.store.state.deadletters()] == [seqs[40]]
    assert len(probes) <= math.ceil(math.log2(n)) + 1, probes
    db = env.kairos.store.db
    with db.conn() as conn:
        assert db.rows(conn, "SELECT COUNT(*) FROM strict_rows")[0][0] == n - 1
    assert env.kairos.store.state.checkpoint().seq == seqs[-1]


def test_store_errors_are_retried_not_deadlettered(env_factory: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    env = env_factory()
    seqs = env.send([{"userId": "u1", "event": "Fine"}] * 3)
    state = env.kairos.store.state
    original = state.commit
    err = env.kairos.store.transient_errors[0]
    failures = [2]

    def flaky(*args: Any, **kwargs: Any) -> None:
        if failures[0]:
            failures[0] -= 1
            raise err("database is locked")
        original(*args, **kwargs)

    monkeypatch.setattr(state, "commit", flaky)
    for _ in range(2):
        with pytest.raises(err):
            env.kairos.processor.run_once()
        assert state.checkpoint().seq == 0
    env.kairos.processor.run_until_caught_up()
    assert state.checkpoint().seq == seqs[-1] and state.deadletters() == []
    assert env.count("user_id:u1") == 3


def test_pauses_after_consecutive_failures(env_factory: Any) -> None:
    env = env_factory(max_consecutive_failures=3)
    seqs = env.send(
        [
            {"userId": "u1", "event": "Fine"},
            *[{"userId": "u1", "event": "Poison"}] * 3,
            {"userId": "u1", "event": "Fine"},
        ]
    )
    p = env.kairos.processor
    p.run_until_caught_up()
    assert isinstance(p.paused, str) and "3 events in a row" in p.paused
    status = p.status()
    assert status["state"] == "paused" and status["reason"] == p.paused
    assert [d.seq for d in env.kairos.store.state.deadletters()] == seqs[1:4]
    cp = env.kairos.store.state.checkpoint().seq
    assert cp == seqs[3]
    assert p.run_once() == 0 and p.run_once() == 0
    assert env.kairos.store.state.checkpoint().seq == cp and env.count("user_id:u1") == 1


def test_retry_applies_once(env_factory: Any) -> None:
    env = env_factory()
    seqs = env.send([{"userId": "u1", "event": "Fine"}, {"userId": "u1", "event": "Poison"}])
    p = env.kairos.processor
    p.run_until_caught_up()
    assert env.count("user_id:u1") == 1
    assert p.retry([seqs[1]])[0].error_class == "ValueError"  # still broken: stays dead-lettered
    env.poison.broken = False
    assert p.retry([seqs[1]]) == []
    assert env.count("user_id:u1") == 2
    [d] = env.kairos.store.state.deadletters()
    assert d.retried_at is not None
    assert p.retry([seqs[1]]) == []  # seen: not applied twice
    assert env.count("user_id:u1") == 2


# -- the CLI -----------------------------------------------------------------------------------------------
runner = CliRunner()


@pytest.fixture
def cli_env(tmp_path: Path, store_settings: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    toml = '[identity.types.crm_id]\npaths = ["traits.crm_id"]\nlimit = 1\npriority = 90\n'
    point_cli_at(store_settings, monkeypatch, tmp_path / "kairos.toml", toml)
    yield tmp_path


def test_cli_deadletters_list_and_retry(cli_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    original = Counters.apply

    def broken(self: Counters, state: Any, entry: Entry, ctx: Context) -> Any:
        if entry.event.event == "Poison":
            raise ValueError(f"no {(entry.event.properties or {}).get('email')}")
        return original(self, state, entry, ctx)

    monkeypatch.setattr(Counters, "apply", broken)
    kairos = Kairos()
    try:
        source = kairos.source_named("web", "observed")
        events = [
            {"type": "track", "userId": "u1", "event": "Fine", "messageId": "x1"},
            {"type": "track", "userId": "u1", "event": "Poison", "messageId": "x2", "properties": {"email": SECRET}},
        ]
        seqs = kairos.ingest({"batch": events}, "batch", source.write_key).seqs
        kairos.processor.run_until_caught_up()
    finally:
        kairos.close()

    listed = runner.invoke(app, ["deadletters", "list", "--json"])
    assert listed.exit_code == 0, listed.output
    rows = json.loads(listed.stdout)
    assert [(r["seq"], r["error_class"], r["retried_at"]) for r in rows] == [(seqs[1], "ValueError", None)]
    assert SECRET not in listed.stdout

    no_args = runner.invoke(app, ["deadletters", "retry", "--json"])
    assert no_args.exit_code == 2 and json.loads(no_args.stdout)["error"]["code"] == "missing_argument"
    unknown = runner.invoke(app, ["deadletters", "retry", "999999", "--json"])
    assert unknown.exit_code == 2 and json.loads(unknown.stdout)["error"]["code"] == "not_found"
    for seq in ("99999999999999999999999", "0", "-5"):  # beyond 64 bits was an OverflowError traceback
        impossible = runner.invoke(app, ["deadletters", "retry", "--json", "--", seq])
        assert impossible.exit_code == 2, impossible.output
        assert json.loads(impossible.stdout)["error"]["code"] == "not_found", impossible.output

    monkeypatch.setattr(Counters, "apply", original)
    retried = runner.invoke(app, ["deadletters", "retry", "--all", "--json"])
    assert retried.exit_code == 0, retried.output
    assert json.loads(retried.stdout) == {"retried": 1, "applied": 1, "failed": []}
    rows = json.loads(runner.invoke(app, ["deadletters", "list", "--json"]).stdout)
    assert rows[0]["retried_at"] is not None
    again = json.loads(runner.invoke(app, ["deadletters", "retry", "--all", "--json"]).stdout)
    assert again["retried"] == 0

    kairos = Kairos()
    try:
        pk = kairos.resolve("user_id:u1")
        assert pk is not None
        p = kairos.profile(pk)
        assert p is not None and p.sections["counters"].event_count == 2
    finally:
        kairos.close()


def test_retry_in_a_fresh_process_keeps_computed_traits_and_segments(env_factory: Any) -> None:
    """``kairos deadletters retry`` runs in a new process, whose processor had not loaded the definitions:
    the retried event was applied with an empty catalog, so it did not count, and the profile's computed
    traits and segment memberships (encoded for no definition) were wiped."""
    env = env_factory()
    now = env.kairos.clock.now()
    env.kairos.store.admin.put_definition("trait", "orders", {"aggregate": "count", "event": "Order Completed"}, now)
    env.kairos.store.admin.put_definition("trait", "events", {"aggregate": "count"}, now)
    env.kairos.store.admin.put_definition("segment", "buyer", {"rule": "traits.orders >= 1"}, now)
    env.kairos.store.admin.put_definition("segment", "busy", {"rule": "traits.events >= 2"}, now)
    env.send([{"userId": "u1", "event": "Order Completed"}, {"userId": "u1", "event": "Poison"}])
    env.kairos.processor.run_until_caught_up()
    assert len(env.kairos.store.state.deadletters()) == 1

    fresh = env_factory()  # the CLI: same store, a processor that never ran a batch
    fresh.poison.broken = False
    assert fresh.kairos.processor.retry([d.seq for d in fresh.kairos.store.state.deadletters()]) == []
    pk = fresh.kairos.resolve("user_id:u1")
    assert pk is not None
    profile = fresh.kairos.profile(pk)
    assert profile is not None
    view = fresh.kairos.codec.view(profile)
    assert (view["traits"].get("orders"), view["traits"].get("events")) == (1, 2)
    assert view["segments"] == ["busy", "buyer"]

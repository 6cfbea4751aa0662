"""Erasure end to end, on both backends: after it, a scan of every table of every database finds none of
Jane's identifiers or trait values, Bob is untouched, caches and the decision path forget her, suppressed
identifiers are dropped on arrival and in the log tail, replay keeps her erased, and an erasure interrupted
between steps resumes and completes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from kairos.cli import app as cli
from kairos.decide.learning import Trainer
from kairos.errors import CheckpointConflict
from kairos.privacy.erasure import LEASE_MS, ErasureTask, request_erasure, run_pending
from kairos.store import TOMBSTONE
from tests.conftest import point_cli_at
from tests.privacy._world import BOB_IDS, BOB_TRAITS, JANE_IDS, World, needles, scan

JANE = f"user_id:{JANE_IDS['user_id']}"
BOB = f"user_id:{BOB_IDS['user_id']}"


def erase(world: World, suppress: bool = True) -> str:
    made = request_erasure(world.kairos, world.jane(), suppress)
    assert made.status == "pending" and made.target is not None
    world.kairos.processor.run_until_caught_up()
    run_pending(world.kairos)
    return made.id


def status(world: World, request_id: str) -> dict[str, Any]:
    r = world.client.get(f"/v1/privacy/requests/{request_id}", headers=world.keys["privacy"])
    assert r.status_code == 200, r.text
    out: dict[str, Any] = r.json()
    return out


def bob_intact(world: World) -> None:
    view = world.client.get(f"/v1/profiles/{BOB}", headers=world.keys["read"]).json()
    assert {t: view["traits"][t] for t in BOB_TRAITS} == BOB_TRAITS
    assert view["segments"] == ["vip"]
    assert {i["value"] for i in view["identities"]} == set(BOB_IDS.values())
    found = scan(world.kairos, sorted(BOB_IDS.values()) + sorted(BOB_TRAITS.values()))
    assert any(table.endswith(":log") for table in found)
    assert any(table.endswith(":profiles") for table in found)
    bob_subject = world.client.get(f"/v1/profiles/{BOB}", headers=world.keys["read"]).json()["id"]
    assert world.kairos.store.decisions.history([bob_subject], 0)[0], "Bob's decision is gone"


def test_after_an_erasure_no_table_of_any_database_holds_a_trace_of_her(world: World) -> None:
    jane = world.client.get(f"/v1/profiles/{JANE}", headers=world.keys["read"]).json()
    before = scan(world.kairos, [*needles(), jane["id"]])
    # The scan finds her where she was: the log, profiles, identities, merges, the decision log (by her id:
    # decisions log her text traits only as keyed hashes).
    assert {t.rsplit(":", 1)[1] for t in before} >= {"log", "profiles", "identities", "merges", "decisions"}
    assert len(jane["merged_ids"]) == 1 and jane["segments"] == ["vip"]
    assert world.kairos.store.state.due_timers(2**62, 100), "her abandoned cart's timer is pending"
    assert world.decide(JANE)["profile_id"] == jane["id"]  # cached by the decider and the profile cache

    request_id = erase(world)

    done = status(world, request_id)
    assert done["status"] == "complete" and done["finished_at"] is not None
    steps = done["steps"]
    assert steps["done"] == ["suppress", "log", "decisions", "state", "compact"]
    assert steps["profiles"] == 2 and steps["identities"] == 5 and steps["merges"] == 1
    assert steps["log_events"] == 6 and steps["decisions"] >= 1 and steps["rewards"] == 1
    assert steps["timers"] == 1 and steps["deliveries"] >= 1 and steps["suppressed_identifiers"] == 5
    assert world.kairos.store.privacy.get(request_id).target is None  # type: ignore[union-attr]
    assert scan(world.kairos, [*needles(), jane["id"], *jane["merged_ids"]]) == {}
    assert scan(world.kairos, [request_id])  # the request itself is recorded, without her data
    (audited,) = world.kairos.store.audit.list(10, action="privacy.erased")
    assert (audited.target, audited.actor, audited.outcome) == (request_id, "processor", 200)
    assert not world.kairos.store.state.due_timers(2**62, 100)
    # Nothing serves her any more: the profile API, its cache, the decision path.
    for ref in (JANE, f"email:{JANE_IDS['email']}", jane["id"], *jane["merged_ids"]):
        r = world.client.get(f"/v1/profiles/{ref}", headers=world.keys["read"])
        assert r.status_code == 404, (ref, r.text)
    assert world.kairos.store.state.resolve_id(jane["id"]) is None
    answer = world.decide(JANE)
    assert answer["profile_id"] is None
    bob_intact(world)


def test_suppressed_identifiers_are_dropped_at_collect_and_in_the_log_tail(world: World) -> None:
    erase(world)
    last = world.kairos.store.log.last_seq()
    # Collect answers as for any event (it must not tell who asked to be forgotten) and stores nothing.
    auth = (world.sources["app"].write_key, "")
    for event in (
        {"type": "identify", "userId": JANE_IDS["user_id"], "traits": {"nickname": "back-again"}},
        {
            "type": "track",
            "anonymousId": "new-device",
            "event": "X",
            "context": {"traits": {"email": "JANE.unique-77@example.ORG"}},
        },
        {"type": "alias", "userId": "brand-new", "previousId": JANE_IDS["anonymous_id"]},
    ):
        r = world.client.post("/v1/batch", json={"batch": [event]}, auth=auth)
        assert r.status_code == 200 and r.json() == {"success": True}, r.text
    assert world.kairos.store.log.last_seq() == last
    # An event of hers already in the log (appended before the list reached this process) is not applied,
    # and is erased from the log when the processor passes it.
    world.kairos.append(
        [
            (
                "crm",
                world.kairos.prepare_for(
                    world.sources["crm"],
                    {
                        "batch": [
                            {
                                "type": "identify",
                                "messageId": "late-1",
                                "anonymousId": "dev-late",
                                "traits": {"crm_id": JANE_IDS["crm_id"], "city_name": "late-city-zz"},
                            }
                        ]
                    },
                    "batch",
                )[0],
            )
        ]
    )
    seq = world.kairos.store.log.last_seq()
    assert world.kairos.store.log.get([seq])[seq].payload != TOMBSTONE
    world.kairos.processor.run_until_caught_up()
    assert world.kairos.resolve(f"crm_id:{JANE_IDS['crm_id']}") is None
    assert world.kairos.store.log.get([seq])[seq].payload == TOMBSTONE
    assert world.kairos.processor.totals["suppressed"] == 1
    assert scan(world.kairos, [*needles(), "late-city-zz", "back-again"]) == {}
    # Someone else still comes in.
    world.send("web", {"type": "identify", "userId": "u-carol", "traits": {"nickname": "carol"}})
    assert world.kairos.resolve("user_id:u-carol") is not None


def test_replay_after_an_erasure_keeps_her_erased(
    world: World, store_settings: dict[str, Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    erase(world)
    bob_before = world.client.get(f"/v1/profiles/{BOB}", headers=world.keys["read"]).json()
    point_cli_at(store_settings, monkeypatch, tmp_path / "kairos.toml", "")
    result = CliRunner().invoke(cli, ["replay", "--json"])
    assert result.exit_code == 0, result.output
    world.kairos.cache.clear()
    assert world.kairos.resolve(JANE) is None
    assert world.kairos.resolve(f"anonymous_id:{JANE_IDS['anonymous_id']}") is None
    assert scan(world.kairos, needles()) == {}
    bob_after = world.client.get(f"/v1/profiles/{BOB}", headers=world.keys["read"]).json()
    assert bob_after["traits"] == bob_before["traits"] and bob_after["id"] == bob_before["id"]


def test_without_suppression_she_may_come_back_as_someone_new(world: World) -> None:
    old = world.kairos.view(world.jane())
    assert old is not None
    erase(world, suppress=False)
    assert world.kairos.store.privacy.suppression_revision() == 0
    assert scan(world.kairos, needles()) == {}
    world.send("app", {"type": "identify", "userId": JANE_IDS["user_id"]})
    pk = world.kairos.resolve(JANE)
    assert pk is not None and world.kairos.view(pk)["id"] != old["id"]  # type: ignore[index]
    assert world.kairos.view(pk)["traits"] == {}  # type: ignore[index]


class Crash(Exception):
    """Stands for the process dying between two steps."""


@pytest.mark.parametrize("at", ["suppress", "log", "decisions", "state"])
def test_an_erasure_interrupted_between_steps_resumes_and_completes(world: World, at: str) -> None:
    made = request_erasure(world.kairos, world.jane(), True)

    def crash(step: str) -> None:
        if step == at:
            raise Crash(step)

    with pytest.raises(Crash):
        run_pending(world.kairos, pause=crash)
    running = status(world, made.id)
    assert running["status"] == "running" and running["finished_at"] is None
    assert run_pending(world.kairos) == []  # its runner holds the lease: nobody else takes it yet
    world.clock.advance(LEASE_MS + 1)  # the lease runs out: the next runner takes it over
    run_pending(world.kairos)
    done = status(world, made.id)
    assert done["status"] == "complete" and done["steps"]["done"] == [
        "suppress",
        "log",
        "decisions",
        "state",
        "compact",
    ]
    assert scan(world.kairos, needles()) == {}
    bob_intact(world)


def test_a_processor_commit_during_an_erasure_makes_it_plan_again(world: World) -> None:
    made = request_erasure(world.kairos, world.jane(), True)
    k = world.kairos

    def meanwhile(step: str) -> None:
        if step == "decisions":  # another processor applies a batch before the state step
            world.send("web", {"type": "identify", "userId": "u-dave"})

    run_pending(k, pause=meanwhile)
    assert status(world, made.id)["status"] == "running"
    assert k.store.privacy.get(made.id).lease_until == 0  # type: ignore[union-attr]
    run_pending(k)
    assert status(world, made.id)["status"] == "complete"
    assert scan(k, needles()) == {}


def test_the_state_step_refuses_a_stale_checkpoint(world: World) -> None:
    from kairos.store import ErasePlan

    cp = world.kairos.store.state.checkpoint()
    with pytest.raises(CheckpointConflict):
        world.kairos.store.privacy.erase_state(ErasePlan([world.jane()], [], []), (cp.seq, cp.version - 1))
    assert world.kairos.resolve(JANE) is not None


def test_the_processor_waits_until_every_event_before_the_request_is_applied(world: World) -> None:
    k = world.kairos
    world.send(
        "crm",
        {"type": "track", "userId": JANE_IDS["user_id"], "event": "Called", "properties": {"note": "note-jane-q1"}},
        process=False,
    )
    made = request_erasure(k, world.jane(), False)
    assert made.log_seq == k.store.log.last_seq()
    assert run_pending(k) == []  # the event before it is not applied yet
    assert status(world, made.id)["status"] == "pending"
    task = ErasureTask(k, every=0.0)
    k.processor.between_batches = [task]
    k.processor.run_until_caught_up()  # the batch applies the event; the next pass runs the erasure
    k.processor.run_once()
    assert status(world, made.id)["status"] == "complete"
    assert scan(k, [*needles(), "note-jane-q1"]) == {}


def test_the_learner_drops_what_it_learned_in_memory_from_her_decisions(world: World) -> None:
    k = world.kairos
    trainer = Trainer(k.store.decisions, k.settings.decide, world.clock, outbox=k.store.outbox)
    assert trainer.step() > 0 and trainer.pending_decisions  # learned in memory, no snapshot yet
    erase(world)
    trainer.step(force_snapshot=True)
    snapshot = k.store.decisions.latest()
    assert snapshot is not None and snapshot.learned >= 1  # Bob's decision was learned again
    assert scan(k, needles()) == {}  # her stated traits were features: not in the stored model


def test_a_snapshot_built_before_an_erasure_is_refused(world: World) -> None:
    k = world.kairos
    trainer = Trainer(k.store.decisions, k.settings.decide, world.clock, outbox=k.store.outbox)
    trainer.step()
    erased = k.store.privacy.erase_decisions([*world.jane_subjects(), k.view(world.jane())["id"]])  # type: ignore[index]
    assert erased[0] >= 1
    assert trainer.snapshot() is False  # it learned a decision that no longer exists
    assert k.store.decisions.latest() is None


def test_the_erasure_is_reported_to_the_api_process_as_changed_profiles(world: World) -> None:
    k = world.kairos
    jane_id = k.view(world.jane())["id"]  # type: ignore[index]
    request_erasure(k, world.jane(), True)
    k.processor.between_batches = [ErasureTask(k, every=0.0)]
    reports: list[list[str]] = []
    k.processor._stop.clear()

    def on_batch(ids: list[str]) -> None:
        reports.append(ids)
        k.processor.stop()

    k.processor.run_forever(0.01, on_batch)
    assert jane_id in reports[0]


def test_a_policy_snapshot_learned_from_her_holds_no_trace_of_her_after_the_erasure(world: World) -> None:
    """A snapshot is an aggregate that outlives her: text features are named by keyed hashes, never her values."""
    k = world.kairos
    trainer = Trainer(k.store.decisions, k.settings.decide, k.clock)
    assert trainer.step(force_snapshot=True) > 0  # her (and Bob's) decisions learned into a stored snapshot
    snapshot = k.store.decisions.latest()
    assert snapshot is not None and snapshot.learned > 0
    erase(world)
    assert k.store.decisions.latest() is not None  # the model stays: it is everyone's
    assert scan(k, needles()) == {}

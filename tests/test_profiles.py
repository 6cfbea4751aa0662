"""The processor: trait provenance and precedence, ordering, duplicates, exactly-once, replay."""

from __future__ import annotations

from typing import Any

import pytest

from kairos.errors import CheckpointConflict
from kairos.pipeline import Entry, Processor
from kairos.profiles import Traits
from kairos.runtime import Kairos
from kairos.store import Checkpoint, Writes
from tests.conftest import Feed, dump_state, make_settings


def at(minute: int) -> str:
    return f"2026-01-01T10:{minute:02d}:00.000Z"


def snapshot(kairos: Kairos) -> dict[str, list[tuple[Any, ...]]]:
    """Everything derived, in a comparable form."""
    return dump_state(kairos)


def test_trait_meta_has_kind_source_and_time(feed: Feed) -> None:
    feed({"type": "identify", "userId": "u1", "timestamp": at(1), "traits": {"plan": "pro"}})
    t = feed.profile("user_id:u1").traits["plan"]
    assert (t.value, t.kind, t.source) == ("pro", "observed", "web")
    assert t.updated_at == 1767261660000


def test_stated_is_not_overwritten_by_weaker_kind(kairos: Kairos, feed: Feed) -> None:
    form = Feed(kairos, kairos.store.admin.add_source("signup-form", "stated", 0))
    form({"type": "identify", "userId": "u1", "timestamp": at(1), "traits": {"channel": "email"}})
    feed({"type": "identify", "userId": "u1", "timestamp": at(2), "traits": {"channel": "sms"}})
    feed(
        {
            "type": "identify",
            "userId": "u1",
            "timestamp": at(3),
            "traits": {"channel": "push"},
            "context": {"kairos": {"trait_kind": "third_party"}},
        }
    )
    t = feed.profile("user_id:u1").traits["channel"]
    assert (t.value, t.kind, t.source) == ("email", "stated", "signup-form")
    # A newer stated value does replace it.
    form({"type": "identify", "userId": "u1", "timestamp": at(4), "traits": {"channel": "post"}})
    assert feed.profile("user_id:u1").traits["channel"].value == "post"


def test_precedence_by_time_only_when_configured(store_settings: dict[str, Any]) -> None:
    kairos = Kairos(make_settings(store_settings, profiles={"precedence": "time"}))
    try:
        feed = Feed(kairos, kairos.store.admin.add_source("web", "observed", 0))
        feed(
            {
                "type": "identify",
                "userId": "u1",
                "timestamp": at(1),
                "traits": {"c": "a"},
                "context": {"kairos": {"trait_kind": "stated"}},
            }
        )
        feed({"type": "identify", "userId": "u1", "timestamp": at(2), "traits": {"c": "b"}})
        assert feed.profile("user_id:u1").traits["c"].value == "b"
    finally:
        kairos.close()


def test_out_of_order_events_keep_the_newest_value(feed: Feed, kairos: Kairos) -> None:
    feed({"type": "identify", "userId": "u1", "timestamp": at(9), "traits": {"city": "Paris"}})
    feed({"type": "identify", "userId": "u1", "timestamp": at(1), "traits": {"city": "Lyon", "age": 30}})
    p = feed.profile("user_id:u1")
    assert p.traits["city"].value == "Paris"
    assert p.traits["age"].value == 30
    # The timeline is in event time, newest first, whatever the arrival order.
    rows = kairos.store.state.timeline(p.pk, 10, None)
    assert [r.ts for r in rows] == sorted((r.ts for r in rows), reverse=True)


def test_duplicate_message_ids_apply_once(feed: Feed, kairos: Kairos) -> None:
    event = {"type": "track", "userId": "u1", "event": "Paid", "messageId": "same"}
    kairos.ingest({"batch": [event, event]}, "batch", feed.source.write_key)
    kairos.processor.run_until_caught_up()
    kairos.ingest(event, "track", feed.source.write_key)
    kairos.processor.run_until_caught_up()
    p = feed.profile("user_id:u1")
    assert p.event_count == 1
    assert len(kairos.store.state.timeline(p.pk, 10, None)) == 1
    assert kairos.store.log.count() == 3  # all accepted into the log; de-duplicated in effect


def test_same_message_id_from_two_sources_are_two_events(feed: Feed, kairos: Kairos) -> None:
    other = kairos.store.admin.add_source("app", "observed", 0)
    event = {"type": "track", "userId": "u1", "event": "Paid", "messageId": "same"}
    kairos.ingest(event, "track", feed.source.write_key)
    kairos.ingest(event, "track", other.write_key)
    kairos.processor.run_until_caught_up()
    assert feed.profile("user_id:u1").event_count == 2


def test_consent_from_segment_consent_context(feed: Feed) -> None:
    consent = {"consent": {"categoryPreferences": {"marketing_email": True, "analytics": False}}}
    feed({"type": "track", "userId": "u1", "event": "X", "timestamp": at(2), "context": consent})
    feed(
        {
            "type": "track",
            "userId": "u1",
            "event": "X",
            "timestamp": at(1),
            "context": {"consent": {"categoryPreferences": {"marketing_email": False}}},
        }
    )
    c = feed.profile("user_id:u1").consents
    assert c["marketing_email"]["granted"] is True  # the older event does not override the newer choice
    assert c["analytics"]["granted"] is False


def _story(feed: Feed) -> None:
    feed(
        {"type": "page", "anonymousId": "a1", "timestamp": at(1)},
        {
            "type": "identify",
            "anonymousId": "a1",
            "userId": "u1",
            "timestamp": at(2),
            "traits": {"email": "J@x.io"},
        },
        {"type": "track", "anonymousId": "a2", "event": "Viewed", "timestamp": at(3)},
        process=False,
    )
    feed(
        {
            "type": "identify",
            "anonymousId": "a2",
            "traits": {"email": "j@x.io", "plan": "pro"},
            "timestamp": at(4),
        },
        {"type": "identify", "anonymousId": "laptop", "userId": "u1", "timestamp": at(5)},
        {"type": "identify", "anonymousId": "laptop", "userId": "u2", "timestamp": at(6)},
        {"type": "alias", "previousId": "a3", "userId": "u2", "timestamp": at(7)},
        {"type": "track", "userId": "u1", "event": "Paid", "messageId": "m1"},
        process=False,
    )


def test_replay_yields_the_same_profiles(feed: Feed, kairos: Kairos) -> None:
    _story(feed)
    kairos.processor.run_until_caught_up()
    before = snapshot(kairos)
    assert len([p for p in before["profiles"] if p[2] is None]) == 2
    kairos.store.state.reset()
    assert kairos.store.state.count_profiles() == 0
    kairos.processor.run_until_caught_up()
    assert snapshot(kairos) == before


@pytest.mark.parametrize("batch_size", [1, 3, 1000])
def test_batch_size_does_not_change_the_result(feed: Feed, kairos: Kairos, batch_size: int) -> None:
    _story(feed)
    kairos.processor.run_until_caught_up()
    expected = snapshot(kairos)
    kairos.store.state.reset()
    Processor.__init__(kairos.processor, kairos.store, kairos.settings, kairos.projections, kairos.clock)
    kairos.processor.batch_size = batch_size
    kairos.processor.run_until_caught_up()
    assert snapshot(kairos) == expected


def test_a_failed_commit_changes_nothing_and_is_retried(
    feed: Feed, kairos: Kairos, monkeypatch: pytest.MonkeyPatch
) -> None:
    _story(feed)
    kairos.processor.batch_size = 2
    real = kairos.store.state.commit
    calls = {"n": 0}

    def crashing(writes: Writes, expect: Checkpoint, to_seq: int, **kw: Any) -> None:
        calls["n"] += 1
        if calls["n"] == 3:
            # Die before COMMIT: the transaction must roll back whole, and the batch is retried.
            raise kairos.store.transient_errors[0]("simulated crash inside the transaction")
        real(writes, expect, to_seq, **kw)

    monkeypatch.setattr(kairos.store.state, "commit", crashing)
    kairos.processor.run_once()
    kairos.processor.run_once()
    checkpoint = kairos.store.state.checkpoint().seq
    with pytest.raises(kairos.store.transient_errors):
        kairos.processor.run_once()
    assert kairos.store.state.checkpoint().seq == checkpoint
    monkeypatch.setattr(kairos.store.state, "commit", real)
    kairos.processor.run_until_caught_up()
    got = snapshot(kairos)
    kairos.store.state.reset()
    kairos.processor.batch_size = 1000
    kairos.processor.run_until_caught_up()
    assert got == snapshot(kairos)


def test_commit_rolls_back_when_interrupted_mid_transaction(feed: Feed, kairos: Kairos) -> None:
    feed({"type": "identify", "userId": "u1"}, process=False)
    entries = kairos.store.log.read(0, 10)
    bad = Writes()
    bad.seen.append(b"k" * 16)
    # A timeline row without a profile violates the schema inside the transaction.
    bad.inserts["timeline"] = [(None, 1, 1, 0, "track", None, None)]
    with pytest.raises(Exception):  # noqa: B017 - any driver error; what matters is the rollback
        kairos.store.state.commit(bad, Checkpoint(0, 0), entries[-1].seq)
    assert kairos.store.state.checkpoint().seq == 0
    assert kairos.store.state.seen([b"k" * 16]) == set()


def test_two_processors_never_apply_a_batch_twice(feed: Feed, kairos: Kairos) -> None:
    feed({"type": "identify", "userId": "u1"}, process=False)
    other = Processor(kairos.store, kairos.settings, kairos.projections, kairos.clock)
    entries = kairos.store.log.read(0, 10)
    kairos.store.state.commit(Writes(), Checkpoint(0, 0), entries[-1].seq)
    with pytest.raises(CheckpointConflict):
        kairos.store.state.commit(Writes(), Checkpoint(0, 0), entries[-1].seq)
    assert other.run_once() == 0  # caught up: nothing left


def test_an_event_that_cannot_be_applied_never_stalls_the_pipeline(
    feed: Feed, kairos: Kairos, monkeypatch: pytest.MonkeyPatch
) -> None:
    feed(
        {"type": "identify", "userId": "u1"},
        {"type": "identify", "userId": "poison"},
        {"type": "identify", "userId": "u3"},
        process=False,
    )
    traits = kairos.processor.codec.by_name["traits"]
    assert isinstance(traits, Traits)
    real = traits.apply

    def apply(state: Any, entry: Entry, ctx: Any) -> Any:
        if entry.event.userId == "poison":
            raise RuntimeError("cannot apply")
        return real(state, entry, ctx)

    monkeypatch.setattr(traits, "apply", apply)
    kairos.processor.run_until_caught_up()
    assert kairos.store.state.checkpoint().seq == kairos.store.log.last_seq()
    assert feed.profile("user_id:u1").event_count == 1 and feed.profile("user_id:u3").event_count == 1
    assert kairos.resolve("user_id:poison") is None
    [letter] = kairos.store.state.deadletters()
    assert (letter.source, letter.error_class) == ("web", "RuntimeError")
    assert "poison" not in letter.message and letter.message.startswith("raised at")


def test_a_source_cannot_claim_a_stronger_kind_than_its_own(feed: Feed, kairos: Kairos) -> None:
    crm = kairos.store.admin.add_source("crm", "stated", 0)
    web = kairos.store.admin.add_source("public-web", "inferred", 0)
    kairos.ingest({"userId": "u1", "traits": {"plan": "gold"}, "timestamp": at(1)}, "identify", crm.write_key)
    forged = {
        "userId": "u1",
        "traits": {"plan": "free", "tier": 1},
        "timestamp": at(2),
        "context": {"kairos": {"trait_kind": "stated"}},
    }
    kairos.ingest(forged, "identify", web.write_key)
    weaker = {"userId": "u1", "traits": {"mood": "happy"}, "context": {"kairos": {"trait_kind": "third_party"}}}
    kairos.ingest(weaker, "identify", web.write_key)
    kairos.processor.run_until_caught_up()
    p = feed.profile("user_id:u1")
    assert (p.traits["plan"].value, p.traits["plan"].kind) == ("gold", "stated")
    assert p.traits["tier"].kind == "inferred"  # the claim was capped at the source's kind
    assert p.traits["mood"].kind == "third_party"  # a weaker claim is honoured


def test_created_at_is_the_earliest_event_whatever_the_batching(feed: Feed, kairos: Kairos) -> None:
    feed({"type": "identify", "userId": "u1", "anonymousId": "a1", "timestamp": "2024-01-02T00:00:00Z"})
    feed({"type": "track", "anonymousId": "a2", "event": "E", "timestamp": "2024-01-01T00:00:00Z"})
    feed({"type": "identify", "userId": "u1", "anonymousId": "a2", "timestamp": "2024-01-03T00:00:00Z"})
    assert feed.profile("user_id:u1").created_at == 1704067200000
    kairos.store.state.reset()
    kairos.processor.batch_size = 1000
    kairos.processor.run_until_caught_up()
    assert feed.profile("user_id:u1").created_at == 1704067200000

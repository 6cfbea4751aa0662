"""Identity resolution: normalization, blocked values, limits, merges; on every backend."""

from __future__ import annotations

from typing import Any

import pytest

from kairos.config import IdentitySettings
from kairos.identity import Identifiers, normalize
from kairos.pipeline import Event
from kairos.runtime import Kairos
from tests.conftest import Feed


@pytest.mark.parametrize(
    ("kind", "raw", "expected"),
    [
        ("email", "  Jane.Doe@Example.COM ", "jane.doe@example.com"),
        ("email", "not-an-email", None),
        ("phone", "(415) 555-0132", "+14155550132"),
        ("phone", "+44 20 7946 0958", "+442079460958"),
        ("phone", "12", None),
        ("phone", "call me", None),
        ("user_id", 42, "42"),
        ("user_id", True, None),
        ("user_id", "   ", None),
        ("anonymous_id", " a1 ", "a1"),
        ("user_id", "x" * 600, None),
    ],
)
def test_normalize(kind: str, raw: Any, expected: str | None) -> None:
    assert normalize(kind, raw, "US") == expected


@pytest.mark.parametrize(
    "value",
    [
        "null",
        "undefined",
        "Anonymous",
        "0",
        "-1",
        "00000",
        "---",
        "test@test.com",
        "TEST@TEST.COM",
        "aaaaaaa",
    ],
)
def test_blocked_values_are_not_identifiers(value: str) -> None:
    ids = Identifiers(IdentitySettings())
    kind = "email" if "@" in value else "user_id"
    assert ids.usable(kind, value) is None
    assert ids.extract(Event(userId=value, anonymousId=value, traits={"email": value})) == []


def test_extract_orders_by_priority_and_reads_external_ids() -> None:
    ids = Identifiers(IdentitySettings(types={"crm_id": {"paths": ["traits.crm_id"], "priority": 90}}))
    event = Event(
        anonymousId="a1",
        userId="u1",
        traits={"email": "J@X.io", "crm_id": "C1"},
        context={
            "device": {"id": "d1"},
            "externalIds": [{"id": "C2", "type": "crm_id"}, {"id": "z", "type": "nope"}],
        },
    )
    assert ids.extract(event) == [
        ("user_id", "u1"),
        ("crm_id", "C1"),
        ("crm_id", "C2"),
        ("email", "j@x.io"),
        ("device_id", "d1"),
        ("anonymous_id", "a1"),
    ]


def test_anonymous_then_identified_is_one_profile(feed: Feed) -> None:
    feed({"type": "page", "anonymousId": "a1", "name": "Home"})
    feed({"type": "identify", "anonymousId": "a1", "userId": "u1", "traits": {"email": "Jane@X.io"}})
    p = feed.profile("user_id:u1")
    assert p.identities == {("anonymous_id", "a1"), ("user_id", "u1"), ("email", "jane@x.io")}
    assert feed.profile("anonymous_id:a1").id == p.id
    assert p.event_count == 2


def test_shared_device_never_merges_two_known_people(feed: Feed, kairos: Kairos) -> None:
    feed({"type": "identify", "anonymousId": "laptop", "userId": "alice", "traits": {"name": "Alice"}})
    feed({"type": "identify", "anonymousId": "laptop", "userId": "bob", "traits": {"name": "Bob"}})
    alice, bob = feed.profile("user_id:alice"), feed.profile("user_id:bob")
    assert alice.id != bob.id
    assert alice.traits["name"].value == "Alice" and bob.traits["name"].value == "Bob"
    assert ("anonymous_id", "laptop") in alice.identities
    assert ("anonymous_id", "laptop") not in bob.identities
    assert kairos.store.state.merges(alice.pk) == [] and kairos.store.state.merges(bob.pk) == []
    # Later anonymous activity on the device stays with the first person, never bridges the two.
    feed({"type": "track", "anonymousId": "laptop", "event": "Viewed"})
    assert feed.profile("user_id:bob").event_count == 1


def test_blocked_anonymous_id_does_not_merge_strangers(feed: Feed) -> None:
    feed({"type": "identify", "anonymousId": "undefined", "userId": "u1"})
    feed({"type": "identify", "anonymousId": "undefined", "userId": "u2"})
    feed({"type": "identify", "userId": "u3", "traits": {"email": "test@test.com"}})
    feed({"type": "identify", "userId": "u4", "traits": {"email": "test@test.com"}})
    ids = {feed.profile(f"user_id:u{i}").id for i in range(1, 5)}
    assert len(ids) == 4


def test_event_with_only_blocked_ids_is_unattributed(feed: Feed, kairos: Kairos) -> None:
    feed({"type": "track", "anonymousId": "null", "event": "X"})
    assert kairos.store.state.count_profiles() == 0
    assert kairos.store.state.checkpoint().seq == kairos.store.log.last_seq()


def test_merge_chain_a_b_then_b_c(feed: Feed, kairos: Kairos) -> None:
    feed({"type": "identify", "anonymousId": "a", "traits": {"email": "a@x.io", "color": "red"}})
    feed({"type": "identify", "anonymousId": "b", "traits": {"phone": "+1 415 555 0100"}})
    feed({"type": "identify", "anonymousId": "c", "userId": "u-c", "traits": {"size": "M"}})
    a_id, a_pk = feed.profile("anonymous_id:a").id, feed.profile("anonymous_id:a").pk
    b_id, b_pk = feed.profile("anonymous_id:b").id, feed.profile("anonymous_id:b").pk
    c_id, c_pk = feed.profile("anonymous_id:c").id, feed.profile("anonymous_id:c").pk
    # A <-> B: an event carrying identifiers of both.
    feed(
        {
            "type": "track",
            "anonymousId": "a",
            "event": "Linked",
            "context": {"traits": {"phone": "(415) 555-0100"}},
        }
    )
    assert feed.profile("anonymous_id:b").id == a_id
    # B <-> C: through B's identifier, now held by A.
    feed({"type": "alias", "previousId": "b", "userId": "u-c"})
    merged = feed.profile("user_id:u-c")
    assert merged.id == a_id  # the oldest profile wins
    assert {k for k in merged.identities} >= {
        ("anonymous_id", "a"),
        ("anonymous_id", "b"),
        ("anonymous_id", "c"),
        ("user_id", "u-c"),
        ("email", "a@x.io"),
        ("phone", "+14155550100"),
    }
    assert merged.traits["color"].value == "red" and merged.traits["size"].value == "M"
    assert merged.event_count == 5
    for old in (b_id, c_id):
        assert kairos.resolve(old) == a_pk
    merges = kairos.store.state.merges(a_pk)
    assert [(m.winner, m.loser, m.reason) for m in merges] == [
        (a_pk, b_pk, "shared_identifier"),
        (a_pk, c_pk, "alias"),
    ]
    assert merges[0].identities == [("phone", "+14155550100")]
    assert sorted(kairos.store.state.merged_keys(a_pk)) == sorted([b_pk, c_pk])
    # Events were re-attributed: the timeline of A holds all five.
    assert len(kairos.store.state.timeline(a_pk, 50, None)) == 5
    assert kairos.store.state.timeline(c_pk, 50, None) == []


def test_merge_chain_within_one_batch(feed: Feed, kairos: Kairos) -> None:
    feed(
        {"type": "page", "anonymousId": "a"},
        {"type": "page", "anonymousId": "b"},
        {"type": "page", "anonymousId": "c"},
        {"type": "alias", "previousId": "a", "userId": "u1"},
        {"type": "identify", "anonymousId": "b", "userId": "u1"},
        {"type": "identify", "anonymousId": "c", "traits": {"email": "c@x.io"}, "userId": "u1"},
    )
    p = feed.profile("user_id:u1")
    assert {("anonymous_id", x) for x in "abc"} <= p.identities
    assert len(kairos.store.state.timeline(p.pk, 50, None)) == 6
    assert kairos.store.state.count_profiles() == 1


def test_alias_cannot_merge_two_user_ids(feed: Feed) -> None:
    feed({"type": "identify", "userId": "u1"}, {"type": "identify", "userId": "u2"})
    feed({"type": "alias", "previousId": "u1", "userId": "u2"})
    assert feed.profile("user_id:u1").id != feed.profile("user_id:u2").id


def test_custom_identity_types_and_limits(feed: Feed) -> None:
    feed({"type": "identify", "userId": "u1", "traits": {"loyalty_card": "LC-1"}})
    feed(
        {
            "type": "track",
            "anonymousId": "pos-1",
            "event": "Order Completed",
            "context": {"traits": {"loyalty_card": "LC-1"}},
        }
    )
    assert feed.profile("loyalty_card:LC-1").id == feed.profile("user_id:u1").id
    assert feed.profile("anonymous_id:pos-1").id == feed.profile("user_id:u1").id
    # Limit 1 per profile: a second card on an event of u1 is dropped, u1 keeps its card.
    feed({"type": "identify", "userId": "u1", "traits": {"loyalty_card": "LC-2"}})
    p = feed.profile("user_id:u1")
    assert ("loyalty_card", "LC-1") in p.identities and ("loyalty_card", "LC-2") not in p.identities


def test_lower_priority_conflict_drops_only_the_conflicting_identifier(feed: Feed) -> None:
    feed({"type": "identify", "userId": "u1", "traits": {"email": "one@x.io"}})
    feed({"type": "identify", "userId": "u2", "traits": {"email": "two@x.io"}})
    # Carries u1 (highest priority), u2's email (conflicts: would merge two user ids) and a new anon id.
    feed({"type": "identify", "userId": "u1", "anonymousId": "fresh", "traits": {"email": "two@x.io"}})
    u1, u2 = feed.profile("user_id:u1"), feed.profile("user_id:u2")
    assert u1.id != u2.id
    assert ("anonymous_id", "fresh") in u1.identities
    assert ("email", "two@x.io") in u2.identities and ("email", "two@x.io") not in u1.identities


@pytest.mark.parametrize("new_id", ["abe", "zed"])
def test_alias_between_two_user_ids_keeps_the_events_own_id_whatever_the_spelling(feed: Feed, new_id: str) -> None:
    feed({"type": "identify", "userId": "old"}, {"type": "identify", "userId": new_id})
    feed({"type": "alias", "previousId": "old", "userId": new_id})
    old, new = feed.profile("user_id:old"), feed.profile(f"user_id:{new_id}")
    assert old.id != new.id
    assert (old.event_count, new.event_count) == (1, 2)  # the alias is on the event's own user id


def test_profile_ids_are_the_uuid5_of_their_key() -> None:
    """Profile ids are public and stored: the hand-written uuid5 must give exactly what ``uuid.uuid5`` gives."""
    import uuid

    from kairos.identity.resolver import _NAMESPACE, profile_id_for

    for pk in [*range(0, 100_000, 97), 2**31, 2**62, 10**18]:
        assert profile_id_for.__wrapped__(pk) == str(uuid.uuid5(_NAMESPACE, str(pk)))

"""No use ever takes a denied purpose: random consent histories, out of order, across a merge.

Each example is one person who starts as two profiles (a user id and an anonymous id) that state consents at
random event times, arriving in random order, and merge at a random point. The expected word per purpose is
the newest statement of either (a denial wins a tie). Then every use is asked: decisions (the offers of each
purpose, and personalization), deliveries and streams (the message rendered for a destination of each
purpose), segment exports and model training. One store serves all examples (a fresh person each).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from kairos.activate import destinations
from kairos.activate.messages import Item, render
from kairos.api import create_app
from kairos.privacy.training import training_gate
from kairos.runtime import Kairos
from tests.conftest import Feed, make_settings

PURPOSES = ("personalization", "marketing_email", "advertising")
Statement = tuple[str, str, bool, int]  # who ("u" or "a"), purpose, granted, second of the event time


class World:
    def __init__(self, store: dict[str, Any]) -> None:
        self.kairos = Kairos(make_settings(store, decide={"control_share": 0.0}))
        k = self.kairos
        self.feed = Feed(k, k.store.admin.add_source("web", "observed", 0))
        self.client = TestClient(create_app(k, run_processor=False), raise_server_exceptions=False)
        self.client.__enter__()
        _, admin = k.store.admin.add_api_key("admin", frozenset({"admin"}), 0)
        self.admin = {"Authorization": f"Bearer {admin}"}
        for p in PURPOSES:
            r = self.client.put(f"/v1/offers/{p}", json={"name": p, "purpose": p}, headers=self.admin)
            assert r.status_code == 201, r.text
            destinations.save(k, f"to_{p}", {"subscribe": {"moments": ["*"]}, "purpose": p})
        k.store.admin.put_definition("segment", "everyone", {"rule": "profile.event_count >= 1"}, 0)
        self.dests = destinations.load(k)
        self.gate = training_gate(k)
        self.people = itertools.count()

    def close(self) -> None:
        self.client.__exit__(None, None, None)
        self.kairos.close()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    # SQLite only: the fold and the gate are the same code on both backends (the consent tests run both).
    path = tmp_path_factory.mktemp("consent-properties") / "kairos.db"
    w = World({"url": f"sqlite:///{path}"})
    yield w
    w.close()


def expected(statements: list[Statement]) -> dict[str, bool]:
    """The newest statement per purpose; at the same time a denial; then the later arrival."""
    out: dict[str, tuple[int, bool, int, bool]] = {}
    for arrival, (_, purpose, granted, second) in enumerate(statements):
        key = (second, not granted, arrival, granted)
        if purpose not in out or key >= out[purpose]:
            out[purpose] = key
    return {p: k[3] for p, k in out.items()}


statements = st.lists(
    st.tuples(st.sampled_from("ua"), st.sampled_from(PURPOSES), st.booleans(), st.integers(0, 5)), max_size=8
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(said=statements, merge_at=st.integers(0, 8))
def test_no_use_takes_a_denied_purpose(world: World, said: list[Statement], merge_at: int) -> None:
    k, n = world.kairos, next(world.people)
    user, anon = f"p{n}", f"anon{n}"
    events: list[dict[str, Any]] = [{"type": "identify", "userId": user}, {"type": "identify", "anonymousId": anon}]
    merge = {"type": "identify", "userId": user, "anonymousId": anon}
    for i, (who, purpose, granted, second) in enumerate(said):
        if i == merge_at:
            events.append(merge)
        ids = {"userId": user} if who == "u" else {"anonymousId": anon}
        events.append({"type": "track", "event": "Consent", **ids, "timestamp": f"2026-03-01T10:00:0{second}Z",
                       "context": {"consent": {"categoryPreferences": {purpose: granted}}}})  # fmt: skip
    if merge_at >= len(said):
        events.append(merge)
    world.feed(*events)
    k.cache.clear()  # the test applied the events itself: no processor worker dropped the cached views
    pk = k.resolve(f"user_id:{user}")
    assert pk is not None and k.resolve(f"anonymous_id:{anon}") == pk
    profile = k.profile(pk)
    assert profile is not None
    want = expected(said)
    allowed = {p: want.get(p, k.consent_policy.purposes[p].default == "opt_out") for p in PURPOSES}
    stated = {p: c["granted"] for p, c in profile.sections["consents"].items()}
    assert stated == want

    # Decisions: an offer is shown only for an allowed purpose; no personalization, no personalized answer.
    k.processor.run_until_caught_up()
    world.client.app.state.decider.catalog.current(float("inf"))  # type: ignore[attr-defined]
    _, decide_key = k.store.admin.add_api_key(f"d{n}", frozenset({"decide"}), 0)
    answer = world.client.post("/v1/decide", json={"profile": f"user_id:{user}", "channel": "web", "limit": 3},
                               headers={"Authorization": f"Bearer {decide_key}"}).json()  # fmt: skip
    shown = {i["offer_id"] for i in answer["items"]}
    assert shown == {p for p in PURPOSES if allowed[p] or p == "personalization"}
    assert (answer["group"] == "policy") == allowed["personalization"]

    # Deliveries and streams: a message about the person is rendered only for an allowed purpose.
    item = Item("outbox", 1, f"x{n}", "moment", "m", profile.id, 0, {})
    for p in PURPOSES:
        assert (render(k, world.dests[f"to_{p}"], [item])[0] is not None) == allowed[p]

    # Segment exports and training.
    for p in PURPOSES:
        r = world.client.get(f"/v1/segments/everyone/members?purpose={p}&limit=1000", headers=world.admin)
        assert (profile.id in {m["profile_id"] for m in r.json()["items"]}) == allowed[p]
    assert (profile.id in world.gate([profile.id])) == (not allowed["personalization"])

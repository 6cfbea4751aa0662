"""Webhook delivery against real receivers on loopback: failing, slow, rate-limited and down ones."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from kairos.activate import destinations
from kairos.activate.worker import Breaker, backoff_seconds, retry_after_seconds, run_forever
from kairos.config import DeliverySettings
from kairos.runtime import Kairos
from kairos.store import Source
from tests.conftest import Feed, make_settings
from tests.receivers import Received, Receiver, free_port, receiver

SECRET = "whsec_test_0123456789"
FAST = {
    "backoff_base_seconds": 0.05,
    "backoff_cap_seconds": 2.0,
    "poll_interval_ms": 20,
    "breaker_failures": 3,
    "breaker_cooldown_seconds": 0.2,
    "max_attempts": 4,
    "timeout_seconds": 2.0,
}


@pytest.fixture
def kairos(store_settings: dict[str, Any]) -> Iterator[Kairos]:
    k = Kairos(make_settings(store_settings, delivery=FAST))
    yield k
    k.close()


@contextmanager
def delivering(kairos: Kairos) -> Iterator[None]:
    stop = threading.Event()
    thread = threading.Thread(target=run_forever, args=(kairos, stop, 7), daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(10)
        assert not thread.is_alive()


def wait_for(what: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not what():
        if time.monotonic() > deadline:
            pytest.fail("timed out")
        time.sleep(0.02)


def destination(kairos: Kairos, key: str, url: str, **extra: Any) -> None:
    body = {"url": url, "secret": SECRET, "subscribe": {"segments": ["vip"]}, "traits": ["plan"]}
    destinations.save(kairos, key, {"purpose": "marketing_email", **body, **extra})


def vip_people(kairos: Kairos, feed: Feed, n: int) -> set[str]:
    """``n`` people who enter ``vip`` and allow marketing e-mail, one who denies it, one who never said;
    the profile ids of the ``n``."""
    kairos.store.admin.put_definition("segment", "vip", {"rule": 'traits.plan == "pro"'}, kairos.clock.now())

    def consent(granted: bool | None) -> dict[str, Any]:
        if granted is None:
            return {}
        return {"context": {"consent": {"categoryPreferences": {"marketing_email": granted}}}}

    events = [{"type": "identify", "userId": f"u{i}", "traits": {"plan": "pro"}, **consent(True)} for i in range(n)]
    events.append({"type": "identify", "userId": "denied", "traits": {"plan": "pro"}, **consent(False)})
    events.append({"type": "identify", "userId": "unstated", "traits": {"plan": "pro"}})
    feed(*events)
    return {feed.profile(f"user_id:u{i}").id for i in range(n)}


def profiles(rec: Receiver) -> set[str]:
    return profiles_of(rec.accepted.values())


def profiles_of(got: Iterable[Received]) -> set[str]:
    return {str(r.message["profile_id"]) for r in got}


def test_every_message_arrives_signed_with_one_id_whatever_the_receiver_does(
    kairos: Kairos, feed: Feed, source: Source
) -> None:
    def flaky(n: int) -> tuple[int, dict[str, str], float]:
        return (503, {}, 0.0) if n <= 2 else (200, {}, 0.0)

    def slow(n: int) -> tuple[int, dict[str, str], float]:
        return 200, {}, 0.3

    def limited(n: int) -> tuple[int, dict[str, str], float]:
        return (429, {"Retry-After": "1"}, 0.0) if n == 1 else (202, {}, 0.0)

    with (
        receiver(SECRET) as healthy,
        receiver(SECRET, flaky) as flaky_rec,
        receiver(SECRET, slow) as slow_rec,
        receiver(SECRET, limited) as limited_rec,
    ):
        down = f"http://127.0.0.1:{free_port()}/hook"
        for key, url in (("healthy", healthy.url), ("flaky", flaky_rec.url), ("slow", slow_rec.url)):
            destination(kairos, key, url)
        destination(kairos, "limited", limited_rec.url)
        destination(kairos, "down", down)
        started = time.monotonic()
        expected = vip_people(kairos, feed, 10)
        with delivering(kairos):
            wait_for(lambda: len(healthy.accepted) == 10)
            healthy_done = time.monotonic() - started
            receivers = (healthy, flaky_rec, slow_rec, limited_rec)
            wait_for(lambda: all(len(r.accepted) == 10 for r in receivers))
            wait_for(lambda: len(kairos.store.deliveries.list("down", "dead", 100)) >= 1)
        for rec in receivers:
            assert profiles(rec) == expected  # the denied and the unstated person got nothing
            assert rec.signatures_verify()
            for r in rec.got:
                assert r.message["id"] == r.headers["idempotency-key"]
                assert r.message["type"] == "segment_entered" and r.message["key"] == "vip"
                assert r.message["traits"] == {"plan": "pro"}
            ids_per_profile: dict[str, set[object]] = {}
            for r in rec.got:
                ids_per_profile.setdefault(str(r.message["profile_id"]), set()).add(r.message["id"])
            assert all(len(ids) == 1 for ids in ids_per_profile.values())  # a retry carries the same id
        assert {n for n in flaky_rec.attempts.values()} == {3}
        assert {n for n in limited_rec.attempts.values()} == {2}
        for r in limited_rec.accepted.values():  # Retry-After: 1 was honoured
            first = min(g.at for g in limited_rec.got if g.message["id"] == r.message["id"])
            assert r.at - first >= 0.9
        # The broken, the slow and the limited destination did not hold the healthy one up.
        assert healthy_done < 3.0, healthy_done
        dead = kairos.store.deliveries.list("down", "dead", 100)
        assert {d.attempts for d in dead} == {FAST["max_attempts"]}
        assert all(d.last_error and d.last_error.startswith("connection: ") for d in dead)
        assert kairos.store.deliveries.retry("down", kairos.clock.now()) == len(dead)
        assert len(kairos.store.deliveries.list("down", "pending", 100)) == 10


def test_deliveries_pending_at_a_restart_go_out_after_it(kairos: Kairos, feed: Feed, source: Source) -> None:
    kairos.settings.delivery.max_attempts = 100
    port = free_port()
    destination(kairos, "later", f"http://127.0.0.1:{port}/hook")
    expected = vip_people(kairos, feed, 3)

    def tried() -> bool:
        pending = kairos.store.deliveries.list("later", "pending", 10)
        return len(pending) == 3 and all(d.attempts >= 1 for d in pending)

    with delivering(kairos):  # the receiver is down: every attempt fails
        wait_for(tried)
    pending = {d.id for d in kairos.store.deliveries.list("later", "pending", 10)}
    assert len(pending) == 3
    assert {d.status for d in kairos.store.deliveries.list("later", None, 10)} == {"pending", "suppressed"}
    with receiver(SECRET, port=port) as rec, delivering(kairos):
        wait_for(lambda: len(rec.accepted) == 3)
        # The receiver has them; their status is written when each answer is back (a stop in between would
        # send it again, with the same id: at least once).
        wait_for(lambda: not kairos.store.deliveries.list("later", "pending", 10))
    assert set(rec.accepted) == pending and profiles(rec) == expected
    assert {d.status for d in kairos.store.deliveries.list("later", None, 10)} == {"delivered", "suppressed"}


def holding(nth: int) -> tuple[Callable[[int], tuple[int, dict[str, str], float]], threading.Event, threading.Event]:
    """A receiver's answer that holds request ``nth`` (0-based) until released, and answers the others at once;
    with the event set when it is reached and the one that releases it."""
    reached, release = threading.Event(), threading.Event()
    requests = itertools.count()

    def answer(n: int) -> tuple[int, dict[str, str], float]:
        if next(requests) == nth:
            reached.set()
            release.wait(15)
        return 200, {}, 0.0

    return answer, reached, release


def test_a_delivery_read_ahead_is_built_and_consent_checked_only_when_it_is_sent(
    kairos: Kairos, feed: Feed, source: Source
) -> None:
    """Due deliveries are read ``delivery.batch_size`` at a time and wait in the worker's memory: a consent
    withdrawn while one waits there still stops it."""
    from kairos.privacy.consents import record

    kairos.settings.delivery.concurrency = 1
    kairos.settings.delivery.timeout_seconds = 15.0
    hold_the_first, first_in, release = holding(0)
    with receiver(SECRET, hold_the_first) as rec:
        destination(kairos, "crm", rec.url)
        people = vip_people(kairos, feed, 3)
        with delivering(kairos):
            assert first_in.wait(15)  # one sent; the others (read with it) wait behind it, their bodies unbuilt
            (first,) = profiles_of(rec.got)
            withdrawn = sorted(people - {first})[-1]
            pk = kairos.store.state.resolve_id(withdrawn)
            assert pk is not None
            record(kairos, pk, consents={"marketing_email": False}, via="api")
            kairos.processor.run_until_caught_up()
            release.set()
            wait_for(lambda: not kairos.store.deliveries.list("crm", "pending", 10))
    assert profiles(rec) == people - {withdrawn} and profiles_of(rec.got) == people - {withdrawn}
    suppressed = kairos.store.deliveries.list("crm", "suppressed", 10)
    assert withdrawn in {d.profile_id for d in suppressed}


def test_read_ahead_and_outcomes_recorded_rounds_later_send_each_message_once(
    kairos: Kairos, feed: Feed, source: Source
) -> None:
    """Outcomes wait a few rounds before they are recorded, and due deliveries are read ahead in batches: a
    delivery sent but not yet recorded is still pending in the store, so it must be recorded before the next
    read, or it would go out twice."""
    kairos.settings.delivery.concurrency = 2
    kairos.settings.delivery.batch_size = 5  # a read takes 5; a round sends 2
    with receiver(SECRET) as rec:
        destination(kairos, "crm", rec.url)
        people = vip_people(kairos, feed, 12)
        with delivering(kairos):
            wait_for(lambda: len(kairos.store.deliveries.list("crm", "delivered", 100)) == 12)
    assert len(rec.got) == 12 and profiles_of(rec.got) == people
    delivered = kairos.store.deliveries.list("crm", "delivered", 100)
    assert {d.attempts for d in delivered} == {1}
    uses = kairos.store.uses.of(sorted(people), 100)
    assert sorted(u.ref for u in uses) == sorted(d.id for d in delivered)  # one ledger row each


def test_outcomes_not_yet_recorded_are_recorded_when_the_worker_stops(
    kairos: Kairos, feed: Feed, source: Source
) -> None:
    kairos.settings.delivery.concurrency = 1  # rounds of one: outcomes are recorded four at a time
    hold_the_seventh, reached, release = holding(6)
    with receiver(SECRET, hold_the_seventh) as rec:
        destination(kairos, "crm", rec.url)
        vip_people(kairos, feed, 10)
        with delivering(kairos):
            assert reached.wait(15)  # 1-4 recorded, 5 and 6 answered but not recorded, 7 in flight
        release.set()
    assert len(kairos.store.deliveries.list("crm", "delivered", 100)) == 6  # not sent again after a restart
    assert len(rec.got) == 7


def test_a_destination_changed_while_outcomes_wait_sends_none_of_them_again(
    kairos: Kairos, feed: Feed, source: Source
) -> None:
    """A changed destination gets a new runner: the old one records the outcomes it holds before the new one
    reads what is due, or the new one would send those deliveries again."""
    from collections import Counter

    kairos.settings.delivery.concurrency = 1  # rounds of one: outcomes are recorded four at a time
    hold_the_seventh, reached, release = holding(6)
    with receiver(SECRET, hold_the_seventh) as rec:
        destination(kairos, "crm", rec.url)
        people = vip_people(kairos, feed, 10)
        with delivering(kairos):
            assert reached.wait(15)  # 1-4 recorded, 5 and 6 answered but not recorded, 7 in flight
            destination(kairos, "crm", rec.url, traits=["plan", "email"])  # a new version: a new runner
            time.sleep(1.5)  # the worker looks for changed destinations every second
            release.set()
            wait_for(lambda: len(kairos.store.deliveries.list("crm", "delivered", 100)) == 10)
    assert profiles_of(rec.got) == people
    twice = [i for i, n in Counter(r.message["id"] for r in rec.got).items() if n > 1]
    assert len(twice) <= 1  # at most the one in flight when its runner stopped, sent again with its id


def test_backoff_grows_with_jitter_and_retry_after_is_read() -> None:
    import random

    s = DeliverySettings(backoff_base_seconds=1.0, backoff_cap_seconds=60.0)
    rng = random.Random(1)
    waits = [backoff_seconds(n, s, rng) for n in range(1, 10)]
    assert 0.5 <= waits[0] <= 1.0 and 1.0 <= waits[1] <= 2.0 and 30.0 <= waits[-1] <= 60.0
    assert retry_after_seconds("7", 0.0) == 7.0
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT", 1445412470.0) == 10.0
    assert retry_after_seconds("soon", 0.0) is None and retry_after_seconds(None, 0.0) is None


def test_breaker_opens_after_failures_and_probes_after_the_cooldown() -> None:
    b = Breaker(failures=2, cooldown=10.0)
    assert b.capacity(4, 0.0) == 4
    b.failed(1.0)
    assert b.capacity(4, 1.0) == 4
    b.failed(2.0)
    assert b.state == "open" and b.capacity(4, 5.0) == 0 and b.wait(5.0) == 7.0
    assert b.capacity(4, 12.0) == 1 and b.state == "half_open"
    b.failed(12.5)
    assert b.state == "open" and b.capacity(4, 13.0) == 0
    assert b.capacity(4, 23.0) == 1
    b.succeeded()
    assert b.state == "closed" and b.capacity(4, 23.0) == 4


def test_replay_keeps_deliveries_and_cursors_and_delivers_nothing_twice(
    kairos: Kairos, feed: Feed, source: Source
) -> None:
    with receiver(SECRET) as rec:
        destination(kairos, "crm", rec.url)
        vip_people(kairos, feed, 2)
        with delivering(kairos):
            wait_for(lambda: len(rec.accepted) == 2)
            # Received is not yet recorded: stopped in between, the worker would rightly send them again
            # (at least once), which is not what this test is about.
            wait_for(
                lambda: [d.status for d in kairos.store.deliveries.list("crm", "delivered", 10)] == ["delivered"] * 2
            )
        before = (kairos.store.outbox.last_id(), kairos.store.deliveries.cursor("crm"))
        kairos.store.state.reset()  # what `kairos replay` does, then it applies the log again
        kairos.processor.run_until_caught_up()
        assert (kairos.store.outbox.last_id(), kairos.store.deliveries.cursor("crm")) == before
        with delivering(kairos):
            time.sleep(0.5)
        assert len(rec.got) == 2
        assert {d.status for d in kairos.store.deliveries.list("crm", None, 10)} == {"delivered", "suppressed"}


def test_moment_messages_are_selected_by_key() -> None:
    from kairos.activate.messages import from_outbox
    from kairos.store import Definition, OutboxMessage

    m = OutboxMessage(7, "42:0", "moment", "p1", {"moment": "cart_abandoned", "at": 1000, "seqs": [3, 4]}, 2000)
    item = from_outbox(m)
    assert item is not None and (item.type, item.key, item.occurred_at, item.data) == (
        "moment", "cart_abandoned", 1000, {"seqs": [3, 4]}
    )  # fmt: skip
    dest = destinations.compile_destination(
        Definition("destination", "d", 1, 1, {"subscribe": {"moments": ["*"]}, "purpose": "analytics"}, False, 0, 0)
    )
    assert dest.wants("moment", "cart_abandoned") and not dest.wants("segment_entered", "vip")
    assert from_outbox(OutboxMessage(8, "k", "something_else", None, {}, 0)) is None


def test_an_abandoned_cart_moment_is_delivered_signed_to_whoever_allowed_it(
    kairos: Kairos, feed: Feed, source: Source
) -> None:
    cart = {"when": {"event": "Product Added", "not_followed_by": {"event": "Order Completed"}, "within": "1m"}}
    kairos.store.admin.put_definition("moment", "abandoned_cart", cart, kairos.clock.now())
    allowed = {"context": {"consent": {"categoryPreferences": {"marketing_email": True}}}}
    denied = {"context": {"consent": {"categoryPreferences": {"marketing_email": False}}}}
    past = "2020-01-01T00:00:00Z"  # a minute later is long gone: the timers are due at once
    with receiver(SECRET) as rec:
        destination(kairos, "crm", rec.url, subscribe={"moments": ["abandoned_cart"]})
        feed(
            {"type": "identify", "userId": "yes", "traits": {"plan": "pro"}, **allowed},
            {"type": "identify", "userId": "no", **denied},
            {"type": "track", "userId": "yes", "event": "Product Added", "timestamp": past},
            {"type": "track", "userId": "no", "event": "Product Added", "timestamp": past},
        )
        kairos.processor.run_until_caught_up()
        with delivering(kairos):
            wait_for(lambda: len(rec.accepted) == 1)
            time.sleep(0.3)  # nothing more comes
        (got,) = rec.accepted.values()
        assert got.message["type"] == "moment" and got.message["key"] == "abandoned_cart"
        assert got.message["profile_id"] == feed.profile("user_id:yes").id
        assert got.message["traits"] == {"plan": "pro"}
        assert rec.signatures_verify() and len(rec.got) == 1


def test_a_request_aiohttp_will_not_build_is_dead_and_the_destination_goes_on(
    kairos: Kairos, feed: Feed, source: Source
) -> None:
    """A definition stored before its header values were checked: aiohttp raises ValueError building the
    request, which used to end every round of the destination (nothing was ever recorded)."""
    with receiver(SECRET) as rec:
        destination(kairos, "crm", rec.url)
        d = kairos.store.admin.definition("destination", "crm")
        assert d is not None
        body = {**d.body, "headers": {"X-Tenant": "a\x01b"}}
        kairos.store.admin.put_definition("destination", "crm", body, kairos.clock.now())
        destination(kairos, "other", rec.url)
        people = vip_people(kairos, feed, 3)
        with delivering(kairos):
            wait_for(lambda: len(kairos.store.deliveries.list("crm", "dead", 10)) == 3)
            wait_for(lambda: len(rec.accepted) == 3)
    assert profiles(rec) == people and len(rec.got) == 3  # all for "other"
    dead = kairos.store.deliveries.list("crm", "dead", 10)
    assert {(d.attempts, d.last_error) for d in dead} == {(1, "invalid request: ValueError")}


def test_a_url_stored_before_the_rule_that_refuses_it_is_never_sent_to(
    kairos: Kairos, feed: Feed, source: Source
) -> None:
    """A url stored before it was checked (a tab inside the host: yarl drops it and sends to another host)
    went on being delivered to the host yarl read; its deliveries are now dead, unsent, with the reason."""
    with receiver(SECRET) as rec:
        destination(kairos, "crm", rec.url)
        d = kairos.store.admin.definition("destination", "crm")
        assert d is not None
        misread = rec.url.replace("127.0.0.1", "127.0.0.\t1")
        kairos.store.admin.put_definition("destination", "crm", {**d.body, "url": misread}, kairos.clock.now())
        destination(kairos, "other", rec.url)
        people = vip_people(kairos, feed, 3)
        with delivering(kairos):
            wait_for(lambda: len(kairos.store.deliveries.list("crm", "dead", 10)) == 3)
            wait_for(lambda: len(rec.accepted) == 3)
    assert profiles(rec) == people and len(rec.got) == 3  # all for "other": none went to the misread host
    dead = kairos.store.deliveries.list("crm", "dead", 10)
    assert {d.attempts for d in dead} == {1}
    assert all((d.last_error or "").startswith("invalid url: url must not contain spaces") for d in dead)
    assert all("127.0.0" not in (d.last_error or "") for d in dead)  # the url is never quoted


def test_a_host_at_a_blocked_address_gets_nothing_and_its_deliveries_are_dead_at_once(
    kairos: Kairos, feed: Feed, source: Source
) -> None:
    """delivery.blocked_networks holds at sending time too: a name is checked on the addresses it resolves to
    (``localhost`` here; DNS may change after the save), an address saved before its network was blocked on
    itself; neither is sent anything."""
    from kairos.errors import ValidationError

    with receiver(SECRET) as rec:
        named = rec.url.replace("127.0.0.1", "localhost")
        destination(kairos, "literal", rec.url)
        destination(kairos, "named", named)
        kairos.settings.delivery.blocked_networks = ["127.0.0.0/8", "::1/128"]
        with pytest.raises(ValidationError) as refused:  # an address is refused at save ...
            destination(kairos, "literal", rec.url, traits=["email"])
        assert (refused.value.code, refused.value.field) == ("blocked_address", "url")
        destination(kairos, "named", named, traits=["plan", "email"])  # ... a name is not: it is checked when sent
        vip_people(kairos, feed, 3)
        with delivering(kairos):
            wait_for(lambda: len(kairos.store.deliveries.list("named", "dead", 10)) == 3)
            wait_for(lambda: len(kairos.store.deliveries.list("literal", "dead", 10)) == 3)
        assert rec.got == []
        for key in ("literal", "named"):
            dead = kairos.store.deliveries.list(key, "dead", 10)
            assert {(d.attempts, d.last_status, d.latency_ms) for d in dead} == {(1, None, None)}
            assert {d.last_error for d in dead} == {
                "blocked address: 127.0.0.1 is in 127.0.0.0/8 (delivery.blocked_networks)"
            }
        # Unblocked, the same name is delivered to: the check is on the addresses, not on the name.
        kairos.settings.delivery.blocked_networks = []
        assert kairos.store.deliveries.retry("named", kairos.clock.now()) == 3
        with delivering(kairos):
            wait_for(lambda: len(rec.accepted) == 3)


def test_blocked_networks_are_checked_and_normalized(monkeypatch: pytest.MonkeyPatch) -> None:
    from kairos.config import load_settings
    from kairos.errors import ConfigError

    default = DeliverySettings().blocked_networks
    assert {"169.254.0.0/16", "fe80::/10", "fd00:ec2::254/128"} <= set(default)
    assert not any(n.startswith(("127.", "10.", "192.168.", "::1")) for n in default)  # loopback, private: allowed
    assert DeliverySettings(blocked_networks=[" 127.0.0.0/8", "::1"]).blocked_networks == ["127.0.0.0/8", "::1/128"]
    for bad in ("10.0.0.1/8", "nope", "300.0.0.0/8", "10.0.0.0/33"):
        with pytest.raises(ValueError, match="blocked_networks"):
            DeliverySettings(blocked_networks=[bad])
    monkeypatch.setenv("KAIROS__DELIVERY__BLOCKED_NETWORKS", '["127.0.0.0/8"]')
    assert load_settings().delivery.blocked_networks == ["127.0.0.0/8"]
    monkeypatch.setenv("KAIROS__DELIVERY__BLOCKED_NETWORKS", '["127.0.0.1/8"]')
    with pytest.raises(ConfigError, match="host bits set"):
        load_settings()


@pytest.mark.parametrize(
    ("address", "leads_to"),
    [("::ffff:169.254.169.254", "169.254.169.254"), ("64:ff9b::169.254.169.254", "169.254.169.254"),
     ("2002:a9fe:a9fe::1", "169.254.169.254"), ("::169.254.169.254", "169.254.169.254"),
     ("2001:0:4136:e378:8000:63bf:5601:5601", "169.254.169.254"),  # Teredo: the client, bits inverted
     ("2001:0:a9fe:a9fe::1", "169.254.169.254"),  # Teredo: the server
     ("64:ff9b:1:2::a9fe:a9fe", "169.254.169.254"),  # RFC 8215's local-use prefix, as a /96
     ("::1", None), ("::", None), ("64:ff9b::a00:5", "10.0.0.5"), ("fd12::1", None)],
)  # fmt: skip
def test_an_ipv6_address_is_checked_as_the_ipv4_address_it_leads_to(address: str, leads_to: str | None) -> None:
    from ipaddress import IPv4Address, IPv6Address

    from kairos.activate._network import blocked_by, embedded_ipv4, networks

    found = embedded_ipv4(IPv6Address(address))
    assert (IPv4Address(leads_to) in found) if leads_to else not found, found
    blocked = blocked_by(address, networks(["169.254.0.0/16"]))
    assert (str(blocked) if blocked else None) == ("169.254.0.0/16" if leads_to == "169.254.169.254" else None)


def test_the_resolver_refuses_a_name_with_any_blocked_address_and_leaves_the_event_loop_free(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The worker is async: a slow DNS answer must not hold its other destinations' requests up."""
    import asyncio
    import socket

    import aiohttp

    from kairos.activate._network import BlockedAddress, GuardedResolver, networks

    real = socket.getaddrinfo

    def slow(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host != "metadata.test":
            return real(host, port, *args, **kwargs)
        time.sleep(0.3)
        tcp = (socket.AF_INET, socket.SOCK_STREAM, 6, "")
        return [(*tcp, ("10.0.0.7", port)), (*tcp, ("169.254.169.254", port))]

    monkeypatch.setattr(socket, "getaddrinfo", slow)

    async def main() -> tuple[int, BlockedAddress]:
        resolver = GuardedResolver(aiohttp.DefaultResolver(), networks(["169.254.0.0/16"]))
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        ticking = asyncio.create_task(tick())
        try:
            await resolver.resolve("metadata.test", 80)
        except BlockedAddress as exc:
            return ticks, exc
        finally:
            ticking.cancel()
            await resolver.close()
        raise AssertionError("not refused")

    ticks, refused = asyncio.run(main())
    assert ticks >= 10, ticks  # the loop ran while getaddrinfo waited
    assert refused.address == "169.254.169.254"  # the second address: any blocked one refuses the host
    assert refused.reason == "blocked address: 169.254.169.254 is in 169.254.0.0/16 (delivery.blocked_networks)"

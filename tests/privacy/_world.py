"""A person known through three sources, and everything Kairos can hold about them, for export and erasure.

Jane is seen on the web (an anonymous id), in the app (a user id and an e-mail address, which merges her
web profile into her app one), and in the CRM (a CRM id and a phone number). She has stated and observed
traits, is in the ``vip`` segment, has a moment that fired and a timer still pending (an abandoned cart not
yet due), decisions with a reward, and deliveries of her segment entry to a real webhook receiver. Bob is
someone else, with values of his own, who must come out of Jane's erasure untouched.

Every value of Jane's is unique, so that a scan of the stores for it can only find Jane.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
from starlette.testclient import TestClient

from kairos.activate import destinations
from kairos.api import create_app
from kairos.decide.attribution import subject_of
from kairos.pipeline.clock import ManualClock
from kairos.runtime import Kairos
from kairos.store import Source
from tests.conftest import Feed, make_settings
from tests.receivers import receiver
from tests.test_delivery import delivering, wait_for

T0 = 1_780_000_000_000
MINUTE = 60_000
SECRET = "whsec_privacy_0123456789"
CART = {"when": {"event": "Product Added", "not_followed_by": {"event": "Order Completed"}, "within": "1h"}}
VIEWED = {"when": {"event": "Pricing Viewed"}}
FAST = {"backoff_base_seconds": 0.05, "poll_interval_ms": 20, "max_attempts": 4, "timeout_seconds": 2.0}

# Jane's identifiers as sent (the e-mail in mixed case: stored normalized) and her trait values.
JANE_IDS = {
    "anonymous_id": "anon-jane-7f3kq",
    "user_id": "u-jane-9qzx",
    "email": "Jane.Unique-77@Example.org",
    "crm_id": "crm-jane-445566",
    "phone": "+33 6 12 98 76 54",
}
JANE_TRAITS = {"favourite_colour": "vermilion-jq7", "nickname": "jj-zebra-31", "city_name": "Quimperle-xq"}
BOB_IDS = {"user_id": "u-bob-1", "email": "bob.other@example.net"}
BOB_TRAITS = {"favourite_colour": "teal-bob-5", "nickname": "bobby-k2"}


def needles() -> list[str]:
    """Every identifier value (as sent and normalized) and trait value of Jane's."""
    out = {*JANE_IDS.values(), JANE_IDS["email"].lower(), *JANE_TRAITS.values()}
    out.add("33612987654")  # the phone's digits, however it is normalized
    return sorted(out)


@dataclass
class World:
    store: dict[str, Any]
    clock: ManualClock = field(default_factory=lambda: ManualClock(T0))
    kairos: Kairos = field(init=False)
    sources: dict[str, Source] = field(init=False)
    feeds: dict[str, Feed] = field(init=False)
    client: TestClient = field(init=False)
    keys: dict[str, dict[str, str]] = field(init=False)
    decisions: list[str] = field(default_factory=list)
    delivered: int = 0

    def __post_init__(self) -> None:
        settings = make_settings(
            self.store,
            decide={"control_share": 0.0, "snapshot_seconds": 3600.0},
            delivery=FAST,
        )
        self.kairos = Kairos(settings, clock=self.clock)
        admin = self.kairos.store.admin
        self.sources = {
            name: admin.add_source(name, kind, T0)
            for name, kind in (("web", "observed"), ("app", "stated"), ("crm", "third_party"))
        }
        self.feeds = {name: Feed(self.kairos, source) for name, source in self.sources.items()}
        for name, feed in self.feeds.items():
            feed.n = {"web": 0, "app": 1000, "crm": 2000}[name]  # message ids unique across sources
        self.keys = {}
        for name, scopes in (
            ("privacy", {"privacy"}),
            ("read", {"read"}),
            ("admin", {"admin"}),
            ("decide", {"decide"}),
        ):
            _, secret = admin.add_api_key(name, frozenset(scopes), T0)
            self.keys[name] = {"Authorization": f"Bearer {secret}"}
        self.app = create_app(self.kairos, run_processor=False)
        self.client = TestClient(self.app, raise_server_exceptions=False)
        self.client.__enter__()

    def close(self) -> None:
        self.client.__exit__(None, None, None)
        self.kairos.close()

    def send(self, source: str, *events: dict[str, Any], process: bool = True) -> list[int]:
        return self.feeds[source](*events, process=process)

    def decide(self, ref: str) -> dict[str, Any]:
        self.app.state.decider.catalog.current(float("inf"))
        r = self.client.post("/v1/decide", json={"profile": ref, "channel": "web"}, headers=self.keys["decide"])
        assert r.status_code == 200, r.text
        out: dict[str, Any] = r.json()
        return out

    def populate(self, tmp: Path) -> None:
        """Jane and Bob, with everything listed in the module doc."""
        k = self.kairos
        admin = k.store.admin
        admin.put_definition("segment", "vip", {"rule": 'traits.plan == "pro"'}, T0)
        admin.put_definition("moment", "abandoned_cart", CART, T0)
        admin.put_definition("moment", "pricing_viewed", VIEWED, T0)
        r = self.client.put("/v1/offers/upgrade", json={"name": "Upgrade"}, headers=self.keys["admin"])
        assert r.status_code in (200, 201), r.text
        consent = {"consent": {"categoryPreferences": {"marketing_email": True, "personalization": True}}}
        with receiver(SECRET) as rec:
            destinations.save(
                k,
                "crm_hook",
                {
                    "url": rec.url,
                    "secret": SECRET,
                    "purpose": "marketing_email",
                    "subscribe": {"segments": ["vip"]},
                    "traits": ["nickname"],
                },
            )
            self.send("web", {"type": "page", "anonymousId": JANE_IDS["anonymous_id"], "name": "Home"})
            self.send("web", {"type": "track", "anonymousId": JANE_IDS["anonymous_id"], "event": "Pricing Viewed"})
            self.send(
                "app",
                {
                    "type": "identify",
                    "userId": JANE_IDS["user_id"],
                    "traits": {"email": JANE_IDS["email"], "plan": "pro", **JANE_TRAITS},
                    "context": consent,
                },
            )
            # The app learns her anonymous id: her web profile merges into her app one.
            self.send(
                "app",
                {
                    "type": "track",
                    "userId": JANE_IDS["user_id"],
                    "anonymousId": JANE_IDS["anonymous_id"],
                    "event": "App Opened",
                },
            )
            self.send(
                "crm",
                {
                    "type": "identify",
                    "userId": JANE_IDS["user_id"],
                    "traits": {"crm_id": JANE_IDS["crm_id"], "phone": JANE_IDS["phone"]},
                },
            )
            self.send(
                "app",
                {
                    "type": "identify",
                    "userId": BOB_IDS["user_id"],
                    "traits": {"email": BOB_IDS["email"], "plan": "pro", **BOB_TRAITS},
                    "context": consent,
                },
            )
            self.clock.advance(MINUTE)
            self.send(
                "web",
                {
                    "type": "track",
                    "userId": JANE_IDS["user_id"],
                    "event": "Product Added",
                    "properties": {"sku": "sku-jane-only-81"},
                },
            )
            for ref in (f"user_id:{JANE_IDS['user_id']}", f"user_id:{BOB_IDS['user_id']}"):
                self.decisions.append(self.decide(ref)["decision_id"])
            reward = {"decision_id": self.decisions[0], "offer_id": "upgrade", "reward": 1.0}
            r = self.client.post("/v1/rewards", json=reward, headers=self.keys["decide"])
            assert r.status_code == 200, r.text
            with delivering(k):  # received and recorded as delivered (with its data-use entry)
                wait_for(lambda: len(k.store.deliveries.list("crm_hook", "delivered", 10)) >= 2)
            self.delivered = len(rec.accepted)

    def jane(self) -> int:
        pk = self.kairos.resolve(f"user_id:{JANE_IDS['user_id']}")
        assert pk is not None
        return pk

    def jane_subjects(self) -> list[str]:
        ids = [("user_id", JANE_IDS["user_id"]), ("anonymous_id", JANE_IDS["anonymous_id"])]
        return [subject_of(t, v) for t, v in ids]


# -- scanning every table of every database --------------------------------------------------------------
def _texts(value: Any) -> list[str]:
    """A column's value as text to search: itself, and decoded when it is JSON or msgpack."""
    if value is None or isinstance(value, bool | int | float):
        return []
    if isinstance(value, memoryview):
        value = bytes(value)
    if isinstance(value, bytes):
        out = [value.decode("utf-8", "replace"), value.decode("latin-1")]
        for decode in (msgspec.msgpack.decode, msgspec.json.decode):
            with contextlib.suppress(Exception):
                out.append(msgspec.json.encode(decode(value)).decode())
        return out
    if isinstance(value, str):
        out = [value]
        with contextlib.suppress(Exception):
            out.append(msgspec.json.encode(msgspec.json.decode(value)).decode())
        return out
    return [msgspec.json.encode(value, enc_hook=str).decode()]  # PostgreSQL jsonb, arrays


def scan(kairos: Kairos, values: list[str]) -> dict[str, list[str]]:
    """Every table of every database the store uses, enumerated from the catalog, every column of every
    row: {table: [values found]}. Nothing is listed by hand."""
    found: dict[str, list[str]] = {}
    store: Any = kairos.store
    lowered = [v.lower() for v in values]
    for db in dict.fromkeys((store.log_db, store.db, store.decisions_db)):
        with db.conn() as conn:
            if db.d.name == "sqlite":
                tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
            else:
                tables = [
                    r[0]
                    for r in conn.execute(
                        "SELECT table_name FROM information_schema.tables WHERE table_schema = %s", (db.d.schema,)
                    ).fetchall()
                ]
            for table in tables:
                for row in conn.execute(f"SELECT * FROM {table}").fetchall():
                    for value in row:
                        for text in _texts(value):
                            low = text.lower()
                            hits = [v for v, lv in zip(values, lowered, strict=True) if lv in low]
                            if hits:
                                found.setdefault(f"{getattr(db.d, 'path', '')}:{table}", []).extend(hits)
    return found

"""Realistic Segment events for the benchmarks, generated from a seed so that every run sends the same data.

Events look like what ``analytics.js`` and ``analytics-python`` send: a ``messageId``, ids, a library and
page context, and properties or traits; one is about 420 bytes of JSON.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

__all__ = ["Person", "Stream", "batch_body", "event_size", "identify", "page", "people", "track", "uuid_from"]

EVENTS = (
    ("Product Viewed", "/products/"),
    ("Product Added", "/cart"),
    ("Checkout Started", "/checkout"),
    ("Order Completed", "/checkout/done"),
    ("Signed In", "/account"),
)
PLANS = ("free", "basic", "pro", "enterprise")
CITIES = ("Berlin", "Lisbon", "Austin", "Osaka", "Lyon", "Accra", "Quito", "Perth")
AGENT = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X)"
EPOCH = datetime(2026, 3, 1, tzinfo=UTC)


def uuid_from(rng: random.Random) -> str:
    """A UUID4-shaped string from ``rng`` (``uuid.uuid4`` cannot take a seed)."""
    h = f"{rng.getrandbits(128):032x}"
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-a{h[17:20]}-{h[20:]}"


def _iso(t: datetime) -> str:
    return t.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(slots=True)
class Person:
    index: int
    user_id: str | None  # None: never identifies
    email: str | None
    devices: list[str]  # anonymous ids, one per browser or app install
    identified: set[str] = field(default_factory=set)  # devices on which the person has identified


def people(n: int, rng: random.Random, known: float = 0.6, two_devices: float = 0.2) -> list[Person]:
    out = []
    for i in range(n):
        is_known = rng.random() < known
        devices = [uuid_from(rng) for _ in range(2 if rng.random() < two_devices else 1)]
        out.append(
            Person(
                i,
                f"usr_{i:07d}" if is_known else None,
                f"person.{i}@mail.example.org" if is_known else None,
                devices,
            )
        )
    return out


def _context(path: str) -> dict[str, Any]:
    return {
        "library": {"name": "analytics.js", "version": "5.2.1"},
        "page": {"path": path},
        "userAgent": AGENT,
    }


def track(rng: random.Random, message_id: str, anonymous_id: str, user_id: str | None, ts: datetime) -> dict[str, Any]:
    name, path = EVENTS[rng.randrange(len(EVENTS))]
    event: dict[str, Any] = {
        "type": "track",
        "messageId": message_id,
        "anonymousId": anonymous_id,
        "event": name,
        "properties": {
            "product_id": f"sku-{rng.randrange(100_000):05d}",
            "price": round(rng.uniform(3, 400), 2),
            "currency": "EUR",
        },
        "context": _context(path),
        "timestamp": _iso(ts),
    }
    if user_id is not None:
        event["userId"] = user_id
    return event


def page(rng: random.Random, message_id: str, anonymous_id: str, user_id: str | None, ts: datetime) -> dict[str, Any]:
    path = f"/c/{rng.choice(('shoes', 'bags', 'coats', 'hats'))}/{rng.randrange(1000)}"
    event: dict[str, Any] = {
        "type": "page",
        "messageId": message_id,
        "anonymousId": anonymous_id,
        "name": "Category",
        "properties": {"path": path, "title": "Shop"},
        "context": _context(path),
        "timestamp": _iso(ts),
    }
    if user_id is not None:
        event["userId"] = user_id
    return event


def identify(
    rng: random.Random, message_id: str, anonymous_id: str | None, person: Person, ts: datetime
) -> dict[str, Any]:
    assert person.user_id is not None and person.email is not None
    event: dict[str, Any] = {
        "type": "identify",
        "messageId": message_id,
        "userId": person.user_id,
        "traits": {
            "email": person.email,
            "name": f"Person {person.index}",
            "plan": PLANS[person.index % len(PLANS)],
            "city": CITIES[person.index % len(CITIES)],
        },
        "context": _context("/account"),
        "timestamp": _iso(ts),
    }
    if anonymous_id is not None:
        event["anonymousId"] = anonymous_id
    return event


class Stream:
    """Events of a population of people browsing a shop, in time order.

    A known person identifies on each device sooner or later, which stitches that device's anonymous
    history to the person (and merges profiles when a second device identifies). Unknown people only
    browse anonymously.
    """

    def __init__(self, population: list[Person], seed: int, identify_rate: float = 0.15) -> None:
        self.population = population
        self.rng = random.Random(seed)
        self.identify_rate = identify_rate
        self.ts = EPOCH

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return self

    def __next__(self) -> dict[str, Any]:
        rng = self.rng
        person = self.population[rng.randrange(len(self.population))]
        device = person.devices[rng.randrange(len(person.devices))]
        self.ts += timedelta(milliseconds=rng.randrange(1, 50))
        mid = uuid_from(rng)
        if person.user_id is not None and device not in person.identified and rng.random() < self.identify_rate:
            person.identified.add(device)
            return identify(rng, mid, device, person, self.ts)
        user_id = person.user_id if device in person.identified else None
        if rng.random() < 0.4:
            return page(rng, mid, device, user_id, self.ts)
        return track(rng, mid, device, user_id, self.ts)


def batch_body(events: list[dict[str, Any]], sent_at: datetime | None = None) -> dict[str, Any]:
    return {"batch": events, "sentAt": _iso(sent_at or datetime.now(UTC))}


def event_size(events: list[dict[str, Any]]) -> float:
    """Mean size of the events as compact JSON, in bytes."""
    import msgspec

    return sum(len(msgspec.json.encode(e)) for e in events) / max(1, len(events))

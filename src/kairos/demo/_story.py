"""The demo data set: Jane Doe's story across five channels, then a crowd of background customers.

Jane (``userId`` ``u-jane``) browses the web anonymously, signs up, shops in the mobile app, buys in a store
with her loyalty card and calls the call centre. No two of those channels share an identifier that is
spelled the same way (her email is typed in mixed case with spaces, her phone in two formats, the store
only knows her card), so the demo shows identity resolution doing its job: with ``loyalty_card`` and
``crm_id`` configured as custom identity types, all five channels end in one profile.

Everything is derived from ``seed`` and ``now`` with a private :class:`random.Random`, so two calls with the
same arguments return identical events (``messageId`` included): loading the demo twice adds nothing.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final

__all__ = ["DEMO_NOW", "SHARED_ANONYMOUS_ID", "SOURCES", "STORY_USER_ID", "demo_events"]

Event = dict[str, Any]
Ids = dict[str, str]
Product = tuple[str, str, float]  # (sku, name, price in USD)

STORY_USER_ID: Final = "u-jane"
# Two members of one family sign in from the same laptop: a user_id limit of 1 must keep them apart.
SHARED_ANONYMOUS_ID: Final = "anon-family-laptop"
SOURCES: Final = ("web", "app", "store", "callcentre", "crm")
# A fixed default so that the output does not depend on when the demo runs.
DEMO_NOW: Final = datetime(2026, 11, 1, 12, tzinfo=UTC)

_SITE: Final = "https://shop.northwind.example"
# Data tables, kept one row per line by hand: the formatter would spend a line per item.
# fmt: off
_FIRST: Final = (
    "Ava", "Ben", "Chloe", "Daniel", "Emma", "Farid", "Grace", "Hiro", "Isla", "Jonas", "Kira", "Liam",
    "Maya", "Noah", "Olivia", "Priya", "Quinn", "Rosa", "Sam", "Tariq", "Uma", "Victor", "Wen", "Yusuf",
    "Zoe",
)
_LAST: Final = (
    "Anders", "Brooks", "Chen", "Diaz", "Evans", "Fischer", "Garcia", "Hughes", "Ito", "Johnson", "Khan",
    "Lopez", "Martin", "Nakamura", "Okafor", "Patel", "Rossi", "Silva", "Turner", "Walsh", "Young",
)
_CITIES: Final = (
    "San Francisco", "Seattle", "Portland", "Denver", "Austin", "Chicago", "Boston", "New York", "Atlanta",
    "Minneapolis", "San Diego", "Salt Lake City",
)
_AREA_CODES: Final = ("206", "212", "303", "312", "404", "503", "512", "612", "617", "619", "646", "801")
_DOMAINS: Final = ("example.com", "example.net", "example.org", "mail.example")
_PLANS: Final = ("free", "plus", "pro")
_PRODUCTS: Final[tuple[Product, ...]] = (
    ("NW-1001", "Trail Runner 3 Shoes", 129.0), ("NW-1002", "Merino Running Socks", 18.5),
    ("NW-1003", "Ultralight Rain Jacket", 189.0), ("NW-1004", "Hydration Vest 8L", 94.0),
    ("NW-1005", "Insulated Bottle 750ml", 32.0), ("NW-1006", "Headlamp 400lm", 49.0),
    ("NW-1007", "Trekking Poles", 79.0), ("NW-1008", "Down Sleeping Bag", 289.0),
    ("NW-1009", "2-Person Tent", 349.0), ("NW-1010", "Camp Stove", 64.0),
    ("NW-1011", "Fleece Midlayer", 85.0), ("NW-1012", "Sun Hoodie", 55.0),
)
_PAGES: Final = (
    ("Home", "/"), ("Trail Running", "/c/trail-running"), ("Camping", "/c/camping"),
    ("Jackets", "/c/jackets"), ("Sale", "/sale"), ("Journal", "/journal"),
)
_SCREENS: Final = ("Home", "Search", "Product", "Cart", "Orders")
_STORES: Final = ("st-sf-01", "st-sea-02", "st-den-03")
_CALL_REASONS: Final = ("order_status", "returns", "product_question")
# fmt: on


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _web(path: str) -> Event:
    return {
        "library": {"name": "analytics.js", "version": "5.2.1"},
        "page": {"path": path, "url": _SITE + path},
        "userAgent": "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 Safari/605.1.15",
    }


def _app(device_id: str) -> Event:
    return {
        "library": {"name": "analytics-ios", "version": "4.1.8"},
        "app": {"name": "Northwind", "version": "3.4.1", "build": "341"},
        "device": {"id": device_id, "type": "ios", "model": "iPhone15,2"},
        "os": {"name": "iOS", "version": "17.5"},
    }


def _system(name: str, **extra: Any) -> Event:
    """Context of a server-side source (CRM sync, point of sale, telephony)."""
    return {"library": {"name": name, "version": "1.0.0"}, **extra}


def _product(item: Product) -> Event:
    sku, name, price = item
    return {"product_id": sku, "sku": sku, "name": name, "price": price}


def _order(order_id: str, items: list[Product] | tuple[Product, ...]) -> Event:
    total = round(sum(price for _, _, price in items), 2)
    products = [{**_product(item), "quantity": 1} for item in items]
    return {"order_id": order_id, "total": total, "revenue": total, "currency": "USD", "products": products}


@dataclass
class _Timeline:
    """One person's events at offsets from their first one; placed on the calendar once complete."""

    at: timedelta = timedelta(0)
    events: list[tuple[timedelta, str, Event]] = field(default_factory=list)

    def wait(self, **delta: float) -> None:
        self.at += timedelta(**delta)

    def add(self, source: str, type_: str, ids: Ids, context: Event, **fields: Any) -> None:
        # messageId and timestamp are placeholders until _Output.place; listed first for a readable order.
        event = {"type": type_, "messageId": "", "timestamp": "", **ids, **fields, "context": context}
        self.events.append((self.at, source, event))

    def page(self, ids: Ids, name: str, path: str) -> None:
        self.add("web", "page", ids, _web(path), name=name, properties={"path": path, "url": _SITE + path})

    def screen(self, ids: Ids, name: str, device_id: str) -> None:
        self.add("app", "screen", ids, _app(device_id), name=name, properties={})

    def track(self, source: str, ids: Ids, context: Event, name: str, properties: Event) -> None:
        self.add(source, "track", ids, context, event=name, properties=properties)

    def viewed(self, ids: Ids, item: Product) -> None:
        self.track("web", ids, _web(f"/p/{item[0].lower()}"), "Product Viewed", _product(item))


class _Output:
    """Numbers the events as they are placed, so that ``messageId`` depends only on the generation order."""

    def __init__(self) -> None:
        self.pairs: list[tuple[str, Event]] = []

    def place(self, line: _Timeline, start: datetime) -> None:
        for offset, source, event in line.events:
            event["messageId"] = f"demo-{len(self.pairs)}"
            event["timestamp"] = _iso(start + offset)
            self.pairs.append((source, event))


def _story(now: datetime) -> tuple[_Timeline, datetime]:
    line = _Timeline()
    web = {"anonymousId": "anon-jane-web"}
    shoes, socks, vest = _PRODUCTS[0], _PRODUCTS[1], _PRODUCTS[3]
    # (a) Anonymous browsing: nothing yet says who she is.
    line.page(web, "Home", "/")
    line.wait(minutes=2)
    line.page(web, "Trail Running", "/c/trail-running")
    line.wait(minutes=1, seconds=20)
    line.viewed(web, shoes)
    # (b) Sign-up links anon-jane-web to u-jane. The email and phone are messy on purpose (only
    # normalization makes them match later), and the traits are "stated" because she typed them.
    line.wait(days=2, hours=5)
    line.page(web, "Sign Up", "/signup")
    line.wait(minutes=3)
    traits = {"email": " Jane.Doe@Example.com ", "first_name": "Jane", "last_name": "Doe"}
    traits["phone"] = "(415) 555-0132"
    stated = _web("/signup") | {"kairos": {"trait_kind": "stated"}}
    line.add("web", "identify", {"userId": STORY_USER_ID, **web}, stated, traits=traits)
    # (c) The mobile app: a second anonymous id and a device id, both tied to u-jane by the userId.
    app, device = {"userId": STORY_USER_ID, "anonymousId": "anon-jane-app"}, "dev-jane-iphone"
    line.wait(days=3, hours=2)
    for name in ("Home", "Search", "Product", "Cart"):
        line.screen(app, name, device)
        line.wait(minutes=1, seconds=40)
    order = _order("ord-jane-app-1", [shoes, socks])
    line.track("app", app, _app(device), "Order Completed", order)
    # (d) The CRM links her loyalty card first: only that makes the store receipt hers.
    line.wait(days=4)
    crm = {"loyalty_card": "LC-0042-7781", "crm_id": "CRM-99812"}
    line.add("crm", "identify", {"userId": STORY_USER_ID}, _system("northwind-crm-sync"), traits=crm)
    line.wait(days=2, hours=3)
    pos = _system("northwind-pos", traits={"loyalty_card": "LC-0042-7781"})
    receipt = _order("pos-sf-01-88213", [vest]) | {"store_id": "st-sf-01", "payment": "card"}
    line.track("store", {"anonymousId": "pos-txn-sf-01-88213"}, pos, "Order Completed", receipt)
    # (e) The call centre knows only the number she called from, spelled the telephony system's way.
    line.wait(days=3, hours=1)
    phone = _system("northwind-telephony", traits={"phone": "+1 415-555-0132"})
    call = {"reason": "order_status", "duration_seconds": 312, "resolved": True}
    line.track("callcentre", {"anonymousId": "cc-call-88412"}, phone, "Call Completed", call)
    return line, now - timedelta(days=21, hours=3)


def _email(rng: random.Random, first: str, last: str, i: int) -> str:
    domain = rng.choice(_DOMAINS)
    if rng.random() < 0.25:
        # Messy on purpose, like Jane's: typed with capitals and stray spaces.
        return f" {first}.{last}{i}@{domain.title()}  "
    return f"{first}.{last}{i}@{domain}".lower()


def _phone(rng: random.Random, i: int) -> tuple[str, str]:
    """The same number in two spellings: as the customer typed it, as the telephony system logs it."""
    area = rng.choice(_AREA_CODES)
    # Exchange and line come from the index, so no two background people share a number (nor Jane's 555).
    exchange, number = 200 + i // 10_000, i % 10_000
    typed = rng.choice((f"({area}) {exchange}-{number:04d}", f"{area}.{exchange}.{number:04d}"))
    return typed, f"+1 {area}-{exchange}-{number:04d}"


def _browse(rng: random.Random, line: _Timeline, ids: Ids, pages: int) -> None:
    """One web session: a few pages, often a product view."""
    for _ in range(pages):
        name, path = rng.choice(_PAGES)
        line.page(ids, name, path)
        line.wait(minutes=rng.uniform(0.5, 4))
    if rng.random() < 0.6:
        line.viewed(ids, rng.choice(_PRODUCTS))
        line.wait(minutes=rng.uniform(0.5, 3))


def _basket(rng: random.Random) -> list[Product]:
    return rng.sample(_PRODUCTS, rng.randint(1, 3))


def _anonymous(rng: random.Random, i: int) -> _Timeline:
    """A visitor who never says who they are: web sessions, or an app used signed out."""
    line = _Timeline()
    if rng.random() < 0.2:
        ids, device = {"anonymousId": f"anon-app-{i:05d}"}, f"dev-{i:05d}"
        for _ in range(rng.randint(3, 7)):
            line.screen(ids, rng.choice(_SCREENS), device)
            line.wait(minutes=rng.uniform(0.3, 3))
        return line
    ids = {"anonymousId": f"anon-web-{i:05d}"}
    for _ in range(rng.randint(1, 3)):
        _browse(rng, line, ids, rng.randint(1, 4))
        line.wait(days=rng.uniform(0.5, 9))
    return line


def _signup(rng: random.Random, line: _Timeline, i: int, web: Ids) -> str | None:
    """The web sign-up identify; returns the phone as the call centre would log it, if one was given."""
    first, last = rng.choice(_FIRST), rng.choice(_LAST)
    traits: Event = {"email": _email(rng, first, last, i), "first_name": first, "last_name": last}
    traits |= {"city": rng.choice(_CITIES), "plan": rng.choice(_PLANS)}
    called_as = None
    if rng.random() < 0.5:
        traits["phone"], called_as = _phone(rng, i)
    context = _web("/signup") | {"kairos": {"trait_kind": "stated"}}
    if rng.random() < 0.12:
        prefs = {"marketing_email": rng.random() < 0.5, "analytics": rng.random() < 0.7}
        context["consent"] = {"categoryPreferences": prefs}
    line.add("web", "identify", {"userId": f"u-{i:05d}", **web}, context, traits=traits)
    return called_as


def _app_user(rng: random.Random, line: _Timeline, i: int) -> None:
    """The app is used signed out first; the login identify later stitches its ids to the user."""
    device, anon = f"dev-{i:05d}", {"anonymousId": f"anon-app-{i:05d}"}
    for _ in range(rng.randint(1, 3)):
        line.screen(anon, rng.choice(_SCREENS), device)
        line.wait(minutes=rng.uniform(0.3, 2))
    known = {"userId": f"u-{i:05d}", **anon}
    line.add("app", "identify", known, _app(device), traits={})
    if rng.random() < 0.5:
        line.wait(minutes=rng.uniform(2, 20))
        order = _order(f"ord-{i:05d}-a", _basket(rng))
        line.track("app", known, _app(device), "Order Completed", order)


def _store_customer(rng: random.Random, line: _Timeline, i: int, traits: Event) -> None:
    """The CRM sync links a loyalty card; later a till receipt carries only that card."""
    # The first block is never 0042 (Jane's), so no background card collides with hers.
    card = f"LC-{5000 + i}-{rng.randint(1000, 9999)}"
    crm = _system("northwind-crm-sync")
    line.add("crm", "identify", {"userId": f"u-{i:05d}"}, crm, traits=traits | {"loyalty_card": card})
    line.wait(days=rng.uniform(1, 12))
    store = rng.choice(_STORES)
    receipt = _order(f"pos-{store}-{i:05d}", _basket(rng)) | {"store_id": store, "payment": "card"}
    pos = _system("northwind-pos", traits={"loyalty_card": card})
    line.track("store", {"anonymousId": f"pos-txn-{store}-{i:05d}"}, pos, "Order Completed", receipt)


def _known(rng: random.Random, i: int) -> _Timeline:
    """A customer who signs up on the web and may then use the app, a store and the call centre."""
    line, user_id, web = _Timeline(), f"u-{i:05d}", {"anonymousId": f"anon-web-{i:05d}"}
    _browse(rng, line, web, rng.randint(1, 3))
    called_as = _signup(rng, line, i, web)
    known_web = {"userId": user_id, **web}
    if rng.random() < 0.6:
        line.wait(days=rng.uniform(0.5, 10))
        _browse(rng, line, known_web, rng.randint(1, 3))
        if rng.random() < 0.6:
            order = _order(f"ord-{i:05d}-w", _basket(rng))
            context = _web("/checkout/complete")
            line.track("web", known_web, context, "Order Completed", order)
    if rng.random() < 0.3:
        line.wait(days=rng.uniform(1, 15))
        _app_user(rng, line, i)
    crm = {"crm_id": f"CRM-{10_000 + i}", "lifetime_orders": rng.randint(0, 25)}
    if rng.random() < 0.2:
        line.wait(days=rng.uniform(1, 10))
        _store_customer(rng, line, i, crm)
    elif rng.random() < 0.3:
        line.wait(days=rng.uniform(1, 10))
        line.add("crm", "identify", {"userId": user_id}, _system("northwind-crm-sync"), traits=crm)
    if called_as is not None and rng.random() < 0.2:
        line.wait(days=rng.uniform(1, 7))
        context = _system("northwind-telephony", traits={"phone": called_as})
        call = {"reason": rng.choice(_CALL_REASONS), "duration_seconds": rng.randint(60, 900)}
        call["resolved"] = rng.random() < 0.8
        line.track("callcentre", {"anonymousId": f"cc-call-{i:05d}"}, context, "Call Completed", call)
    return line


def _shared_device(rng: random.Random) -> _Timeline:
    """Two people of one family sign in, days apart, on the same laptop (same anonymousId)."""
    line, last, laptop = _Timeline(), rng.choice(_LAST), {"anonymousId": SHARED_ANONYMOUS_ID}
    for i, first in enumerate(rng.sample(_FIRST, 2)):
        _browse(rng, line, laptop, 2)
        traits = {
            "email": f"{first}.{last}.family@example.com".lower(),
            "first_name": first,
            "last_name": last,
        }
        context = _web("/login") | {"kairos": {"trait_kind": "stated"}}
        line.add("web", "identify", {"userId": f"u-{i:05d}", **laptop}, context, traits=traits)
        line.wait(days=rng.uniform(2, 6))
    return line


def demo_events(n_profiles: int = 3000, seed: int = 7, now: datetime | None = None) -> list[tuple[str, dict[str, Any]]]:
    """``(source_name, event)`` pairs: Jane's story first, then ``n_profiles`` background people.

    Each person's events are in time order and all are before ``now`` (default :data:`DEMO_NOW`; a naive
    ``now`` is taken as UTC); the list as a whole is not sorted by time.

    >>> source, event = demo_events(n_profiles=10)[0]
    >>> source, event["anonymousId"], event["messageId"]
    ('web', 'anon-jane-web', 'demo-0')
    """
    now = DEMO_NOW if now is None else (now if now.tzinfo else now.replace(tzinfo=UTC))
    rng = random.Random(seed)
    out = _Output()
    out.place(*_story(now))
    first = 0
    if n_profiles >= 2:
        line = _shared_device(rng)
        out.place(line, now - line.at - timedelta(days=rng.uniform(1, 40)))
        first = 2  # u-00000 and u-00001 are the family
    for i in range(first, n_profiles):
        line = _known(rng, i) if rng.random() < 0.65 else _anonymous(rng, i)
        # Placed so that its last event falls between an hour and ten weeks before now.
        out.place(line, now - line.at - timedelta(hours=rng.uniform(1, 24 * 70)))
    return out.pairs

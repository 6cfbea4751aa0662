"""(e) Segments: computed traits and segment rules, in the processor, under load, and in a preview.

Current code only (the baseline has no segments). One run measures:

1. processor throughput with 20 computed traits and 50 segments defined, beside the same events with none
   defined, in-process on SQLite (``processor.py``'s event generator, with an order ``total``, a product
   ``category``, a ``country`` and consents added), alternating with / without, ``--repeats`` times;
2. event → segment-enter latency under a steady load in ``kairos serve`` (default settings, its processor in
   its own process): marker events sent one by one at known times, the enter seen in the outbox;
3. how late a time-window exit is committed after it was due (a ``1m`` windowed count and ``traits.x >= 1``)
   under the same load;
4. ``POST /v1/segments:preview`` latency at ``--profiles`` profiles, through the API in-process;
5. ``POST /v1/microsegments:discover`` at the same size, when the route exists (it is written elsewhere).

Run alone: ``python bench/segments.py [--events 60000] [--profiles 100000] [--rate 50]``.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import http.client
import json
import random
import sqlite3
import statistics
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec

import _compat
from _common import Server, exit_on_sigterm, from_fields, percentile, run_wrk, tmp_dir, use_defaults
from _events import EPOCH, Stream, batch_body, people, uuid_from
from _stats import Stat, Target, fmt, fmt_percentile, table
from ingest import BATCH, BODIES, MARK, SCRIPT, wrk_env

__all__ = ["SEGMENTS", "TRAITS", "SegmentsResult", "from_json", "main", "section", "targets"]

SEED = 23
CHUNK = 1_000
SPAN = 90 * 86_400_000  # the generated events span the last 90 days
CATEGORIES = ("shoes", "bags", "coats", "hats", "belts", "socks")
COUNTRIES = ("DE", "FR", "PT", "US", "JP", "GH", "EC", "AU")
WINDOW_S = 60  # (3): the window of the trait whose exit is timed
OC = "Order Completed"

TRAITS: dict[str, dict[str, Any]] = {
    "orders": {"aggregate": "count", "event": OC},
    "orders_7d": {"aggregate": "count", "event": OC, "window": "7d"},
    "orders_30d": {"aggregate": "count", "event": OC, "window": "30d"},
    "spent": {"aggregate": "sum", "event": OC, "property": "total"},
    "spent_90d": {"aggregate": "sum", "event": OC, "property": "total", "window": "90d"},
    "basket_avg": {"aggregate": "avg", "event": OC, "property": "total"},
    "smallest_order": {"aggregate": "min", "event": OC, "property": "total"},
    "largest_order": {"aggregate": "max", "event": OC, "property": "total"},
    "big_orders_30d": {"aggregate": "count", "event": OC, "where": "properties.total > 200.0", "window": "30d"},
    "last_order_total": {"aggregate": "last", "event": OC, "property": "total"},
    "pages": {"aggregate": "count", "where": 'event_type == "page"'},
    "pages_7d": {"aggregate": "count", "where": 'event_type == "page"', "window": "7d"},
    "products_viewed": {"aggregate": "count", "event": "Product Viewed"},
    "products_viewed_30d": {
        "aggregate": "distinct_count",
        "event": "Product Viewed",
        "property": "product_id",
        "window": "30d",
    },
    "distinct_products": {"aggregate": "distinct_count", "event": "Product Added", "property": "product_id"},
    "fav_category": {"aggregate": "most_frequent", "event": "Product Viewed", "property": "category"},
    "first_category": {"aggregate": "first", "event": "Product Viewed", "property": "category"},
    "carts_30d": {"aggregate": "count", "event": "Product Added", "window": "30d"},
    "checkouts_90d": {"aggregate": "count", "event": "Checkout Started", "window": "90d"},
    "signins_7d": {
        "aggregate": "count",
        "event": "Signed In",
        "where": 'has(context.userAgent) && context.userAgent.contains("iPhone")',
        "window": "7d",
    },
}
SEGMENTS: dict[str, str] = {
    "buyers": "traits.orders >= 1",
    "repeat_buyers": "traits.orders >= 2",
    "frequent": "traits.orders_30d >= 2",
    "weekly_buyers": "traits.orders_7d >= 1",
    "big_spenders": "traits.spent >= 500.0",
    "vip": "traits.spent_90d >= 1000.0",
    "high_basket": "has(traits.basket_avg) && traits.basket_avg >= 150.0",
    "small_orders": "has(traits.largest_order) && traits.largest_order < 50.0",
    "whales": "traits.big_orders_30d >= 2",
    "last_big": "has(traits.last_order_total) && traits.last_order_total >= 200.0",
    "deal_hunters": "traits.smallest_order < 20.0 && traits.orders >= 3",
    "browsers": "traits.pages >= 5 && traits.orders == 0",
    "active_readers": "traits.pages_7d >= 3",
    "window_shoppers": "traits.products_viewed >= 5 && traits.orders == 0",
    "explorers": "traits.products_viewed_30d >= 5",
    "collectors": "traits.distinct_products >= 3",
    "cart_abandoners": "traits.carts_30d >= 1 && traits.orders_30d == 0",
    "checkout_dropouts": "traits.checkouts_90d > traits.orders",
    "shoes_fans": 'has(traits.fav_category) && traits.fav_category == "shoes"',
    "bags_fans": 'has(traits.fav_category) && traits.fav_category == "bags"',
    "started_with_coats": 'has(traits.first_category) && traits.first_category == "coats"',
    "returning": "traits.signins_7d >= 2",
    "pages_no_cart": "traits.pages_7d >= 2 && traits.carts_30d == 0",
    "plan_pro": 'has(traits.plan) && traits.plan == "pro"',
    "plan_enterprise": 'traits.plan == "enterprise"',
    "plan_paid": 'has(traits.plan) && traits.plan in ["basic", "pro", "enterprise"]',
    "free_plan": 'has(traits.plan) && traits.plan == "free"',
    "germans": 'has(traits.country) && traits.country == "DE"',
    "eu": 'has(traits.country) && traits.country in ["DE", "FR", "PT", "ES", "IT"]',
    "named": "has(traits.name)",
    "emailable": '"marketing_email" in consents && consents.marketing_email',
    "ads_ok": '"advertising" in consents && consents.advertising',
    "no_marketing": '"marketing_sms" in consents && !consents.marketing_sms',
    "engaged": "profile.event_count >= 20",
    "newcomers": "profile.event_count < 3",
    "heavy": "profile.event_count >= 50",
    "everyone": "profile.event_count >= 1",
    "known": '"user_id" in identities',
    "multi_device": '"anonymous_id" in identities && size(identities.anonymous_id) >= 2',
    "dormant_30d": 'profile.updated_at < now - duration("30d")',
    "dormant_7d": 'profile.updated_at < now - duration("7d")',
    "new_this_week": 'profile.created_at > now - duration("7d")',
    # Segments of segments (and a few of those reading `now` too).
    "us_pro": 'has(traits.country) && traits.country == "US" && "plan_pro" in segments',
    "email_buyers": '"buyers" in segments && "emailable" in segments',
    "vip_emailable": '"vip" in segments && "marketing_email" in consents && consents.marketing_email',
    "at_risk_vip": '"vip" in segments && traits.orders_30d == 0',
    "upsell": '!("plan_paid" in segments) && traits.orders >= 2',
    "lapsed_buyers": '"buyers" in segments && profile.updated_at < now - duration("14d")',
    "recent_pro": 'profile.created_at > now - duration("30d") && "plan_pro" in segments',
    "loyal": '"repeat_buyers" in segments && profile.created_at < now - duration("60d")',
}
assert len(TRAITS) == 20 and len(SEGMENTS) == 50
# (2) and (3): a marker event makes its profile enter at once; a window event for WINDOW_S seconds.
MARKER, WINDOWED = "Bench Marker", "Bench Window"
PROBES: dict[str, dict[str, Any]] = {
    "trait:bench_markers": {"aggregate": "count", "event": MARKER},
    "trait:bench_window": {"aggregate": "count", "event": WINDOWED, "window": f"{WINDOW_S // 60}m"},
    "segment:bench_marked": {"rule": "traits.bench_markers >= 1"},
    "segment:bench_recent": {"rule": "traits.bench_window >= 1"},
}
# (4): representative rules: a plain trait, computed traits with a consent, segments, one reading `now`.
PREVIEW_RULES = (
    'has(traits.plan) && traits.plan == "pro"',
    'traits.spent_90d >= 100.0 && "marketing_email" in consents && consents.marketing_email',
    '"buyers" in segments && profile.event_count >= 3',
    'profile.updated_at < now - duration("30d")',
)


# -- the workload -------------------------------------------------------------------------------------
class ShopStream:
    """``processor.py``'s stream with what traits and rules read: an order ``total``, a product ``category``,
    a ``country`` and consents on identifies; its timestamps stretched to span the ``SPAN`` before ``end``."""

    def __init__(self, n_people: int, events: int, end: datetime, seed: int = SEED) -> None:
        self.stream = Stream(people(n_people, random.Random(seed)), seed + 1)
        self.rng = random.Random(seed + 2)
        self.stretch = SPAN / max(1, events * 25.5)  # the stream advances 25.5 ms per event on average
        self.start = end - timedelta(milliseconds=SPAN)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return self

    def __next__(self) -> dict[str, Any]:
        e = next(self.stream)
        at = self.start + (self.stream.ts - EPOCH) * self.stretch
        e["timestamp"] = at.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        shape(e, self.rng)
        return e


def shape(e: dict[str, Any], rng: random.Random) -> None:
    props = e.get("properties")
    if e["type"] == "track" and props is not None:
        props["category"] = CATEGORIES[int(props["product_id"][-2:]) % len(CATEGORIES)]
        if e["event"] == OC:
            props["total"] = round(rng.lognormvariate(4.2, 0.9), 2)
    if e["type"] == "identify":
        n = int(e["userId"][4:])
        e["traits"]["country"] = COUNTRIES[n % len(COUNTRIES)]
        prefs = {"marketing_email": n % 3 != 0, "advertising": n % 2 == 0, "marketing_sms": n % 5 != 0}
        e["context"]["consent"] = {"categoryPreferences": prefs}


def define(kairos: Any, probes: bool = False, segments: Sequence[str] | None = None) -> None:
    """The 20 traits and the 50 segments (or only ``segments``), and with ``probes`` those of (2) and (3)."""
    now = int(time.time() * 1000)
    put = kairos.store.admin.put_definition
    for key, body in TRAITS.items():
        put("trait", key, body, now)
    for key, rule in SEGMENTS.items():
        if segments is None or key in segments:
            put("segment", key, {"rule": rule}, now)
    for name, body in PROBES.items() if probes else ():
        kind, key = name.split(":")
        put(kind, key, body, now)


def fill(kairos: Any, events: Iterator[dict[str, Any]], n: int) -> None:
    source = kairos.source_named("bench")
    done = 0
    while done < n:
        batch = [next(events) for _ in range(min(CHUNK, n - done))]
        new, errors = kairos.prepare_for(source, batch_body(batch), "batch")
        if errors:
            raise RuntimeError(f"generated events were refused: {errors[:3]}")
        kairos.append([(source.name, new)])
        done += len(batch)


# -- (1) processor throughput -------------------------------------------------------------------------
@dataclass(slots=True)
class ProcessorRun:
    defined: bool
    events: int
    seconds: float
    profiles: int | None = None
    memberships: int | None = None  # profile-segment pairs at the end

    @property
    def events_per_s(self) -> float:
        return self.events / self.seconds


def processor_run(events: int, n_people: int, defined: bool, end: datetime) -> ProcessorRun:
    with tmp_dir("segments-processor") as workdir:
        kairos = _compat.open_kairos({"url": f"sqlite:///{workdir / 'kairos.db'}"})
        try:
            if defined:
                define(kairos)
            fill(kairos, ShopStream(n_people, events, end), events)
            t = time.perf_counter()
            kairos.processor.run_until_caught_up()
            seconds = time.perf_counter() - t
            members = sum(r[2] - r[3] for r in kairos.store.state.counts("segment_stats")) if defined else 0
            return ProcessorRun(defined, events, seconds, _compat.count_profiles(kairos), members)
        finally:
            kairos.close()


# -- (2) and (3): latency in kairos serve --------------------------------------------------------------
@dataclass(slots=True)
class ServeResult:
    rate: float  # batches of 100 per second
    duration: float
    markers_sent: int
    enter_ms: list[float]  # per marker: enter seen committed - sent
    window_sent: int
    exit_late_ms: list[float]  # per window event: exit seen committed - due
    poll_ms: float
    wrk_sent: int
    wrk_errors: int
    kept_schedule: bool
    lag_max: int | None = None
    note: str = ""


def _make_bodies(path: Path, end: datetime) -> None:
    """Batches for wrk, from the same stream (its ids end in the marker wrk replaces)."""
    stream = ShopStream(5_000, BODIES * BATCH, end, SEED + 10)
    lines = []
    for _ in range(BODIES):
        batch = []
        for _ in range(BATCH):
            e = next(stream)
            e["messageId"] = f"{e['messageId']}-{MARK}"
            batch.append(e)
        # sentAt = the newest event: collect's skew correction brings each event's time to its arrival.
        lines.append(msgspec.json.encode(batch_body(batch, datetime.fromisoformat(batch[-1]["timestamp"]))).decode())
    path.write_text("\n".join(lines) + "\n")


class OutboxWatch(threading.Thread):
    """Reads new outbox messages every ``poll`` seconds from its own read-only connection: a message is
    committed no later than when it is first seen (and at most ``poll`` before)."""

    def __init__(self, db: Path, poll: float = 0.01) -> None:
        super().__init__(daemon=True)
        self.db = db
        self.poll = poll
        self.seen: list[tuple[float, str, str | None, dict[str, Any]]] = []  # (wall time, type, profile, payload)
        self._stop_event = threading.Event()

    def run(self) -> None:
        conn = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=5)
        after = 0
        try:
            while not self._stop_event.is_set():
                rows = conn.execute(
                    "SELECT id, type, profile_id, payload FROM outbox WHERE id > ? AND type LIKE 'segment_%'"
                    " ORDER BY id",
                    (after,),
                ).fetchall()
                t = time.time()
                for rid, kind, pid, payload in rows:
                    body = json.loads(payload)
                    if str(body.get("segment", "")).startswith("bench_"):
                        self.seen.append((t, kind, pid, body))
                    after = rid
                self._stop_event.wait(self.poll)
        finally:
            conn.close()

    def stop(self) -> None:
        self._stop_event.set()
        self.join()


class Probes(threading.Thread):
    """Sends marker events one per request on a fixed schedule; records when each was sent."""

    def __init__(self, port: int, write_key: str, event: str, every: float, until: float, prefix: str) -> None:
        super().__init__(daemon=True)
        self.port, self.event, self.every, self.until, self.prefix = port, event, every, until, prefix
        self.auth = "Basic " + base64.b64encode(f"{write_key}:".encode()).decode()
        self.sent: list[float] = []
        self.errors = 0

    def run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        start = time.monotonic()
        # Seeded per sender: two senders drawing the same message ids would have the second's events dropped
        # as duplicates of the first's (so it was, and no window exit was ever seen).
        rng = random.Random(f"{SEED}-{self.prefix}")
        i = 0
        while (due := start + i * self.every) < start + self.until:
            time.sleep(max(0.0, due - time.monotonic()))
            now = datetime.now(UTC)
            stamp = now.isoformat(timespec="milliseconds").replace("+00:00", "Z")
            event = {"type": "track", "userId": f"{self.prefix}{i}", "event": self.event, "messageId": uuid_from(rng)}
            body = json.dumps({"batch": [{**event, "timestamp": stamp}], "sentAt": stamp})
            t = time.time()
            try:
                conn.request(
                    "POST", "/v1/batch", body, {"Content-Type": "application/json", "Authorization": self.auth}
                )
                ok = conn.getresponse()
                ok.read()
                if ok.status >= 300:
                    self.errors += 1
                else:
                    self.sent.append(t)
            except (OSError, http.client.HTTPException):
                self.errors += 1
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
            i += 1
        conn.close()


def serve_run(rate: float, duration: float, window_for: float, end: datetime) -> ServeResult:
    """``duration`` s of load at ``rate`` batches/s; markers every 0.1 s throughout, window events every
    0.25 s for the first ``window_for`` s (their exits fall due ``WINDOW_S`` later, under the same load)."""
    with tmp_dir("segments-serve") as workdir:
        db = workdir / "kairos.db"
        url = f"sqlite:///{db}"
        kairos = _compat.open_kairos({"url": url})
        try:
            define(kairos, probes=True)
            write_key = kairos.source_named("bench").write_key
        finally:
            kairos.close()
        bodies = workdir / "bodies.jsonl"
        _make_bodies(bodies, end)
        with Server.kairos(url, workdir) as server:
            watch = OutboxWatch(workdir / "kairos-state.db")  # derived state lives beside the log
            markers = Probes(server.port, write_key, MARKER, 0.1, duration - 5, "mk")
            windows = Probes(server.port, write_key, WINDOWED, 0.25, window_for, "wn")
            lags: list[int] = []
            watch.start()
            markers.start()
            windows.start()
            stop = threading.Event()

            def sample() -> None:
                while not stop.wait(1.0):
                    with contextlib.suppress(OSError, http.client.HTTPException, ValueError, KeyError):
                        lags.append(int(server.get_json("/healthz", timeout=5)["lag"]))

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            try:
                wrk = run_wrk(
                    server.url + "/v1/batch", SCRIPT, wrk_env(bodies, write_key, "1"), duration=duration, rate=rate,
                    connections=50,
                )  # fmt: skip
                markers.join()
                windows.join()
                # Exits due after the load stopped are still waited for (and counted as late as they are).
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline and _exits(watch) < len(windows.sent):
                    time.sleep(0.2)
            finally:
                stop.set()
                watch.stop()
    enters = [(t, body) for t, kind, _pid, body in watch.seen if kind == "segment_entered"]
    marked = [t for t, body in enters if body["segment"] == "bench_marked"]
    # One sender, one request at a time: markers reach the log, hence the outbox, in the order sent.
    enter_ms = [(seen - sent) * 1000 for seen, sent in zip(marked, markers.sent, strict=False)]
    entered_at = {pid: body["at"] for _t, kind, pid, body in watch.seen if kind == "segment_entered"}
    late = [
        seen * 1000 - (entered_at[pid] + WINDOW_S * 1000)
        for seen, kind, pid, body in watch.seen
        if kind == "segment_exited" and body["segment"] == "bench_recent" and pid in entered_at
    ]
    note = []
    if len(marked) != len(markers.sent):
        note.append(f"{len(marked)} enters seen for {len(markers.sent)} markers")
    if len(late) != len(windows.sent):
        note.append(f"{len(late)} exits seen for {len(windows.sent)} window events")
    if markers.errors or windows.errors:
        note.append(f"{markers.errors + windows.errors} probe requests failed")
    return ServeResult(
        rate,
        duration,
        len(markers.sent),
        enter_ms,
        len(windows.sent),
        late,
        watch.poll * 1000,
        wrk.sent,
        wrk.non_2xx + wrk.socket_errors,
        wrk.sent >= 0.98 * rate * duration,
        max(lags, default=None),
        "; ".join(note),
    )


def _exits(watch: OutboxWatch) -> int:
    return sum(1 for _t, kind, _p, body in list(watch.seen) if kind == "segment_exited")


# -- (4) preview and (5) discovery at N profiles ---------------------------------------------------------
@dataclass(slots=True)
class PreviewResult:
    profiles: int
    build_s: float
    calls: dict[str, list[float]]  # rule -> ms per call (HTTP in-process)
    sizes: dict[str, int]
    discover_ms: list[float] = field(default_factory=list)
    discover_note: str = ""


def _population_events(n: int, end: datetime) -> Iterator[dict[str, Any]]:
    """Every one of ``n`` people identifies once; then orders, product views and pages among them."""
    rng = random.Random(SEED + 20)
    start = end - timedelta(milliseconds=SPAN)
    step = SPAN / (n * 2.2)
    t = 0.0

    def stamp() -> str:
        nonlocal t
        t += step
        return (start + timedelta(milliseconds=t)).isoformat(timespec="milliseconds").replace("+00:00", "Z")

    for i in range(n):
        e = {
            "type": "identify",
            "messageId": uuid_from(rng),
            "userId": f"usr_{i:07d}",
            "traits": {"email": f"p{i}@mail.example.org", "plan": ("free", "basic", "pro", "enterprise")[i % 4]},
            "context": {},
            "timestamp": stamp(),
        }
        shape(e, rng)
        yield e
    for _ in range(n * 6 // 5):
        user = f"usr_{rng.randrange(n):07d}"
        kind = rng.random()
        name = OC if kind < 0.4 else "Product Viewed"
        if kind < 0.8:
            props = {"product_id": f"sku-{rng.randrange(100_000):05d}", "price": 10.0}
            e = {"type": "track", "event": name, "properties": props}
        else:
            e = {"type": "page", "name": "Category", "properties": {"path": "/c/shoes"}}
        e.update(messageId=uuid_from(rng), userId=user, context={}, timestamp=stamp())
        shape(e, rng)
        yield e


def preview_run(n: int, calls: int, end: datetime) -> PreviewResult:
    from starlette.testclient import TestClient

    from kairos.api.app import create_app

    with tmp_dir("segments-preview") as workdir:
        kairos = _compat.open_kairos({"url": f"sqlite:///{workdir / 'kairos.db'}"})
        try:
            # The 20 traits, and of the segments only the one the preview rules read: the 50 would make
            # building the store take minutes.
            define(kairos, segments=("buyers",))
            t = time.perf_counter()
            events = n + n * 6 // 5
            fill(kairos, _population_events(n, end), events)
            kairos.processor.run_until_caught_up()
            build_s = time.perf_counter() - t
            # The API runs on a Kairos of its own, as in `kairos serve`, where the processor (and the profiles
            # it keeps in memory) lives in another process: the preview's heap is the API's, not the builder's.
            kairos.close()
            kairos = _compat.open_kairos({"url": f"sqlite:///{workdir / 'kairos.db'}"})
            _compat.tune_like_serve()
            _, secret = kairos.store.admin.add_api_key("bench", frozenset({"read"}), 0)
            headers = {"Authorization": f"Bearer {secret}"}
            result = PreviewResult(_compat.count_profiles(kairos) or n, build_s, {}, {})
            with TestClient(create_app(kairos, run_processor=False)) as client:
                for rule in PREVIEW_RULES:
                    result.calls[rule] = []
                    for _ in range(calls):
                        t = time.perf_counter()
                        r = client.post("/v1/segments:preview", json={"rule": rule}, headers=headers)
                        result.calls[rule].append((time.perf_counter() - t) * 1000)
                        if r.status_code != 200:
                            raise RuntimeError(f"preview answered {r.status_code}: {r.text[:300]}")
                        result.sizes[rule] = r.json()["size"]
                    print(f"    preview {rule!r}: {fmt(statistics.median(result.calls[rule]))} ms", flush=True)
                discover(client, headers, result, calls)
            return result
        finally:
            kairos.close()


DISCOVER = "/v1/microsegments:discover"


def discover(client: Any, headers: Mapping[str, str], result: PreviewResult, calls: int) -> None:
    """``POST /v1/microsegments:discover`` on the preview's profiles, clustering on two computed traits and an
    RFM score, k chosen by the route (silhouette); timed through the API in-process."""
    paths = {getattr(r, "path", None) for r in client.app.routes}
    if DISCOVER not in paths:
        result.discover_note = "not measured: route absent"
        return
    for _ in range(calls):
        t = time.perf_counter()
        body = {"features": ["pages", "products_viewed", "rfm_monetary"], "k": None}
        r = client.post(DISCOVER, json=body, headers=headers)
        result.discover_ms.append((time.perf_counter() - t) * 1000)
        if r.status_code != 200:
            result.discover_ms.clear()
            result.discover_note = f"not measured: {DISCOVER} answered {r.status_code}: {r.text[:200]}"
            return


# -- the whole part -----------------------------------------------------------------------------------
@dataclass(slots=True)
class SegmentsResult:
    events: int
    people: int
    processor: list[list[ProcessorRun]]  # per repeat: [without, with]
    serve: ServeResult | None
    preview: PreviewResult | None
    failures: list[str] = field(default_factory=list)

    def ratios(self) -> Stat:
        return Stat.of(w.events_per_s / n.events_per_s for n, w in self.processor)


def from_json(data: Mapping[str, Any]) -> SegmentsResult:
    return SegmentsResult(
        data["events"],
        data["people"],
        [[from_fields(ProcessorRun, r) for r in pair] for pair in data.get("processor", [])],
        from_fields(ServeResult, data.get("serve")),
        from_fields(PreviewResult, data.get("preview")),
        list(data.get("failures", [])),
    )


def run(
    events: int, n_people: int, repeats: int, rate: float, duration: float, window_for: float, profiles: int, calls: int
) -> SegmentsResult:
    use_defaults()
    end = datetime.now(UTC)
    result = SegmentsResult(events, n_people, [], None, None)
    for i in range(repeats):
        pair = []
        for defined in (False, True):
            r = processor_run(events, n_people, defined, end)
            print(
                f"    (e1) run {i + 1}, {'with' if defined else 'without'} definitions: {fmt(r.events_per_s)} events/s"
            )
            pair.append(r)
        result.processor.append(pair)
    try:
        result.serve = serve_run(rate, duration, window_for, end)
        s = result.serve
        print(
            f"    (e2) enter p50/p99 {fmt_percentile(s.enter_ms, 50)} / {fmt_percentile(s.enter_ms, 99)} ms;"
            f" (e3) exit late p99 {fmt_percentile(s.exit_late_ms, 99)} ms"
        )
    except Exception as exc:
        result.failures.append(f"(e2/e3) serve: {type(exc).__name__}: {exc}")
    try:
        result.preview = preview_run(profiles, calls, end)
    except Exception as exc:
        result.failures.append(f"(e4) preview: {type(exc).__name__}: {exc}")
    return result


# -- report -------------------------------------------------------------------------------------------
def targets(r: SegmentsResult) -> list[Target]:
    out = [Target("(e) Processor, 20 traits + 50 segments / none", r.ratios(), 0.6, "x")]
    if r.serve is not None:
        load = f"{fmt(r.serve.rate * BATCH)} events/s"
        enter = sorted(r.serve.enter_ms)
        late = sorted(r.serve.exit_late_ms)
        out.append(
            Target(
                f"(e) Event → segment enter p99 at {load}",
                Stat.of([percentile(enter, 99)] if enter else []),
                1000,
                "ms",
                False,
            )
        )
        out.append(
            Target(
                f"(e) Window exit lateness p99 at {load}",
                Stat.of([percentile(late, 99)] if late else []),
                5000,
                "ms",
                False,
            )
        )
    if r.preview is not None:
        every = sorted(ms for calls in r.preview.calls.values() for ms in calls)
        out.append(
            Target(
                f"(e) Segment preview p99, {fmt(r.preview.profiles)} profiles",
                Stat.of([percentile(every, 99)] if every else []),
                500,
                "ms",
                False,
            )
        )
    return out


def section(r: SegmentsResult) -> list[str]:
    rows = [
        [
            str(i + 1),
            fmt(n.events_per_s),
            fmt(w.events_per_s),
            f"{w.events_per_s / n.events_per_s:.2f}x",
            fmt(w.memberships),
        ]
        for i, (n, w) in enumerate(r.processor)
    ]
    without = Stat.of(n.events_per_s for n, _ in r.processor)
    with_ = Stat.of(w.events_per_s for _, w in r.processor)
    out = [
        "## (e) Segments: computed traits and segment rules (current code only)",
        "",
        f"**Processor.** {fmt(r.events)} events from {fmt(r.people)} people (the generator of (b), fewer events"
        " to keep the run short; orders carry a `total`, product events a `category`, identifies a `country`"
        " and consents; timestamps span the last 90 days), applied in-process on SQLite by"
        " `processor.run_until_caught_up()`, once with none defined and once with 20 computed traits (count, sum,"
        " avg, min, max, first, last, distinct_count, most_frequent; 9 in 7d/30d/90d windows; 4 with `where`)"
        " and 50 segments (computed and plain traits, consents, identities, `profile.event_count`, 9 over other"
        " segments, 7 reading `now`), defined before the events (no backfill), alternating, per repeat:",
        "",
        *table(
            ["repeat", "none defined, events/s", "20 + 50 defined, events/s", "ratio", "memberships at the end"], rows
        ),
        "",
        f"Median: {without.show()} events/s without, {with_.show()} with; ratio {r.ratios().show('x')}.",
        "",
    ]
    if r.serve is not None:
        s = r.serve
        enter = sorted(s.enter_ms)
        late = sorted(s.exit_late_ms)
        out += [
            f"**Latency in `kairos serve`** (default settings, processor in its own process, the 20 traits and 50"
            f" segments defined plus the probes). wrk sends {fmt(s.rate * BATCH)} events/s ({s.rate:g} batches of"
            f" {BATCH}/s, the same generator) for {s.duration:g} s ({fmt(s.wrk_sent)} batches sent, {s.wrk_errors}"
            f" errors{'' if s.kept_schedule else '; the schedule was not kept'}); max processor lag"
            f" {fmt(s.lag_max)} events. Alongside, one marker event per request every 0.1 s, each for a new user:"
            " a count trait of it and the segment `traits.bench_markers >= 1` make its profile enter. The outbox is"
            f" read every {s.poll_ms:g} ms; latency = when the `segment_entered` message was first seen committed"
            " - when the marker was sent (so at most one poll interval above the commit). For the exit, one event"
            f" every 0.25 s (each a new user) counts in a `{WINDOW_S // 60}m` windowed trait and enters"
            " `traits.bench_window >= 1`; lateness = when the `segment_exited` was seen - when it was due (the"
            " event's time + the window). The processor fires a timer once the clock passes it plus"
            " `timer_grace_ms` (2,000 ms by default) at its next poll.",
            "",
            *table(
                ["", "samples", "p50 ms", "p90 ms", "p99 ms", "max ms"],
                [
                    [
                        "event → enter",
                        str(len(enter)),
                        *(fmt_percentile(enter, q) for q in (50, 90, 99)),
                        fmt_percentile(enter, 100),
                    ],
                    [
                        "window exit, late by",
                        str(len(late)),
                        *(fmt_percentile(late, q) for q in (50, 90, 99)),
                        fmt_percentile(late, 100),
                    ],
                ],
            ),
            "",
        ]
        if s.note:
            out += [f"Caveat: {s.note}.", ""]
    if r.preview is not None:
        p = r.preview
        rows = [
            [
                f"`{rule}`",
                fmt(p.sizes.get(rule)),
                str(len(ms)),
                fmt_percentile(sorted(ms), 50),
                fmt_percentile(sorted(ms), 99),
            ]
            for rule, ms in p.calls.items()
        ]
        out += [
            f"**Preview** at {fmt(p.profiles)} profiles (SQLite, built in {p.build_s:.0f} s with the 20 traits and the"
            " segment `buyers` defined; every profile identifies once, with 1.2 events"
            " more each on average): `POST /v1/segments:preview` through the API in-process (Starlette's TestClient,"
            " no network), each rule called in turn:",
            "",
            *table(["rule", "size", "calls", "p50 ms", "p99 ms"], rows),
            "",
            f"**Discovery** (`POST {DISCOVER}`): "
            + (
                f"p50 {fmt_percentile(p.discover_ms, 50)} ms, p99 {fmt_percentile(p.discover_ms, 99)} ms"
                f" over {len(p.discover_ms)} calls."
                if p.discover_ms
                else f"{p.discover_note}."
            ),
            "",
        ]
    if r.failures:
        out += ["Failures: " + "; ".join(r.failures), ""]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--events", type=int, default=20_000, help="(1) events in the log (default: %(default)s)")
    add("--people", type=int, help="(1) people they come from (default: 15%% of --events)")
    add("--repeats", type=int, default=3, help="(1) runs with / without (default: %(default)s)")
    add("--rate", type=float, default=50, help="(2, 3) batches of 100 events per second (default: %(default)s)")
    add("--duration", type=float, default=90, help="(2, 3) seconds of load (default: %(default)s)")
    add("--window-for", type=float, default=20, help="(3) seconds during which window events are sent")
    add("--profiles", type=int, default=100_000, help="(4, 5) profiles (default: %(default)s)")
    add("--calls", type=int, default=3, help="(4, 5) calls per rule (default: %(default)s)")
    add("--json-out", type=Path, help="write the result here (make bench runs it this way)")
    args = parser.parse_args()
    exit_on_sigterm()
    result = run(
        args.events,
        args.people or max(100, args.events * 3 // 20),
        args.repeats,
        args.rate,
        args.duration,
        args.window_for,
        args.profiles,
        args.calls,
    )
    data = {"kairos_path": _compat.kairos_path(), **asdict(result)}
    if args.json_out:
        args.json_out.write_text(json.dumps(data, indent=2) + "\n")
        return
    print("\n".join([*(" | ".join(t.row()) for t in targets(result)), "", *section(result)]))


if __name__ == "__main__":
    main()

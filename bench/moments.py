"""(f) Moments and delivery: what 50 moments cost the processor, how late an absence fires, and how fast
and how independently destinations are delivered to. Current code only (the baseline has neither).

One run measures:

1. processor throughput with 50 moments defined beside the same events with none, in-process on SQLite
   (``segments.py``'s ``ShopStream`` and ``fill``), alternating without / with, ``--repeats`` times. Both
   runs define the same 4 computed traits and 3 segments the moments watch, so the ratio is the moments'
   own cost; the built-in ``rfm_*`` traits are on in both (the default);
2. absence-moment lateness in ``kairos serve`` (default settings, its processor in its own process) under a
   steady wrk load of ``--rate`` batches of 100 events/s: ``Bench Cart`` not followed by ``Bench Order``
   within ``1m``; carts for distinct people every 0.25 s for ``--carts-for`` s, and every second a cart that
   is followed by an order 5-30 s later (those must never fire). Lateness = when the ``moment`` outbox
   message was first seen committed (a read-only poll of the state db every 10 ms) - its ``at`` (the due
   time);
3. delivery throughput: ``--messages`` segment entries queued, then the real worker (``run_forever``, one
   asyncio loop, aiohttp) delivers them to a Starlette/uvicorn receiver in its own process on loopback, at
   the default ``delivery.concurrency`` (and, for context, at ``--concurrency-extra``), ``--repeats`` times;
4. isolation: a steady flow of segment entries (``--flow`` per second for ``--flow-for`` s, the processor
   applying them as they come) to one healthy destination alone, then the same beside a second destination
   whose receiver refuses connections, then beside one whose receiver accepts and never answers; the
   healthy destination's p99 of queued (outbox commit) → delivered (the delivery recorded), ``--repeats``
   times, alternating.

Run alone: ``python bench/moments.py [--events 20000] [--repeats 3] [--rate 30] [--carts-for 30]
[--messages 3000] [--flow 150] [--flow-for 12]``; ``make bench`` runs it as part ``moments``
(``python bench/run.py --only moments --baseline none`` for this part alone, writing docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import cProfile
import http.client
import json
import pstats
import random
import sqlite3
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import _compat
from _common import Server, exit_on_sigterm, from_fields, percentile, run_wrk, tmp_dir, use_defaults
from _deliveries import IsolationRun, ThroughputRun, isolation_run, receiver, throughput_run
from _events import uuid_from
from _stats import Stat, Target, fmt, fmt_percentile, table
from ingest import BATCH, SCRIPT, wrk_env
from segments import OC, TRAITS, OutboxWatch, ShopStream, _make_bodies, fill

__all__ = ["MOMENTS", "MomentsResult", "from_json", "limits", "main", "section", "targets"]

SEED = 31
CART, ORDER = "Bench Cart", "Bench Order"
WITHIN_S = 60
PROBE = {"when": {"event": CART, "not_followed_by": {"event": ORDER}, "within": f"{WITHIN_S // 60}m"}}

# (1): what the moments read, defined in both runs.
SUPPORT_TRAITS = ("orders", "orders_30d", "spent", "carts_30d")
SUPPORT_SEGMENTS = {
    "buyers": "traits.orders >= 1",
    "big_spenders": "traits.spent >= 500.0",
    "cart_abandoners": "traits.carts_30d >= 1 && traits.orders_30d == 0",
}
PV, PA, CS, SI = "Product Viewed", "Product Added", "Checkout Started", "Signed In"


def _moments() -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    # 15 absences.
    absences = [(PA, OC), (CS, OC), (PV, PA), (PA, CS), (SI, PV), (PV, OC), (CS, PA), (SI, PA)]
    for i, (a, b) in enumerate(absences):
        for j, within in enumerate(("1h", "1d") if i < 7 else ("30m",)):
            out[f"abs_{i}_{j}"] = {"when": {"event": a, "not_followed_by": {"event": b}, "within": within}}
            if j:
                out[f"abs_{i}_{j}"]["cooldown"] = "1d"
    # 12 sequences within a time (two and three steps).
    seqs = [(PV, PA), (PA, CS), (CS, OC), (PV, OC), (SI, PA), (SI, OC), (OC, PV), (PA, PA), (PV, PV)]
    for i, steps in enumerate(seqs):
        out[f"seq_{i}"] = {"when": {"sequence": [{"event": e} for e in steps], "within": "1d"}}
    for i, three in enumerate([(PV, PA, OC), (SI, PV, PA), (PA, CS, OC)]):
        out[f"seq3_{i}"] = {"when": {"sequence": [{"event": e} for e in three], "within": "7d"}}
    # 10 single events with `where` and a cool-down.
    wheres = [
        (OC, "properties.total > 200.0"),
        (OC, "properties.total < 20.0"),
        (OC, 'properties.category == "shoes"'),
        (PV, 'properties.category == "bags"'),
        (PV, 'properties.category in ["coats", "hats"]'),
        (PA, "properties.price > 50.0"),
        (PA, 'properties.category == "socks"'),
        (CS, "has(properties.product_id)"),
        (SI, 'has(context.userAgent) && context.userAgent.contains("iPhone")'),
        (OC, 'has(properties.total) && properties.total > 100.0 && properties.category != "belts"'),
    ]
    for i, (event, where) in enumerate(wheres):
        out[f"ev_{i}"] = {"when": {"event": event, "where": where}, "cooldown": ("1h", "1d", "7d")[i % 3]}
    # 5 with context conditions.
    contexts = [
        (OC, 'context.daypart == "evening"'),
        (PA, 'context.device_class == "mobile"'),
        (SI, 'context.daypart == "morning" && context.device_class == "mobile"'),
        (CS, 'context.daypart == "evening" && traits.orders >= 1'),
    ]
    for i, (event, cond) in enumerate(contexts):
        out[f"ctx_{i}"] = {"when": {"event": event}, "context": cond, "cooldown": "1d"}
    out["ctx_abs"] = {
        "when": {"event": PA, "not_followed_by": {"event": OC}, "within": "2h"},
        "context": 'context.device_class == "mobile"',
    }
    # 5 trait crossings, computed and RFM.
    crossings = [
        ("orders_30d", "crosses_above", 2),
        ("spent", "crosses_above", 500),
        ("carts_30d", "crosses_below", 1),
        ("rfm_score", "crosses_above", 12),
        ("rfm_monetary", "crosses_above", 4),
    ]
    for trait, how, n in crossings:
        out[f"tr_{trait}_{how}"] = {"when": {"trait": trait, how: n}}
    # 3 segment changes.
    out["seg_buyers_in"] = {"when": {"segment_entered": "buyers"}}
    out["seg_big_in"] = {"when": {"segment_entered": "big_spenders"}, "cooldown": "7d"}
    out["seg_abandoners_in"] = {"when": {"segment_entered": "cart_abandoners"}, "context": "traits.carts_30d >= 1"}
    return out


MOMENTS = _moments()
assert len(MOMENTS) == 50, len(MOMENTS)
KINDS = {"abs": "absences", "seq": "sequences", "ev": "events with where", "ctx": "context", "tr": "trait crossings"}


def define(kairos: Any, moments: bool) -> None:
    from kairos.definitions import moment_body

    now = int(time.time() * 1000)
    put = kairos.store.admin.put_definition
    for key in SUPPORT_TRAITS:
        put("trait", key, TRAITS[key], now)
    for key, rule in SUPPORT_SEGMENTS.items():
        put("segment", key, {"rule": rule}, now)
    for key, body in MOMENTS.items() if moments else ():
        put("moment", key, moment_body(body), now)


# -- (1) processor throughput -------------------------------------------------------------------------
@dataclass(slots=True)
class ProcessorRun:
    defined: bool
    events: int
    seconds: float
    fired: int | None = None

    @property
    def events_per_s(self) -> float:
        return self.events / self.seconds


def processor_run(events: int, n_people: int, defined: bool, end: datetime) -> ProcessorRun:
    with tmp_dir("moments-processor") as workdir:
        kairos = _compat.open_kairos({"url": f"sqlite:///{workdir / 'kairos.db'}"})
        try:
            define(kairos, defined)
            fill(kairos, ShopStream(n_people, events, end, SEED), events)
            t = time.perf_counter()
            kairos.processor.run_until_caught_up()
            seconds = time.perf_counter() - t
            fired = sum(r[2] for r in kairos.store.state.counts("moment_stats")) if defined else 0
            return ProcessorRun(defined, events, seconds, fired)
        finally:
            kairos.close()


# -- (2) absence lateness in kairos serve -------------------------------------------------------------
@dataclass(slots=True)
class AbsenceResult:
    rate: float  # batches of 100 per second
    duration: float
    carts: int  # carts not followed by an order
    late_ms: list[float]  # per fired moment: seen committed - due
    ordered: int  # carts followed by an order within the minute
    wrongly_fired: int
    unfired: int  # carts without an order whose moment was never seen
    wrk_sent: int
    wrk_errors: int
    kept_schedule: bool
    lag_max: int | None = None
    note: str = ""


class Sender(threading.Thread):
    """Sends ``(at, user, event)`` one per request at ``start + at``; records the event times it sent."""

    def __init__(self, port: int, write_key: str, plan: Sequence[tuple[float, str, str]]) -> None:
        super().__init__(daemon=True)
        self.port, self.plan = port, sorted(plan)
        self.auth = "Basic " + base64.b64encode(f"{write_key}:".encode()).decode()
        self.sent: dict[tuple[str, str], int] = {}  # (user, event) -> event time, ms
        self.errors = 0

    def run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        rng = random.Random(SEED + 5)
        start = time.monotonic()
        for at, user, name in self.plan:
            time.sleep(max(0.0, start + at - time.monotonic()))
            now = datetime.now(UTC)
            stamp = now.isoformat(timespec="milliseconds").replace("+00:00", "Z")
            event = {"type": "track", "userId": user, "event": name, "messageId": uuid_from(rng), "timestamp": stamp}
            body = json.dumps({"batch": [event], "sentAt": stamp})
            for attempt in (1, 2):  # the server closes a connection idle for 5 s: one retry on a new one
                try:
                    conn.request(
                        "POST", "/v1/batch", body, {"Content-Type": "application/json", "Authorization": self.auth}
                    )
                    r = conn.getresponse()
                    r.read()
                    if r.status >= 300:
                        self.errors += 1
                    else:
                        self.sent[(user, name)] = int(now.timestamp() * 1000)
                    break
                except (OSError, http.client.HTTPException):
                    conn.close()
                    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
                    if attempt == 2:
                        self.errors += 1
        conn.close()


class MomentWatch(OutboxWatch):
    """``OutboxWatch`` for ``moment`` messages."""

    def run(self) -> None:
        conn = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=5)
        after = 0
        try:
            while not self._stop_event.is_set():
                with contextlib.suppress(sqlite3.OperationalError):  # the table may not exist yet
                    rows = conn.execute(
                        "SELECT id, type, profile_id, payload FROM outbox WHERE id > ? AND type = 'moment' ORDER BY id",
                        (after,),
                    ).fetchall()
                    t = time.time()
                    for rid, kind, pid, payload in rows:
                        self.seen.append((t, kind, pid, json.loads(payload)))
                        after = rid
                self._stop_event.wait(self.poll)
        finally:
            conn.close()


def _profiles_of(db: Path, users: Sequence[str]) -> dict[str, str]:
    """userId -> profile id, from the state db (read-only)."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        out = {}
        for user in users:
            row = conn.execute(
                "SELECT p.id FROM identities i JOIN profiles p ON p.pk = i.profile_pk"
                " WHERE i.type = 'user_id' AND i.value = ?",
                (user,),
            ).fetchone()
            if row is not None:
                out[user] = row[0]
        return out
    finally:
        conn.close()


def absence_run(rate: float, carts_for: float, end: datetime) -> AbsenceResult:
    duration = carts_for + WITHIN_S + 10  # the load lasts until the last cart's moment is due, and some
    with tmp_dir("moments-serve") as workdir:
        db = workdir / "kairos.db"
        url = f"sqlite:///{db}"
        kairos = _compat.open_kairos({"url": url})
        try:
            from kairos.definitions import moment_body

            kairos.store.admin.put_definition("moment", "bench_cart", moment_body(PROBE), int(time.time() * 1000))
            write_key = kairos.source_named("bench").write_key
        finally:
            kairos.close()
        bodies = workdir / "bodies.jsonl"
        _make_bodies(bodies, end)
        rng = random.Random(SEED + 7)
        plan: list[tuple[float, str, str]] = []
        for i in range(int(carts_for / 0.25)):
            plan.append((2 + i * 0.25, f"cart{i}", CART))
        for i in range(int(carts_for)):
            at = 2.1 + i
            plan += [(at, f"paid{i}", CART), (at + rng.uniform(5, 30), f"paid{i}", ORDER)]
        with Server.kairos(url, workdir) as server:
            watch = MomentWatch(workdir / "kairos-state.db")
            sender = Sender(server.port, write_key, plan)
            lags: list[int] = []
            stop = threading.Event()

            def sample() -> None:
                while not stop.wait(1.0):
                    with contextlib.suppress(OSError, http.client.HTTPException, ValueError, KeyError):
                        lags.append(int(server.get_json("/healthz", timeout=5)["lag"]))

            sampler = threading.Thread(target=sample, daemon=True)
            watch.start()
            sender.start()
            sampler.start()
            carts = [u for _, u, e in plan if e == CART and u.startswith("cart")]
            try:
                wrk = run_wrk(
                    server.url + "/v1/batch",
                    SCRIPT,
                    wrk_env(bodies, write_key, "1"),
                    duration=duration,
                    rate=rate,
                    connections=50,
                )
                sender.join()
                deadline = time.monotonic() + 20  # moments due after the load stopped are waited for
                while time.monotonic() < deadline and len(watch.seen) < len(carts):
                    time.sleep(0.2)
                time.sleep(1.0)
            finally:
                stop.set()
                watch.stop()
            users = sorted({u for _, u, _ in plan})
            profiles = _profiles_of(workdir / "kairos-state.db", users)
    by_profile = {pid: user for user, pid in profiles.items()}
    late, wrong, fired_users = [], 0, set()
    for seen, _kind, pid, body in watch.seen:
        user = by_profile.get(pid or "")
        if user is None:
            continue
        fired_users.add(user)
        if user.startswith("paid"):
            wrong += (user, ORDER) in sender.sent  # a cart whose order was not acknowledged may fire
        else:
            late.append(seen * 1000 - body["at"])
    sent_carts = [u for u in carts if (u, CART) in sender.sent]
    ordered = [u for _, u, e in plan if e == ORDER and (u, ORDER) in sender.sent]
    note = []
    if sender.errors:
        note.append(f"{sender.errors} probe requests failed")
    if len(profiles) < len(users):
        note.append(f"{len(users) - len(profiles)} probe users without a profile at the end")
    return AbsenceResult(
        rate,
        duration,
        len(sent_carts),
        late,
        len(ordered),
        wrong,
        sum(1 for u in sent_carts if u not in fired_users),
        wrk.sent,
        wrk.non_2xx + wrk.socket_errors,
        wrk.sent >= 0.98 * rate * duration,
        max(lags, default=None),
        "; ".join(note),
    )


# -- the whole part -----------------------------------------------------------------------------------
@dataclass(slots=True)
class MomentsResult:
    events: int
    people: int
    processor: list[list[ProcessorRun]]  # per repeat: [without, with]
    absence: AbsenceResult | None
    default_concurrency: int
    throughput: list[ThroughputRun]  # at the default, then extras
    isolation: list[list[IsolationRun]]  # per repeat: alone, refused, hanging
    profile: dict[str, float] = field(default_factory=dict)  # (1) under cProfile, when the target was missed
    failures: list[str] = field(default_factory=list)

    def ratios(self) -> Stat:
        return Stat.of(w.events_per_s / n.events_per_s for n, w in self.processor)

    def at_default(self) -> Stat:
        return Stat.of(t.per_s for t in self.throughput if t.concurrency == self.default_concurrency)

    def isolation_ratios(self, beside: str) -> Stat:
        out = []
        for runs in self.isolation:
            alone = next((r for r in runs if r.beside == "alone" and r.latency_ms), None)
            other = next((r for r in runs if r.beside == beside and r.latency_ms), None)
            if alone is not None and other is not None and alone.p99 > 0:
                out.append(other.p99 / alone.p99)
        return Stat.of(out)


def from_json(data: Mapping[str, Any]) -> MomentsResult:
    return MomentsResult(
        data["events"],
        data["people"],
        [[from_fields(ProcessorRun, r) for r in pair] for pair in data.get("processor", [])],
        from_fields(AbsenceResult, data.get("absence")),
        int(data.get("default_concurrency", 0)),
        [from_fields(ThroughputRun, r) for r in data.get("throughput", [])],
        [[from_fields(IsolationRun, r) for r in runs] for runs in data.get("isolation", [])],
        dict(data.get("profile") or {}),
        list(data.get("failures", [])),
    )


# (1): where the processor's time goes with the moments, by function (cumulative seconds under cProfile).
PROFILED = {
    "processor batch (all projections)": ("pipeline/_batch.py", "apply"),
    "moments: apply (events)": ("moments/projection.py", "apply"),
    "moments: firing (timeline, outbox, count, context)": ("moments/projection.py", "_fire"),
    "moments: segment and trait changes": ("moments/projection.py", "_changes"),
    "moments: absence timers due": ("moments/projection.py", "wake"),
    "moments: changes without an event": ("moments/projection.py", "changed"),
    "CEL conditions (where, context, rules)": ("rules/_rule.py", "evaluate"),
    "context derivation": ("context/_derive.py", "derive"),
    "state commit": ("", "commit"),
}


def profile_run(events: int, n_people: int, end: datetime) -> dict[str, float]:
    """One run with the moments under cProfile: its total, and the cumulative seconds of ``PROFILED``."""
    with tmp_dir("moments-profile") as workdir:
        kairos = _compat.open_kairos({"url": f"sqlite:///{workdir / 'kairos.db'}"})
        try:
            define(kairos, True)
            fill(kairos, ShopStream(n_people, events, end, SEED), events)
            prof = cProfile.Profile()
            t = time.perf_counter()
            prof.enable()
            kairos.processor.run_until_caught_up()
            prof.disable()
            total = time.perf_counter() - t
        finally:
            kairos.close()
    stats: dict[Any, Any] = pstats.Stats(prof).stats  # type: ignore[attr-defined]
    out = {"total": total}
    for label, (path, func) in PROFILED.items():
        out[label] = max(
            (ct for (file, _line, name), (_cc, _nc, _tt, ct, _callers) in stats.items()
             if name == func and file.replace("\\", "/").endswith(path) and "kairos" in file),
            default=0.0,
        )  # fmt: skip
    return out


def run(args: argparse.Namespace) -> MomentsResult:
    from kairos.config import DeliverySettings

    use_defaults()
    end = datetime.now(UTC)
    default = DeliverySettings().concurrency
    result = MomentsResult(args.events, args.people, None, None, default, [], [])  # type: ignore[arg-type]
    result.processor = []
    for i in range(args.repeats):
        pair = []
        for defined in (False, True):
            r = processor_run(args.events, args.people, defined, end)
            print(f"    (f1) run {i + 1}, {'with' if defined else 'without'} moments: {fmt(r.events_per_s)} events/s")
            pair.append(r)
        result.processor.append(pair)
    if result.ratios().n and result.ratios().median < 0.6 and not args.no_profile:
        try:
            result.profile = profile_run(args.events, args.people, end)
        except Exception as exc:
            result.failures.append(f"(f1) profile: {type(exc).__name__}: {exc}")
    try:
        result.absence = absence_run(args.rate, args.carts_for, end)
        a = result.absence
        print(
            f"    (f2) absence lateness p50/p99 {fmt_percentile(a.late_ms, 50)} / {fmt_percentile(a.late_ms, 99)} ms;"
            f" wrong {a.wrongly_fired}"
        )
    except Exception as exc:
        result.failures.append(f"(f2) absence: {type(exc).__name__}: {exc}")
    try:
        with tmp_dir("moments-receiver") as workdir, receiver(workdir) as port:
            for i in range(args.repeats):
                for c in (None, *args.concurrency_extra):
                    t = throughput_run(port, args.messages, c)
                    print(f"    (f3) run {i + 1}, concurrency {t.concurrency}: {fmt(t.per_s)} deliveries/s")
                    result.throughput.append(t)
            for i in range(args.repeats):
                trio = []
                for beside in ("alone", "refused", "hanging"):
                    iso = isolation_run(port, beside, args.flow, args.flow_for)
                    print(f"    (f4) run {i + 1}, {beside}: p50 {fmt(iso.p50)} ms, p99 {fmt(iso.p99)} ms")
                    trio.append(iso)
                result.isolation.append(trio)
    except Exception as exc:
        result.failures.append(f"(f3/f4) delivery: {type(exc).__name__}: {exc}")
    return result


# -- report -------------------------------------------------------------------------------------------
def targets(r: MomentsResult) -> list[Target]:
    out = [Target("(f) Processor, 50 moments / none", r.ratios(), 0.6, "x")]
    if r.absence is not None:
        late = sorted(r.absence.late_ms)
        load = f"{fmt(r.absence.rate * BATCH)} events/s"
        out.append(
            Target(
                f"(f) Absence moment lateness p99 at {load}",
                Stat.of([percentile(late, 99)] if late else []),
                5000,
                "ms",
                False,
            )
        )
        out.append(
            Target("(f) Absences fired though the order came", Stat.of([r.absence.wrongly_fired]), 1, "carts", False)
        )
    if r.throughput:
        out.append(Target(f"(f) Deliveries, concurrency {r.default_concurrency} (default)", r.at_default(), 2000, "/s"))
    if r.isolation:
        for beside in ("hanging", "refused"):
            out.append(
                Target(
                    f"(f) Healthy p99 beside a {beside} destination / alone",
                    r.isolation_ratios(beside),
                    1.2,
                    "x",
                    False,
                )
            )
    return out


def section(r: MomentsResult) -> list[str]:
    kinds: dict[str, int] = {}
    for key in MOMENTS:
        kind = KINDS.get(key.split("_")[0].rstrip("3"), "segment changes")
        kinds[kind] = kinds.get(kind, 0) + 1
    rows = [
        [str(i + 1), fmt(n.events_per_s), fmt(w.events_per_s), f"{w.events_per_s / n.events_per_s:.2f}x", fmt(w.fired)]
        for i, (n, w) in enumerate(r.processor)
    ]
    without = Stat.of(n.events_per_s for n, _ in r.processor)
    with_ = Stat.of(w.events_per_s for _, w in r.processor)
    out = [
        "## (f) Moments and delivery (current code only)",
        "",
        f"**Processor.** {fmt(r.events)} events from {fmt(r.people)} people (the stream of (e), timestamps over the"
        " last 90 days), applied in-process on SQLite by `processor.run_until_caught_up()`, once without moments"
        " and once with 50 ("
        + ", ".join(f"{n} {k}" for k, n in kinds.items())
        + "; absences within 30m/1h/2h/1d, sequences of 2-3 steps within 1d/7d, cool-downs on 21 of them,"
        " `context.daypart` / `context.device_class` conditions on 5, crossings of computed and `rfm_*` traits,"
        " `segment_entered` over 3 segments). Both runs define the 4 computed traits and 3 segments the"
        " moments read, so the ratio is the moments' own cost. Alternating, per repeat:",
        "",
        *table(["repeat", "no moments, events/s", "50 moments, events/s", "ratio", "occurrences fired"], rows),
        "",
        f"Median: {without.show()} events/s without, {with_.show()} with; ratio {r.ratios().show('x')}."
        f" The 50 moments fire {fmt(Stat.of((w.fired or 0) / w.events for _, w in r.processor).median)}"
        " occurrences per event: the stream's events of one person are days apart, so almost every absence"
        " comes due unanswered, and each occurrence writes a timeline item, an outbox message and a count.",
        "",
    ]
    if r.profile:
        out += [_profile_line(r.profile), ""]
    if r.absence is not None:
        a = r.absence
        late = sorted(a.late_ms)
        out += [
            f"**Absence lateness in `kairos serve`** (default settings: processor in its own process,"
            f" `processor.timer_grace_ms` 2,000). wrk sends {fmt(a.rate * BATCH)} events/s ({a.rate:g} batches of"
            f" {BATCH}/s, the stream of (e)) for {a.duration:g} s ({fmt(a.wrk_sent)} batches, {a.wrk_errors} errors"
            f"{'' if a.kept_schedule else '; the schedule was not kept'}); max processor lag {fmt(a.lag_max)} events."
            f" The moment `{json.dumps(PROBE['when'])}`; alongside the load, one `{CART}` every 0.25 s, each"
            f" for a new user ({a.carts} sent), and every second a cart followed 5-30 s later by `{ORDER}` for"
            f" another new user ({a.ordered}). Lateness = when the `moment` outbox message was first seen"
            " committed (read-only poll every 10 ms) - its `at` (the cart's time + 1 minute).",
            "",
            *table(
                ["", "fired", "p50 ms", "p90 ms", "p99 ms", "max ms"],
                [
                    [
                        "late by",
                        str(len(late)),
                        *(fmt_percentile(late, q) for q in (50, 90, 99)),
                        fmt_percentile(late, 100),
                    ]
                ],
            ),
            "",
            f"Carts followed by an order that fired anyway: **{a.wrongly_fired}** of {a.ordered}. Carts without"
            f" an order whose moment was never seen: {a.unfired} of {a.carts}.",
            "",
        ]
        if a.note:
            out += [f"Caveat: {a.note}.", ""]
    if r.throughput:
        extra = sorted({t.concurrency for t in r.throughput} - {r.default_concurrency})
        rows = []
        for c in [r.default_concurrency, *extra]:
            runs = [t for t in r.throughput if t.concurrency == c]
            rows.append(
                [
                    f"{c}{' (default)' if c == r.default_concurrency else ''}",
                    Stat.of(t.per_s for t in runs).show(),
                    Stat.of(t.cpu_ms_per_delivery for t in runs).show(),
                    str(len(runs)),
                ]
            )
        out += [
            f"**Delivery throughput.** {fmt(r.throughput[0].messages)} segment entries queued, then the real worker"
            " (`kairos.activate.worker.run_forever` in a thread: plan from the outbox, render bodies with traits and"
            " the consent gate, sign, POST with aiohttp, record outcomes) delivers them to a Starlette app on"
            " uvicorn in its own process on loopback, answering 204; wall time from starting the worker until all"
            " are recorded delivered. `delivery.concurrency` (requests in flight per destination) defaults to"
            f" {r.default_concurrency}:",
            "",
            *table(["concurrency", "deliveries/s, median (min-max)", "worker CPU ms per delivery", "runs"], rows),
            "",
        ]
    if r.isolation:
        flat = [x for trio in r.isolation for x in trio]
        rows = []
        for beside in ("alone", "refused", "hanging"):
            same = [x for x in flat if x.beside == beside]
            rows.append(
                [
                    beside if beside == "alone" else f"beside a {beside} one",
                    Stat.of(x.p50 for x in same).show(),
                    Stat.of(x.p99 for x in same).show(),
                    f"{sum(x.delivered for x in same)} / {sum(x.messages for x in same)}",
                    str(sum(x.other_attempts for x in same)) if beside != "alone" else "",
                ]
            )
        m = flat[0].messages if flat else 0
        out += [
            f"**One destination never holding up another.** {fmt(m)} segment entries per run, queued at a steady"
            " rate (the processor applies them in the same process as they come, every 0.1 s) to a healthy"
            " destination, with the worker (one process, default settings) delivering meanwhile; alone, then"
            " beside a destination whose port refuses connections, then beside one whose receiver accepts and"
            " never answers (each request waits for `delivery.timeout_seconds`, 10 s). Latency of the healthy one ="
            " the delivery recorded - the outbox message committed (ms clock), which includes the idle poll"
            " (`delivery.poll_interval_ms`, 200). Alternating, per repeat:",
            "",
            *table(["healthy destination", "p50 ms", "p99 ms", "delivered", "attempts recorded to the other"], rows),
            "",
            "Ratios of p99 per repeat: beside a hanging one "
            + r.isolation_ratios("hanging").show("x")
            + "; beside a refusing one "
            + r.isolation_ratios("refused").show("x")
            + ".",
            "",
        ]
    if r.failures:
        out += ["Failures: " + "; ".join(r.failures), ""]
    return out


def _profile_line(p: Mapping[str, float]) -> str:
    total = p.get("total") or float("nan")
    parts = [f"{label} {p[label]:.2f} s ({p[label] / total * 100:.0f}%)" for label in PROFILED if p.get(label)]
    return (
        f"Under cProfile (one more run with the moments, {total:.1f} s with the profiler's overhead), cumulative"
        " time: " + "; ".join(parts) + "."
    )


def limits(r: MomentsResult, missed: Sequence[Target]) -> list[str]:
    """The "what limits it" paragraph for (f)."""
    if not missed:
        return []
    out = ["**Moments and delivery.** " + "; ".join(t.shortfall() for t in missed) + "."]
    if any("moments / none" in t.name for t in missed) and r.profile:
        p = r.profile
        total = p.get("total") or float("nan")
        entry_points = ("moments: apply (events)", "moments: absence timers due", "moments: changes without an event")
        moments = sum(p.get(k, 0.0) for k in entry_points)
        out[0] += (
            f" The moments' own code is {moments / total * 100:.0f}% of the profiled run (its apply on each event,"
            " which includes the before/after comparison on each change, the timers that come due, changes without"
            " an event); firing alone (nested in those)"
            f" {p.get('moments: firing (timeline, outbox, count, context)', 0) / total * 100:.0f}%, CEL conditions"
            f" {p.get('CEL conditions (where, context, rules)', 0) / total * 100:.0f}% (those of segments"
            " included). The cost grows with occurrences per event: with these events days apart, nearly every"
            " absence fires."
        )
    if any("Deliveries" in t.name for t in missed) and r.throughput:
        cpu = Stat.of(t.cpu_ms_per_delivery for t in r.throughput if t.concurrency == r.default_concurrency)
        out[0] += (
            f" Delivery: the worker uses {fmt(cpu.median)} ms of CPU per delivery at the default concurrency"
            " (planning, reading and rendering the body, signing, aiohttp, recording): one interpreter, one core,"
            f" so about {fmt(1000 / cpu.median)} deliveries/s at the very most, whatever the receiver. Each round"
            " sends at most `delivery.concurrency` requests, waits for all of them, then records the outcomes and"
            " plans again (four store calls through `asyncio.to_thread`), so that fixed cost is paid every"
            f" {r.default_concurrency} deliveries at the default; at 16 it is spread over 16 and the CPU per"
            " delivery falls (see the table)."
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--events", type=int, default=20_000, help="(1) events in the log (default: %(default)s)")
    add("--people", type=int, help="(1) people they come from (default: 15%% of --events)")
    add("--repeats", type=int, default=3, help="(1, 3, 4) repeats (default: %(default)s)")
    add("--no-profile", action="store_true", help="(1) no cProfile run when the target is missed")
    add("--rate", type=float, default=30, help="(2) wrk batches of 100 events per second (default: %(default)s)")
    add("--carts-for", type=float, default=30, help="(2) seconds during which carts are sent (default: %(default)s)")
    add("--messages", type=int, default=3000, help="(3) deliveries per run (default: %(default)s)")
    add("--concurrency-extra", type=int, nargs="*", default=[4], help="(3) other concurrency settings to measure")
    add("--flow", type=float, default=150, help="(4) segment entries per second (default: %(default)s)")
    add("--flow-for", type=float, default=12, help="(4) seconds of that flow per run (default: %(default)s)")
    add("--json-out", type=Path, help="write the result here (make bench runs it this way)")
    args = parser.parse_args()
    args.people = args.people or max(100, args.events * 3 // 20)
    exit_on_sigterm()
    result = run(args)
    data = {"kairos_path": _compat.kairos_path(), **asdict(result)}
    if args.json_out:
        args.json_out.write_text(json.dumps(data, indent=2) + "\n")
        return
    print("\n".join([*(" | ".join(t.row()) for t in targets(result)), "", *section(result)]))


if __name__ == "__main__":
    main()

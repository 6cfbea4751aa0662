"""(a) Durable ingest over HTTP: Segment batches of 100 events POSTed to ``/v1/batch`` by wrk.

Three servers, one after the other, each with a warm-up then a measured wrk run:

1. the baseline, a bare Starlette app on the same uvicorn stack that only decodes the batch (``_bare.py``);
2. ``kairos serve`` on a fresh SQLite store with the processor disabled: ingest alone;
3. ``kairos serve`` on another fresh store with the processor running in the same process.

After each Kairos run the log table is counted: every 200 must stand for 100 stored events. A few
requests are still in flight when wrk stops (it counts them as sent but not answered); they may be
stored too, so the check is ``100 x acked ≤ stored ≤ 100 x sent`` with ``stored`` a multiple of 100.

Run alone: ``python bench/ingest.py [--duration 10]``.
"""

from __future__ import annotations

import argparse
import base64
import random
import re
import sqlite3
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import msgspec

from _common import (
    BENCH,
    Server,
    Target,
    WrkResult,
    fmt,
    run_wrk,
    save_json,
    table,
    tmp_dir,
    use_defaults,
    wrk_path,
)
from _events import EPOCH, Person, batch_body, event_size, identify, people, track, uuid_from

__all__ = ["IngestResult", "main", "run", "section", "targets"]

BATCH = 100
BODIES = 16
DECODE = "decode_body (inflate, check UTF-8, split into each event's bytes)"
PREPARE = "Kairos.prepare (validate each event from its bytes, keep them)"
MARK = "@@N@@"
SCRIPT = BENCH / "wrk_batch.lua"


@dataclass(frozen=True, slots=True)
class Run:
    name: str
    wrk: WrkResult
    server_cores: float  # server CPU seconds / wall seconds during the measured run
    wrk_cores: float
    stored: int | None = None  # events the log gained during the measured run
    check: str = ""
    processed: int | None = None  # events the processor applied during the measured run
    lag_after: int | None = None  # log entries not yet applied when wrk stopped
    catch_up_s: float | None = None  # time the processor then needed to apply them

    @property
    def batches_per_s(self) -> float:
        return self.wrk.rate

    @property
    def events_per_s(self) -> float:
        return self.wrk.rate * BATCH


@dataclass(frozen=True, slots=True)
class IngestResult:
    event_bytes: float
    body_bytes: int
    duration: float
    bare: Run
    kairos: Run
    kairos_processor: Run
    breakdown_us: dict[str, float]  # in-process cost per 100-event batch of each step

    @property
    def ratio(self) -> float:
        return self.kairos.events_per_s / self.bare.events_per_s


# -- load --------------------------------------------------------------------------------------------
def make_bodies(path: Path, seed: int = 7) -> tuple[float, int]:
    """Write the rotated batch bodies, one per line; return the mean event size and the body size."""
    rng = random.Random(seed)
    population: list[Person] = people(5_000, rng, known=1.0)
    events: list[dict[str, Any]] = []
    lines = []
    ts = EPOCH
    for _ in range(BODIES):
        batch = []
        for _ in range(BATCH):
            person = population[rng.randrange(len(population))]
            device = person.devices[0]
            # analytics.js: ids end in the marker, which wrk replaces with a number unique to each request.
            mid = f"{uuid_from(rng)}-{MARK}"
            if rng.random() < 0.2:
                batch.append(identify(rng, mid, device, person, ts))
            else:
                batch.append(track(rng, mid, device, person.user_id if rng.random() < 0.5 else None, ts))
        events += batch
        lines.append(msgspec.json.encode(batch_body(batch, ts)).decode())
    path.write_text("\n".join(lines) + "\n")
    size = event_size(events) + len("1.1000") - len(MARK)  # the marker becomes "<thread>.<request>"
    return size, len(lines[0])


def _wrk_env(bodies: Path, write_key: str) -> dict[str, str]:
    auth = "Basic " + base64.b64encode(f"{write_key}:".encode()).decode()
    return {"BENCH_BODIES": str(bodies), "BENCH_AUTH": auth, "BENCH_PATH": "/v1/batch"}


def _log_rows(db: Path) -> int:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return int(conn.execute("SELECT COUNT(*) FROM log").fetchone()[0])
    finally:
        conn.close()


def _measure(server: Server, env: dict[str, str], duration: float, warmup: float) -> tuple[WrkResult, float]:
    if warmup > 0:
        run_wrk(server.url + "/v1/batch", SCRIPT, env, duration=warmup)
        time.sleep(1.0)  # let the requests wrk abandoned at the end of the warm-up finish
    cpu0, t0 = server.cpu(), time.monotonic()
    result = run_wrk(server.url + "/v1/batch", SCRIPT, env, duration=duration)
    cores = (server.cpu() - cpu0) / (time.monotonic() - t0)
    return result, cores


def _check(result: WrkResult, stored: int) -> str:
    problems = []
    if result.non_2xx:
        problems.append(f"{result.non_2xx} non-2xx responses")
    if result.socket_errors:
        problems.append(f"{result.socket_errors} socket errors")
    if stored % BATCH:
        problems.append(f"{stored} events stored is not a whole number of batches")
    if not BATCH * result.ok <= stored <= BATCH * result.sent:
        problems.append(f"{stored} events stored, outside [{BATCH * result.ok}, {BATCH * result.sent}]")
    if problems:
        return "FAILED: " + "; ".join(problems)
    extra = stored // BATCH - result.ok
    return f"ok: {fmt(stored)} events stored = {fmt(result.ok)} acked batches x {BATCH}" + (
        f" + {extra} batches in flight when wrk stopped (sent, not yet answered)" if extra else ""
    )


def _kairos_run(workdir: Path, bodies: Path, *, processor: bool, duration: float, warmup: float) -> Run:
    from kairos.config import load_settings
    from kairos.runtime import Kairos

    name = "processor" if processor else "ingest"
    db = workdir / f"{name}.db"
    kairos = Kairos(load_settings(store={"url": f"sqlite:///{db}"}))
    write_key = kairos.source_named("bench", "observed").write_key
    kairos.close()
    env = _wrk_env(bodies, write_key)
    with Server.kairos(f"sqlite:///{db}", workdir, processor=processor) as server:
        if warmup > 0:
            run_wrk(server.url + "/v1/batch", SCRIPT, env, duration=warmup)
            time.sleep(1.0)
        before = _log_rows(db)
        health0 = server.get_json("/healthz")
        cpu0, t0 = server.cpu(), time.monotonic()
        result = run_wrk(server.url + "/v1/batch", SCRIPT, env, duration=duration)
        cores = (server.cpu() - cpu0) / (time.monotonic() - t0)
        health1 = server.get_json("/healthz")
        time.sleep(1.0)  # requests in flight when wrk stopped complete within milliseconds
        stored = _log_rows(db) - before
        processed = lag = catch_up = None
        if processor:
            processed = health1["processed_seq"] - health0["processed_seq"]
            lag = health1["log_seq"] - health1["processed_seq"]
            catch_up = _wait_caught_up(server, timeout=120.0)
    return Run(
        "Kairos, processor running" if processor else "Kairos, processor disabled",
        result,
        cores,
        result.cpu_seconds / result.seconds,
        stored,
        _check(result, stored),
        processed,
        lag,
        catch_up,
    )


def _wait_caught_up(server: Server, timeout: float) -> float | None:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        health = server.get_json("/healthz")
        if health["lag"] == 0:
            return time.monotonic() - start
        time.sleep(0.2)
    return None


def _bare_run(workdir: Path, bodies: Path, duration: float, warmup: float) -> Run:
    env = _wrk_env(bodies, "unused")
    with Server.bare(workdir) as server:
        result, cores = _measure(server, env, duration, warmup)
    return Run("bare Starlette + msgspec (baseline)", result, cores, result.cpu_seconds / result.seconds)


# -- where the time goes -----------------------------------------------------------------------------
def breakdown(workdir: Path, bodies: Path, rounds: int = 300) -> dict[str, float]:
    """In-process µs per 100-event batch for each step a collect request takes (no HTTP)."""
    from kairos.collect import decode_body
    from kairos.config import load_settings
    from kairos.runtime import Kairos

    raw = [line.replace(MARK, "1.1").encode() for line in bodies.read_text().splitlines()]
    kairos = Kairos(load_settings(store={"url": f"sqlite:///{workdir / 'breakdown.db'}"}))
    try:
        source = kairos.source_named("bench", "observed")
        limits = kairos.settings.collect
        bare = msgspec.json.Decoder()

        def timed(fn: Callable[[int], object], n: int = rounds) -> float:
            samples = []
            for _ in range(3):
                t = time.perf_counter()
                for i in range(n):
                    fn(i)
                samples.append((time.perf_counter() - t) / n * 1e6)
            return min(samples)

        out = {
            "msgspec decode, untyped (reference)": timed(lambda i: bare.decode(raw[i % len(raw)])),
            DECODE: timed(lambda i: decode_body(raw[i % len(raw)], None, "batch", limits)),
        }
        split = [decode_body(b, None, "batch", limits) for b in raw]
        out[PREPARE] = timed(lambda i: kairos.prepare(split[i % len(split)], "batch", source.write_key))
        payloads = [bare.decode(b) for b in raw]
        out["Kairos.prepare_for a decoded request (import, demo)"] = timed(
            lambda i: kairos.prepare_for(source, payloads[i % len(payloads)], "batch")
        )
        events = [kairos.prepare(b, "batch", source.write_key)[1] for b in split]
        out["log append, 1 batch per commit"] = timed(lambda i: kairos.append([(source.name, events[i % len(events)])]))
        group = [(source.name, e) for e in (events * 2)[:32]]
        out["log append, 32 batches per commit (per batch)"] = timed(lambda i: kairos.append(group), rounds // 32) / 32
    finally:
        kairos.close()
    return out


# -- driver ------------------------------------------------------------------------------------------
def run(duration: float = 10.0, warmup: float = 2.0) -> IngestResult:
    if wrk_path() is None:
        raise SystemExit("wrk is not installed; install it with: apt-get install -y wrk")
    use_defaults()
    with tmp_dir("ingest") as workdir:
        bodies = workdir / "bodies.jsonl"
        event_bytes, body_bytes = make_bodies(bodies)
        bare = _bare_run(workdir, bodies, duration, warmup)
        print(f"  bare:      {fmt(bare.events_per_s)} events/s", flush=True)
        alone = _kairos_run(workdir, bodies, processor=False, duration=duration, warmup=warmup)
        print(f"  kairos:    {fmt(alone.events_per_s)} events/s; {alone.check}", flush=True)
        with_proc = _kairos_run(workdir, bodies, processor=True, duration=duration, warmup=warmup)
        print(f"  +processor: {fmt(with_proc.events_per_s)} events/s; {with_proc.check}", flush=True)
        parts = breakdown(workdir, bodies)
    return IngestResult(event_bytes, body_bytes, duration, bare, alone, with_proc, parts)


def targets(r: IngestResult) -> list[Target]:
    return [
        Target("Ingest, processor disabled", r.kairos.events_per_s, 50_000, "events/s"),
        Target("Ingest vs bare Starlette", r.ratio * 100, 25, "% of bare"),
    ]


def section(r: IngestResult) -> list[str]:
    rows = []
    for run_ in (r.bare, r.kairos, r.kairos_processor):
        w = run_.wrk
        rows.append(
            [
                run_.name,
                fmt(run_.batches_per_s),
                fmt(run_.events_per_s),
                f"{w.p50_ms:.1f}",
                f"{w.p99_ms:.1f}",
                f"{run_.events_per_s / r.bare.events_per_s * 100:.0f}%",
                f"{run_.server_cores:.2f} / {run_.wrk_cores:.2f}",
                str(w.non_2xx + w.socket_errors),
            ]
        )
    out = [
        "## (a) Ingest over HTTP",
        "",
        f"wrk POSTs batches of {BATCH} Segment events (80% `track`, 20% `identify`, {r.event_bytes:.0f} bytes"
        f" per event on average, {fmt(r.body_bytes)}-byte bodies) to `/v1/batch`, rotating {BODIES}"
        " pre-generated bodies, with the write key in an HTTP Basic `Authorization` header. Every event"
        " carries a messageId never sent before (the Lua script stamps each request's number into them), so"
        " the run with the processor applies real events, not duplicates.",
        "",
        f"Command (each server: {r.duration:g} s measured after a warm-up run):",
        "",
        "```",
        "BENCH_BODIES=bodies.jsonl BENCH_AUTH='Basic <base64 of writeKey:>' "
        + re.sub(r"http://127\.0\.0\.1:\d+", "http://127.0.0.1:$PORT", r.kairos.wrk.command),
        "```",
        "",
        *table(
            [
                "server",
                "batches/s",
                "events/s",
                "p50 ms",
                "p99 ms",
                "vs bare",
                "CPU cores: server / wrk",
                "errors",
            ],
            rows,
        ),
        "",
        "Honesty check: after each Kairos run the `log` table was counted.",
        "",
        f"- processor disabled: {r.kairos.check}",
        f"- processor running: {r.kairos_processor.check}",
    ]
    p = r.kairos_processor
    if p.processed is not None:
        caught = (
            f"it caught up {p.catch_up_s:.1f} s after the load stopped"
            if p.catch_up_s is not None
            else "it had not caught up 120 s after the load stopped"
        )
        out += [
            "",
            f"With the processor in the same process, it applied {fmt(p.processed)} events during the"
            f" {r.duration:g} s run ({fmt(p.processed / r.duration)} events/s) while ingest ran;"
            f" {fmt(p.lag_after or 0)} events were waiting when wrk stopped, and {caught}.",
        ]
    out += [
        "",
        "Where a request's time goes, in-process on the same bodies (µs per 100-event batch, best of 3):",
        "",
        *table(
            ["step", "µs per batch", "µs per event"],
            [[k, fmt(v), f"{v / BATCH:.2f}"] for k, v in r.breakdown_us.items()],
        ),
    ]
    return out


def to_json(r: IngestResult) -> dict[str, Any]:
    data = asdict(r)
    for key in ("bare", "kairos", "kairos_processor"):
        run_: Run = getattr(r, key)
        data[key]["events_per_s"] = run_.events_per_s
        data[key]["batches_per_s"] = run_.batches_per_s
    return data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of each measured wrk run")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of the warm-up run before it")
    args = parser.parse_args()
    result = run(args.duration, args.warmup)
    save_json("ingest", to_json(result))
    print("\n".join(section(result)))
    for t in targets(result):
        print(" | ".join(t.row()))


if __name__ == "__main__":
    main()

"""(a) Durable ingest over HTTP: Segment batches of 100 events POSTed to ``/v1/batch`` by wrk.

One server per run, a warm-up then a measured wrk run:

- ``--server kairos``: ``python -m kairos serve`` with default settings, so the processor runs as the
  version under test runs it by default (the baseline: a thread in the server process), on a fresh
  SQLite store in a fresh temporary directory, with a source created by ``kairos sources add --json``;
- ``--server bare``: the bare Starlette app on the same uvicorn stack that only decodes the batch
  (``_bare.py``), the ceiling any collect endpoint on this stack can reach.

After a Kairos run the log is counted: every 200 must stand for 100 stored events. A few requests are
still in flight when wrk stops (it counts them as sent but not answered); they may be stored too, so the
check is ``100 x acked ≤ stored ≤ 100 x sent`` with ``stored`` a multiple of 100.

Run alone: ``python bench/ingest.py [--server kairos] [--duration 10]``; ``make bench`` runs it once per
version, server and repeat with ``--json-out``.
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import json
import random
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import msgspec

import _compat
from _common import BENCH, Server, WrkResult, add_source, exit_on_sigterm, require_wrk, run_wrk, tmp_dir, use_defaults
from _events import EPOCH, Person, batch_body, event_size, identify, people, track, uuid_from
from _stats import Stat, fmt, table

__all__ = [
    "APPEND",
    "BATCH",
    "PREPARE",
    "SCRIPT",
    "Run",
    "check_stored",
    "main",
    "make_bodies",
    "measure",
    "run_from_json",
    "section",
    "wrk_env",
]

BATCH = 100
BODIES = 16
MARK = "@@N@@"
SCRIPT = BENCH / "wrk_batch.lua"
CONNECTIONS = 32


@dataclass(frozen=True, slots=True)
class Run:
    name: str
    wrk: WrkResult
    server_cores: float  # server CPU seconds (with its child processes) / wall seconds during the run
    wrk_cores: float
    event_bytes: float
    body_bytes: int
    stored: int | None = None  # events the log gained during the measured run
    check: str = ""
    processed: int | None = None  # events the processor applied during the measured run
    lag_after: int | None = None  # log entries not yet applied when wrk stopped
    catch_up_s: float | None = None  # time the processor then needed to apply them
    catch_up_timeout: float = 0.0
    breakdown_us: dict[str, float] = dataclasses.field(default_factory=dict)  # in-process µs per batch

    @property
    def batches_per_s(self) -> float:
        return self.wrk.rate

    @property
    def events_per_s(self) -> float:
        return self.wrk.rate * BATCH

    @property
    def cpu_us_per_batch(self) -> float:
        return self.server_cores * 1e6 / self.batches_per_s if self.batches_per_s else float("nan")


def run_from_json(data: Mapping[str, Any]) -> Run:
    names = {f.name for f in dataclasses.fields(Run)}
    wrk_names = {f.name for f in dataclasses.fields(WrkResult)}
    values = {k: v for k, v in data.items() if k in names}
    values["wrk"] = WrkResult(**{k: v for k, v in data["wrk"].items() if k in wrk_names})
    return Run(**values)


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
    size = event_size(events) + len("1.1.1000") - len(MARK)  # the marker becomes "<run>.<thread>.<request>"
    return size, len(lines[0])


def wrk_env(bodies: Path, write_key: str, run: str) -> dict[str, str]:
    auth = "Basic " + base64.b64encode(f"{write_key}:".encode()).decode()
    return {"BENCH_BODIES": str(bodies), "BENCH_AUTH": auth, "BENCH_PATH": "/v1/batch", "BENCH_RUN": run}


def check_stored(stored: int, *runs: WrkResult) -> str:
    """Whether the log gained what the wrk ``runs`` (one after the other) say they sent."""
    ok, sent = sum(r.ok for r in runs), sum(r.sent for r in runs)
    problems = []
    if non_2xx := sum(r.non_2xx for r in runs):
        problems.append(f"{non_2xx} non-2xx responses")
    if socket_errors := sum(r.socket_errors for r in runs):
        problems.append(f"{socket_errors} socket errors")
    if stored % BATCH:
        problems.append(f"{stored} events stored is not a whole number of batches")
    if not BATCH * ok <= stored <= BATCH * sent:
        problems.append(f"{stored} events stored, outside [{BATCH * ok}, {BATCH * sent}]")
    if problems:
        return "FAILED: " + "; ".join(problems)
    extra = stored // BATCH - ok
    return f"ok: {fmt(stored)} events stored = {fmt(ok)} acked batches x {BATCH}" + (
        f" + {extra} batches in flight when wrk stopped (sent, not yet answered)" if extra else ""
    )


def wait_caught_up(server: Server, timeout: float) -> float | None:
    """Seconds until ``/healthz`` reports lag 0, or ``None`` if not within ``timeout``."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if server.get_json("/healthz")["lag"] == 0:
            return time.monotonic() - start
        time.sleep(0.2)
    return None


def warm_up(server: Server, bodies: Path, write_key: str, seconds: float) -> None:
    if seconds > 0:
        run_wrk(server.url + "/v1/batch", SCRIPT, wrk_env(bodies, write_key, "0"), duration=seconds)
        time.sleep(1.0)  # let the requests wrk abandoned at the end of the warm-up finish


def measure(server: Server, bodies: Path, write_key: str, duration: float) -> tuple[WrkResult, float]:
    """One measured wrk run; return its result and the cores the server used meanwhile."""
    cpu0, t0 = server.cpu(), time.monotonic()
    url = server.url + "/v1/batch"
    result = run_wrk(url, SCRIPT, wrk_env(bodies, write_key, "1"), duration=duration, connections=CONNECTIONS)
    return result, (server.cpu() - cpu0) / (time.monotonic() - t0)


def kairos_run(workdir: Path, duration: float, warmup: float, catch_up_timeout: float) -> Run:
    bodies = workdir / "bodies.jsonl"
    event_bytes, body_bytes = make_bodies(bodies)
    db = workdir / "kairos.db"
    url = f"sqlite:///{db}"
    write_key = add_source(url, workdir)
    with Server.kairos(url, workdir) as server:
        warm_up(server, bodies, write_key, warmup)
        wait_caught_up(server, catch_up_timeout)  # the measured run starts with nothing left to apply
        before = _compat.count_log(db)
        health0 = server.get_json("/healthz")
        result, cores = measure(server, bodies, write_key, duration)
        health1 = server.get_json("/healthz")
        time.sleep(1.0)  # requests in flight when wrk stopped complete within milliseconds
        stored = _compat.count_log(db) - before
        catch_up = wait_caught_up(server, catch_up_timeout)
    return Run(
        "Kairos (kairos serve, default settings)",
        result,
        cores,
        result.cpu_seconds / result.seconds,
        event_bytes,
        body_bytes,
        stored,
        check_stored(stored, result),
        health1["processed_seq"] - health0["processed_seq"],
        health1["lag"],
        catch_up,
        catch_up_timeout,
    )


def bare_run(workdir: Path, duration: float, warmup: float) -> Run:
    bodies = workdir / "bodies.jsonl"
    event_bytes, body_bytes = make_bodies(bodies)
    with Server.bare(workdir) as server:
        warm_up(server, bodies, "unused", warmup)
        result, cores = measure(server, bodies, "unused", duration)
    return Run("bare Starlette + msgspec", result, cores, result.cpu_seconds / result.seconds, event_bytes, body_bytes)


# -- where the time goes -----------------------------------------------------------------------------
PREPARE = "Kairos.prepare (HTTP path: validate the decoded request)"
APPEND = "append, 32 batches per call (per batch)"


def breakdown(workdir: Path, rounds: int = 300) -> dict[str, float]:
    """In-process µs per 100-event batch for each step a collect request takes (no HTTP).

    The steps are the version's own HTTP path, ``decode_body`` then ``Kairos.prepare``, and the import
    path, ``prepare_for`` on a decoded request. A step the version cannot run is left out.
    """
    bodies = workdir / "bodies.jsonl"
    make_bodies(bodies)
    raw = [line.replace(MARK, "1.1.1").encode() for line in bodies.read_text().splitlines()]
    kairos = _compat.open_kairos({"url": f"sqlite:///{workdir / 'breakdown.db'}"})
    out: dict[str, float] = {}

    def timed(fn: Callable[[int], object], n: int = rounds) -> float:
        samples = []
        for _ in range(3):
            t = time.perf_counter()
            for i in range(n):
                fn(i)
            samples.append((time.perf_counter() - t) / n * 1e6)
        return min(samples)

    def step(name: str, fn: Callable[[], float]) -> None:
        try:
            out[name] = fn()
        except Exception as exc:  # a step this version does not have: say so on the console, go on
            print(f"    breakdown: {name} skipped ({type(exc).__name__}: {exc})", flush=True)

    try:
        source = kairos.source_named("bench")
        bare = msgspec.json.Decoder()
        untyped = timed(lambda i: bare.decode(raw[i % len(raw)]))
        out["msgspec decode, untyped (reference)"] = untyped
        if (decode := _compat.request_decoder(kairos)) is not None:
            decoded = decode
            step("decode_body", lambda: timed(lambda i: decoded(raw[i % len(raw)])))
            # Each prepare gets a freshly decoded request (it may keep or change what it is given).
            step(
                PREPARE,
                lambda: (
                    timed(lambda i: kairos.prepare(decoded(raw[i % len(raw)]), "batch", source.write_key))
                    - out["decode_body"]
                ),
            )
        step(
            "Kairos.prepare_for (import path: validate a decoded request)",
            lambda: timed(lambda i: kairos.prepare_for(source, bare.decode(raw[i % len(raw)]), "batch")) - untyped,
        )
        events = [kairos.prepare_for(source, bare.decode(b), "batch")[0] for b in raw]
        out["append, 1 batch per call"] = timed(lambda i: kairos.append([(source.name, events[i % len(events)])]))
        group = [(source.name, e) for e in (events * 2)[:32]]
        out[APPEND] = timed(lambda i: kairos.append(group), rounds // 32) / 32
    finally:
        kairos.close()
    return out


# -- report ------------------------------------------------------------------------------------------
def _rates(runs: Sequence[Run | None]) -> list[float | None]:
    return [r.events_per_s if r else None for r in runs]


def section(
    by_version: Mapping[str, Sequence[Run | None]],
    bare_runs: Sequence[Run | None],
    versions: Mapping[str, str],
    duration: float,
) -> list[str]:
    """Each version's runs and the bare app's: medians (min-max) over the repeats, ratios per repeat.

    A repeat that failed is ``None``: it keeps its place so that ratios still pair runs of one repeat.
    """
    some = next((r for runs in (*by_version.values(), bare_runs) for r in runs if r), None)
    if some is None:
        return ["## (a) Ingest over HTTP", "", "Not measured."]
    bare_rates = _rates(bare_runs)
    bare = [r for r in bare_runs if r]

    def row(name: str, all_runs: Sequence[Run | None]) -> list[str]:
        rates = _rates(all_runs)
        runs = [r for r in all_runs if r]
        return [
            name,
            Stat.of(rates).show(),
            Stat.of(r.wrk.p50_ms for r in runs).show(),
            Stat.of(r.wrk.p99_ms for r in runs).show(),
            f"{Stat.of(r.server_cores for r in runs).show()} / {Stat.of(r.wrk_cores for r in runs).show()}",
            Stat.of(r.cpu_us_per_batch for r in runs).show(),
            str(sum(r.wrk.non_2xx + r.wrk.socket_errors for r in runs)),
            Stat.ratios(rates, bare_rates).show("x") if bare else "n/a",
        ]

    rows = [
        row(f"{label} ({versions[label].split(' ')[0]})" if label in versions else label, runs)
        for label, runs in by_version.items()
    ]
    if bare:
        rows.append(row("bare Starlette + msgspec (ceiling)", bare_runs))
    out = [
        "## (a) Ingest over HTTP, processor running",
        "",
        f"wrk POSTs batches of {BATCH} Segment events (80% `track`, 20% `identify`, {some.event_bytes:.0f} bytes"
        f" per event on average, {fmt(some.body_bytes)}-byte bodies) to `/v1/batch`, rotating {BODIES}"
        " pre-generated bodies, with the write key in an HTTP Basic `Authorization` header. Every event"
        " carries a messageId never sent before (the Lua script stamps the run and request number into"
        " them), so the processor applies real events, not duplicates. Each Kairos server is"
        " `python -m kairos serve` with default settings (the processor runs as the version runs it by"
        " default) on a fresh SQLite store, with its code chosen by `PYTHONPATH`; after a warm-up whose"
        f" events the processor applies first, one {duration:g} s measured run. Versions and the bare app"
        " alternate within each repeat; median (min-max) over the repeats, ratios per repeat:",
        "",
        "```",
        "BENCH_BODIES=bodies.jsonl BENCH_AUTH='Basic <base64 of writeKey:>' BENCH_RUN=1 "
        + re.sub(r"http://127\.0\.0\.1:\d+", "http://127.0.0.1:$PORT", some.wrk.command),
        "```",
        "",
        *table(
            [
                "server",
                "events/s",
                "p50 ms",
                "p99 ms",
                "CPU cores: server / wrk",
                "server CPU µs per batch",
                "errors",
                "vs bare",
            ],
            rows,
        ),
    ]
    out += [
        "",
        "wrk keeps every connection busy (closed loop), so its latency is the latency at saturation; wrk 4 adds"
        " synthetic samples for responses slower than twice the mean, which raises p99 when the server stalls.",
    ]
    if "old" in by_version and "new" in by_version:
        ratio = Stat.ratios(_rates(by_version["new"]), _rates(by_version["old"]))
        out += ["", f"new / old, per repeat: {ratio.show('x')}."]
    out += ["", "Honesty check: after each Kairos run the event log was counted.", ""]
    for label, runs in by_version.items():
        out += [f"- {label}, run {i + 1}: {r.check if r else 'failed'}" for i, r in enumerate(runs)]
    out += ["", "The processor while the load ran (from `/healthz` before and after the measured run):", ""]
    for label, all_runs in by_version.items():
        done = [r for r in all_runs if r]
        caught = [r.catch_up_s for r in done]
        applied = Stat.of(r.processed / duration if r.processed is not None and duration else None for r in done)
        late = sum(c is None for c in caught)
        out.append(
            f"- {label}: applied {applied.show()} events/s while"
            f" ingest ran; {Stat.of(r.lag_after for r in done).show()} events waiting when wrk stopped; lag 0"
            f" {Stat.of(caught).show()} s after the load stopped"
            + (f" ({late} run{'s' if late != 1 else ''} not within {some.catch_up_timeout:g} s)" if late else "")
            + "."
        )
    parts = {label: next((r.breakdown_us for r in rs if r and r.breakdown_us), {}) for label, rs in by_version.items()}
    steps = list(dict.fromkeys(k for b in parts.values() for k in b))
    if steps:
        out += [
            "",
            "Where a request's time goes, in-process on the same bodies (µs per 100-event batch, best of 3):",
            "",
            *table(["step", *parts], [[s, *(fmt(parts[v].get(s)) for v in parts)] for s in steps]),
        ]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--server", choices=("kairos", "bare"), default="kairos")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of the measured wrk run")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of the warm-up run before it")
    parser.add_argument("--catch-up-timeout", type=float, default=30.0, help="most seconds to wait for lag 0")
    parser.add_argument("--breakdown", action="store_true", help="also time each step in-process")
    parser.add_argument("--json-out", type=Path, help="write the result here (make bench runs it this way)")
    args = parser.parse_args()
    exit_on_sigterm()
    require_wrk()
    use_defaults()
    with tmp_dir("ingest") as workdir:
        if args.server == "bare":
            result = bare_run(workdir, args.duration, args.warmup)
        else:
            result = kairos_run(workdir, args.duration, args.warmup, args.catch_up_timeout)
        if args.breakdown:
            try:
                result = dataclasses.replace(result, breakdown_us=breakdown(workdir))
            except Exception as exc:  # the measured run stands without it
                print(f"    breakdown failed: {type(exc).__name__}: {exc}", flush=True)
    print(
        f"    {args.server}: {fmt(result.events_per_s)} events/s, p99 {result.wrk.p99_ms:.1f} ms"
        + (f"; {result.check}" if result.check else ""),
        flush=True,
    )
    data = {"kairos_path": _compat.kairos_path(), **asdict(result)}
    if args.json_out:
        args.json_out.write_text(json.dumps(data, indent=2) + "\n")
    else:
        print(json.dumps(data, indent=2))


if __name__ == "__main__":
    main()

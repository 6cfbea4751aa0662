"""(d) Sustained load: ``kairos serve`` with default settings under a constant rate of batches.

wrk sends batches of 100 events to ``/v1/batch`` at a fixed rate (200 batches/s = 20,000 events/s by
default) for 60 s, on a fresh SQLite store, the processor running as the version runs it by default.
Meanwhile ``/healthz`` is read once a second: ``lag`` (``log_seq - processed_seq``) says how far the
processor is behind. Reported: ingest latency p50/p99, the rate achieved, errors, the lag at the end of
the load (in events and in seconds of the offered load), its maximum, and how long after the load the
lag reaches 0.

The pacing is wrk's own: the Lua script's ``delay()`` hands each connection the next slot of a fixed
schedule (or wrk2's ``-R`` when a ``wrk2`` binary exists). wrk times each request from its write to its
response; the time a request waited for a free connection is not counted, so latency is measured without
correction for coordinated omission against the schedule. (wrk 4 does post-process its latencies: for each
response slower than twice the mean interval between requests on one connection, here 2 x 100 / 200 = 1 s,
it adds the samples a steady client would have seen. That only touches stalls of a second or more.) The
script keeps many connections open (100 by default) so that a stall of the server does not stop the
schedule (200 batches/s x 0.5 s of stall = 100 in flight).

Run alone: ``python bench/sustained.py [--rate 200] [--duration 60]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import http.client
import json
import threading
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import _compat
from _common import Server, WrkResult, add_source, exit_on_sigterm, require_wrk, run_wrk, tmp_dir, use_defaults
from _stats import fmt, table
from ingest import BATCH, SCRIPT, check_stored, make_bodies, wait_caught_up, wrk_env

__all__ = ["Sample", "SustainedResult", "from_json", "main", "section"]


@dataclass(frozen=True, slots=True)
class Sample:
    t: float  # seconds since the load started
    log_seq: int
    processed_seq: int
    lag: int


@dataclass(slots=True)
class SustainedResult:
    rate: float  # batches/s offered
    duration: float
    connections: int
    wrk: WrkResult
    stored: int
    check: str
    samples: list[Sample] = field(default_factory=list)  # /healthz once a second during the load
    health_errors: int = 0  # /healthz reads that failed during the load
    lag_end: int | None = None  # lag when the load stopped
    catch_up_s: float | None = None  # seconds from the end of the load to lag 0
    catch_up_timeout: float = 0.0
    processed_during: int | None = None  # events the processor applied while the load ran
    server_cores: float = 0.0
    wrk_cores: float = 0.0
    warmup: float = 0.0  # seconds at the same rate just before, not measured

    @property
    def kept_schedule(self) -> bool:
        """wrk sent (nearly) every batch the schedule called for: it never ran out of idle connections."""
        return self.wrk.sent >= 0.98 * self.rate * self.duration

    @property
    def offered_events_per_s(self) -> float:
        return self.rate * BATCH

    @property
    def achieved_events_per_s(self) -> float:
        return self.wrk.rate * BATCH

    @property
    def errors(self) -> int:
        return self.wrk.non_2xx + self.wrk.socket_errors + self.health_errors

    @property
    def max_lag(self) -> int | None:
        return max((s.lag for s in self.samples), default=None)

    @property
    def lag_end_s(self) -> float | None:
        """The lag at the end in seconds of the offered load."""
        return None if self.lag_end is None else self.lag_end / self.offered_events_per_s


def from_json(data: Mapping[str, Any]) -> SustainedResult:
    names = {f.name for f in dataclasses.fields(SustainedResult)}
    wrk_names = {f.name for f in dataclasses.fields(WrkResult)}
    values = {k: v for k, v in data.items() if k in names}
    values["wrk"] = WrkResult(**{k: v for k, v in data["wrk"].items() if k in wrk_names})
    values["samples"] = [Sample(**s) for s in data.get("samples", [])]
    return SustainedResult(**values)


class LagSampler(threading.Thread):
    """Reads ``/healthz`` on a fixed one-second schedule until stopped."""

    def __init__(self, port: int, interval: float = 1.0) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.interval = interval
        self.samples: list[Sample] = []
        self.errors = 0
        self.started_at = time.monotonic()
        self._stop_event = threading.Event()

    def read(self) -> Sample | None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.interval * 5)
        try:
            conn.request("GET", "/healthz")
            h = json.loads(conn.getresponse().read())
            return Sample(round(time.monotonic() - self.started_at, 2), h["log_seq"], h["processed_seq"], h["lag"])
        except (OSError, http.client.HTTPException, ValueError, KeyError):
            self.errors += 1
            return None
        finally:
            conn.close()

    def run(self) -> None:
        due = self.started_at
        while not self._stop_event.is_set():
            if (sample := self.read()) is not None:
                self.samples.append(sample)
            due += self.interval
            self._stop_event.wait(max(0.0, due - time.monotonic()))

    def stop(self) -> None:
        self._stop_event.set()
        self.join()


def sustained_run(
    workdir: Path, rate: float, duration: float, connections: int, timeout: float, warmup: float
) -> SustainedResult:
    bodies = workdir / "bodies.jsonl"
    make_bodies(bodies)
    db = workdir / "kairos.db"
    url = f"sqlite:///{db}"
    write_key = add_source(url, workdir)

    def load(run: str, seconds: float) -> WrkResult:
        env = wrk_env(bodies, write_key, run)
        return run_wrk(server.url + "/v1/batch", SCRIPT, env, duration=seconds, connections=connections, rate=rate)

    with Server.kairos(url, workdir) as server:
        before = _compat.count_log(db)
        # The warm-up runs at the same rate and flows straight into the measured run: the server is past
        # its start-up, and whatever lag the warm-up left is part of the load.
        warm = [load("0", warmup)] if warmup > 0 else []
        health0 = server.get_json("/healthz")
        sampler = LagSampler(server.port)
        cpu0, t0 = server.cpu(), time.monotonic()
        sampler.start()
        try:
            result = load("1", duration)
        finally:
            sampler.stop()
        cores = (server.cpu() - cpu0) / (time.monotonic() - t0)
        end = sampler.read()  # the lag the moment the load stopped
        catch_up = wait_caught_up(server, timeout)
        stored = _compat.count_log(db) - before
    samples = [*sampler.samples, *([end] if end else [])]
    return SustainedResult(
        rate,
        duration,
        connections,
        result,
        stored,
        check_stored(stored, *warm, result) + (" (warm-up and measured run together)" if warm else ""),
        samples,
        sampler.errors,
        end.lag if end else None,
        catch_up,
        timeout,
        end.processed_seq - health0["processed_seq"] if end else None,
        cores,
        result.cpu_seconds / result.seconds,
        warmup,
    )


# -- report ------------------------------------------------------------------------------------------
def _s(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def section(results: Mapping[str, SustainedResult], versions: Mapping[str, str]) -> list[str]:
    if not results:
        return ["## (d) Sustained load", "", "Not measured."]
    r = next(iter(results.values()))
    rows = []
    for label, x in results.items():
        caught = f"{x.catch_up_s:.1f}" if x.catch_up_s is not None else f"not within {x.catch_up_timeout:g} s"
        rows.append(
            [
                f"{label} ({versions[label].split(' ')[0]})" if label in versions else label,
                fmt(x.offered_events_per_s),
                fmt(x.achieved_events_per_s),
                f"{x.wrk.sent / (x.rate * x.duration) * 100:.0f}%",
                fmt(x.wrk.p50_ms),
                fmt(x.wrk.p99_ms),
                fmt(x.wrk.max_ms),
                str(x.errors),
                fmt(x.max_lag),
                f"{fmt(x.lag_end)} ({_s(x.lag_end_s, 2)} s)",
                caught,
                fmt((x.processed_during or 0) / x.duration) if x.processed_during is not None else "n/a",
                f"{x.server_cores:.2f} / {x.wrk_cores:.2f}",
            ]
        )
    out = [
        "## (d) Sustained load",
        "",
        f"`kairos serve` with default settings on a fresh SQLite store; wrk sends {r.rate:g} batches of"
        f" {BATCH} events per second ({fmt(r.offered_events_per_s)} events/s) for {r.duration:g} s over"
        f" {r.connections} connections, paced by {r.wrk.paced_by or 'nothing'}, one run per version"
        + (f" right after {r.warmup:g} s of the same load (not measured)" if r.warmup else ", no warm-up")
        + ". `/healthz` is read every second meanwhile; lag = `log_seq - processed_seq`, in events and in"
        " seconds of the offered load. sent / scheduled: the batches wrk sent against the ones the schedule"
        " called for (fewer when every connection was waiting for a response).",
        "",
        "```",
        "BENCH_BODIES=bodies.jsonl BENCH_AUTH='Basic <base64 of writeKey:>' BENCH_RUN=1 "
        + r.wrk.command.split("http://")[0]
        + "http://127.0.0.1:$PORT/v1/batch",
        "```",
        "",
        *table(
            [
                "version",
                "offered events/s",
                "achieved events/s",
                "sent / scheduled",
                "p50 ms",
                "p99 ms",
                "max ms",
                "errors",
                "max lag, events",
                "lag at the end, events (s)",
                "lag 0 after, s",
                "processor events/s during the load",
                "CPU cores: server / wrk",
            ],
            rows,
        ),
        "",
        (
            "Latency is wrk2's, corrected for coordinated omission (timed from each request's slot in the schedule)."
            if r.wrk.paced_by == "wrk2 -R"
            else "Latency is wrk's: from a request's write to its response, without correction for coordinated"
            " omission (a request that waited for a free connection is timed from when it was sent, not from its"
            " slot in the schedule). wrk 4 only adds synthetic samples for responses slower than twice the mean"
            f" interval between requests on a connection (2 x {r.connections} / {r.rate:g} ="
            f" {2 * r.connections / r.rate:g} s here), so stalls shorter than that are not corrected."
        )
        + " Honesty check:",
        "",
        *(f"- {label}: {x.check}" for label, x in results.items()),
        "",
        "Lag every 5 s during the load, events:",
        "",
    ]
    out += [f"- {label}: " + ", ".join(fmt(s.lag) for s in x.samples[::5]) for label, x in results.items()]
    return out


def summary(x: SustainedResult) -> str:
    return (
        f"    {fmt(x.achieved_events_per_s)} of {fmt(x.offered_events_per_s)} events/s, p50 {x.wrk.p50_ms:.1f} ms,"
        f" p99 {x.wrk.p99_ms:.1f} ms, {x.errors} errors; lag max {fmt(x.max_lag)}, at the end {fmt(x.lag_end)},"
        f" 0 after {_s(x.catch_up_s)} s; {x.check}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=200, help="batches of 100 events per second")
    parser.add_argument("--duration", type=float, default=60, help="seconds of load")
    parser.add_argument("--connections", type=int, default=100)
    parser.add_argument("--warmup", type=float, default=5, help="seconds of the same load before, not measured")
    parser.add_argument("--catch-up-timeout", type=float, default=180, help="most seconds to wait for lag 0")
    parser.add_argument("--json-out", type=Path, help="write the result here (make bench runs it this way)")
    args = parser.parse_args()
    exit_on_sigterm()
    require_wrk()
    use_defaults()
    with tmp_dir("sustained") as workdir:
        result = sustained_run(workdir, args.rate, args.duration, args.connections, args.catch_up_timeout, args.warmup)
    print(summary(result), flush=True)
    data = {"kairos_path": _compat.kairos_path(), **asdict(result)}
    if args.json_out:
        args.json_out.write_text(json.dumps(data, indent=2) + "\n")
    else:
        print("\n".join(section({"this": result}, {})))


if __name__ == "__main__":
    main()

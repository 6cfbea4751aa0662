"""``docs/benchmarks.md``: the targets table, the machine, the command, each part, and what limits it.

Everything here reads results that may be partial: a part that was not run, a version that failed, a
figure the code under test does not expose. A missing figure is shown as ``n/a`` and the sentence that
needed it is left out; nothing here may fail the report.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import decide
import ingest
import lookup
import moments
import processor
import segments
import sustained
from _common import ROOT
from _stats import Stat, Target, fmt, median_index, table
from decide import DecideResult
from ingest import Run as IngestRun
from lookup import LookupResult
from moments import MomentsResult
from processor import BackendRun, ProcessorResult
from segments import SegmentsResult
from sustained import SustainedResult

__all__ = ["DOC", "Results", "targets", "write_doc"]

DOC = ROOT / "docs" / "benchmarks.md"


@dataclass(slots=True)
class Results:
    versions: dict[str, str]  # label -> "commit (subject)"
    processor: dict[str, list[ProcessorResult | None]] = field(default_factory=dict)
    ingest: dict[str, list[IngestRun | None]] = field(default_factory=dict)
    bare: list[IngestRun | None] = field(default_factory=list)
    sustained: dict[str, SustainedResult] = field(default_factory=dict)
    lookup: LookupResult | None = None
    segments: SegmentsResult | None = None
    moments: MomentsResult | None = None
    decide: DecideResult | None = None
    failures: list[str] = field(default_factory=list)
    ingest_duration: float = 0.0


def _rates(results: Sequence[ProcessorResult | None], backend: str) -> list[float | None]:
    return [r.rate(backend) if r else None for r in results]


def _ingest_rates(runs: Sequence[IngestRun | None]) -> list[float | None]:
    return [r.events_per_s if r else None for r in runs]


def targets(res: Results) -> list[Target]:
    out = []
    if res.processor:
        old, new = res.processor.get("old", []), res.processor.get("new", [])
        for backend in ("SQLite", "PostgreSQL"):
            out.append(
                Target(
                    f"(b) Processor on {backend}, new / old",
                    Stat.ratios(_rates(new, backend), _rates(old, backend)),
                    1.8,
                    "x",
                )
            )
        out.append(Target("(b) Processor on SQLite, new", Stat.of(_rates(new, "SQLite")), 30_000, "events/s"))
    if res.ingest:
        new_rates = _ingest_rates(res.ingest.get("new", []))
        out.append(
            Target(
                "(a) Ingest, processor running, new / old",
                Stat.ratios(new_rates, _ingest_rates(res.ingest.get("old", []))),
                1.5,
                "x",
            )
        )
        out.append(
            Target("(a) Ingest, new / bare Starlette", Stat.ratios(new_rates, _ingest_rates(res.bare)), 0.2, "x")
        )
    if "new" in res.sustained:
        s = res.sustained["new"]
        load = f"{fmt(s.offered_events_per_s)} events/s"
        out.append(Target(f"(d) Sustained {load}, new: ingest p99", Stat.of([s.wrk.p99_ms]), 100, "ms", False))
        out.append(Target(f"(d) Sustained {load}, new: lag at the end", Stat.of([s.lag_end_s]), 2.0, "s", False))
    if res.lookup:
        out.append(
            Target("(c) Profile GET p99, 1M profiles, new", Stat.of([res.lookup.http_profile.p99_ms]), 5.0, "ms", False)
        )
    if res.segments:
        out += segments.targets(res.segments)
    if res.moments:
        out += moments.targets(res.moments)
    if res.decide:
        out += decide.targets(res.decide)
    return out


# -- what limits it ----------------------------------------------------------------------------------
def _safe(fn: Callable[[], list[str]]) -> list[str]:
    """A limits paragraph whose inputs turned out incomplete is left out rather than failing the report."""
    try:
        return fn()
    except (AttributeError, KeyError, IndexError, TypeError, ValueError, ZeroDivisionError):
        return []


def _median_backend(results: Sequence[ProcessorResult | None], backend: str) -> BackendRun | None:
    runs = [next((x for x in r.runs if x.backend == backend), None) if r else None for r in results]
    i = median_index([x.events_per_s if x else None for x in runs])
    return runs[i] if i is not None else None


def _phases(x: BackendRun, n: int = 4) -> str:
    top = sorted(x.phases_s.items(), key=lambda kv: -kv[1])[:n]
    return ", ".join(f"{k} {fmt(v)} s ({v / x.process_s * 100:.0f}%)" for k, v in top)


def limits_processor(res: Results, missed: Sequence[Target]) -> list[str]:
    out = []
    for backend in ("SQLite", "PostgreSQL"):
        mine = [t for t in missed if t.name.startswith(f"(b) Processor on {backend}")]
        if not mine:
            continue
        new = _median_backend(res.processor.get("new", []), backend)
        old = _median_backend(res.processor.get("old", []), backend)
        text = f"**Processor on {backend}.** " + "; ".join(t.shortfall() for t in mine) + "."
        if new is not None:
            text += f" The new code's median run applied {fmt(new.events_per_s)} events/s in {new.process_s:.1f} s"
            if old is not None:
                text += f" (the old code's {fmt(old.events_per_s)} events/s in {old.process_s:.1f} s)"
            text += "."
            if new.phases_s:
                text += f" Where its time went: {_phases(new)}."
            if old is not None and old.phases_s and new.phases_s:
                changed = [
                    f"{k} {fmt(old.phases_s[k])} → {fmt(v)} s"
                    for k, v in sorted(new.phases_s.items(), key=lambda kv: -kv[1])[:4]
                    if k in old.phases_s
                ]
                if changed:
                    text += " Against the old code: " + ", ".join(changed) + "."
            if new.first_fifth and new.last_fifth:
                text += (
                    f" It slows as the store grows: {fmt(new.first_fifth)} events/s over the first fifth of the"
                    f" log, {fmt(new.last_fifth)} over the last."
                )
            if new.read_per_s:
                text += (
                    f" Reading and decoding the log alone runs at {fmt(new.read_per_s)} events/s: the processor"
                    f" is at {new.events_per_s / new.read_per_s * 100:.0f}% of that ceiling."
                )
            if backend == "SQLite" and len(new.commits_ms) == 3 and new.commits_ms[2] > 3 * new.commits_ms[0]:
                text += (
                    f" Commits are uneven (p50 {new.commits_ms[0]:.0f} ms, p90 {new.commits_ms[1]:.0f} ms, max"
                    f" {new.commits_ms[2]:.0f} ms): a batch dirties pages all over the random-key indexes; each"
                    " COMMIT writes them to the WAL, and the commit that crosses `wal_autocheckpoint` also copies"
                    " the WAL back into the database."
                )
            if backend == "PostgreSQL":
                text += " Every store call is a round trip to a server that shares the two cores."
        out.append(text)
    return out


def limits_ingest(res: Results, missed: Sequence[Target]) -> list[str]:
    if not missed:
        return []
    new = [r for r in res.ingest.get("new", []) if r]
    old = [r for r in res.ingest.get("old", []) if r]
    bare = [r for r in res.bare if r]
    text = "**Ingest.** " + "; ".join(t.shortfall() for t in missed) + "."
    if new:
        cores = Stat.of(r.server_cores for r in new).median
        text += (
            f" The server (with its processor) used {cores:.2f} cores of {os.cpu_count()}"
            f" (wrk {Stat.of(r.wrk_cores for r in new).median:.2f}), i.e."
            f" {fmt(Stat.of(r.cpu_us_per_batch for r in new).median)} µs of CPU per batch"
        )
        if old:
            text += f" against {fmt(Stat.of(r.cpu_us_per_batch for r in old).median)} µs for the old code"
        if bare:
            bare_us = Stat.of(r.cpu_us_per_batch for r in bare).median
            text += f" and {fmt(bare_us)} µs for the bare app"
        text += "."
        processed = Stat.of((r.processed or 0) / res.ingest_duration for r in new if r.processed is not None)
        if processed.n and res.ingest_duration:
            text += f" The processor applied {fmt(processed.median)} events/s while the load ran."
        parts = next((r.breakdown_us for r in new if r.breakdown_us), {})
        prepare = parts.get(ingest.PREPARE)
        if prepare:
            decode = parts.get("decode_body")
            text += (
                f" In-process, `Kairos.prepare` costs {fmt(prepare)} µs per 100-event batch ({prepare / 100:.1f} µs"
                f" per event), capping one process near {fmt(1e6 / prepare * 100)} events/s"
                + (f"; `decode_body` {fmt(decode)} µs" if decode else "")
            )
            append = parts.get(ingest.APPEND)
            text += f"; the log append {fmt(append)} µs per batch." if append else "."
        if bare:
            target = next((t for t in missed if "bare" in t.name), None)
            if target is not None:
                needed = Stat.of(r.cpu_us_per_batch for r in bare).median / target.target
                text += (
                    f" Reaching {target.target:g} of the bare app in one process needs the whole request under"
                    f" {fmt(needed)} µs of CPU per batch."
                )
    return [text]


def limits_sustained(res: Results, missed: Sequence[Target]) -> list[str]:
    s = res.sustained.get("new")
    if s is None:
        return []
    delivered = s.kept_schedule and not s.errors
    facts = (
        f" The server acknowledged {fmt(s.achieved_events_per_s)} of the {fmt(s.offered_events_per_s)} events/s"
        f" offered ({s.errors} errors) and, with its processor, used {s.server_cores:.2f} cores of"
        f" {os.cpu_count()} (wrk {s.wrk_cores:.2f})."
    )
    if not s.kept_schedule:
        facts += (
            f" wrk sent only {fmt(s.wrk.sent)} of the {fmt(s.rate * s.duration)} batches the schedule called for:"
            f" all {s.connections} connections were waiting for responses, so the server was past its capacity"
            " and the figures describe a lighter load than intended."
        )
    elif s.errors:
        facts += " Some requests failed, so the figures describe a lighter load than intended."
    if not missed:
        return [] if delivered else ["**Sustained load, caveat.**" + facts]
    text = "**Sustained load.** " + "; ".join(t.shortfall() for t in missed) + "." + facts
    if s.processed_during is not None:
        processed = s.processed_during / s.duration
        text += (
            f" The processor applied {fmt(processed)} events/s during the load"
            f" ({processed / s.offered_events_per_s * 100:.0f}% of the offered rate), so the lag grew by"
            f" about {fmt(max(0.0, s.achieved_events_per_s - processed))} events/s; max {fmt(s.max_lag)}."
        )
    if s.catch_up_s and s.lag_end:
        text += (
            f" Once the load stopped it applied the remaining {fmt(s.lag_end)} events in {s.catch_up_s:.1f} s"
            f" ({fmt(s.lag_end / s.catch_up_s)} events/s alone): ingest and processor compete for the same"
            " cores (and, when they share a process, the same interpreter lock)."
        )
    elif s.catch_up_s is None:
        text += f" The lag had not reached 0 {s.catch_up_timeout:g} s after the load stopped."
    if any("p99" in t.name for t in missed):
        text += f" Latency: p50 {fmt(s.wrk.p50_ms)} ms, p99 {fmt(s.wrk.p99_ms)} ms, max {fmt(s.wrk.max_ms)} ms."
        text += (
            " The schedule was kept, so the tail comes from pauses rather than a lack of throughput: a request"
            " waits while the process that answers it is busy with something else (a processor batch holding the"
            " interpreter lock, a commit or checkpoint on the single writer, the other processes on the two"
            " cores)."
            if s.kept_schedule
            else " Past capacity, latency is mostly the wait in the queue of open connections."
        )
    return [text]


def limits_lookup(res: Results, missed: Sequence[Target]) -> list[str]:
    r = res.lookup
    if not missed or r is None:
        return []
    return [
        f"**Look-up.** {missed[0].shortfall()}. p99 {r.http_profile.p99_ms:.2f} ms over HTTP against"
        f" {r.http_health.p99_ms:.2f} ms for `/healthz` on the same server and {r.in_process.p99_ms:.2f} ms in-process."
    ]


def limits_segments(res: Results, missed: Sequence[Target]) -> list[str]:
    if not missed or res.segments is None:
        return []
    return ["**Segments.** " + "; ".join(t.shortfall() for t in missed) + "."]


# -- the document ------------------------------------------------------------------------------------
def write_doc(info: Mapping[str, str], command: str, seconds: float, settings: Mapping[str, Any], res: Results) -> None:
    all_targets = targets(res)
    lines = [
        "# Benchmarks",
        "",
        "Generated by `make bench` (which runs the command below) and overwritten by each run: edit"
        f" `bench/`, not this file. Every part ran in one go on the machine described here, taking"
        f" {seconds / 60:.1f} minutes.",
        "",
        "```",
        command,
        "```",
        "",
        "How the comparison works: the baseline commit is checked out with `git worktree add --detach` into"
        " a temporary directory and runs with the same virtualenv, its `src` first on `PYTHONPATH`. Each"
        " measurement runs in a subprocess per code version (`python bench/<part>.py --json-out FILE`; servers"
        " as `python -m kairos serve`), on the same workload from the same seeds, old and new alternating"
        f" within each of {settings.get('repeats', '?')} repeats. A figure is the median over the repeats,"
        " shown with its spread (min-max); new / old is computed per pair (the old and new runs of one"
        " repeat, back to back) and the median of those ratios is reported. Targets are judged on the median,"
        " never on the best run. Load is generated on the same 2-core machine as the server, over loopback,"
        " on a VM shared with other work: compare within one run.",
        "",
        "Each part also runs alone on the current code: `.venv/bin/python bench/processor.py`,"
        " `bench/ingest.py`, `bench/sustained.py`, `bench/segments.py`, `bench/moments.py`, `bench/decide.py`,"
        " `bench/learners.py`, `bench/lookup.py`"
        " (`--help` for their options).",
        "",
        "## Machine and versions",
        "",
        *table(["", ""], [*([k, v] for k, v in info.items()), *([k, v] for k, v in res.versions.items())]),
        "",
        "## Targets",
        "",
        *table(
            ["target", "measured (median)", "spread (min-max)", "runs", "target", "vs target", ""],
            [t.row() for t in all_targets],
        ),
        "",
        "vs target: measured relative to the target, above 1 when better (for latency and lag, target /"
        " measured). Ratios new / old are medians of per-repeat ratios.",
        "",
    ]
    if res.failures:
        lines += ["## Failures", "", *(f"- {f}" for f in res.failures), ""]
    sections: list[Callable[[], list[str]]] = []
    if res.processor:
        sections.append(lambda: processor.section(res.processor, res.versions))
    if res.ingest or res.bare:
        sections.append(lambda: ingest.section(res.ingest, res.bare, res.versions, res.ingest_duration))
    if res.sustained:
        sections.append(lambda: sustained.section(res.sustained, res.versions))
    if res.segments:
        seg = res.segments
        sections.append(lambda: segments.section(seg))
    if res.moments:
        mom = res.moments
        sections.append(lambda: moments.section(mom))
    if res.decide:
        dec = res.decide
        sections.append(lambda: decide.section(dec))
    if res.lookup:
        look = res.lookup
        sections.append(lambda: lookup.section(look))
    else:
        sections.append(
            lambda: [
                "## (c) Profile look-up, 1M profiles",
                "",
                "Not run by default (it needs a 1M-profile store built from the current code's internals, several"
                " minutes the first time): add it with `--only processor,ingest,sustained,lookup`.",
            ]
        )
    for make in sections:
        lines += [*(_safe(make) or ["(this section could not be written from the results)"]), ""]
    missed = [t for t in all_targets if t.met is False]
    lines += ["## What limits it", ""]
    if not missed:
        lines += ["Every measured target was met in this run.", ""]
    limits: list[str] = []
    groups: list[tuple[str, Callable[[Results, Sequence[Target]], list[str]]]] = [
        ("(b)", limits_processor),
        ("(a)", limits_ingest),
        ("(d)", limits_sustained),
        ("(c)", limits_lookup),
        ("(e)", limits_segments),
        ("(f)", lambda res, missed: moments.limits(res.moments, missed) if res.moments else []),
        ("(g)", lambda res, missed: decide.limits(res.decide, missed) if res.decide else []),
    ]
    for prefix, explain in groups:
        mine = [t for t in missed if t.name.startswith(prefix)]
        paragraphs = _safe(lambda explain=explain, mine=mine: explain(res, mine))  # type: ignore[misc]
        # Whatever else is missing, a missed target is always named with how far it is.
        limits += paragraphs if paragraphs or not mine else [f"{t.shortfall()}." for t in mine]
    for paragraph in limits:
        lines += [paragraph, ""]
    DOC.parent.mkdir(parents=True, exist_ok=True)
    DOC.write_text("\n".join(lines).rstrip() + "\n")

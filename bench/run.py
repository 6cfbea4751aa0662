"""``make bench``: run the three benchmarks on this machine and write ``docs/benchmarks.md``.

(a) ingest over HTTP (``ingest.py``), (b) processor throughput (``processor.py``), (c) profile look-up
latency with 1M profiles (``lookup.py``). Each also runs alone; see its docstring. ``--quick`` runs
everything small and short to check the harness (its numbers are not comparable and it does not write
the docs unless ``--write`` is given).
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from dataclasses import asdict
from pathlib import Path

import ingest
import lookup
import processor
from _common import PG_URL, ROOT, Target, fmt, machine, save_json, table, wrk_path

__all__ = ["main"]

DOC = ROOT / "docs" / "benchmarks.md"


def limits_ingest(r: ingest.IngestResult, missed: list[Target]) -> list[str]:
    if not missed:
        return []
    b = r.breakdown_us
    prepare = b.get(ingest.PREPARE, float("nan"))
    decode = b.get(ingest.DECODE, float("nan"))
    append = b.get("log append, 32 batches per commit (per batch)", float("nan"))
    per_batch_us = r.kairos.server_cores * 1e6 / r.kairos.batches_per_s
    bare_us = r.bare.server_cores * 1e6 / r.bare.batches_per_s
    return [
        "**Ingest.** "
        + "; ".join(f"{t.name}: {fmt(t.measured)} {t.unit}, {t.ratio:.2f}x of the target" for t in missed)
        + f". The server is one process whose Python work is serialized by the GIL: it used"
        f" {r.kairos.server_cores:.2f} cores of {os.cpu_count()}"
        f" (wrk {r.kairos.wrk_cores:.2f}), i.e. {per_batch_us:.0f} µs of CPU per batch against {bare_us:.0f} µs"
        f" for the bare app. In-process, `Kairos.prepare` alone costs {prepare:.0f} µs per 100-event batch"
        f" ({prepare / 100:.1f} µs per event: the typed decode into `Message`, the checks, the corrected time),"
        f" splitting the body into events {decode:.0f} µs and the log append"
        f" {append:.0f} µs (the writer thread, holding the GIL while it builds rows). Prepare alone caps one"
        f" process near {fmt(1e6 / prepare * 100)} events/s; reaching 25% of the bare app"
        f" ({fmt(r.bare.events_per_s / 4)} events/s) needs the whole request under {bare_us * 4:.0f} µs of"
        " CPU per batch, so per-event work must shrink several-fold (or run in more processes).",
    ]


def limits_processor(r: processor.ProcessorResult, missed: list[Target]) -> list[str]:
    out = []
    apply = "in-memory apply (decode, resolve, update)"
    for t in missed:
        x = next(x for x in r.runs if f"Processor, {x.backend}" == t.name)
        phases = x.phases_s
        commit = phases.get("state commit", 0.0)
        reads = sum(v for k, v in phases.items() if k not in (apply, "state commit"))
        text = (
            f"**Processor on {x.backend}.** {fmt(x.events_per_s)} events/s, {t.ratio:.2f}x of the target. It"
            f" slows as the store grows: {fmt(x.first_fifth)} events/s over the first fifth of the log,"
            f" {fmt(x.last_fifth)} over the last. Of its {x.process_s:.1f} s, state commits take {commit:.1f} s"
            f" ({commit / x.process_s * 100:.0f}%), the look-ups and loads before each batch {reads:.1f} s and the"
            f" in-memory work {phases.get(apply, 0.0):.1f} s (identifier extraction and normalization,"
            " resolution, trait updates)."
        )
        top = sorted(((k, v) for k, v in phases.items() if k != apply), key=lambda kv: -kv[1])[:3]
        text += " The largest store phases: " + ", ".join(f"{k} {v:.1f} s" for k, v in top) + "."
        if x.probe_ms.get(processor.CURRENT):
            current = x.probe_ms[processor.CURRENT]
            best, best_ms = min(x.probe_ms.items(), key=lambda kv: kv[1])
            if best != processor.CURRENT and current > 1.5 * best_ms:
                text += (
                    f" The identity look-up is slow as written: `{processor.CURRENT}` took {current:.1f} ms for"
                    f" 500 keys on the filled store where a {best} took {best_ms:.1f} ms ({current / best_ms:.0f}x"
                    " less), and its cost grows with the table (it does not use the primary key)."
                    if x.backend == "SQLite"
                    else f" The identity look-up is slow as written: `{processor.CURRENT}` took {current:.1f} ms for"
                    f" 500 keys on the filled store where a {best} took {best_ms:.1f} ms ({current / best_ms:.0f}x"
                    " less)."
                )
        if x.backend == "SQLite" and x.commits_ms:
            text += (
                f" Commits are uneven (p50 {x.commits_ms[0]:.0f} ms, p90 {x.commits_ms[1]:.0f} ms, max"
                f" {x.commits_ms[2]:.0f} ms): a batch of {fmt(r.batch_size)} events dirties pages all over the"
                " random-key indexes (`seen`, profile ids, `identities`, `timeline` by profile); each COMMIT"
                " writes those pages to the WAL, and the commit that crosses `wal_autocheckpoint` (100,000"
                " pages) also copies the WAL back into the database. Fewer, larger batches amortize it"
                " (`processor.batch_size`); an integer surrogate for profile ids would shrink the indexes."
            )
        if x.backend == "PostgreSQL":
            text += (
                " Every store call is a round trip to a server that shares the two cores; the commit upserts"
                " profiles (three `jsonb` columns and a GIN index on traits), identities, timeline rows and"
                " `seen` keys."
            )
        out.append(text)
    return out


def limits_lookup(r: lookup.LookupResult, missed: list[Target]) -> list[str]:
    if not missed:
        return []
    return [
        f"**Look-up.** p99 {r.http_profile.p99_ms:.2f} ms over HTTP against {r.http_health.p99_ms:.2f} ms for"
        f" `/healthz` on the same server and {r.in_process.p99_ms:.2f} ms in-process."
    ]


def write_doc(
    info: dict[str, str],
    command: str,
    seconds: float,
    ing: ingest.IngestResult | None,
    proc: processor.ProcessorResult | None,
    look: lookup.LookupResult | None,
) -> None:
    all_targets = [
        *(ingest.targets(ing) if ing else []),
        *(processor.targets(proc) if proc else []),
        *(lookup.targets(look) if look else []),
    ]
    baselines = []
    if ing:
        baselines.append(
            [
                "(a) ingest, events/s",
                fmt(ing.kairos.events_per_s),
                f"bare Starlette + msgspec: {fmt(ing.bare.events_per_s)}",
                f"{ing.ratio * 100:.1f}%",
            ]
        )
    if proc:
        for x in proc.runs:
            baselines.append(
                [
                    f"(b) processor on {x.backend}, events/s",
                    fmt(x.events_per_s),
                    f"read + decode the log: {fmt(x.read_per_s)}",
                    f"{x.events_per_s / x.read_per_s * 100:.1f}%",
                ]
            )
    if look:
        baselines.append(
            [
                "(c) profile GET p99, ms",
                f"{look.http_profile.p99_ms:.2f}",
                f"GET /healthz: {look.http_health.p99_ms:.2f}",
                f"{look.http_profile.p99_ms - look.http_health.p99_ms:+.2f} ms",
            ]
        )
    lines = [
        "# Benchmarks",
        "",
        "Generated by `make bench` (which runs the command below) and overwritten by each run: edit"
        " `bench/run.py`, not this file. All three parts ran in one go on the machine described here, taking"
        f" {seconds / 60:.1f} minutes.",
        "",
        "```",
        command,
        "```",
        "",
        "Each part also runs alone: `.venv/bin/python bench/ingest.py`, `bench/processor.py`, `bench/lookup.py`"
        " (`--help` for their options). Load is generated on the same 2-core machine as the server, over"
        " loopback; treat absolute numbers as ±30% between runs on a shared VM, and compare within one run.",
        "",
        "## Machine",
        "",
        *table(["", ""], [[k, v] for k, v in info.items()]),
        "",
        "## Targets",
        "",
        *table(["target", "measured", "target", "ratio", ""], [t.row() for t in all_targets]),
        "",
        "Ratio: measured relative to the target, above 1 when better (for the latency target, target / measured).",
        "",
        "## Baselines",
        "",
        *table(["benchmark", "Kairos", "baseline (same run)", "Kairos / baseline"], baselines),
        "",
    ]
    for part in (ingest.section(ing) if ing else [], processor.section(proc) if proc else []):
        lines += [*part, ""]
    if look:
        lines += [*lookup.section(look), ""]
    missed = [t for t in all_targets if not t.met]
    lines += ["## What limits it", ""]
    if not missed:
        lines += ["Every target was met in this run.", ""]
    limits = [
        *(limits_ingest(ing, [t for t in missed if t.name.startswith("Ingest")]) if ing else []),
        *(limits_processor(proc, [t for t in missed if t.name.startswith("Processor")]) if proc else []),
        *(limits_lookup(look, [t for t in missed if t.name.startswith("Profile")]) if look else []),
    ]
    for paragraph in limits:
        lines += [paragraph, ""]
    DOC.parent.mkdir(parents=True, exist_ok=True)
    DOC.write_text("\n".join(lines).rstrip() + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small and short: checks the harness only")
    parser.add_argument("--write", action="store_true", help="with --quick: write docs/benchmarks.md anyway")
    parser.add_argument("--only", default="ingest,processor,lookup", help="comma-separated parts to run")
    parser.add_argument("--postgres", default=PG_URL, help="PostgreSQL URL for (b); 'none' to skip")
    args = parser.parse_args()
    parts = set(args.only.split(","))
    if "ingest" in parts and wrk_path() is None:
        sys.exit("wrk is not installed; install it with: apt-get install -y wrk  (Debian package `wrk`)")
    started = time.monotonic()
    info = machine()
    pg = None if args.postgres == "none" else args.postgres
    ing = proc = look = None
    if "ingest" in parts:
        print("(a) ingest over HTTP", flush=True)
        ing = ingest.run(duration=3 if args.quick else 10, warmup=1 if args.quick else 2)
        save_json("ingest", ingest.to_json(ing))
    if "processor" in parts:
        print("(b) processor", flush=True)
        proc = processor.run(20_000 if args.quick else 200_000, 3_000 if args.quick else 30_000, pg)
        save_json("processor", asdict(proc))
    if "lookup" in parts:
        print("(c) profile look-up", flush=True)
        look = lookup.run(50_000 if args.quick else 1_000_000, 2_000 if args.quick else 20_000)
        save_json("lookup", asdict(look))
    seconds = time.monotonic() - started
    command = "make bench   # = " + shlex.join([".venv/bin/python", "bench/run.py", *sys.argv[1:]])
    if not args.quick or args.write:
        write_doc(info, command, seconds, ing, proc, look)
        print(f"wrote {DOC.relative_to(ROOT)} ({seconds / 60:.1f} min)")
    else:
        print(f"done in {seconds / 60:.1f} min (--quick: {Path(DOC).name} not written)")


if __name__ == "__main__":
    main()

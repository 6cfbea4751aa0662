"""``make bench``: the current code beside a baseline commit, on this machine; writes ``docs/benchmarks.md``.

Parts: (b) processor throughput on SQLite and PostgreSQL (``processor.py``), (a) ingest over HTTP with the
processor running, beside a bare Starlette app (``ingest.py``), (d) a sustained constant load with the
processor's lag (``sustained.py``), (e) computed traits and segments, current code only (``segments.py``),
(f) moments and delivery, current code only (``moments.py``; ``--only moments --baseline none`` runs it
alone, 5-6 minutes), (g) decisions: learning in a simulated world through the real decision path, decision
latency in-process and over HTTP, learning throughput, current code only (``decide.py``), and, only when
asked with ``--only``, (c) profile look-up latency with
1M profiles (``lookup.py``, current code only).

The baseline (``--baseline``, default ``BASELINE_COMMIT`` in ``_common.py``) is checked out in a temporary
git worktree and run with this virtualenv (``_versions.py``). (a) and (b) run once per version and repeat,
old and new alternating; (d) runs once per version, the current code first. ``--quick`` runs everything
small and short to check the harness (its numbers are not comparable and it does not write the docs unless
``--write`` is given). A default run takes 17-21 minutes on 2 cores (more when the old code falls far
behind in (d): the wait for its lag to reach 0 is capped at 3 minutes).
"""

from __future__ import annotations

import argparse
import contextlib
import shlex
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any, TypeVar

import decide
import ingest
import lookup
import moments
import processor
import segments
import sustained
from _common import BASELINE_COMMIT, PG_URL, ROOT, exit_on_sigterm, machine, require_wrk, save_json, tmp_dir
from _report import DOC, Results, write_doc
from _versions import Version, baseline_version, current_version, interleaved, run_part

__all__ = ["main"]

PARTS = ("processor", "ingest", "sustained", "segments", "moments", "decide", "lookup")
DEFAULT_PARTS = "processor,ingest,sustained,segments,moments,decide"
T = TypeVar("T")


def _args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--quick", action="store_true", help="small and short: checks the harness only")
    add("--write", action="store_true", help="with --quick: write docs/benchmarks.md anyway")
    add("--only", default=DEFAULT_PARTS, help=f"comma-separated parts among {','.join(PARTS)} (default: %(default)s)")
    add("--baseline", default=BASELINE_COMMIT, help="commit to compare with (default: %(default)s); 'none' to skip")
    add("--repeats", type=int, help="runs per version of (a) and (b) (default 3; --quick 2)")
    add("--events", type=int, help="(b) events in the log (default 200,000; --quick 20,000)")
    add("--people", type=int, help="(b) people they come from (default: 15%% of --events)")
    add("--postgres", default=PG_URL, help="PostgreSQL URL for (b); 'none' to skip (default: %(default)s)")
    add("--duration", type=float, help="(a) seconds of each measured wrk run (default 10; --quick 3)")
    add("--warmup", type=float, help="(a) seconds of the warm-up before it (default 2; --quick 1)")
    add("--rate", type=float, default=200, help="(d) batches of 100 events per second (default: %(default)s)")
    add("--sustained-duration", type=float, help="(d) seconds of load (default 60; --quick 10)")
    add("--sustained-versions", default="new,old", help="(d) versions to load, in order (default: %(default)s)")
    add(
        "--sustained-warmup",
        type=float,
        help="(d) seconds of the same load before, not measured (default 5; --quick 2)",
    )
    add("--profiles", type=int, help="(c) profiles in the store (default 1,000,000; --quick 50,000)")
    add("--segment-events", type=int, help="(e) processor events (default 20,000; --quick 5,000)")
    add("--segment-profiles", type=int, help="(e) profiles for the preview (default 100,000; --quick 5,000)")
    add("--moment-events", type=int, help="(f) processor events (default 20,000; --quick 5,000)")
    args = parser.parse_args()
    q = args.quick
    args.repeats = args.repeats or (2 if q else 3)
    args.events = args.events or (20_000 if q else 200_000)
    args.people = args.people or max(100, args.events * 3 // 20)
    args.duration = args.duration or (3.0 if q else 10.0)
    args.warmup = args.warmup if args.warmup is not None else (1.0 if q else 2.0)
    args.sustained_duration = args.sustained_duration or (10.0 if q else 60.0)
    if args.sustained_warmup is None:
        args.sustained_warmup = 2.0 if q else 5.0
    args.profiles = args.profiles or (50_000 if q else 1_000_000)
    args.segment_events = args.segment_events or (5_000 if q else 20_000)
    args.segment_profiles = args.segment_profiles or (5_000 if q else 100_000)
    args.moment_events = args.moment_events or (5_000 if q else 20_000)
    args.parts = [p for p in args.only.split(",") if p]
    if unknown := set(args.parts) - set(PARTS):
        parser.error(f"unknown parts: {', '.join(sorted(unknown))}")
    return args


def _attempt(failures: list[str], what: str, fn: Callable[[], T]) -> T | None:
    """Run one measurement; a failure is recorded and reported, and the run goes on without it."""
    try:
        return fn()
    except Exception as exc:
        failures.append(f"{what}: {type(exc).__name__}: {exc}")
        print(f"  FAILED {what}: {exc}", file=sys.stderr, flush=True)
        return None


def run_processor(args: argparse.Namespace, versions: list[Version], workdir: Path, res: Results) -> None:
    part_args = ["--events", str(args.events), "--people", str(args.people), "--postgres", args.postgres]

    def one(v: Version, i: int) -> processor.ProcessorResult | None:
        print(f"  (b) processor, {v.label}, run {i + 1} of {args.repeats}", flush=True)
        return _attempt(
            res.failures,
            f"(b) processor, {v.label}, run {i + 1}",
            lambda: processor.from_json(run_part("processor", v, part_args, workdir, f"r{i}")),
        )

    res.processor = interleaved(versions, args.repeats, one)


def run_ingest(args: argparse.Namespace, versions: list[Version], workdir: Path, res: Results) -> None:
    new = versions[-1]
    timing = ["--duration", str(args.duration), "--warmup", str(args.warmup)]
    catch_up = ["--catch-up-timeout", "10" if args.quick else "30"]
    res.ingest_duration = args.duration
    res.ingest = {v.label: [] for v in versions}
    for i in range(args.repeats):
        # The baseline and the current code back to back, then the bare app: one repeat sees one machine.
        for v, server in [*((v, "kairos") for v in versions), (new, "bare")]:
            print(f"  (a) ingest, {server if server == 'bare' else v.label}, run {i + 1} of {args.repeats}", flush=True)
            extra = [*catch_up, *(["--breakdown"] if i == 0 and server == "kairos" else [])]
            tag = f"{server}-r{i}"
            run = _attempt(
                res.failures,
                f"(a) ingest, {server}, {v.label}, run {i + 1}",
                lambda v=v, server=server, extra=extra, tag=tag: ingest.run_from_json(  # type: ignore[misc]
                    run_part("ingest", v, ["--server", server, *timing, *extra], workdir, tag)
                ),
            )
            (res.bare if server == "bare" else res.ingest[v.label]).append(run)


def run_sustained(args: argparse.Namespace, versions: list[Version], workdir: Path, res: Results) -> None:
    by_label = {v.label: v for v in versions}
    part_args = [
        "--rate",
        f"{args.rate:g}",
        "--duration",
        f"{args.sustained_duration:g}",
        "--warmup",
        f"{args.sustained_warmup:g}",
        "--catch-up-timeout",
        "30" if args.quick else "180",
    ]
    for label in args.sustained_versions.split(","):
        if (v := by_label.get(label)) is None:
            continue
        print(f"  (d) sustained load, {label}", flush=True)
        result = _attempt(
            res.failures,
            f"(d) sustained, {label}",
            lambda v=v: sustained.from_json(run_part("sustained", v, part_args, workdir, "r0")),  # type: ignore[misc]
        )
        if result is not None:
            res.sustained[label] = result


def run_segments(args: argparse.Namespace, new: Version, workdir: Path, res: Results) -> None:
    part_args = ["--events", str(args.segment_events), "--profiles", str(args.segment_profiles)]
    part_args += ["--repeats", str(args.repeats)]
    if args.quick:
        part_args += ["--duration", "20", "--window-for", "2", "--calls", "2"]
    res.segments = _attempt(
        res.failures,
        "(e) segments",
        lambda: segments.from_json(run_part("segments", new, part_args, workdir, "r0")),
    )
    if res.segments is not None:
        res.failures += res.segments.failures


def run_moments(args: argparse.Namespace, new: Version, workdir: Path, res: Results) -> None:
    part_args = ["--events", str(args.moment_events), "--repeats", str(args.repeats)]
    if args.quick:
        part_args += ["--carts-for", "5", "--messages", "500", "--flow-for", "3", "--no-profile"]
    res.moments = _attempt(
        res.failures,
        "(f) moments and delivery",
        lambda: moments.from_json(run_part("moments", new, part_args, workdir, "r0")),
    )
    if res.moments is not None:
        res.failures += res.moments.failures


def run_decide(args: argparse.Namespace, new: Version, workdir: Path, res: Results) -> None:
    part_args = ["--repeats", str(args.repeats)]
    if args.quick:
        part_args += ["--rounds", "3000", "--seeds", "1", "--variants", "pairwise", "--calls", "500"]
        part_args += ["--duration", "3", "--rewards", "1000"]
    res.decide = _attempt(
        res.failures,
        "(g) decisions",
        lambda: decide.from_json(run_part("decide", new, part_args, workdir, "r0")),
    )
    if res.decide is not None:
        res.failures += res.decide.failures


def main() -> None:
    args = _args()
    exit_on_sigterm()
    if {"ingest", "sustained"} & set(args.parts):
        require_wrk()
    started = time.monotonic()
    info = machine()
    settings: dict[str, Any] = {k: v for k, v in vars(args).items() if k not in ("parts",)}
    with contextlib.ExitStack() as stack:
        versions = [current_version()]
        if args.baseline != "none":
            versions.insert(0, stack.enter_context(baseline_version(args.baseline)))
        res = Results({f"{v.label}": v.describe() for v in versions})
        print("versions: " + "; ".join(f"{v.label} = {v.describe()}" for v in versions), flush=True)
        workdir = stack.enter_context(tmp_dir("run"))
        if "processor" in args.parts:
            print("(b) processor", flush=True)
            run_processor(args, versions, workdir, res)
        if "ingest" in args.parts:
            print("(a) ingest over HTTP", flush=True)
            run_ingest(args, versions, workdir, res)
        if "sustained" in args.parts:
            print("(d) sustained load", flush=True)
            run_sustained(args, versions, workdir, res)
        if "segments" in args.parts:
            print("(e) segments (current code)", flush=True)
            run_segments(args, versions[-1], workdir, res)
        if "moments" in args.parts:
            print("(f) moments and delivery (current code)", flush=True)
            run_moments(args, versions[-1], workdir, res)
        if "decide" in args.parts:
            print("(g) decisions (current code)", flush=True)
            run_decide(args, versions[-1], workdir, res)
    if "lookup" in args.parts:
        print("(c) profile look-up (current code)", flush=True)
        res.lookup = _attempt(
            res.failures, "(c) look-up", lambda: lookup.run(args.profiles, 2_000 if args.quick else 20_000)
        )
    seconds = time.monotonic() - started
    save_json("run", {"settings": settings, "machine": info, "seconds": seconds, **asdict(res)})
    command = "make bench   # = " + shlex.join([".venv/bin/python", "bench/run.py", *sys.argv[1:]])
    if not args.quick or args.write:
        write_doc(info, command, seconds, settings, res)
        print(f"wrote {DOC.relative_to(ROOT)} ({seconds / 60:.1f} min)")
    else:
        print(f"done in {seconds / 60:.1f} min (--quick: {DOC.name} not written; results in bench/results/run.json)")
    if res.failures:
        sys.exit("failed: " + "; ".join(res.failures))


if __name__ == "__main__":
    main()

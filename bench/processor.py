"""(b) Processor throughput: identity resolution and profile updates applied from the log.

A fresh store's log is filled with N events of a shop's visitors (anonymous page views and tracks, and
identifies that stitch a device's anonymous id to a user id and an e-mail, merging profiles when a second
device identifies) through the real write path (``Kairos.prepare_for`` + ``Kairos.append``). Then:

- baseline: a pure read of the whole log (``store.log.read`` in pages + msgspec decode of each payload);
- measured: ``kairos.processor.run_until_caught_up()``, with the time split between the store calls it
  makes (read, identity and profile look-ups, commit), when the code under test has them, and the rest.

Runs on SQLite and, when reachable, on PostgreSQL (a fresh schema, dropped afterwards). The events come
from fixed seeds, so every version and repeat applies the same ones.
Run alone: ``python bench/processor.py [--events 200000] [--people 30000] [--no-postgres]``;
``make bench`` runs it once per version and repeat with ``--json-out``.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import msgspec

import _compat
from _common import PG_URL, exit_on_sigterm, from_fields, tmp_dir, use_defaults
from _events import Stream, batch_body, event_size, people
from _stats import Stat, fmt, median_index, table

__all__ = ["BackendRun", "ProcessorResult", "from_json", "main", "run", "section"]

F = TypeVar("F", bound=Callable[..., Any])
CHUNK = 1_000
SEED = 11
REST = "everything else (in-memory apply, untimed calls)"


@dataclass(slots=True)
class BackendRun:
    backend: str
    events: int
    fill_s: float  # validate + normalize + append through the real write path
    read_s: float | None  # baseline: read + decode the whole log
    process_s: float
    applied: int | None = None  # from Kairos' metrics, when it has them
    duplicates: int | None = None
    merges: int | None = None
    profiles: int | None = None
    phases_s: dict[str, float] = field(default_factory=dict)
    first_fifth: float | None = None  # events/s over the first 20% of the log
    last_fifth: float | None = None  # events/s over the last 20%: the store is larger by then
    commits_ms: list[float] = field(default_factory=list)  # p50, p90, max of state commits
    commit_count: int = 0

    @property
    def events_per_s(self) -> float:
        return self.events / self.process_s

    @property
    def read_per_s(self) -> float | None:
        return self.events / self.read_s if self.read_s else None

    @property
    def fill_per_s(self) -> float:
        return self.events / self.fill_s


@dataclass(slots=True)
class ProcessorResult:
    events: int
    people: int
    mix: dict[str, int]
    event_bytes: float
    batch_size: int | None
    runs: list[BackendRun]
    postgres_note: str = ""

    def rate(self, backend: str) -> float | None:
        return next((x.events_per_s for x in self.runs if x.backend == backend), None)


def from_json(data: Mapping[str, Any]) -> ProcessorResult:
    """The result a ``--json-out`` run wrote; unknown keys are ignored, missing optional ones default."""

    result: ProcessorResult = from_fields(ProcessorResult, {**data, "runs": []})
    result.runs = [from_fields(BackendRun, r) for r in data.get("runs", [])]
    return result


def fill(kairos: Any, events: int, n_people: int) -> tuple[float, dict[str, int], float]:
    """Append ``events`` generated events; return seconds, the mix of types and the mean event size."""
    source = kairos.source_named("bench")
    stream = Stream(people(n_people, random.Random(SEED)), SEED + 1)
    mix: collections.Counter[str] = collections.Counter()
    sample: list[dict[str, Any]] = []
    elapsed = 0.0
    done = 0
    while done < events:
        batch = [next(stream) for _ in range(min(CHUNK, events - done))]
        mix.update(e["type"] for e in batch)
        if len(sample) < 5_000:
            sample += batch[:500]
        t = time.perf_counter()  # generating the events is not part of the measured write path
        new, errors = kairos.prepare_for(source, batch_body(batch), "batch")
        if errors:
            raise RuntimeError(f"generated events were refused: {errors[:3]}")
        kairos.append([(source.name, new)])
        elapsed += time.perf_counter() - t
        done += len(batch)
    return elapsed, dict(mix), event_size(sample)


def read_all(store: Any, page: int) -> float | None:
    """Seconds to read and decode the whole log; ``None`` when the entries carry no JSON payload."""
    decode = msgspec.json.Decoder().decode
    t = time.perf_counter()
    after = 0
    while entries := store.log.read(after, page):
        for entry in entries:
            payload = _compat.entry_payload(entry)
            if payload is None:
                return None
            decode(payload)
        after = _compat.entry_seq(entries[-1])
    return time.perf_counter() - t


def _timed(phases: dict[str, float], name: str, fn: F, calls: list[tuple[float, Any]] | None = None) -> F:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        t = time.perf_counter()
        result = None
        try:
            result = fn(*args, **kwargs)
            return result
        finally:
            took = time.perf_counter() - t
            phases[name] = phases.get(name, 0.0) + took
            if calls is not None:
                calls.append((took, result))

    return wrapper  # type: ignore[return-value]


def _fifths(batches: list[tuple[float, Any]], total: int) -> tuple[float | None, float | None]:
    """Events/s over the first and the last fifth of the log (``None`` unless batches were seen)."""
    if not batches or not all(isinstance(n, int) for _, n in batches):
        return None, None
    batches = [(took, n) for took, n in batches if n]  # the last call finds nothing left
    first = [0.0, 0.0]
    last = [0.0, 0.0]
    done = 0
    for took, n in batches:
        if done < total / 5:
            first[0] += n
            first[1] += took
        if done >= total * 4 / 5:
            last[0] += n
            last[1] += took
        done += n
    return (first[0] / first[1] if first[1] else None), (last[0] / last[1] if last[1] else None)


def _counters() -> tuple[float | None, float | None, float | None]:
    return (
        _compat.metric("kairos_processor_events_total"),
        _compat.metric("kairos_processor_duplicates_total"),
        _compat.merges(),
    )


def measure(kairos: Any, backend: str, events: int, n_people: int) -> tuple[BackendRun, dict[str, int], float]:
    fill_s, mix, size = fill(kairos, events, n_people)
    read_s = read_all(kairos.store, _compat.batch_size(kairos) or 5_000)
    phases: dict[str, float] = {}
    # Wrapping the store's methods times every call the processor makes, at the cost of one extra Python
    # call per batch and method. Commits are also timed one by one.
    commits: list[tuple[float, Any]] = []
    _compat.wrap_store_calls(
        kairos.store, lambda label, fn: _timed(phases, label, fn, commits if label == "state commit" else None)
    )
    # The baseline's run_until_caught_up calls run_once per batch: timing each gives the rate as the store
    # grows. A processor that does not go through run_once reports no fifths.
    batches: list[tuple[float, Any]] = []
    if callable(getattr(kairos.processor, "run_once", None)):
        kairos.processor.run_once = _timed({}, "batch", kairos.processor.run_once, batches)
    before = _counters()
    t = time.perf_counter()
    n = kairos.processor.run_until_caught_up()
    process_s = time.perf_counter() - t
    if isinstance(n, int) and n != events:
        raise RuntimeError(f"processor consumed {n} of {events} events")
    after = _counters()
    phases[REST] = process_s - sum(phases.values())
    applied, duplicates, merges = (
        int(a - b) if a is not None and b is not None else None for a, b in zip(after, before, strict=True)
    )
    run = BackendRun(
        backend,
        events,
        fill_s,
        read_s,
        process_s,
        applied,
        duplicates,
        merges,
        _compat.count_profiles(kairos),
        phases,
    )
    run.first_fifth, run.last_fifth = _fifths(batches, events)
    took = sorted(c[0] * 1000 for c in commits)
    run.commit_count = len(took)
    run.commits_ms = [took[len(took) // 2], took[int(len(took) * 0.9)], took[-1]] if took else []
    return run, mix, size


def _sqlite(events: int, n_people: int) -> tuple[BackendRun, dict[str, int], float, int | None]:
    with tmp_dir("processor") as workdir:
        kairos = _compat.open_kairos({"url": f"sqlite:///{workdir / 'kairos.db'}"})
        try:
            run_, mix, size = measure(kairos, "SQLite", events, n_people)
            return run_, mix, size, _compat.batch_size(kairos)
        finally:
            kairos.close()


def _postgres(url: str, events: int, n_people: int) -> BackendRun:
    import psycopg

    schema = f"kairos_bench_{os.getpid()}"
    kairos = _compat.open_kairos({"url": url, "schema_name": schema})
    try:
        run_, _, _ = measure(kairos, "PostgreSQL", events, n_people)
        return run_
    finally:
        kairos.close()
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def run(events: int = 200_000, n_people: int = 30_000, postgres: str | None = PG_URL) -> ProcessorResult:
    use_defaults()
    sqlite_run, mix, size, batch_size = _sqlite(events, n_people)
    print(f"    SQLite: {fmt(sqlite_run.events_per_s)} events/s", flush=True)
    result = ProcessorResult(events, n_people, mix, size, batch_size, [sqlite_run])
    if postgres:
        try:
            pg = _postgres(postgres, events, n_people)
            result.runs.append(pg)
            print(f"    PostgreSQL: {fmt(pg.events_per_s)} events/s", flush=True)
        except Exception as exc:  # no server: report it, keep the SQLite numbers
            result.postgres_note = f"PostgreSQL at {postgres} was not measured: {type(exc).__name__}: {exc}"
            print("    " + result.postgres_note, flush=True)
    else:
        result.postgres_note = "PostgreSQL was not measured (--no-postgres)."
    return result


# -- report ------------------------------------------------------------------------------------------
def median_runs(by_version: Mapping[str, Sequence[ProcessorResult | None]]) -> dict[str, ProcessorResult]:
    """Per version, the repeat whose SQLite rate is the median: its details stand for the version."""
    out = {}
    for label, results in by_version.items():
        i = median_index([r.rate("SQLite") if r else None for r in results])
        if i is not None and (chosen := results[i]) is not None:
            out[label] = chosen
    return out


def _cell(x: BackendRun | None, fn: Callable[[BackendRun], str]) -> str:
    if x is None:
        return "n/a"
    try:
        return fn(x)
    except (TypeError, IndexError, KeyError, ZeroDivisionError):
        return "n/a"


def section(by_version: Mapping[str, Sequence[ProcessorResult | None]], versions: Mapping[str, str]) -> list[str]:
    """Old vs new (or one version alone): rates over the repeats, then the median run of each in detail.

    A repeat that failed is ``None``: it keeps its place so that ratios still pair runs of one repeat.
    """
    chosen = median_runs(by_version)
    if not chosen:
        return ["## (b) Processor", "", "Not measured."]
    r = next(iter(chosen.values()))
    mix = ", ".join(f"{fmt(n)} {t}" for t, n in sorted(r.mix.items(), key=lambda kv: -kv[1]))
    backends = list(dict.fromkeys(x.backend for res in chosen.values() for x in res.runs))
    labels = list(by_version)
    repeats = max(len(v) for v in by_version.values())
    header = ["backend", *(f"{label} events/s" for label in labels)]
    if "old" in by_version and "new" in by_version:
        header.append("new / old (per pair)")
    rows = []
    for b in backends:
        rates = {label: [res.rate(b) if res else None for res in by_version[label]] for label in labels}
        row = [b, *(Stat.of(rates[label]).show() for label in labels)]
        if "old" in rates and "new" in rates:
            row.append(Stat.ratios(rates["new"], rates["old"]).show("x"))
        rows.append(row)
    out = [
        "## (b) Processor: identity resolution and profile updates",
        "",
        f"{fmt(r.events)} events ({mix}; {r.event_bytes:.0f} bytes each on average) from {fmt(r.people)}"
        " people, 60% of whom identify (user id + e-mail) on each of their devices sooner or later; 20% use"
        " two devices, so their second identify merges two profiles. The log is filled through"
        " `Kairos.prepare_for` + `Kairos.append` in batches of 1,000, then `processor.run_until_caught_up()`"
        " applies it with the version's default batch size. Every version and repeat applies the same events"
        f" (fixed seeds); {repeats} repeat{'s' if repeats != 1 else ''} per version, interleaved; median"
        " (min-max):",
        "",
        *table(header, rows),
        "",
        "The median run of each version in detail (store calls timed around the real methods, where the"
        " version has them; the rest is the processor's Python work and any call not timed):",
        "",
    ]
    cols = [(label, b) for b in backends for label in chosen]
    runs = {(label, b): next((x for x in chosen[label].runs if x.backend == b), None) for label, b in cols}
    metrics: list[tuple[str, Callable[[BackendRun], str]]] = [
        ("events/s", lambda x: fmt(x.events_per_s)),
        ("seconds", lambda x: f"{x.process_s:.1f}"),
        ("baseline: read + decode the log, events/s", lambda x: fmt(x.read_per_s)),
        ("fill (prepare_for + append), events/s", lambda x: fmt(x.fill_per_s)),
        ("profiles / merges", lambda x: f"{fmt(x.profiles)} / {fmt(x.merges)}"),
        ("first / last fifth of the log, events/s", lambda x: f"{fmt(x.first_fifth)} / {fmt(x.last_fifth)}"),
        (
            "state commits: count, p50 / p90 / max ms",
            lambda x: f"{x.commit_count}: " + " / ".join(f"{ms:.0f}" for ms in x.commits_ms) if x.commits_ms else "n/a",
        ),
    ]
    detail = [[name, *(_cell(runs[c], fn) for c in cols)] for name, fn in metrics]
    phases = list(dict.fromkeys(n for x in runs.values() if x for n in x.phases_s))
    first = next((x for x in runs.values() if x), None)
    for name in sorted(phases, key=lambda n: -(first.phases_s.get(n, 0.0) if first else 0.0)):

        def phase(x: BackendRun, name: str = name) -> str:
            s = x.phases_s[name]
            return f"{s:.2f} s ({s / x.process_s * 100:.0f}%)"

        detail.append([f"phase: {name}", *(_cell(runs[c], phase) for c in cols)])
    out += table(["", *(f"{b}, {label}" for label, b in cols)], detail)
    notes = list(dict.fromkeys(res.postgres_note for res in chosen.values() if res.postgres_note))
    if notes:
        out += ["", *notes]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--people", type=int, default=30_000)
    parser.add_argument("--postgres", default=os.environ.get("KAIROS_BENCH_PG", PG_URL))
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--json-out", type=Path, help="write the result here (make bench runs it this way)")
    args = parser.parse_args()
    exit_on_sigterm()
    result = run(args.events, args.people, None if args.no_postgres or args.postgres == "none" else args.postgres)
    data = {"kairos_path": _compat.kairos_path(), **asdict(result)}
    if args.json_out:
        args.json_out.write_text(json.dumps(data, indent=2) + "\n")
        return
    print("\n".join(section({"this": [result]}, {})))


if __name__ == "__main__":
    main()

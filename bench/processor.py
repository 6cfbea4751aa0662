"""(b) Processor throughput: identity resolution and profile updates applied from the log.

A fresh store's log is filled with N events of a shop's visitors (anonymous page views and tracks, and
identifies that stitch a device's anonymous id to a user id and an e-mail, merging profiles when a second
device identifies) through the real write path (``Kairos.prepare_for`` + ``Kairos.append``). Then:

- baseline: a pure read of the whole log (``store.log.read`` in pages + msgspec decode of each payload);
- measured: ``kairos.processor.run_until_caught_up()``, with the time split between the store calls it
  makes (read, identity and profile look-ups, commit) and the in-memory work between them.

Runs on SQLite and, when reachable, on PostgreSQL (a fresh schema, dropped afterwards).
Run alone: ``python bench/processor.py [--events 200000] [--people 30000] [--no-postgres]``.
"""

from __future__ import annotations

import argparse
import collections
import os
import random
import sqlite3
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, TypeVar

import msgspec

from _common import PG_URL, Target, fmt, save_json, table, tmp_dir, use_defaults
from _events import Stream, batch_body, event_size, people

__all__ = ["ProcessorResult", "main", "run", "section", "targets"]

F = TypeVar("F", bound=Callable[..., Any])
CHUNK = 1_000
SEED = 11


@dataclass(slots=True)
class BackendRun:
    backend: str
    events: int
    fill_s: float  # validate + normalize + append through the real write path
    read_s: float  # baseline: read + decode the whole log
    process_s: float
    applied: int
    duplicates: int
    merges: int
    profiles: int
    phases_s: dict[str, float] = field(default_factory=dict)
    first_fifth: float = 0.0  # events/s over the first 20% of the log
    last_fifth: float = 0.0  # events/s over the last 20%: the store is larger by then
    commits_ms: list[float] = field(default_factory=list)  # p50, p90, max of state commits
    commit_count: int = 0
    probe_ms: dict[str, float] = field(default_factory=dict)  # one 500-key identity look-up, several ways

    @property
    def events_per_s(self) -> float:
        return self.events / self.process_s

    @property
    def read_per_s(self) -> float:
        return self.events / self.read_s

    @property
    def fill_per_s(self) -> float:
        return self.events / self.fill_s


@dataclass(slots=True)
class ProcessorResult:
    events: int
    people: int
    mix: dict[str, int]
    event_bytes: float
    batch_size: int
    runs: list[BackendRun]
    postgres_note: str = ""


def _metric(name: str, **labels: str) -> float:
    from kairos.metrics import REGISTRY

    return REGISTRY.get_sample_value(name, labels) or 0.0


def _merges() -> float:
    from kairos.metrics import REGISTRY

    merges = [m for m in REGISTRY.collect() if m.name == "kairos_identity_merges"]
    return sum(s.value for m in merges for s in m.samples if s.name.endswith("_total"))


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


def read_all(store: Any, page: int) -> float:
    decode = msgspec.json.Decoder().decode
    t = time.perf_counter()
    after = 0
    while entries := store.log.read(after, page):
        for entry in entries:
            decode(entry.payload)
        after = entries[-1].seq
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


def _fifths(batches: list[tuple[float, Any]], total: int) -> tuple[float, float]:
    """Events/s over the first and the last fifth of the log."""
    first: list[float] = [0.0, 0.0]
    last: list[float] = [0.0, 0.0]
    done = 0
    for took, n in batches:
        if done < total / 5:
            first[0] += n or 0
            first[1] += took
        if done >= total * 4 / 5:
            last[0] += n or 0
            last[1] += took
        done += n or 0
    return first[0] / max(first[1], 1e-9), last[0] / max(last[1], 1e-9)


def measure(kairos: Any, backend: str, events: int, n_people: int) -> tuple[BackendRun, dict[str, int], float]:
    fill_s, mix, size = fill(kairos, events, n_people)
    read_s = read_all(kairos.store, kairos.processor.batch_size)
    store = kairos.store
    phases: dict[str, float] = {}
    # The store is one object behind log, state and admin: wrapping its methods times every call the
    # processor and its Workspace make, at the cost of one extra Python call per batch and method.
    commits: list[tuple[float, Any]] = []
    for name, label in (
        ("read", "log read"),
        ("find_identities", "identity look-ups"),
        ("load_profiles", "profile loads"),
        ("seen", "de-duplication look-ups"),
        ("commit", "state commit"),
        ("checkpoint", "checkpoint read"),
        ("last_seq", "lag read"),
    ):
        setattr(store, name, _timed(phases, label, getattr(store, name), commits if name == "commit" else None))
    # run_until_caught_up calls run_once per batch: timing each gives the rate as the store grows.
    batches: list[tuple[float, Any]] = []
    kairos.processor.run_once = _timed({}, "batch", kairos.processor.run_once, batches)
    applied0 = _metric("kairos_processor_events_total")
    dup0 = _metric("kairos_processor_duplicates_total")
    merges0 = _merges()
    t = time.perf_counter()
    n = kairos.processor.run_until_caught_up()
    process_s = time.perf_counter() - t
    if n != events:
        raise RuntimeError(f"processor consumed {n} of {events} events")
    phases["in-memory apply (decode, resolve, update)"] = process_s - sum(phases.values())
    run = BackendRun(
        backend,
        events,
        fill_s,
        read_s,
        process_s,
        int(_metric("kairos_processor_events_total") - applied0),
        int(_metric("kairos_processor_duplicates_total") - dup0),
        int(_merges() - merges0),
        store.count_profiles(),
        phases,
    )
    run.first_fifth, run.last_fifth = _fifths(batches, events)
    took = sorted(c[0] * 1000 for c in commits)
    run.commit_count = len(took)
    run.commits_ms = [took[len(took) // 2], took[int(len(took) * 0.9)], took[-1]] if took else []
    return run, mix, size


def _sqlite(events: int, n_people: int) -> tuple[BackendRun, dict[str, int], float, int]:
    from kairos.config import load_settings
    from kairos.runtime import Kairos

    with tmp_dir("processor") as workdir:
        db = workdir / "kairos.db"
        kairos = Kairos(load_settings(store={"url": f"sqlite:///{db}"}))
        try:
            run_, mix, size = measure(kairos, "SQLite", events, n_people)
            run_.probe_ms = _probe_identities(kairos, lambda: sqlite3.connect(db), "?")
            return run_, mix, size, kairos.processor.batch_size
        finally:
            kairos.close()


def _postgres(url: str, events: int, n_people: int) -> BackendRun:
    import psycopg

    from kairos.config import load_settings
    from kairos.runtime import Kairos

    schema = f"kairos_bench_{os.getpid()}"
    kairos = Kairos(load_settings(store={"url": url, "schema_name": schema}))
    try:
        run_, _, _ = measure(kairos, "PostgreSQL", events, n_people)

        def connect() -> Any:
            conn = psycopg.connect(url, autocommit=True)
            conn.execute(f"SET search_path TO {schema}")
            return conn

        run_.probe_ms = _probe_identities(kairos, connect, "%s")
        return run_
    finally:
        kairos.close()
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


CURRENT = "SqlStore.find_identities"


def _probe_identities(kairos: Any, connect: Callable[[], Any], param: str, rounds: int = 10) -> dict[str, float]:
    """ms per look-up of 500 identity keys on the filled store: Kairos' own ``find_identities`` and the
    same look-up written as other SQL. Each must find all 500 keys."""

    conn = connect()
    try:
        rows = conn.execute("SELECT type, value FROM identities ORDER BY random() LIMIT 500").fetchall()
        keys = [(str(t), str(v)) for t, v in rows]
        flat = [p for k in keys for p in k]
        pair = f"({param}, {param})"
        queries: dict[str, tuple[str, Any]] = {
            "500-term OR chain": (
                "SELECT type, value, profile_id FROM identities WHERE "
                + " OR ".join(f"(type = {param} AND value = {param})" for _ in keys),
                flat,
            ),
            "join on VALUES": (
                f"SELECT i.type, i.value, i.profile_id FROM (VALUES {','.join([pair] * len(keys))}) AS k"
                " JOIN identities i ON i.type = k.column1 AND i.value = k.column2",
                flat,
            ),
        }
        if param == "%s":
            queries["join on unnest(arrays)"] = (
                "SELECT i.type, i.value, i.profile_id FROM unnest(%s::text[], %s::text[]) AS k(t, v)"
                " JOIN identities i ON i.type = k.t AND i.value = k.v",
                ([k[0] for k in keys], [k[1] for k in keys]),
            )
        ways: dict[str, Callable[[], int]] = {
            CURRENT: lambda: len(type(kairos.store.state).find_identities(kairos.store.state, keys)),  # unwrapped
        }

        def query(sql: str, params: Any) -> Callable[[], int]:
            return lambda: len(conn.execute(sql, params).fetchall())

        for name, (sql, params) in queries.items():
            ways[name] = query(sql, params)
        out = {}
        for name, fn in ways.items():
            found = fn()  # warm-up
            if found != len(keys):
                raise RuntimeError(f"{name} found {found} of {len(keys)} identity keys")
            t = time.perf_counter()
            for _ in range(rounds):
                fn()
            out[name] = (time.perf_counter() - t) / rounds * 1000
        return out
    finally:
        conn.close()


def run(events: int = 200_000, n_people: int = 30_000, postgres: str | None = PG_URL) -> ProcessorResult:
    use_defaults()
    sqlite_run, mix, size, batch_size = _sqlite(events, n_people)
    print(f"  SQLite: {fmt(sqlite_run.events_per_s)} events/s", flush=True)
    result = ProcessorResult(events, n_people, mix, size, batch_size, [sqlite_run])
    if postgres:
        try:
            pg = _postgres(postgres, events, n_people)
            result.runs.append(pg)
            print(f"  PostgreSQL: {fmt(pg.events_per_s)} events/s", flush=True)
        except Exception as exc:  # no server: report it, keep the SQLite numbers
            result.postgres_note = f"PostgreSQL at {postgres} was not measured: {type(exc).__name__}: {exc}"
            print("  " + result.postgres_note, flush=True)
    else:
        result.postgres_note = "PostgreSQL was not measured (--no-postgres)."
    return result


def targets(r: ProcessorResult) -> list[Target]:
    return [Target(f"Processor, {x.backend}", x.events_per_s, 20_000, "events/s") for x in r.runs]


def section(r: ProcessorResult) -> list[str]:
    mix = ", ".join(f"{fmt(n)} {t}" for t, n in sorted(r.mix.items(), key=lambda kv: -kv[1]))
    rows = [
        [
            x.backend,
            fmt(x.events_per_s),
            f"{x.process_s:.1f}",
            fmt(x.read_per_s),
            f"{x.events_per_s / x.read_per_s * 100:.1f}%",
            fmt(x.fill_per_s),
            f"{fmt(x.profiles)} / {fmt(x.merges)}",
            f"{fmt(x.first_fifth)} / {fmt(x.last_fifth)}",
        ]
        for x in r.runs
    ]
    out = [
        "## (b) Processor: identity resolution and profile updates",
        "",
        f"{fmt(r.events)} events ({mix}; {r.event_bytes:.0f} bytes each on average) from {fmt(r.people)}"
        " people, 60% of whom identify (user id + e-mail) on each of their devices sooner or later; 20% use"
        " two devices, so their second identify merges two profiles. The log is filled through"
        " `Kairos.prepare_for` + `Kairos.append` in batches of 1,000, then"
        f" `processor.run_until_caught_up()` applies it in batches of {fmt(r.batch_size)} (the default).",
        "Baseline: reading the whole log (`store.log.read` pages of the same size) and decoding every payload.",
        "",
        *table(
            [
                "backend",
                "processor events/s",
                "seconds",
                "baseline: read + decode events/s",
                "processor / baseline",
                "fill (prepare + append) events/s",
                "profiles / merges",
                "first / last fifth of the log, events/s",
            ],
            rows,
        ),
        "",
        "Where the processor's time goes (store calls timed around the real methods; the rest is Python work"
        " in `Processor._apply` and `Workspace.finish`):",
        "",
    ]
    names = list(dict.fromkeys(n for x in r.runs for n in x.phases_s))
    phase_rows = []
    for name in sorted(names, key=lambda n: -r.runs[0].phases_s.get(n, 0.0)):
        cells = [name]
        for x in r.runs:
            s = x.phases_s.get(name, 0.0)
            cells.append(f"{s:.2f} s ({s / x.process_s * 100:.0f}%)")
        phase_rows.append(cells)
    out += table(["phase", *(x.backend for x in r.runs)], phase_rows)
    out += [
        "",
        "State commits (one per batch, with the checkpoint): "
        + "; ".join(
            f"{x.backend} {x.commit_count} commits, p50 {x.commits_ms[0]:.0f} ms, p90 {x.commits_ms[1]:.0f} ms,"
            f" max {x.commits_ms[2]:.0f} ms"
            for x in r.runs
            if x.commits_ms
        )
        + ".",
    ]
    for x in r.runs:
        if x.probe_ms:
            out += [
                "",
                f"{x.backend}, one look-up of 500 random identity keys on the filled store (mean of 10): "
                + "; ".join(f"{name} {ms:.1f} ms" for name, ms in x.probe_ms.items())
                + ".",
            ]
    if r.postgres_note:
        out += ["", r.postgres_note]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--people", type=int, default=30_000)
    parser.add_argument("--postgres", default=os.environ.get("KAIROS_BENCH_PG", PG_URL))
    parser.add_argument("--no-postgres", action="store_true")
    args = parser.parse_args()
    result = run(args.events, args.people, None if args.no_postgres else args.postgres)
    save_json("processor", asdict(result))
    print("\n".join(section(result)))
    for t in targets(result):
        print(" | ".join(t.row()))


if __name__ == "__main__":
    main()

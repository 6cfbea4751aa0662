"""(c) Profile look-up latency with 1M profiles in SQLite.

The 1M-profile store is built once and cached under ``bench/results/`` (git-ignored), keyed by
:data:`VERSION`. It is built the honest way when that fits in the time budget: 1M ``identify`` events
(user id, anonymous id, e-mail, four traits), one per person, appended through the real write path and
applied by the real processor. If the processor's first batches project more than ``--budget`` seconds,
the build starts over and writes the same rows through the real commit path instead
(``store.state.commit`` with a :class:`~kairos.store.Changes` per chunk, after appending the same events
to the log). The report says which.

Then, against ``kairos serve`` on that store (processor disabled, nothing else running):

- ``GET /v1/profiles/user_id:<random>`` over one keep-alive connection, sequentially, after a warm-up;
- baseline: ``GET /healthz`` on the same server and connection (framework + client cost, two tiny queries);
- in-process: ``store.state.resolve`` + ``store.state.profile`` (no HTTP, no JSON).

Run alone: ``python bench/lookup.py [--profiles 1000000] [--requests 20000] [--rebuild]``.
"""

from __future__ import annotations

import argparse
import http.client
import json
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from _common import RESULTS, Server, Target, fmt, percentile, save_json, table, tmp_dir, use_defaults
from _events import CITIES, EPOCH, PLANS, batch_body, uuid_from

__all__ = ["LookupResult", "main", "run", "section", "targets"]

# Bump when the generated people or the way the store is built change: a new key rebuilds the cache.
VERSION = "v1"
CHUNK = 1_000
SEED = 23


@dataclass(slots=True)
class Build:
    method: str  # "processor" or "bulk commit"
    profiles: int
    fill_s: float
    apply_s: float
    built_at: str
    db_bytes: int
    cached: bool = False
    tenths: list[float] = field(default_factory=list)  # processor events/s over each tenth of the build


@dataclass(slots=True)
class Latency:
    name: str
    n: int
    p50_ms: float
    p99_ms: float
    p999_ms: float
    max_ms: float
    mean_ms: float
    errors: int = 0


@dataclass(slots=True)
class LookupResult:
    build: Build
    requests: int
    http_profile: Latency
    http_health: Latency
    in_process: Latency
    cache_hits_possible: int  # requests whose id was already asked in the previous 2 s (cache TTL)


def _person(i: int, rng: random.Random) -> dict[str, Any]:
    return {
        "type": "identify",
        "messageId": uuid_from(rng),
        "userId": f"usr_{i:07d}",
        "anonymousId": uuid_from(rng),
        "traits": {
            "email": f"person.{i}@mail.example.org",
            "name": f"Person {i}",
            "plan": PLANS[i % len(PLANS)],
            "city": CITIES[i % len(CITIES)],
        },
        "context": {"library": {"name": "analytics-python", "version": "2.3.2"}},
        "timestamp": (EPOCH.isoformat(timespec="milliseconds")).replace("+00:00", "Z"),
    }


def _fill(kairos: Any, n: int) -> float:
    source = kairos.source_named("crm")
    rng = random.Random(SEED)
    elapsed = 0.0
    for start in range(0, n, CHUNK):
        batch = [_person(i, rng) for i in range(start, min(n, start + CHUNK))]
        t = time.perf_counter()
        events, errors = kairos.prepare_for(source, batch_body(batch), "batch")
        if errors:
            raise RuntimeError(f"generated events were refused: {errors[:3]}")
        kairos.append([(source.name, events)])
        elapsed += time.perf_counter() - t
    return elapsed


def _apply_processor(kairos: Any, n: int, budget: float, tenths: list[float]) -> float | None:
    """Run the real processor; ``None`` as soon as it projects past ``budget`` seconds.

    The projection is made after every 5% of the log, at the rate of the latest 5%: the processor slows as
    the store grows, so a projection from the first batches alone would be too hopeful.
    """
    t = time.perf_counter()
    done = 0
    tenth = (t, 0)
    twentieth = (t, 0)
    while step := kairos.processor.run_once():
        done += step
        now = time.perf_counter()
        if done - tenth[1] >= n // 10:
            tenths.append((done - tenth[1]) / (now - tenth[0]))
            tenth = (now, done)
        if done - twentieth[1] >= n // 20:
            rate = (done - twentieth[1]) / (now - twentieth[0])
            projected = now - t + (n - done) / rate
            twentieth = (now, done)
            if projected > budget:
                print(f"    processor: {fmt(rate)} events/s at {fmt(done)}, {projected:.0f} s projected", flush=True)
                return None
    return time.perf_counter() - t


def _apply_bulk(kairos: Any) -> float:
    """The same rows the processor would write, through ``store.state.commit`` (no identity resolution)."""
    import msgspec

    from kairos.identity.resolver import profile_id_for
    from kairos.store import Changes, Profile, TimelineRow, TraitValue

    store = kairos.store
    ids = kairos.processor.identifiers
    decode = msgspec.json.Decoder().decode
    t = time.perf_counter()
    after = store.state.checkpoint()
    while entries := store.log.read(after, 10_000):
        changes = Changes()
        for entry in entries:
            event = decode(entry.payload)
            ts = entry.ts
            profile = Profile(profile_id_for(entry.seq), entry.seq, ts, ts, event_count=1)
            source = entry.source
            for name, value in event["traits"].items():
                profile.traits[name] = TraitValue(value, "observed", source, ts, entry.seq)
            for key in ids.extract(event):
                profile.identities.add(key)
                changes.identities[key] = (profile.id, entry.seq)
            changes.profiles[profile.id] = profile
            changes.timeline.append(TimelineRow(profile.id, ts, entry.seq, "identify", None))
            changes.seen.append(f"{entry.source}\x1f{entry.message_id}")
        store.state.commit(changes, after, entries[-1].seq)
        after = entries[-1].seq
    return time.perf_counter() - t


def _cache_paths(n: int) -> tuple[Path, Path]:
    from kairos import __version__
    from kairos.store.sqlite import MIGRATIONS

    key = f"lookup-{VERSION}-kairos{__version__}-schema{len(MIGRATIONS)}-{n}"
    return RESULTS / f"{key}.db", RESULTS / f"{key}.json"


def _remove_db(db: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)


def build_store(n: int, budget: float, rebuild: bool = False, force_bulk: bool = False) -> tuple[Path, Build]:
    from kairos.config import load_settings
    from kairos.runtime import Kairos

    db, meta = _cache_paths(n)
    if not rebuild and db.exists() and meta.exists():
        build = Build(**json.loads(meta.read_text()))
        build.cached = True
        return db, build
    RESULTS.mkdir(parents=True, exist_ok=True)
    meta.unlink(missing_ok=True)  # written again only when the build completes
    method = "bulk commit" if force_bulk else "processor"
    while True:
        _remove_db(db)
        kairos = Kairos(load_settings(store={"url": f"sqlite:///{db}"}))
        try:
            print(f"    building {fmt(n)} profiles ({method})", flush=True)
            fill_s = _fill(kairos, n)
            tenths: list[float] = []
            apply_s = _apply_processor(kairos, n, budget, tenths) if method == "processor" else _apply_bulk(kairos)
            if apply_s is None:
                method = "bulk commit"
                continue
            profiles = kairos.store.state.count_profiles()
        finally:
            kairos.close()
        break
    build = Build(method, profiles, fill_s, apply_s, time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), 0)
    build.tenths = tenths
    build.db_bytes = sum(Path(f"{db}{s}").stat().st_size for s in ("", "-wal") if Path(f"{db}{s}").exists())
    meta.write_text(json.dumps(asdict(build), indent=2) + "\n")
    return db, build


def _latency(name: str, samples_ns: list[int], errors: int = 0) -> Latency:
    ms = sorted(s / 1e6 for s in samples_ns)
    return Latency(
        name,
        len(ms),
        percentile(ms, 50),
        percentile(ms, 99),
        percentile(ms, 99.9),
        ms[-1],
        sum(ms) / len(ms),
        errors,
    )


def _http(server: Server, paths: list[str], headers: dict[str, str]) -> tuple[dict[str, list[int]], dict[str, int]]:
    """Sequential GETs over one keep-alive connection; wall time in ns per request, grouped by the path's
    first segment, and the count of non-200 answers."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    samples: dict[str, list[int]] = {}
    errors: dict[str, int] = {}
    clock = time.perf_counter_ns
    try:
        for path in paths:
            t = clock()
            conn.request("GET", path, headers=headers)
            resp = conn.getresponse()
            resp.read()
            group = path.split("/")[1]
            samples.setdefault(group, []).append(clock() - t)
            errors[group] = errors.get(group, 0) + (resp.status != 200)
    finally:
        conn.close()
    return samples, errors


def _in_process(db: Path, ids: list[str]) -> tuple[list[int], int]:
    from kairos.config import load_settings
    from kairos.runtime import Kairos

    kairos = Kairos(load_settings(store={"url": f"sqlite:///{db}"}))
    state = kairos.store.state
    clock = time.perf_counter_ns
    samples = []
    errors = 0

    def lookup(ref: str) -> Any:
        pid = state.resolve(ref)
        return None if pid is None else state.profile(pid)

    try:
        for ref in ids[: len(ids) // 10]:  # warm-up
            lookup(ref)
        for ref in ids:
            t = clock()
            found = lookup(ref)
            samples.append(clock() - t)
            errors += found is None
    finally:
        kairos.close()
    return samples, errors


def _repeats_within_ttl(ids: list[str], per_second: float, ttl: float = 2.0) -> int:
    window = max(1, int(per_second * ttl))
    last: dict[str, int] = {}
    hits = 0
    for i, ref in enumerate(ids):
        if ref in last and i - last[ref] <= window:
            hits += 1
        last[ref] = i
    return hits


def run(n: int = 1_000_000, requests: int = 20_000, budget: float = 300.0, rebuild: bool = False) -> LookupResult:
    from kairos.config import load_settings
    from kairos.runtime import Kairos

    use_defaults()
    db, build = build_store(n, budget, rebuild)
    print(
        f"    store: {fmt(build.profiles)} profiles ({build.method}, "
        f"{'cached' if build.cached else 'built'}: fill {build.fill_s:.0f} s + apply {build.apply_s:.0f} s)",
        flush=True,
    )
    rng = random.Random(SEED + 1)
    warm = [f"usr_{rng.randrange(n):07d}" for _ in range(max(1, requests // 10))]
    refs = [f"usr_{rng.randrange(n):07d}" for _ in range(requests)]
    kairos = Kairos(load_settings(store={"url": f"sqlite:///{db}"}))
    try:
        _, secret = kairos.store.admin.add_api_key("bench-lookup", frozenset({"read"}))
    finally:
        kairos.close()
    headers = {"Authorization": f"Bearer {secret}"}
    with tmp_dir("lookup") as workdir, Server.kairos(f"sqlite:///{db}", workdir, processor=False) as server:
        # Profile GETs and the /healthz baseline alternate, so both see the same conditions.
        _http(server, [p for r in warm for p in (f"/v1/profiles/user_id:{r}", "/healthz")], headers)
        mixed, errors = _http(server, [p for r in refs for p in (f"/v1/profiles/user_id:{r}", "/healthz")], headers)
        profile = _latency("GET /v1/profiles/user_id:…", mixed["v1"], errors["v1"])
        health = _latency("GET /healthz (baseline)", mixed["healthz"], errors["healthz"])
    samples, failed = _in_process(db, [f"user_id:{r}" for r in refs])
    in_process = _latency("in-process resolve + profile", samples, failed)
    repeats = _repeats_within_ttl(refs, 1000 / max(profile.mean_ms, 1e-3))
    return LookupResult(build, requests, profile, health, in_process, repeats)


def targets(r: LookupResult) -> list[Target]:
    return [Target("Profile GET p99, 1M profiles", r.http_profile.p99_ms, 5.0, "ms", higher_is_better=False)]


def section(r: LookupResult) -> list[str]:
    b = r.build
    how = (
        f"{fmt(b.profiles)} profiles built through the real processor from {fmt(b.profiles)} `identify` events"
        f" (one per person: user id, anonymous id, e-mail, 4 traits): filling the log took {b.fill_s:.0f} s"
        f" ({fmt(b.profiles / b.fill_s)} events/s) and the processor {b.apply_s:.0f} s"
        f" ({fmt(b.profiles / b.apply_s)} events/s)"
        if b.method == "processor"
        else f"{fmt(b.profiles)} profiles written through `store.state.commit` (the processor's commit path,"
        " without identity resolution, because the real processor projected more than the build's time"
        f" budget, 5 minutes by default); filling the log took {b.fill_s:.0f} s and the commits {b.apply_s:.0f} s"
    )
    cached = f" The store was cached from an earlier run ({b.built_at})." if b.cached else ""
    if b.tenths:
        cached += (
            " The processor slowed as the store grew; events/s over each tenth of the build: "
            + ", ".join(fmt(x) for x in b.tenths)
            + "."
        )
    rows = [
        [x.name, fmt(x.n), f"{x.p50_ms:.3f}", f"{x.p99_ms:.3f}", f"{x.p999_ms:.3f}", f"{x.max_ms:.2f}", str(x.errors)]
        for x in (r.http_profile, r.http_health, r.in_process)
    ]
    return [
        "## (c) Profile look-up, 1M profiles in SQLite",
        "",
        f"{how}; the database is {b.db_bytes / 2**20:,.0f} MiB.{cached}",
        "",
        f"{fmt(r.requests)} look-ups of random user ids, alternating with as many `/healthz` requests,"
        " sequentially over one keep-alive HTTP/1.1 connection (Python `http.client`, whose own cost is in"
        " every HTTP figure) after a warm-up of 10% as many;"
        " the server runs with the processor disabled. The in-process row calls `store.state.resolve` and"
        " `store.state.profile` directly.",
        "",
        *table(["what", "requests", "p50 ms", "p99 ms", "p99.9 ms", "max ms", "non-200"], rows),
        "",
        f"The in-process profile cache (2 s TTL) could have answered at most {fmt(r.cache_hits_possible)} of the"
        f" {fmt(r.requests)} requests (ids repeated within 2 s): the figures are store reads, not cache hits.",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profiles", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--budget", type=float, default=300.0, help="most seconds the processor may take")
    parser.add_argument("--rebuild", action="store_true", help="ignore the cached store")
    args = parser.parse_args()
    result = run(args.profiles, args.requests, args.budget, args.rebuild)
    save_json("lookup", asdict(result))
    print("\n".join(section(result)))
    for t in targets(result):
        print(" | ".join(t.row()))


if __name__ == "__main__":
    main()

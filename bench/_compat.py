"""The one place that knows how the code under test may differ between versions.

``make bench`` runs the same harness against the baseline commit and the current code (``_versions.py``),
so the benchmarks call only what both have: ``load_settings(store=...)``, ``Kairos(settings)``,
``source_named``, ``prepare_for``, ``append``, ``processor.run_until_caught_up()``,
``store.log.read(after, limit)``, ``close()``, and the CLI. Everything else they would like to know
(metrics, the processor's batch size, a profile count, which store calls to time) is looked up here and
may come back as ``None``: a missing figure is reported as such instead of failing the run.
"""

from __future__ import annotations

import contextlib
import inspect
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = [
    "STORE_CALLS",
    "batch_size",
    "count_log",
    "count_profiles",
    "entry_payload",
    "entry_seq",
    "kairos_path",
    "merges",
    "metric",
    "open_kairos",
    "request_decoder",
    "tune_like_serve",
    "wrap_store_calls",
]

# Store methods the processor may call, with the phase name each is reported under. The baseline's store
# is one object behind log, state and admin; a store split into parts is searched part by part.
STORE_CALLS = (
    ("read", "log read"),
    ("find_identities", "identity look-ups"),
    ("load_profiles", "profile loads"),
    ("seen", "de-duplication look-ups"),
    ("commit", "state commit"),
    ("checkpoint", "checkpoint read"),
    ("last_seq", "lag read"),
)


def open_kairos(store: dict[str, Any]) -> Any:
    from kairos.config import load_settings
    from kairos.runtime import Kairos

    return Kairos(load_settings(store=store))


def kairos_path() -> str:
    """Where the imported ``kairos`` package lives: proof of which version a process ran."""
    import kairos

    return str(Path(kairos.__file__).resolve().parent)


def batch_size(kairos: Any) -> int | None:
    for owner in (kairos.processor, getattr(getattr(kairos, "settings", None), "processor", None)):
        size = getattr(owner, "batch_size", None)
        if isinstance(size, int):
            return size
    return None


def metric(name: str, **labels: str) -> float | None:
    """A Prometheus sample from Kairos' registry, or ``None`` when there is no such registry."""
    try:
        from kairos.metrics import REGISTRY
    except ImportError:
        return None
    value = REGISTRY.get_sample_value(name, labels)
    return float(value) if value is not None else 0.0


def merges() -> float | None:
    try:
        from kairos.metrics import REGISTRY
    except ImportError:
        return None
    found = [m for m in REGISTRY.collect() if m.name == "kairos_identity_merges"]
    return float(sum(s.value for m in found for s in m.samples if s.name.endswith("_total")))


def count_profiles(kairos: Any) -> int | None:
    for owner in (kairos.store, getattr(kairos.store, "state", None)):
        fn = getattr(owner, "count_profiles", None)
        if callable(fn):
            with contextlib.suppress(Exception):
                return int(fn())
    return None


def entry_seq(entry: Any) -> int:
    return int(entry.seq)


def entry_payload(entry: Any) -> bytes | None:
    payload = getattr(entry, "payload", None)
    return payload if isinstance(payload, bytes | bytearray | memoryview) else None  # type: ignore[return-value]


def count_log(db: Path) -> int:
    """Rows in a SQLite store's event log: ``COUNT(*)`` on the ``log`` table, else by paging ``log.read``."""
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            return int(conn.execute("SELECT COUNT(*) FROM log").fetchone()[0])
        finally:
            conn.close()
    except sqlite3.OperationalError:
        pass
    kairos = open_kairos({"url": f"sqlite:///{db}"})
    try:
        n, after = 0, 0
        while entries := kairos.store.log.read(after, 10_000):
            n += len(entries)
            after = entry_seq(entries[-1])
        return n
    finally:
        kairos.close()


def request_decoder(kairos: Any) -> Callable[[bytes], Any] | None:
    """``raw body -> what Kairos.prepare takes`` on the HTTP path, for a ``batch`` request.

    The baseline's ``decode_body(body, content_encoding, limits)`` returns the decoded JSON; a later one
    takes the endpoint too (``decode_body(body, content_encoding, endpoint, limits)``).
    """
    try:
        from kairos.collect import decode_body
    except ImportError:
        return None
    fn: Any = decode_body  # typed against whichever version this checkout has
    limits = kairos.settings.collect
    if "endpoint" in inspect.signature(fn).parameters:
        return lambda raw: fn(raw, None, "batch", limits)
    return lambda raw: fn(raw, None, limits)


def wrap_store_calls(store: Any, wrap: Callable[[str, Callable[..., Any]], Callable[..., Any]]) -> list[str]:
    """Replace each of :data:`STORE_CALLS` found on the store (or its log/state parts) by ``wrap(label, fn)``.

    Wrapping works because the processor looks the methods up on the instance at each call; a version
    that binds them earlier simply reports fewer phases. Returns the labels wrapped.
    """
    owners = [store]
    for part in ("log", "state"):
        obj = getattr(store, part, None)
        if obj is not None and obj is not store:
            owners.append(obj)
    wrapped = []
    for name, label in STORE_CALLS:
        for owner in owners:
            fn = getattr(owner, name, None)
            if callable(fn):
                with contextlib.suppress(AttributeError, TypeError):
                    setattr(owner, name, wrap(label, fn))
                    wrapped.append(label)
                    break
    return wrapped


def tune_like_serve() -> None:
    """The garbage collector's settings ``kairos serve`` gives its process before it serves (in-process API
    benchmarks measure the server as it runs), when the code has them."""
    with contextlib.suppress(ImportError):
        from kairos._gc import tune_for_server

        tune_for_server()

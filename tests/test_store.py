"""Store backends: the event log's ordering guarantees and versioned migrations, on every backend."""

from __future__ import annotations

import threading
import uuid
from typing import Any

import pytest

from kairos.collect import NewEvent
from kairos.runtime import Kairos
from kairos.store import open_store
from tests.conftest import PG_URL, REQUIRE, make_settings


def events(n: int, tag: str) -> list[NewEvent]:
    return [NewEvent(f"{tag}-{i}", 1_000 + i, 1_000 + i, "observed", b'{"type":"track","i":%d}' % i) for i in range(n)]


def test_append_returns_gap_free_seqs_in_order(kairos: Kairos) -> None:
    seqs = kairos.store.log.append_many([("web", events(3, "a")), ("app", events(2, "b"))])
    assert seqs == [[1, 2, 3], [4, 5]]
    entries = kairos.store.log.read(0, 10)
    assert [(e.seq, e.source, e.message_id) for e in entries] == [
        (1, "web", "a-0"),
        (2, "web", "a-1"),
        (3, "web", "a-2"),
        (4, "app", "b-0"),
        (5, "app", "b-1"),
    ]
    assert [e.seq for e in kairos.store.log.read(3, 10)] == [4, 5]
    assert set(kairos.store.log.get([2, 5, 99])) == {2, 5}
    assert kairos.store.log.last_seq() == 5 and kairos.store.log.count() == 5
    assert kairos.store.log.append_many([("web", [])]) == [[]]


def test_concurrent_appends_never_lose_or_reorder(kairos: Kairos) -> None:
    results: list[list[int]] = []
    lock = threading.Lock()

    def writer(t: int) -> None:
        for b in range(10):
            [seqs] = kairos.store.log.append_many([("web", events(20, f"t{t}b{b}"))])
            with lock:
                results.append(seqs)

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    every = sorted(s for seqs in results for s in seqs)
    assert every == list(range(1, 801))
    for seqs in results:
        assert seqs == list(range(seqs[0], seqs[0] + 20))  # each request's events are contiguous
    assert len({e.message_id for e in kairos.store.log.read(0, 1000)}) == 800


def test_migrations_are_versioned_and_idempotent(store_settings: dict[str, Any]) -> None:
    settings = make_settings(store_settings)
    first = open_store(settings.store)
    first.log.append_many([("web", events(1, "x"))])
    first.close()
    again = open_store(settings.store)  # re-running migrations must neither fail nor lose data
    try:
        assert again.log.count() == 1
        conn = again._conn()
        if again.d.name == "sqlite":
            version = conn.execute("PRAGMA user_version").fetchone()[0]
        else:
            version = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()[0]
        assert version == 1
    finally:
        again.close()


@pytest.mark.postgres
def test_postgres_connection_is_reopened_after_the_server_drops_it(pg_reason: str | None) -> None:
    if pg_reason is not None and REQUIRE:
        pytest.fail(pg_reason)
    if pg_reason is not None:
        pytest.skip(pg_reason)
    import psycopg

    schema = f"t_{uuid.uuid4().hex[:12]}"
    store = open_store(make_settings({"url": PG_URL, "schema_name": schema}).store)
    try:
        store.log.append_many([("web", events(1, "a"))])
        pid = store._conn().info.backend_pid
        with psycopg.connect(PG_URL, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        with pytest.raises(psycopg.Error):
            store.log.count()  # the call in flight fails ...
        assert store.log.count() == 1  # ... and the next one reconnects
    finally:
        store.close()
        with psycopg.connect(PG_URL, autocommit=True) as admin:
            admin.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")

"""Store backends: the event log's ordering guarantees and versioned migrations, on every backend."""

from __future__ import annotations

import contextlib
import sqlite3
import struct
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from kairos.collect import NewEvent
from kairos.runtime import Kairos
from kairos.store import open_store
from kairos.store.schema import Column, derived_tables, profiles_table
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


def test_migrations_are_idempotent_and_keep_the_log(store_settings: dict[str, Any]) -> None:
    settings = make_settings(store_settings)
    first = open_store(settings.store)
    first.log.append_many([("web", events(1, "x"))])
    first.close()
    again = open_store(settings.store)  # re-running migrations must neither fail nor lose data
    try:
        assert again.log.count() == 1
        assert again.log.read(0, 10)[0].trait_kind == "observed"
    finally:
        again.close()


def test_a_decision_log_with_records_in_its_rows_is_moved_to_decision_records(store_settings: dict[str, Any]) -> None:
    """Decision logs made before ``decision_records`` kept each record in the decision's row: a start moves
    the records (learner, rewards and exports read them as before) and drops the column; a second start
    finds nothing to move."""
    settings = make_settings(store_settings)
    store = open_store(settings.store)
    db = store.decisions  # the store's decision log and its database
    d = db.db.d
    with db.db.tx(write=True) as conn:  # the earlier layout, with one decision logged in it
        conn.execute("DROP TABLE decision_records")
        conn.execute(f"ALTER TABLE decisions ADD COLUMN record {d.column_type(Column('record', 'bytes'))}")
        conn.execute(
            db.db.sql(
                "INSERT INTO decisions (id, at, subject, channel, placement, grp, policy, policy_version, offers,"
                " interaction, customization, closes_at, closed, learned, record)"
                " VALUES ({p}, 5, 'subj', 'web', NULL, 'personalized', 'linucb', 0, {p}, 1, 0, 99, 0, 0, {p})"
            ),
            ("dec-1", d.dump_json(["upgrade"]), b"\x00record\xff"),
        )
    store.close()
    for _ in range(2):
        again = open_store(settings.store)
        try:
            row = again.decisions.decision("dec-1")
            assert row is not None and row.record == b"\x00record\xff" and row.offers == ["upgrade"]
            assert [r.id for r in again.decisions.unlearned_decisions(0, 10)] == ["dec-1"]
            with again.decisions.db.conn() as conn:
                assert "record" not in again.decisions.db.d.table_columns(conn, "decisions")
        finally:
            again.close()


def test_a_decision_whose_record_cannot_be_written_leaves_nothing(store_settings: dict[str, Any]) -> None:
    """The decision's row, its record and its impressions are one transaction: a record insert that fails
    (here an id already in ``decision_records``) leaves no half decision, and the batch's other rows go too."""
    from kairos.store import DecisionRow

    store = open_store(make_settings(store_settings).store)
    try:
        db = store.decisions.db
        with db.tx(write=True) as conn:  # a stray record holding the id the next decision will use
            conn.execute(db.sql("INSERT INTO decision_records (id, record) VALUES ({p}, {p})"), ("dup", b"x"))

        def row(id_: str) -> DecisionRow:
            return DecisionRow(
                0, id_, 5, "subj", "web", None, "policy", "linucb", 0, ["a"], False, False, 99, False, b"r"
            )

        with pytest.raises(store.driver_errors):  # the driver's IntegrityError
            store.decisions.record_many([row("fine"), row("dup")])
        assert store.decisions.decisions(["fine", "dup"]) == {}
        assert store.decisions.history(["subj"], 0, records=False) == ([], [])
        assert store.decisions.impressions(["a"]) == {}
        store.decisions.record(row("fine"))  # the log goes on
        assert list(store.decisions.decisions(["fine"])) == ["fine"]
    finally:
        store.close()


def test_a_changed_derived_schema_is_rebuilt_from_the_log(store_settings: dict[str, Any]) -> None:
    settings = make_settings(store_settings)
    first = Kairos(settings)
    source = first.source_named("web")
    first.ingest({"userId": "u1", "traits": {"plan": "pro"}}, "identify", source.write_key)
    first.processor.run_until_caught_up()
    first.close()
    extra = Column("orders", "int", default="0")  # a new projection column: the derived schema changes
    store = open_store(settings.store, (extra,))
    try:
        assert store.state.checkpoint().seq == 0 and store.state.count_profiles() == 0  # rebuilt by replay
        assert store.log.count() == 1 and [s.name for s in store.admin.sources()] == ["web"]  # durable kept
        assert "orders" in store.state.columns
    finally:
        store.close()


def test_one_schema_source_renders_both_dialects() -> None:
    from kairos.store._db import Database
    from kairos.store.sqlite import SqliteDialect

    tables = derived_tables(profiles_table(()), ())  # core tables only
    ddl = Database(SqliteDialect(":memory:"), tables).ddl(tables[0])
    assert ddl[0].startswith("CREATE TABLE IF NOT EXISTS checkpoints")
    # Both dialects render every logical type; nothing is written twice.
    from kairos.store.postgres import _TYPES as PG
    from kairos.store.sqlite import _TYPES as LITE

    assert set(PG) == set(LITE) == {"int", "float", "text", "bytes", "json", "serial"}


def test_a_first_release_store_is_upgraded(tmp_path: Path) -> None:
    """The first release wrote ts and the source's kind inside the payload, and had other derived tables."""
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.executescript(
        """
        CREATE TABLE log (seq INTEGER PRIMARY KEY, source TEXT NOT NULL, received_at INTEGER NOT NULL,
            message_id TEXT NOT NULL, payload BLOB NOT NULL);
        CREATE TABLE checkpoint (name TEXT PRIMARY KEY, seq INTEGER NOT NULL);
        INSERT INTO checkpoint VALUES ('profiles', 1);
        CREATE TABLE profiles (id TEXT PRIMARY KEY, traits TEXT);
        CREATE TABLE sources (id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, write_key TEXT NOT NULL UNIQUE,
            enabled INTEGER NOT NULL, trait_kind TEXT NOT NULL, created_at INTEGER NOT NULL);
        CREATE TABLE api_keys (id TEXT PRIMARY KEY, name TEXT NOT NULL, key_hash TEXT NOT NULL UNIQUE,
            scopes TEXT NOT NULL, enabled INTEGER NOT NULL, created_at INTEGER NOT NULL);
        PRAGMA user_version = 1;
        """
    )
    payload = (
        b'{"type":"identify","userId":"u1","traits":{"plan":"pro"},"timestamp":"2026-01-01T00:00:00.000Z",'
        b'"receivedAt":"2026-01-02T00:00:00.000Z","_kairos":{"source":"crm","trait_kind":"stated"}}'
    )
    conn.execute("INSERT INTO log VALUES (1, 'crm', 1767312000000, 'm1', ?)", (payload,))
    conn.commit()
    conn.close()
    kairos = Kairos(make_settings({"url": f"sqlite:///{path}"}))
    try:
        [entry] = kairos.store.log.read(0, 10)
        assert (entry.ts, entry.trait_kind) == (1767225600000, "stated")
        assert kairos.store.state.checkpoint().seq == 0  # derived state is rebuilt ...
        kairos.processor.run_until_caught_up()
        pk = kairos.resolve("user_id:u1")  # ... from the upgraded log
        assert pk is not None
        profile = kairos.profile(pk)
        assert profile is not None and profile.sections["traits"]["plan"].kind == "stated"
    finally:
        kairos.close()


@pytest.mark.postgres
def test_postgres_connections_the_server_drops_are_replaced(pg_reason: str | None) -> None:
    if pg_reason is not None and REQUIRE:
        pytest.fail(pg_reason)
    if pg_reason is not None:
        pytest.skip(pg_reason)
    import psycopg

    schema = f"t_{uuid.uuid4().hex[:12]}"
    store = open_store(make_settings({"url": PG_URL, "schema_name": schema}).store)
    try:
        store.log.append_many([("web", events(1, "a"))])
        with psycopg.connect(PG_URL, autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = '' AND pid <> "
                "pg_backend_pid() AND query LIKE %s",
                ("%search_path%",),
            )
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid <> pg_backend_pid()"
                " AND datname = current_database() AND backend_type = 'client backend' AND state = 'idle'"
                " AND query LIKE %s",
                ("%FROM log%",),
            )
        assert store.log.count() == 1  # the pool checks a connection before lending it
    finally:
        store.close()
        with psycopg.connect(PG_URL, autocommit=True) as admin:
            admin.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def test_sqlite_wal_is_checkpointed_in_the_background_not_in_commits(tmp_path: Path) -> None:
    store = open_store(make_settings({"url": f"sqlite:///{tmp_path}/w.db"}).store)
    try:
        with store.db.conn() as conn:
            assert conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0  # commits never stall on it
        for i in range(20):
            store.log.append_many([("web", events(500, f"w{i}"))])
        wal = tmp_path / "w.db-wal"
        assert wal.exists() and wal.stat().st_size > 0
        deadline = time.monotonic() + 10
        while True:  # the checkpointer copies the WAL into the database within about a second
            # Read the WAL index header (the -shm file) without touching the database: mxFrame (frames in
            # the WAL) at byte 16, nBackfill (frames copied back) at byte 96; a probe connection would
            # checkpoint by itself.
            shm = (tmp_path / "w.db-shm").read_bytes()
            frames, done = struct.unpack_from("=I", shm, 16)[0], struct.unpack_from("=I", shm, 96)[0]
            if frames > 0 and done == frames:
                break
            assert time.monotonic() < deadline, f"WAL not checkpointed: {done} of {frames} frames"
            time.sleep(0.2)
    finally:
        store.close()


def test_sqlite_wal_is_started_over_under_steady_writes(tmp_path: Path) -> None:
    """A PASSIVE checkpoint never catches up with a writer that commits without pause, and a WAL is started
    over only when every frame was copied: the decision log's WAL grew by ~40 MB/s for as long as 1,000
    decisions/s lasted. Past ``restart_bytes`` the Checkpointer starts it over (RESTART)."""
    from kairos.store.sqlite import Checkpointer, SqliteDialect

    path = str(tmp_path / "busy.db")
    dialect = SqliteDialect(path)
    with dialect.transaction(True) as conn:
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB)")
    checkpointer = Checkpointer(path, interval=0.02, restart_bytes=1 << 20)
    checkpointer.start()
    largest = 0  # frames in the WAL (the -shm header's mxFrame), after each commit
    try:
        for i in range(3_000):  # ~25 MB of pages, a commit every ~0.5 ms (PASSIVE ones take longer)
            with dialect.transaction(True) as conn:
                conn.execute("INSERT INTO t (v) VALUES (?)", (bytes(4_000),))
            time.sleep(0.0003)
            if i % 20 == 0:
                largest = max(largest, struct.unpack_from("=I", (tmp_path / "busy.db-shm").read_bytes(), 16)[0])
    finally:
        checkpointer.stop()
        dialect.close()
    assert 0 < largest * 4096 < 8 << 20, f"{largest} frames"


def _one_decision_commits(store: Any, n: int, tag: str) -> None:
    from kairos.store import DecisionRow

    record = bytes(range(256)) * 14  # ~3.6 KB, the size of a record with 20 candidates
    for i in range(n):
        row = DecisionRow(
            0, f"{tag}-{i}", i, f"subj-{i % 50}", "web", None, "policy", "linucb", 0, ["a", "b", "c"],
            False, False, 10**12 + i, False, record,
        )  # fmt: skip
        store.decisions.record_many([row])


def test_a_new_decision_log_has_small_pages_and_a_smaller_wal(tmp_path: Path) -> None:
    """A WAL frame is a whole page, and one decision's commit touches ~12 of them (its row, five indexes, its
    record and the record's key, the impressions, the sequence, the header): 48.7 KB of WAL per decision at
    SQLite's default 4 KB pages (~50 MB/s of disk writes at 1,000 decisions/s). A new decision log has 1 KB
    pages; the other files keep 4 KB (the log's batches and the model blobs fill whole pages)."""
    from kairos.config import StoreSettings
    from kairos.store import DECISIONS_PAGE_SIZE, decisions_file, models_file

    path = tmp_path / "k.db"
    store = open_store(StoreSettings(url=f"sqlite:///{path}"))
    try:
        _one_decision_commits(store, 300, "warm")  # past the first pages of every tree
        decisions = decisions_file(str(path))
        for file, size in ((decisions, 1024), (path, 4096), (models_file(str(path)), 4096)):
            with contextlib.closing(sqlite3.connect(file)) as conn:
                assert conn.execute("PRAGMA page_size").fetchone() == (size,), file
        assert DECISIONS_PAGE_SIZE == 1024
        assert store.decisions.db.d.compact(), "the WAL could not be truncated"  # retried past a checkpointer
        _one_decision_commits(store, 200, "measured")
        per_decision = Path(decisions + "-wal").stat().st_size / 200
        assert 4_000 < per_decision < 26_000, per_decision  # here ~19,700; with 4 KB pages ~50,500
        assert len(store.decisions.decisions([f"measured-{i}" for i in range(200)])) == 200
    finally:
        store.close()


def test_a_decision_log_created_with_4_kb_pages_keeps_them_and_works(tmp_path: Path) -> None:
    """Stores created before the small pages: SQLite sets a page size only on an empty file, so their decision
    log keeps 4 KB pages, and is read and written as before."""
    from kairos.config import StoreSettings
    from kairos.store import decisions_file

    path = tmp_path / "k.db"
    with contextlib.closing(sqlite3.connect(decisions_file(str(path)))) as conn:  # as an earlier release left it
        conn.execute("PRAGMA page_size=4096")
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE before_upgrade (x)")
        conn.commit()
    store = open_store(StoreSettings(url=f"sqlite:///{path}"))
    try:
        _one_decision_commits(store, 20, "old")
        assert sorted(store.decisions.decisions(["old-0", "old-19"])) == ["old-0", "old-19"]
        with contextlib.closing(sqlite3.connect(decisions_file(str(path)))) as conn:
            assert conn.execute("PRAGMA page_size").fetchone() == (4096,)
    finally:
        store.close()


def test_sqlite_wal_restart_is_not_tried_while_a_reader_holds_older_frames(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A RESTART holds writers while it waits for readers: with a long reader in the WAL (a scan, a backup) it
    stalled every writer for its whole wait each round, then failed. It waits for the reader to leave."""
    from kairos.store.sqlite import Checkpointer, SqliteDialect

    path = str(tmp_path / "read.db")
    dialect = SqliteDialect(path)
    with dialect.transaction(True) as conn:
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB)")
        conn.execute("INSERT INTO t (v) VALUES (?)", (b"x",))
    tried: list[bool] = []
    restart = Checkpointer._restart
    reading = threading.Event()

    def spy(self: Checkpointer, conn: sqlite3.Connection) -> bool:
        tried.append(reading.is_set())
        return restart(self, conn)

    monkeypatch.setattr(Checkpointer, "_restart", spy)
    reader = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    checkpointer = Checkpointer(path, interval=0.02, restart_bytes=256 << 10)
    checkpointer.start()
    try:

        def write(n: int) -> None:
            for _ in range(n):
                with dialect.transaction(True) as conn:
                    conn.execute("INSERT INTO t (v) VALUES (?)", (bytes(4_000),))
                time.sleep(0.0003)

        write(50)
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM t").fetchone()  # a snapshot: the frames after it stay needed
        reading.set()
        write(600)  # ~2.5 MB, several rounds past restart_bytes
        reading.clear()
        reader.execute("COMMIT")
        write(600)
    finally:
        checkpointer.stop()
        reader.close()
        dialect.close()
    assert tried and True not in tried  # tried once the reader left, never while it was there


def test_sqlite_compact_gives_up_soon_when_a_reader_stays(tmp_path: Path) -> None:
    """The erasure's TRUNCATE checkpoint waited up to the connection's 30 s busy timeout for an idle reader,
    holding every writer of the file meanwhile; it now tries in short waits and says it could not."""
    from kairos.store.sqlite import SqliteDialect

    path = str(tmp_path / "c.db")
    dialect = SqliteDialect(path)
    with dialect.transaction(True) as conn:
        conn.execute("CREATE TABLE t (v)")
        conn.execute("INSERT INTO t VALUES (1)")
    reader = sqlite3.connect(path, isolation_level=None)
    try:
        reader.execute("BEGIN")
        reader.execute("SELECT * FROM t").fetchall()
        with dialect.transaction(True) as conn:
            conn.execute("INSERT INTO t VALUES (2)")
        started = time.monotonic()
        assert not dialect.compact(attempts=3, wait=0.05)
        assert time.monotonic() - started < 10  # was 30 s
        reader.execute("COMMIT")
        assert dialect.compact()
        assert (tmp_path / "c.db-wal").stat().st_size == 0
        with dialect.connection() as conn:  # the connection's own busy timeout is back
            assert conn.execute("PRAGMA busy_timeout").fetchone()[0] == 30_000
    finally:
        reader.close()
        dialect.close()


def test_sqlite_appends_never_wait_for_a_processor_commit(tmp_path: Path) -> None:
    """Embedded, the log and derived state are two files with a writer each: a long state transaction (a big
    processor batch committing) must not hold up the acknowledgement of new events."""
    store = open_store(make_settings({"url": f"sqlite:///{tmp_path}/k.db"}).store)
    appended: list[list[list[int]]] = []
    try:
        with store.db.tx(write=True):  # the state file's write lock, held
            worker = threading.Thread(target=lambda: appended.append(store.log.append_many([("web", events(3, "x"))])))
            worker.start()
            worker.join(5)  # on one shared write lock it would wait for the transaction (busy timeout 30 s)
            assert not worker.is_alive() and appended == [[[1, 2, 3]]]
        assert (tmp_path / "k.db").exists() and (tmp_path / "k-state.db").exists()
    finally:
        store.close()


def _snapshot(version: int, at: int = 1_000, model: bytes = b"model") -> Any:
    from kairos.store import Snapshot

    return Snapshot(version, "linucb", at, 0, model + b"-%d" % version)


def test_a_snapshot_s_model_is_written_apart_and_found_again(store_settings: dict[str, Any]) -> None:
    """The model (megabytes) goes to ``policy_models`` before the compare-and-set, which only names it; a lost
    compare-and-set leaves no model behind, and the models of snapshots replaced go with them."""
    store = open_store(make_settings(store_settings).store)
    try:
        decisions = store.decisions
        assert decisions.save_snapshot(0, _snapshot(1), [])
        assert not decisions.save_snapshot(0, _snapshot(1, model=b"lost"), [])  # another learner came first
        latest = decisions.latest()
        assert latest is not None and (latest.version, latest.model) == (1, b"model-1")
        for version in range(2, 7):
            assert decisions.save_snapshot(version - 1, _snapshot(version), [])
        kept = [r[0] for r in decisions.db.rows_of("SELECT version FROM policy_snapshots ORDER BY version")]
        assert kept == [4, 5, 6]  # KEEP_SNAPSHOTS
        models = sorted(bytes(r[0]) for r in decisions.models.rows_of("SELECT model FROM policy_models"))
        assert models == [b"model-4", b"model-5", b"model-6"]  # none of the lost one, none replaced
        rows = decisions.db.rows_of("SELECT model FROM policy_snapshots")
        assert all(bytes(r[0]) == b"" for r in rows)  # the decision log holds no model
    finally:
        store.close()


def test_a_snapshot_marks_what_it_learned_in_short_transactions(store_settings: dict[str, Any]) -> None:
    """Every decision's group commit takes the decision log's write lock: marking 5,000 decisions learned in the
    snapshot's own transaction held it 3.3 ms (embedded), and decisions waited 5-10 ms behind it. The marks go
    in transactions of at most MARK_CHUNK rows after the compare-and-set, which stores them as runs of seqs."""
    import contextlib

    from kairos.store import DecisionRow
    from kairos.store._decisions import MARK_CHUNK, _chunks, runs

    assert runs([9, 3, 4, 5, 12, 10, 4]) == [[3, 5], [9, 10], [12, 12]] and runs([]) == []
    for marks in ([[1, 1000]], [[1, 3], [7, 7], [10, 600]], [[i, i] for i in range(1, 1200, 2)]):
        groups = list(_chunks(marks))
        assert all(sum(b - a + 1 for a, b in g) <= MARK_CHUNK for g in groups)
        assert sorted(s for g in groups for a, b in g for s in range(a, b + 1)) == [
            s for a, b in marks for s in range(a, b + 1)
        ]
    store = open_store(make_settings(store_settings).store)
    try:
        decisions = store.decisions
        rows = [
            DecisionRow(
                0, f"d{i}", 1_000, "s", "web", None, "policy", "linucb", 1, ["o"], False, False, 10**12, False, b""
            )
            for i in range(3 * MARK_CHUNK)
        ]
        decisions.record_many(rows)
        decisions.add_rewards([(f"d{i}", "o", 1.0, 1_000, "api") for i in range(0, len(rows), 3)])
        seqs = [r.seq for r in decisions.unlearned_decisions(0, 10_000)]
        rewards = [r.seq for r in decisions.unlearned(0, 10_000)]
        changed: list[int] = []  # rows updated by each write transaction

        class Counting:
            def __init__(self, conn: Any) -> None:
                self.conn, self.n = conn, 0

            def execute(self, *args: Any) -> Any:
                cur = self.conn.execute(*args)
                self.n += max(cur.rowcount, 0) if args[0].lstrip().startswith("UPDATE") else 0
                return cur

            def __getattr__(self, name: str) -> Any:
                return getattr(self.conn, name)

        tx = decisions.db.tx

        @contextlib.contextmanager
        def counted(write: bool = False, dry_run: bool = False) -> Any:
            with tx(write, dry_run) as conn:
                counting = Counting(conn)
                yield counting
            if write:
                changed.append(counting.n)

        decisions.db.tx = counted  # type: ignore[method-assign]
        assert decisions.save_snapshot(0, _snapshot(1), rewards, seqs)
        decisions.db.tx = tx  # type: ignore[method-assign]
        assert sum(changed) == len(seqs) + len(rewards) == 4 * MARK_CHUNK and max(changed) <= MARK_CHUNK
        assert not decisions.unlearned_decisions(0, 10_000) and not decisions.unlearned(0, 10_000)
        (marks,) = decisions.db.rows_of("SELECT marks FROM policy_snapshots")
        assert decisions.db.d.load_json(marks[0]) == {"rewards": runs(rewards), "decisions": [[seqs[0], seqs[-1]]]}
    finally:
        store.close()


def test_a_model_left_by_a_crash_is_removed_once_it_is_old(store_settings: dict[str, Any]) -> None:
    """A learner that stopped between writing its model and the compare-and-set left a model nothing names:
    removed by a later snapshot once older than MODEL_GRACE_MS (a younger one may be a racing learner's)."""
    from kairos.store._decisions import MODEL_GRACE_MS

    store = open_store(make_settings(store_settings).store)
    try:
        decisions = store.decisions
        models = decisions.models
        with models.tx(write=True) as conn:
            for id_, at in (("old-crash", 1_000), ("racing", 1_000 + MODEL_GRACE_MS)):
                conn.execute(
                    models.sql("INSERT INTO policy_models (id, at, model) VALUES ({p}, {p}, {p})"), (id_, at, b"x")
                )
        assert decisions.save_snapshot(0, _snapshot(1, at=1_000 + MODEL_GRACE_MS + 1), [])
        left = sorted(r[0] for r in models.rows_of("SELECT id FROM policy_models"))
        assert "old-crash" not in left and "racing" in left and len(left) == 2
    finally:
        store.close()


def test_a_snapshot_of_an_earlier_release_holding_its_model_still_loads(store_settings: dict[str, Any]) -> None:
    store = open_store(make_settings(store_settings).store)
    try:
        db = store.decisions.db
        with db.tx(write=True) as conn:  # as the earlier release wrote it: the model in the row, no model_id
            conn.execute(
                db.sql(
                    "INSERT INTO policy_snapshots (version, policy, at, learned, model) VALUES (1, 'linucb', 5, 0, {p})"
                ),
                (b"in-row",),
            )
        latest = store.decisions.latest()
        assert latest is not None and latest.model == b"in-row"
        assert store.decisions.save_snapshot(1, _snapshot(2), [])
        assert store.decisions.latest().model == b"model-2"  # type: ignore[union-attr]
    finally:
        store.close()


def test_embedded_a_model_being_written_never_holds_up_a_decision(tmp_path: Path) -> None:
    """Embedded, models have a SQLite file of their own: the learner writing one (held here: an open write
    transaction on that file) does not take the decision log's write lock, which each decision's group commit
    needs. It did: a snapshot of ~3 MB held it ~10 ms every 5 s, the tail of POST /v1/decide's latency."""
    from kairos.store import DecisionRow, models_file

    store = open_store(make_settings({"url": f"sqlite:///{tmp_path}/k.db"}).store)
    try:
        assert store.decisions.models is not store.decisions.db
        holder = sqlite3.connect(models_file(f"{tmp_path}/k.db"), timeout=0)
        holder.execute("BEGIN IMMEDIATE")
        holder.execute("INSERT INTO policy_models (id, at, model) VALUES ('held', 1, x'00')")
        try:
            row = DecisionRow(
                0, "d1", 5, "subj", "web", None, "policy", "linucb", 0, ["a"], False, False, 99, False, b"r"
            )
            store.decisions.record_many([row])  # one file, it would wait out the busy timeout and fail (503)
            assert store.decisions.decision("d1") is not None
        finally:
            holder.rollback()
            holder.close()
    finally:
        store.close()

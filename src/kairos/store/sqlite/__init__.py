"""Embedded backend: one SQLite file in WAL mode holds the log and all state.

Durability: a commit in WAL mode with ``synchronous=NORMAL`` reaches the operating system before
``COMMIT`` returns, so it survives ``kill -9`` of Kairos; ``synchronous=FULL`` also fsyncs, for power loss.

WAL checkpoints never run inside a writer's commit (``wal_autocheckpoint`` is off): :class:`Checkpointer`, a
background thread of the process that appends to the log, copies the WAL back into the database with
``PASSIVE`` checkpoints, which wait for no reader and block no writer, so ingest never stalls behind one; and
past 64 MiB of WAL (steady writes never let a PASSIVE one catch up) a ``RESTART`` one, which holds writers for a
few milliseconds so that the WAL starts over instead of growing for as long as the load lasts.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import msgspec

from kairos.store._db import chunks
from kairos.store.schema import Column, Index, Table

__all__ = ["Checkpointer", "SqliteDialect"]

log = logging.getLogger("kairos.store")
_decode = msgspec.json.Decoder().decode
_encode = msgspec.json.Encoder().encode
_TYPES = {"int": "INTEGER", "float": "REAL", "text": "TEXT", "bytes": "BLOB", "json": "TEXT", "serial": "INTEGER"}
# Largest number of bound parameters per statement (SQLite ≥ 3.32 allows 32,766).
MAX_PARAMS = 30_000
WAL_RESTART_BYTES = 64 << 20  # a WAL holding more is started over (Checkpointer)


class SqliteDialect:
    name = "sqlite"
    param = "?"
    array_params = False
    driver_errors: tuple[type[Exception], ...] = (sqlite3.Error,)
    # "database is locked", disk I/O errors: the store's trouble, not the data's.
    transient_errors: tuple[type[Exception], ...] = (sqlite3.OperationalError,)

    def __init__(
        self, path: str, synchronous: str = "normal", busy_timeout: float = 30.0, page_size: int | None = None
    ) -> None:
        self.path = path
        self.synchronous = synchronous.upper()
        self.busy_timeout = busy_timeout
        self.page_size = page_size  # for a file this creates; an existing file keeps its own
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=self.busy_timeout)
        if self.page_size is not None:  # takes effect only on an empty file, before WAL mode is entered
            conn.execute(f"PRAGMA page_size={int(self.page_size)}")
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={self.synchronous}")
        conn.execute("PRAGMA cache_size=-262144")  # 256 MiB of page cache per connection, at most
        conn.execute("PRAGMA wal_autocheckpoint=0")  # the Checkpointer thread does it, outside commits
        # A WAL started over is cut back to this on the next commit: above what the Checkpointer lets it reach, so
        # that no commit under load pays for a large truncate (at 256 MiB: 90 ms stalls of the decision log).
        conn.execute(f"PRAGMA journal_size_limit={2 * WAL_RESTART_BYTES}")
        conn.execute("PRAGMA temp_store=MEMORY")
        return conn

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self._connect()
            with self._lock:
                self._all.append(conn)
        return conn

    @contextlib.contextmanager
    def transaction(self, write: bool, dry_run: bool = False) -> Iterator[Any]:
        conn = self._conn()
        # IMMEDIATE takes the write lock up front: no deadlock from upgrading a read lock mid-transaction.
        conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
        try:
            yield conn
        except BaseException:
            with contextlib.suppress(sqlite3.Error):  # a failed ROLLBACK must not hide the original error
                conn.execute("ROLLBACK")
            raise
        conn.execute("ROLLBACK" if dry_run else "COMMIT")

    @contextlib.contextmanager
    def connection(self) -> Iterator[Any]:
        yield self._conn()

    def close(self) -> None:
        with self._lock:
            for conn in self._all:
                with contextlib.suppress(sqlite3.Error):
                    conn.close()
            self._all.clear()
        self._local = threading.local()

    def column_type(self, column: Column) -> str:
        return "INTEGER PRIMARY KEY AUTOINCREMENT" if column.type == "serial" else _TYPES[column.type]

    def create_index(self, table: Table, index: Index) -> str | None:
        if index.gin:
            return None
        unique = "UNIQUE " if index.unique else ""
        where = f" WHERE {index.where}" if index.where else ""
        return f"CREATE {unique}INDEX IF NOT EXISTS {index.name} ON {table.name} ({', '.join(index.columns)}){where}"

    def table_columns(self, conn: Any, table: str) -> list[str]:
        return [r[1] for r in conn.execute(f"PRAGMA table_info({table})").fetchall()]

    def lock(self, conn: Any, name: str) -> None:
        """SQLite has one writer at a time: BEGIN IMMEDIATE already serialized us."""

    def dump_json(self, value: Any) -> Any:
        return _encode(value).decode()

    def load_json(self, value: Any) -> Any:
        return _decode(value)

    def _encoded(self, types: Sequence[str], rows: Sequence[Sequence[Any]]) -> Sequence[Sequence[Any]]:
        json_at = [i for i, t in enumerate(types) if t == "json"]
        if not json_at:
            return rows
        out = []
        for row in rows:
            values = list(row)
            for i in json_at:
                if values[i] is not None:
                    values[i] = _encode(values[i]).decode()
            out.append(values)
        return out

    def update_many(
        self,
        conn: Any,
        table: str,
        key: str,
        columns: Sequence[str],
        types: Sequence[str],
        rows: Sequence[Sequence[Any]],
    ) -> None:
        sets = ", ".join(f"{c} = ?" for c in columns)
        conn.executemany(f"UPDATE {table} SET {sets} WHERE {key} = ?", self._encoded(types, rows))

    def insert_new(
        self, conn: Any, table: str, columns: Sequence[str], types: Sequence[str], rows: Sequence[Sequence[Any]]
    ) -> None:
        # Multi-row VALUES: one statement step per chunk instead of one per row, so a writer thread does not
        # hand the GIL back and forth with the event loop for every row.
        if not rows:
            return
        rows = self._encoded(types, rows)
        width = len(columns)
        per = max(1, MAX_PARAMS // width)
        head = f"INSERT INTO {table} ({', '.join(columns)}) VALUES "
        one = "(" + ", ".join("?" * width) + ")"
        for i in range(0, len(rows), per):
            chunk = rows[i : i + per]
            conn.execute(head + ", ".join([one] * len(chunk)), [v for row in chunk for v in row])

    def trait_filter(self, name: str, value: Any) -> tuple[str, list[Any]]:
        # json_each gives the JSON type, so true is not 1 and null matches null, as jsonb @> does.
        match = "EXISTS (SELECT 1 FROM json_each(profiles.traits) WHERE key = ? AND {})"
        if value is None or isinstance(value, bool):
            return match.format("type = ?"), [name, "null" if value is None else str(value).lower()]
        if isinstance(value, int | float):
            return match.format("type IN ('integer', 'real') AND value = ?"), [name, value]
        return match.format("type = 'text' AND value = ?"), [name, value]

    def has_key(self, column: str, key: str) -> tuple[str, list[Any]]:
        return f"EXISTS (SELECT 1 FROM json_each(profiles.{column}) WHERE key = ?)", [key]

    def keys_join(self, keys: Sequence[tuple[str, str]]) -> list[tuple[str, list[Any]]]:
        # A join on the keys drives the primary key (type, value); SQLite 3.40 scans the whole table for
        # `(type, value) IN (VALUES ...)`.
        return [
            (
                f"(SELECT column1 AS t, column2 AS v FROM (VALUES {','.join(['(?, ?)'] * len(chunk))})) AS k",
                [p for k in chunk for p in k],
            )
            for chunk in chunks(keys)
        ]

    def secure_delete(self, conn: Any, on: bool) -> None:
        conn.execute(f"PRAGMA secure_delete={'ON' if on else 'OFF'}")

    def compact(self, attempts: int = 20, wait: float = 0.1) -> bool:
        """Copy the WAL into the database and truncate it to zero bytes: the frames that held erased pages
        are gone. ``TRUNCATE`` holds writers while it waits for readers, so each attempt waits ``wait`` at
        most (with the connection's 30 s, one idle reader held every writer 30 s); it answers busy at once
        while a Checkpointer holds the checkpoint lock. Up to ``attempts`` tries; False if none succeeded."""
        conn = self._conn()
        with _busy_timeout(conn, wait, then=self.busy_timeout):
            for attempt in range(attempts):
                if attempt:
                    time.sleep(wait)
                row = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
                if row is not None and int(row[0]) == 0:
                    return True
            return False


@contextlib.contextmanager
def _busy_timeout(conn: sqlite3.Connection, seconds: float, *, then: float) -> Iterator[None]:
    """Wait at most ``seconds`` for a lock in the body (for work that holds writers while it waits), then
    ``then`` again."""
    conn.execute(f"PRAGMA busy_timeout={int(seconds * 1000)}")
    try:
        yield
    finally:
        conn.execute(f"PRAGMA busy_timeout={int(then * 1000)}")


_TIMEOUT = 1.0  # the Checkpointer connection's busy timeout, seconds


class Checkpointer:
    """Copies the WAL into the database in the background (``PASSIVE``: never waits, never blocks), and starts
    it over once it holds more than ``restart_bytes``.

    A ``PASSIVE`` checkpoint copies the frames that were there when it began; a writer restarts the WAL from
    its beginning only if it begins a transaction while every frame is copied. Under steady writes (the
    decision log at 1,000 decisions/s, measured with 4 KB pages: ~10,000 frames a second, a checkpoint of one
    second's frames 20-40 ms; with its 1 KB pages since, ~16,000 smaller frames) that never happens, and the
    WAL grew by ~40 MB/s for as long as the load lasted (1.8 GB after 45 s), every read searching an ever
    longer WAL index. Past ``restart_bytes`` a ``RESTART`` checkpoint copies the rest and waits for the
    readers still in the WAL, holding writers back meanwhile: at most ``restart_wait``, then it gives up until
    the next round. Measured on the decision log at 1,000 decisions/s: the WAL file stays at
    67-111 MB, each restart holds writers 1-10 ms (a PASSIVE just before it leaves little to copy), and the HTTP
    p99 did not move against the unbounded WAL in a same-session A/B."""

    def __init__(
        self, path: str, interval: float = 1.0, restart_bytes: int = WAL_RESTART_BYTES, restart_wait: float = 0.05
    ) -> None:
        self.path = path
        self.interval = interval
        self.restart_bytes = restart_bytes
        self.restart_wait = restart_wait
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="kairos-wal-checkpoint", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def _run(self) -> None:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=_TIMEOUT)
        try:
            page = int(conn.execute("PRAGMA page_size").fetchone()[0])
            warned = 0.0
            while not self._stop.wait(self.interval):
                try:
                    _busy, frames, _copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                    size = frames * page
                    if size > self.restart_bytes:
                        # Once more first: the RESTART then copies only what came during this one. If that
                        # one could not copy every frame, a reader holds older ones (a long scan, a backup):
                        # a RESTART would hold writers for restart_wait, then fail. Not this round, then.
                        busy, last, copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                        done = not busy and copied >= last and self._restart(conn)
                        if not done and size > 8 * self.restart_bytes:
                            warned = self._warn_stuck(size, warned)
                except sqlite3.Error:
                    log.warning("WAL checkpoint failed; retrying", exc_info=True)
            # On the way out, try to leave a small WAL behind (TRUNCATE waits briefly for readers).
            with contextlib.suppress(sqlite3.Error):
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        finally:
            conn.close()

    def _restart(self, conn: sqlite3.Connection) -> bool:
        """RESTART, waiting at most ``restart_wait`` for the write lock and the readers; whether it was done."""
        with _busy_timeout(conn, self.restart_wait, then=_TIMEOUT):
            return int(conn.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()[0]) == 0

    def _warn_stuck(self, size: int, warned: float) -> float:
        """Say (once a minute) that the WAL keeps growing: writers or readers never leave it a moment."""
        now = time.monotonic()
        if now - warned >= 60:
            log.warning(
                "the WAL cannot be started over: writers or readers never pause",
                extra={"path": Path(self.path).name, "wal_mb": size >> 20},
            )
            return now
        return warned

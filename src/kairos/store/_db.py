"""A SQL database behind a dialect: connections, transactions, the schema and its migration.

Statements are written once, with ``{p}`` where a parameter goes; the dialect supplies its marker (``?`` or
``%s``) when a statement is prepared (:meth:`Database.sql`), so no SQL text is ever rewritten afterwards
(PostgreSQL's jsonb ``?`` operator stays intact). What really differs between dialects (bulk paths,
JSON filters, DDL types, locking) lives in the dialect.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from functools import cache
from typing import Any, Protocol

from kairos.errors import StoreUnavailable
from kairos.store.schema import DURABLE, LOG, Column, Index, Table, fingerprint

__all__ = ["CHUNK", "Database", "Dialect", "chunks"]

CHUNK = 500


class Dialect(Protocol):
    name: str
    param: str  # "?" or "%s"
    array_params: bool  # the driver binds a list to one parameter (``= ANY({p})``)
    driver_errors: tuple[type[Exception], ...]  # anything the driver raises
    # Driver errors that say the store is unavailable (down, locked, timed out): retried, never blamed on data.
    transient_errors: tuple[type[Exception], ...]

    def transaction(self, write: bool, dry_run: bool = False) -> AbstractContextManager[Any]:
        """A connection inside one transaction: committed on exit, rolled back on error (or if ``dry_run``)."""
        ...

    def connection(self) -> AbstractContextManager[Any]:
        """A connection for single-statement reads, outside an explicit transaction."""
        ...

    def close(self) -> None: ...

    def column_type(self, column: Column) -> str: ...

    def create_index(self, table: Table, index: Index) -> str | None:
        """DDL for one index, or None where the dialect has no such index (GIN on SQLite)."""
        ...

    def table_columns(self, conn: Any, table: str) -> list[str]:
        """Column names of an existing table; empty if there is no such table."""
        ...

    def lock(self, conn: Any, name: str) -> None:
        """Serialize writers that take the same named lock, until the transaction ends."""
        ...

    def dump_json(self, value: Any) -> Any:
        """A Python value → the parameter for a JSON column."""
        ...

    def load_json(self, value: Any) -> Any: ...

    def insert_new(
        self, conn: Any, table: str, columns: Sequence[str], types: Sequence[str], rows: Sequence[Sequence[Any]]
    ) -> None:
        """Insert rows (Python values; ``types`` are the columns' logical types) known not to exist yet, by the
        driver's fastest bulk path."""
        ...

    def update_many(
        self,
        conn: Any,
        table: str,
        key: str,
        columns: Sequence[str],
        types: Sequence[str],
        rows: Sequence[Sequence[Any]],
    ) -> None:
        """``UPDATE table SET columns WHERE key = ...`` for each row ``(*values, key value)``, in bulk."""
        ...

    def trait_filter(self, name: str, value: Any) -> tuple[str, list[Any]]:
        """SQL over ``profiles.traits`` matching a trait whose JSON value equals ``value``."""
        ...

    def has_key(self, column: str, key: str) -> tuple[str, list[Any]]:
        """A condition: JSON object column ``column`` of ``profiles`` has the key ``key``."""
        ...

    def keys_join(self, keys: Sequence[tuple[str, str]]) -> list[tuple[str, list[Any]]]:
        """``FROM`` clauses (aliased ``k(t, v)``) listing ``keys``, with their parameters."""
        ...

    def secure_delete(self, conn: Any, on: bool) -> None:
        """Overwrite what this connection deletes from now on (SQLite), or nothing where the engine cannot."""
        ...

    def compact(self) -> bool:
        """Leave no copy of deleted content in a write-ahead log this process can reach (SQLite: checkpoint
        the WAL and truncate it); False if it could not be done now (a reader held it)."""
        ...


def chunks(items: Sequence[Any], size: int = CHUNK) -> Iterator[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


class Database:
    """One database: a dialect, the declared tables, and the helpers every store part shares."""

    def __init__(
        self,
        dialect: Dialect,
        derived: Sequence[Table],
        durable: Sequence[Table] = DURABLE,
        drop_also: Sequence[str] = (),
    ) -> None:
        self.d = dialect
        self.derived = tuple(derived)
        self.durable = tuple(durable)
        self.drop_also = tuple(drop_also)  # tables an earlier layout kept in this database
        self.tables = {t.name: t for t in (*self.durable, *self.derived)}
        self.driver_errors = dialect.driver_errors
        self.transient_errors = dialect.transient_errors

    # -- statements and transactions ---------------------------------------------------------------
    @cache  # noqa: B019 - one Database per store, statements are a small fixed set
    def sql(self, text: str) -> str:
        return text.replace("{p}", self.d.param)

    @contextlib.contextmanager
    def tx(self, write: bool = False, dry_run: bool = False) -> Iterator[Any]:
        with self._unavailable(), self.d.transaction(write, dry_run) as conn:
            yield conn

    @contextlib.contextmanager
    def conn(self) -> Iterator[Any]:
        with self._unavailable(), self.d.connection() as conn:
            yield conn

    @contextlib.contextmanager
    def _unavailable(self) -> Iterator[None]:
        """The store being down or locked is a :class:`StoreUnavailable` (503, retried); data errors pass."""
        try:
            yield
        except self.transient_errors as exc:
            raise StoreUnavailable(f"the store is unavailable ({type(exc).__name__}); retry shortly") from exc

    def rows(self, conn: Any, text: str, params: Sequence[Any] = ()) -> list[Any]:
        return list(conn.execute(self.sql(text), params).fetchall())

    def one(self, text: str, params: Sequence[Any] = ()) -> Any:
        with self.conn() as conn:
            found = self.rows(conn, text, params)
        return found[0] if found else None

    def rows_of(self, text: str, params: Sequence[Any] = ()) -> list[Any]:
        with self.conn() as conn:
            return self.rows(conn, text, params)

    def many(self, conn: Any, text: str, rows: Iterable[Sequence[Any]]) -> None:
        rows = list(rows)
        if rows:
            conn.cursor().executemany(self.sql(text), rows)

    def where_in(self, column: str, values: Sequence[Any]) -> Iterator[tuple[str, list[Any]]]:
        """``column IN (values)`` as SQL and parameters: one array parameter, or chunks of placeholders."""
        if not values:
            return
        if self.d.array_params:
            yield f"{column} = ANY({{p}})", [list(values)]
            return
        for chunk in chunks(values):
            yield f"{column} IN ({','.join(['{p}'] * len(chunk))})", list(chunk)

    def types(self, table: Table, columns: Sequence[str]) -> list[str]:
        by_name = {c.name: c.type for c in table.columns}
        return [by_name[c] for c in columns]

    def insert_new(self, conn: Any, table: Table, rows: Sequence[Sequence[Any]], columns: Sequence[str] = ()) -> None:
        if rows:
            columns = columns or table.column_names
            self.d.insert_new(conn, table.name, columns, self.types(table, columns), rows)

    def update_many(self, conn: Any, table: Table, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        if rows:
            key = table.primary_key[0]
            self.d.update_many(conn, table.name, key, columns, self.types(table, (*columns, key)), rows)

    def json_columns(self, table: Table, columns: Sequence[str]) -> list[int]:
        return [i for i, t in enumerate(self.types(table, columns)) if t == "json"]

    # -- schema ------------------------------------------------------------------------------------
    def column_ddl(self, column: Column) -> str:
        return (
            f"{column.name} {self.d.column_type(column)}"
            + ("" if column.nullable or column.type == "serial" else " NOT NULL")
            + (f" DEFAULT {column.default}" if column.default is not None else "")
        )

    def ddl(self, table: Table) -> list[str]:
        cols = [self.column_ddl(c) for c in table.columns]
        serial = [c.name for c in table.columns if c.type == "serial"]
        if not serial:  # a serial column is its own primary key (SQLite: INTEGER PRIMARY KEY AUTOINCREMENT)
            cols.append(f"PRIMARY KEY ({', '.join(table.primary_key)})")
        suffix = " WITHOUT ROWID" if table.without_rowid and self.d.name == "sqlite" else ""
        out = [f"CREATE TABLE IF NOT EXISTS {table.name} ({', '.join(cols)}){suffix}"]
        out += [s for s in (self.d.create_index(table, index) for index in table.indexes) if s]
        return out

    def migrate(self) -> None:
        """Create what is missing; rebuild derived state when its declaration changed.

        Durable tables are created if missing and upgraded in place: columns declared since the table was
        made are added (:meth:`_add_columns`), and the log of the first release, which lacked ``ts`` and
        ``trait_kind``, has them filled from its payloads; a decision log that kept each record in its
        decision's row has them moved to ``decision_records``. Derived tables are dropped and recreated when their
        fingerprint differs from the one stored in ``meta``, and the checkpoint goes back to 0: the processor
        rebuilds them.
        """
        with self.tx(write=True) as conn:
            self.d.lock(conn, "migrate")
            legacy_log = self.d.table_columns(conn, "log")
            existing = {t.name: self.d.table_columns(conn, t.name) for t in self.durable}
            if legacy_log and "ts" not in legacy_log:
                self._upgrade_log(conn)
            for table in self.durable:
                create, *indexes = self.ddl(table)
                conn.execute(create)
                if existing[table.name]:
                    # The log's own upgrade above added its columns already; look again.
                    self._add_columns(conn, table, self.d.table_columns(conn, table.name))
                for statement in indexes:  # after the columns they may index
                    conn.execute(statement)
            if "record" in existing.get("decisions", ()):
                self._upgrade_decisions(conn)
            wanted = fingerprint(self.derived)
            found = self.rows(conn, "SELECT value FROM meta WHERE key = {p}", ("derived_schema",))
            if found and found[0][0] == wanted:
                return
            # The first release's derived tables had other names or layouts; all of it is rebuilt from the log.
            for name in (*(t.name for t in self.derived), "checkpoint", "profiles", "timeline", *self.drop_also):
                conn.execute(f"DROP TABLE IF EXISTS {name}")
            for table in self.derived:
                for statement in self.ddl(table):
                    conn.execute(statement)
            conn.execute(self.sql("DELETE FROM meta WHERE key = {p}"), ("derived_schema",))
            conn.execute(self.sql("INSERT INTO meta (key, value) VALUES ({p}, {p})"), ("derived_schema", wanted))

    def _add_columns(self, conn: Any, table: Table, existing: Sequence[str]) -> None:
        """``ALTER TABLE ADD COLUMN`` for each declared column an existing durable table lacks.

        A column with a default is added as declared (existing rows take the default). A ``NOT NULL`` column
        without one cannot be given to rows that exist, so it is added nullable: code reading such a column
        must accept NULL for rows older than the column (declare a default where there is a sensible one).
        """
        have = set(existing)
        for column in table.columns:
            if column.name in have:
                continue
            if column.nullable or column.default is not None:
                definition = self.column_ddl(column)
            else:
                definition = f"{column.name} {self.d.column_type(column)}"
            conn.execute(f"ALTER TABLE {table.name} ADD COLUMN {definition}")

    def _upgrade_decisions(self, conn: Any) -> None:
        """Move the records of a decision log made before ``decision_records`` into it, and drop the column
        (SQLite 3.35+ and PostgreSQL drop a column in place)."""
        conn.execute(
            "INSERT INTO decision_records (id, record) SELECT id, record FROM decisions"
            " WHERE record IS NOT NULL ON CONFLICT (id) DO NOTHING"
        )
        conn.execute("ALTER TABLE decisions DROP COLUMN record")

    def _upgrade_log(self, conn: Any) -> None:
        """Add ``ts`` and ``trait_kind`` to a first-release log, read from the ``_kairos`` stamp in payloads."""
        from kairos.store._legacy import legacy_columns

        types = {c.name: self.d.column_type(c) for c in LOG.columns}
        for name in ("ts", "trait_kind"):
            conn.execute(f"ALTER TABLE log ADD COLUMN {name} {types[name]}")
        after = 0
        while batch := self.rows(
            conn, "SELECT seq, received_at, payload FROM log WHERE seq > {p} ORDER BY seq LIMIT 5000", (after,)
        ):
            self.many(
                conn,
                "UPDATE log SET ts = {p}, trait_kind = {p} WHERE seq = {p}",
                [(*legacy_columns(bytes(payload), received_at), seq) for seq, received_at, payload in batch],
            )
            after = batch[-1][0]

    def close(self) -> None:
        self.d.close()

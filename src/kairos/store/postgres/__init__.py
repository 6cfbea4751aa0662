"""Scale-out backend: PostgreSQL holds the log and all state (``KAIROS__STORE__URL=postgresql://...``).

psycopg and psycopg_pool are imported only when this backend is opened (``pip install kairos[postgres]``).
Connections come from a pool (``store.pool_size``); a connection the server dropped is replaced by the pool.
"""

from __future__ import annotations

import contextlib
import re
import zlib
from collections.abc import Iterator, Sequence
from typing import Any

import msgspec

from kairos.errors import ConfigError
from kairos.store.schema import Column, Index, Table

__all__ = ["PostgresDialect"]

_TYPES = {
    "int": "BIGINT",
    "float": "DOUBLE PRECISION",
    "text": "TEXT",
    "bytes": "BYTEA",
    "json": "JSONB",
    "serial": "BIGSERIAL PRIMARY KEY",
}
_encode = msgspec.json.Encoder().encode
_BINARY = {"int": "int8", "float": "float8", "text": "text", "bytes": "bytea", "json": "jsonb", "serial": "int8"}
_ARRAY = {
    "int": "bigint[]",
    "float": "double precision[]",
    "text": "text[]",
    "bytes": "bytea[]",
    "json": "text[]::jsonb[]",
    "serial": "bigint[]",
}


class PostgresDialect:
    name = "postgresql"
    param = "%s"
    array_params = True

    def __init__(self, url: str, schema: str, pool_size: int = 4, timeout: float = 30.0) -> None:
        if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", schema):
            raise ConfigError(f"store.schema_name {schema!r} must be a lower-case SQL identifier")
        try:
            import psycopg
            from psycopg_pool import ConnectionPool
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise ConfigError("PostgreSQL needs the driver: pip install 'kairos[postgres]'") from exc
        self.url = url
        self.schema = schema
        # Created once, before the pool opens connections in parallel (concurrent CREATE SCHEMA IF NOT
        # EXISTS can fail on the catalog's unique index).
        with psycopg.connect(url, autocommit=True, connect_timeout=int(timeout)) as conn:
            conn.execute("SELECT pg_advisory_lock(%s)", (0x6B6169,))
            conn.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
            conn.execute("SELECT pg_advisory_unlock(%s)", (0x6B6169,))
        self.driver_errors: tuple[type[Exception], ...] = (psycopg.Error,)
        # Connection lost, server shutting down, lock or statement timeouts: the store's trouble.
        self.transient_errors: tuple[type[Exception], ...] = (psycopg.OperationalError, psycopg.InterfaceError)
        self._pool = ConnectionPool(
            url,
            min_size=1,
            max_size=max(1, pool_size),
            timeout=timeout,
            kwargs={"autocommit": True},
            configure=self._configure,
            check=ConnectionPool.check_connection,
            open=True,
            name=f"kairos-{schema}",
        )

    def _configure(self, conn: Any) -> None:
        from psycopg.types.json import set_json_dumps, set_json_loads

        set_json_loads(msgspec.json.decode, conn)  # several times faster than the stdlib for profile rows
        set_json_dumps(_encode, conn)
        conn.execute(f"SET search_path TO {self.schema}")

    @contextlib.contextmanager
    def transaction(self, write: bool, dry_run: bool = False) -> Iterator[Any]:
        with self._pool.connection() as conn:
            if not write:
                conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                try:
                    yield conn
                finally:
                    conn.execute("ROLLBACK")
                return
            with conn.transaction(force_rollback=dry_run):
                yield conn

    @contextlib.contextmanager
    def connection(self) -> Iterator[Any]:
        with self._pool.connection() as conn:
            yield conn

    def close(self) -> None:
        self._pool.close()

    def column_type(self, column: Column) -> str:
        return _TYPES[column.type]

    def create_index(self, table: Table, index: Index) -> str | None:
        unique = "UNIQUE " if index.unique else ""
        using = " USING GIN" if index.gin else ""
        cols = ", ".join(f"{c} jsonb_path_ops" if index.gin else c for c in index.columns)
        where = f" WHERE {index.where}" if index.where else ""
        return f"CREATE {unique}INDEX IF NOT EXISTS {index.name} ON {table.name}{using} ({cols}){where}"

    def secure_delete(self, conn: Any, on: bool) -> None:
        """PostgreSQL keeps deleted row versions until VACUUM reclaims them (docs/privacy.md)."""

    def compact(self) -> bool:
        return True

    def table_columns(self, conn: Any, table: str) -> list[str]:
        rows = conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = %s AND table_name = %s"
            " ORDER BY ordinal_position",
            (self.schema, table),
        ).fetchall()
        return [r[0] for r in rows]

    def lock(self, conn: Any, name: str) -> None:
        # A transaction-scoped advisory lock per name. For the log it makes commit order equal seq order:
        # without it two API processes could commit seq 11 before seq 10, and a processor that had read up
        # to 11 would never see 10.
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (zlib.crc32(f"kairos:{self.schema}:{name}".encode()),))

    def dump_json(self, value: Any) -> Any:
        from psycopg.types.json import Jsonb

        return Jsonb(value)

    def load_json(self, value: Any) -> Any:
        return value  # psycopg decodes jsonb

    def insert_new(
        self, conn: Any, table: str, columns: Sequence[str], types: Sequence[str], rows: Sequence[Sequence[Any]]
    ) -> None:
        # Binary COPY: no text escaping of every value on the client, typed from the schema declaration.
        if not rows:
            return
        import psycopg
        from psycopg.types.json import Jsonb

        json_at = [i for i, t in enumerate(types) if t == "json"]
        with conn.cursor().copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types([_BINARY[t] for t in types])
            for row in rows:
                if json_at:
                    values = list(row)
                    for i in json_at:
                        if values[i] is not None:
                            values[i] = Jsonb(values[i])
                    row = values
                try:
                    copy.write_row(row)
                except (TypeError, ValueError) as exc:  # a value the binary dumpers cannot encode
                    raise psycopg.DataError(f"{table}: {type(exc).__name__} while encoding a row") from exc

    def update_many(
        self,
        conn: Any,
        table: str,
        key: str,
        columns: Sequence[str],
        types: Sequence[str],
        rows: Sequence[Sequence[Any]],
    ) -> None:
        # One statement over arrays (unnest) instead of one execution per row: the server parses and plans
        # once, and the client dumps one list per column.
        names = [*columns, key]
        arrays: list[list[Any]] = [[] for _ in names]
        json_at = {i for i, t in enumerate(types) if t == "json"}
        for row in rows:
            for i, value in enumerate(row):
                arrays[i].append(_encode(value).decode() if i in json_at and value is not None else value)
        params = ", ".join(f"%b::{_ARRAY[t]}" for t in types)  # binary: no escaping of each value
        sets = ", ".join(f"{c} = v.{c}" for c in columns)
        conn.execute(
            f"UPDATE {table} AS t SET {sets} FROM unnest({params}) AS v({', '.join(names)}) WHERE t.{key} = v.{key}",
            arrays,
        )

    def trait_filter(self, name: str, value: Any) -> tuple[str, list[Any]]:
        from psycopg.types.json import Jsonb

        return "traits @> %s", [Jsonb({name: value})]

    def has_key(self, column: str, key: str) -> tuple[str, list[Any]]:
        return f"{column} ? %s", [key]  # jsonb key existence: served by a GIN index on the column

    def keys_join(self, keys: Sequence[tuple[str, str]]) -> list[tuple[str, list[Any]]]:
        return [("unnest(%b::text[], %b::text[]) AS k(t, v)", [[k[0] for k in keys], [k[1] for k in keys]])]

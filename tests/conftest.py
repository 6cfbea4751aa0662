"""Shared fixtures: every store-level test runs against SQLite and against PostgreSQL.

PostgreSQL tests use a fresh schema each. Without a reachable server they skip with a clear reason,
unless ``KAIROS_TEST_REQUIRE_BACKENDS=1`` (CI), where an unreachable server fails them.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import pytest
from starlette.testclient import TestClient

from kairos.api import create_app
from kairos.config import Settings, load_settings
from kairos.profiles import TraitValue
from kairos.runtime import Kairos
from kairos.store import Source

PG_URL = os.environ.get("KAIROS_TEST_PG_URL", "postgresql://127.0.0.1:5432/test")
REQUIRE = os.environ.get("KAIROS_TEST_REQUIRE_BACKENDS") == "1"

CUSTOM_TYPES: dict[str, Any] = {
    "loyalty_card": {
        "paths": ["traits.loyalty_card", "context.traits.loyalty_card"],
        "limit": 1,
        "priority": 60,
    },
    "crm_id": {"paths": ["traits.crm_id", "context.traits.crm_id"], "limit": 1, "priority": 90},
}


def postgres_available() -> str | None:
    """None when PostgreSQL answers, else why not."""
    try:
        import psycopg

        with psycopg.connect(PG_URL, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except Exception as exc:
        return f"PostgreSQL at {PG_URL} is not reachable: {exc}"
    return None


def pid_alive(pid: int) -> bool:
    """True while ``pid`` runs; a zombie (exited, not yet reaped by its new parent) counts as gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    except OSError:  # no /proc: ask the kernel
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.fixture(scope="session")
def pg_reason() -> str | None:
    return postgres_available()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_settings(request: pytest.FixtureRequest, tmp_path: Path, pg_reason: str | None) -> Iterator[dict[str, Any]]:
    if request.param == "sqlite":
        yield {"url": f"sqlite:///{tmp_path}/kairos.db"}
        return
    if pg_reason is not None:
        if REQUIRE:
            pytest.fail(pg_reason)
        pytest.skip(pg_reason)
    schema = f"t_{uuid.uuid4().hex[:12]}"
    yield {"url": PG_URL, "schema_name": schema}
    import psycopg

    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def make_settings(store: dict[str, Any], **sections: Any) -> Settings:
    identity = {"types": CUSTOM_TYPES, **sections.pop("identity", {})}
    return load_settings(store=store, identity=identity, **sections)


@pytest.fixture
def kairos(store_settings: dict[str, Any]) -> Iterator[Kairos]:
    k = Kairos(make_settings(store_settings))
    yield k
    k.close()


@pytest.fixture
def client(kairos: Kairos) -> Iterator[TestClient]:
    """The API in-process, without a processor (tests run it when they need it)."""
    with TestClient(create_app(kairos, run_processor=False), raise_server_exceptions=False) as c:
        yield c


@pytest.fixture
def read_key(kairos: Kairos) -> dict[str, str]:
    _, secret = kairos.store.admin.add_api_key("reader", frozenset({"read"}), 0)
    return {"Authorization": f"Bearer {secret}"}


def point_cli_at(store_settings: dict[str, Any], monkeypatch: pytest.MonkeyPatch, config: Path, toml: str) -> None:
    """Make the CLI (and ``Kairos()``) use this test's store and a kairos.toml holding ``toml``."""
    monkeypatch.setenv("KAIROS__STORE__URL", store_settings["url"])
    if "schema_name" in store_settings:
        monkeypatch.setenv("KAIROS__STORE__SCHEMA_NAME", store_settings["schema_name"])
    config.write_text(toml)
    monkeypatch.setenv("KAIROS_CONFIG", str(config))


@pytest.fixture
def source(kairos: Kairos) -> Source:
    return kairos.store.admin.add_source("web", "observed", kairos.clock.now())


class Feed:
    """Sends events through the real collect path and applies them."""

    def __init__(self, kairos: Kairos, source: Source) -> None:
        self.kairos = kairos
        self.source = source
        self.n = 0

    def __call__(self, *events: dict[str, Any], process: bool = True) -> list[int]:
        batch = []
        for event in events:
            self.n += 1
            batch.append({"messageId": f"m{self.n}", **event})
        result = self.kairos.ingest({"batch": batch}, "batch", self.source.write_key)
        assert not result.errors, result.errors
        if process:
            self.kairos.processor.run_until_caught_up()
        return result.seqs

    def profile(self, ref: str) -> Look:
        return look(self.kairos, ref)


@dataclass(frozen=True)
class Look:
    """A profile as tests read it: public id, key, identities and each projection's state."""

    id: str
    pk: int
    identities: set[tuple[str, str]]
    traits: dict[str, TraitValue]
    consents: dict[str, Any]
    event_count: int
    created_at: int
    updated_at: int


def look(kairos: Kairos, ref: str) -> Look:
    pk = kairos.resolve(ref)
    assert pk is not None, f"no profile for {ref}"
    p = kairos.profile(pk)
    assert p is not None
    counts = p.sections["counters"]
    return Look(
        p.id,
        p.pk,
        set(p.identities),
        dict(p.sections["traits"]),
        dict(p.sections["consents"]),
        counts.event_count,
        counts.created_at,
        counts.updated_at,
    )


@pytest.fixture
def feed(kairos: Kairos, source: Source) -> Feed:
    return Feed(kairos, source)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Say plainly, once, which backend was not tested (CI turns these skips into failures)."""
    skipped = [r for r in terminalreporter.stats.get("skipped", []) if "PostgreSQL" in str(r.longrepr)]
    if skipped:
        terminalreporter.write_sep(
            "=", f"{len(skipped)} PostgreSQL backend tests SKIPPED: no server at {PG_URL} (set KAIROS_TEST_PG_URL)"
        )


def dump_state(kairos: Kairos) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of derived state (and the outbox), canonical and sorted: replay, batch size and merge
    order must leave exactly this equal. Checkpoint versions and serial ids count commits, not state."""
    db = kairos.store.db  # type: ignore[attr-defined]
    out: dict[str, list[tuple[Any, ...]]] = {}
    with db.conn() as conn:
        for table in (*db.derived, db.tables["outbox"]):
            if table.name == "jobs":  # bookkeeping of backfills (when they ran), not derived state
                continue
            cols = [c.name for c in table.columns if c.type != "serial" and c.name not in ("version", "created_at")]
            if table.name == "outbox":
                cols = ["key", "type", "profile_id", "payload"]
            if table.name == "deadletters":
                cols = ["seq", "source", "error_class", "message"]
            rows = conn.execute(f"SELECT {', '.join(cols)} FROM {table.name}").fetchall()
            json_at = [i for i, c in enumerate(cols) if next(x for x in table.columns if x.name == c).type == "json"]
            canon = []
            for r in rows:
                values = [bytes(v) if isinstance(v, memoryview) else v for v in r]
                for i in json_at:
                    if values[i] is not None:
                        values[i] = msgspec.json.encode(
                            db.d.load_json(values[i]) if isinstance(values[i], str) else values[i], order="sorted"
                        )
                canon.append(tuple(values))
            out[table.name] = sorted(canon, key=repr)
    return out

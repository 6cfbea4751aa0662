"""End-to-end fixtures: the real ``kairos serve`` as a subprocess on loopback, on SQLite and on PostgreSQL.

Every server gets its own directory holding a ``kairos.toml`` (with custom identity types), its own store
(a SQLite file there, or a fresh PostgreSQL schema that is dropped afterwards), and a source and a read API
key created with the real CLI. Tests talk to it over HTTP only, as a deployment's clients would.

PostgreSQL runs skip with the reason when the server is unreachable, unless
``KAIROS_TEST_REQUIRE_BACKENDS=1`` (CI), where they fail instead.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sqlite3
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx2
import pytest

from tests.conftest import PG_URL
from tests.conftest import REQUIRE as REQUIRE_BACKENDS
from tests.conftest import postgres_available as postgres_unreachable

BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]

START_TIMEOUT = 20.0  # seconds until /healthz answers
STOP_TIMEOUT = 10.0  # seconds between SIGTERM and SIGKILL
CLI_TIMEOUT = 60.0
PROCESS_TIMEOUT = 10.0  # seconds an event may take from 200 to the profile
# The servers speak plain HTTP; one shared TLS context spares each client loading the certificate store
# (about 20 ms), which adds up over the hundreds of short-lived clients these tests make.
_TLS = ssl.create_default_context()

KAIROS_TOML = """\
[server]
host = "127.0.0.1"
log_level = "info"

[identity.types.loyalty_card]
paths = ["traits.loyalty_card", "context.traits.loyalty_card"]
limit = 1
priority = 60
"""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def kairos_command() -> list[str]:
    """The installed ``kairos`` script beside this interpreter, else ``python -m kairos``."""
    script = Path(sys.executable).with_name("kairos")
    return [str(script)] if script.exists() else [sys.executable, "-m", "kairos"]


def profile_path(ref: str, suffix: str = "") -> str:
    """``/v1/profiles/{ref}``: identities such as e-mail addresses go into the path percent-encoded."""
    return "/v1/profiles/" + quote(ref, safe=":@") + suffix


@dataclass
class Server:
    """One ``kairos serve`` subprocess and the store it owns."""

    backend: str
    workdir: Path
    env: dict[str, str]
    schema: str | None = None
    write_key: str = ""
    api_key: str = ""
    port: int = 0
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def db_path(self) -> Path:
        return self.workdir / "k.db"

    @property
    def read_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}

    # -- the CLI -----------------------------------------------------------------------------------
    def cli(self, *args: str) -> Any:
        """Run ``kairos ARGS --json`` against this server's store and return the printed JSON."""
        done = subprocess.run(
            [*kairos_command(), *args, "--json"],
            env=self.env,
            cwd=self.workdir,
            capture_output=True,
            timeout=CLI_TIMEOUT,
            check=False,
        )
        if done.returncode != 0:
            pytest.fail(
                f"kairos {' '.join(args)} exited {done.returncode}:\n{done.stdout.decode()}\n{done.stderr.decode()}"
            )
        return json.loads(done.stdout)

    # -- the process -------------------------------------------------------------------------------
    def start(self) -> None:
        """Start ``kairos serve`` on a free loopback port and wait until ``/healthz`` answers."""
        assert self.process is None, "already running"
        for _ in range(3):  # another process may take the free port before the server binds it
            if self._start_once():
                return
        pytest.fail(f"kairos serve found no free port:\n{self.log_tail()}")

    def _start_once(self) -> bool:
        self.starts += 1
        self.port = free_port()
        log = (self.workdir / f"serve-{self.starts}.log").open("wb")
        process = self.process = subprocess.Popen(
            [sys.executable, "-m", "kairos", "serve", "--host", "127.0.0.1", "--port", str(self.port)],
            env=self.env,
            cwd=self.workdir,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            code = process.poll()
            if code is not None:
                self.process = None
                if "address already in use" in self.log_tail().lower():
                    return False
                pytest.fail(f"kairos serve exited with status {code}:\n{self.log_tail()}")
            with contextlib.suppress(httpx2.TransportError):
                if self.get("/healthz", timeout=1.0).status_code == 200:
                    return True
            time.sleep(0.05)
        self.kill()
        pytest.fail(f"kairos serve did not answer /healthz within {START_TIMEOUT} s:\n{self.log_tail()}")

    def stop(self) -> int | None:
        """SIGTERM, and SIGKILL if it has not exited after STOP_TIMEOUT seconds; the exit status."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(STOP_TIMEOUT)
        code = self.process.returncode
        self.process = None
        return code

    def kill(self) -> None:
        """``kill -9``: no shutdown code runs."""
        if self.process is None:
            return
        if self.process.poll() is None:  # never signal a pid that was already reaped (and may be reused)
            os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(STOP_TIMEOUT)
        self.process = None

    def log_tail(self, chars: int = 4000) -> str:
        path = self.workdir / f"serve-{self.starts}.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""

    # -- HTTP --------------------------------------------------------------------------------------
    def client(self, **kwargs: Any) -> httpx2.Client:
        kwargs.setdefault("timeout", 10.0)
        return httpx2.Client(base_url=self.base_url, verify=_TLS, **kwargs)

    def get(self, path: str, **kwargs: Any) -> httpx2.Response:
        """One GET on a connection of its own (the server drops a connection after a 500)."""
        with self.client() as client:
            return client.get(path, **kwargs)

    def health(self) -> dict[str, Any]:
        r = self.get("/healthz", timeout=5.0)
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        return body

    def wait_caught_up(self, timeout: float = PROCESS_TIMEOUT) -> dict[str, Any]:
        """Poll ``/healthz`` until the processor has applied the whole log; fail after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            health = self.health()
            if health["lag"] == 0:
                return health
            if time.monotonic() > deadline:
                pytest.fail(f"processor still {health['lag']} events behind after {timeout} s: {health}")
            time.sleep(0.05)

    def get_profile(self, ref: str) -> httpx2.Response:
        return self.get(profile_path(ref), headers=self.read_headers)

    def wait_profile(self, ref: str, timeout: float = PROCESS_TIMEOUT, min_events: int = 1) -> dict[str, Any]:
        """GET the profile until it exists and holds ``min_events`` events; fail after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            r = self.get_profile(ref)
            if r.status_code == 200 and r.json()["event_count"] >= min_events:
                body: dict[str, Any] = r.json()
                return body
            assert r.status_code in (200, 404), r.text
            if time.monotonic() > deadline:
                pytest.fail(f"no profile {ref!r} with {min_events} events after {timeout} s: {r.text}")
            time.sleep(0.05)

    def timeline(self, ref: str, limit: int = 200) -> list[dict[str, Any]]:
        r = self.get(profile_path(ref, "/events"), params={"limit": limit}, headers=self.read_headers)
        assert r.status_code == 200, r.text
        items: list[dict[str, Any]] = r.json()["items"]
        return items

    # -- the store, read directly ------------------------------------------------------------------
    def log_message_ids(self) -> list[str]:
        """Every ``message_id`` in the event log, read from the database without the server."""
        if self.backend == "sqlite":
            conn = sqlite3.connect(self.db_path, timeout=30)
            try:
                return [row[0] for row in conn.execute("SELECT message_id FROM log")]
            finally:
                conn.close()
        import psycopg

        with psycopg.connect(PG_URL) as pg:
            return [str(row[0]) for row in pg.execute(f"SELECT message_id FROM {self.schema}.log")]


@contextlib.contextmanager
def running_server(
    backend: str, workdir: Path, pg_reason: str | None, settings: dict[str, str] | None = None
) -> Iterator[Server]:
    """A started server with a source ``web`` and a read key; stopped and its store removed afterwards.

    ``settings`` are extra environment variables (``KAIROS__SECTION__KEY``) for this server.
    """
    if backend == "postgres" and pg_reason is not None:
        if REQUIRE_BACKENDS:
            pytest.fail(pg_reason)
        pytest.skip(pg_reason)
    (workdir / "kairos.toml").write_text(KAIROS_TOML)
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAIROS_")}
    env["KAIROS_CONFIG"] = str(workdir / "kairos.toml")
    env["PYTHONUNBUFFERED"] = "1"
    env.update(settings or {})
    schema = None
    if backend == "sqlite":
        env["KAIROS__STORE__URL"] = f"sqlite:///{workdir}/k.db"
    else:
        schema = f"e2e_{uuid.uuid4().hex[:12]}"
        env["KAIROS__STORE__URL"] = PG_URL
        env["KAIROS__STORE__SCHEMA_NAME"] = schema
    server = Server(backend, workdir, env, schema)
    try:
        server.write_key = server.cli("sources", "add", "web")["write_key"]
        server.api_key = server.cli("keys", "add", "t", "--scope", "read")["key"]
        server.start()
        yield server
    finally:
        server.stop()
        if schema is not None:
            import psycopg

            with psycopg.connect(PG_URL, autocommit=True) as conn:
                conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


@pytest.fixture(scope="session")
def pg_unreachable() -> str | None:
    return postgres_unreachable()


@pytest.fixture(scope="module", params=BACKENDS)
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, pg_unreachable: str | None
) -> Iterator[Server]:
    """One server per test module and backend; tests use their own ids so that they do not interfere."""
    backend: str = request.param
    with running_server(backend, tmp_path_factory.mktemp(f"e2e-{backend}"), pg_unreachable) as s:
        yield s


@pytest.fixture(params=BACKENDS)
def fresh_server(request: pytest.FixtureRequest, tmp_path: Path, pg_unreachable: str | None) -> Iterator[Server]:
    """A server for one test alone: for tests that crash it or may wedge its processor."""
    backend: str = request.param
    with running_server(backend, tmp_path, pg_unreachable) as s:
        yield s

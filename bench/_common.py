"""What the benchmarks share: the machine description, servers started as subprocesses, wrk, percentiles.

Every benchmark runs against a fresh store in a temporary directory with Kairos' default settings: the
checkout's ``kairos.toml`` is not read (``KAIROS_CONFIG`` points at an empty file), so the numbers do not
depend on local configuration. Kairos processes are started as ``python -m kairos`` with this interpreter
and this environment: ``PYTHONPATH`` chooses which code they run (see ``_versions.py``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import http.client
import json
import math
import os
import platform
import resource
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "BASELINE_COMMIT",
    "BENCH",
    "PG_URL",
    "PYTHON",
    "RESULTS",
    "ROOT",
    "Server",
    "WrkResult",
    "add_source",
    "bench_env",
    "cpu_seconds",
    "exit_on_sigterm",
    "free_port",
    "machine",
    "percentile",
    "run_wrk",
    "save_json",
    "tmp_dir",
    "tree_cpu_seconds",
    "use_defaults",
    "wrk2_path",
    "wrk_path",
]

# The commit before the processor/store/collect rewrite: `make bench` measures the current code beside it.
BASELINE_COMMIT = "20430ff"

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
RESULTS = BENCH / "results"
PYTHON = sys.executable
PG_URL = "postgresql://127.0.0.1:5432/test"
WRK_INSTALL = "apt-get install -y wrk"


def require_wrk() -> None:
    """Stop a benchmark that needs wrk, saying how to get it."""
    if wrk_path() is None:
        raise SystemExit(f"wrk is not installed; install it with: {WRK_INSTALL}  (Debian package `wrk`)")


def bench_env(**settings: str) -> dict[str, str]:
    """Environment for a Kairos process: defaults only, plus ``KAIROS__...`` overrides given here."""
    empty = RESULTS / "empty.toml"
    empty.parent.mkdir(parents=True, exist_ok=True)
    empty.write_text("# the benchmarks run on Kairos' defaults\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAIROS")}
    env["KAIROS_CONFIG"] = str(empty)
    env.update(settings)
    return env


def exit_on_sigterm() -> None:
    """Turn SIGTERM into ``SystemExit``, so that ``finally`` blocks stop servers and remove temporary files."""

    def handler(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)


def use_defaults() -> None:
    """Make in-process ``load_settings()`` ignore the checkout's kairos.toml and KAIROS__ variables."""
    env = bench_env()
    for key in [k for k in os.environ if k.startswith("KAIROS")]:
        del os.environ[key]
    os.environ["KAIROS_CONFIG"] = env["KAIROS_CONFIG"]


@contextlib.contextmanager
def tmp_dir(prefix: str) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix=f"kairos-bench-{prefix}-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def from_fields(cls: type[Any], values: Mapping[str, Any] | None) -> Any:
    """A result dataclass from what a ``--json-out`` run wrote (unknown keys ignored; None stays None)."""
    if values is None:
        return None
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in values.items() if k in names})


def percentile(sorted_values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile of already sorted values."""
    if not sorted_values:
        return float("nan")
    k = min(len(sorted_values) - 1, max(0, math.ceil(p / 100 * len(sorted_values)) - 1))
    return sorted_values[k]


def _stat(pid: int) -> list[str]:
    # The command name in field 2 may hold spaces and parentheses: split after its closing one.
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a running process (all its threads) has used."""
    fields = _stat(pid)
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _descendants(pid: int) -> list[int]:
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                parents.setdefault(int(_stat(int(entry.name))[1]), []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        kids = parents.get(todo.pop(), [])
        out += kids
        todo += kids
    return out


def tree_cpu_seconds(pid: int) -> float:
    """CPU time of a process and all its descendants, including children they have already reaped.

    A server may run its processor in a child process: its CPU counts as the server's.
    """
    total = 0.0
    for p in [pid, *_descendants(pid)]:
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = _stat(p)
            total += sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")
    return total


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def save_json(name: str, data: Any) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")
    return path


# -- machine -----------------------------------------------------------------------------------------
def machine() -> dict[str, str]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = "unknown"
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    import msgspec
    import starlette
    import uvicorn

    wrk = "not installed"
    if (path := wrk_path()) is not None:
        out = subprocess.run([path, "--version"], capture_output=True, text=True).stdout
        wrk = out.split("Copyright")[0].strip() or "installed"
    if wrk2_path() is not None:
        wrk += "; wrk2 (paced runs)"
    pg = "not reachable"
    with contextlib.suppress(Exception):
        import psycopg

        with psycopg.connect(os.environ.get("KAIROS_BENCH_PG", PG_URL), connect_timeout=3) as conn:
            row = conn.execute("SHOW server_version").fetchone()
            pg = str(row[0]) if row else "unknown"
    return {
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "ram": mem,
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "postgresql": pg,
        "starlette": starlette.__version__,
        "uvicorn": uvicorn.__version__,
        "msgspec": msgspec.__version__,
        "wrk": wrk,
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


# -- servers -----------------------------------------------------------------------------------------
def _kairos_cli(*args: str) -> list[str]:
    # `python -m kairos`, not the `kairos` script: the script's shebang would not see PYTHONPATH's choice
    # any differently, but `-m` makes plain which interpreter and sys.path run the code under test.
    return [PYTHON, "-m", "kairos", *args]


def add_source(store_url: str, workdir: Path, name: str = "bench") -> str:
    """Create a source with ``kairos sources add NAME --json`` and return its write key."""
    proc = subprocess.run(
        _kairos_cli("sources", "add", name, "--json"),
        env=bench_env(KAIROS__STORE__URL=store_url),
        cwd=workdir,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"kairos sources add failed ({proc.returncode}): {proc.stdout}\n{proc.stderr}")
    return str(json.loads(proc.stdout)["write_key"])


class Server:
    """A server subprocess on a free loopback port; stopped with SIGINT (uvicorn's graceful shutdown)."""

    def __init__(self, argv: list[str], env: Mapping[str, str], log: Path, port: int) -> None:
        self.port = port
        self.log = log
        self._out = log.open("wb")
        self.proc = subprocess.Popen(argv, env=dict(env), stdout=self._out, stderr=subprocess.STDOUT, cwd=log.parent)
        self.url = f"http://127.0.0.1:{port}"

    @classmethod
    def kairos(cls, store_url: str, workdir: Path, *, processor: bool | None = None, **settings: str) -> Server:
        """``kairos serve`` on ``store_url``; ``processor=None`` keeps the default (whatever the code does)."""
        port = free_port()
        if processor is not None:
            settings["KAIROS__PROCESSOR__ENABLED"] = "true" if processor else "false"
        env = bench_env(KAIROS__STORE__URL=store_url, KAIROS__SERVER__LOG_LEVEL="warning", **settings)
        argv = _kairos_cli("serve", "--host", "127.0.0.1", "--port", str(port))
        return cls(argv, env, workdir / f"kairos-{port}.log", port).wait_ready("/healthz")

    @classmethod
    def bare(cls, workdir: Path) -> Server:
        port = free_port()
        argv = [PYTHON, str(BENCH / "_bare.py"), "--port", str(port)]
        return cls(argv, bench_env(), workdir / f"bare-{port}.log", port).wait_ready("/healthz")

    def wait_ready(self, path: str, timeout: float = 30.0) -> Server:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}: {self.log.read_text()[-2000:]}")
            with contextlib.suppress(OSError, http.client.HTTPException):
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                conn.request("GET", path)
                if conn.getresponse().status == 200:
                    conn.close()
                    return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"server not ready after {timeout} s: {self.log.read_text()[-2000:]}")

    def get_json(self, path: str, headers: Mapping[str, str] | None = None, timeout: float = 30) -> Any:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request("GET", path, headers=dict(headers or {}))
            return json.loads(conn.getresponse().read())
        finally:
            conn.close()

    def cpu(self) -> float:
        return tree_cpu_seconds(self.proc.pid)

    def stop(self) -> None:
        if self.proc.poll() is None:
            # Processes the server started (a processor process) are ended by the server itself; the
            # ones still there if it has to be killed are ended after it, by pid.
            children = _descendants(self.proc.pid)
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                for pid in children:
                    with contextlib.suppress(OSError):
                        os.kill(pid, signal.SIGKILL)
        self._out.close()

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# -- wrk ---------------------------------------------------------------------------------------------
def wrk_path() -> str | None:
    return shutil.which("wrk")


def wrk2_path() -> str | None:
    """wrk2 paces requests itself (``-R``) and corrects latency for coordinated omission."""
    return shutil.which("wrk2")


@dataclass(frozen=True, slots=True)
class WrkResult:
    command: str
    seconds: float
    requests: int  # responses received
    sent: int  # requests written (the difference was in flight when wrk stopped)
    non_2xx: int  # wrk counts status > 399 here
    socket_errors: int  # connect + read + write + timeout
    p50_ms: float
    p99_ms: float
    p999_ms: float
    max_ms: float
    cpu_seconds: float  # wrk's own CPU time: it shares the machine with the server
    paced_by: str = ""  # "" (as fast as it goes), "lua delay()" or "wrk2 -R"

    @property
    def ok(self) -> int:
        return self.requests - self.non_2xx

    @property
    def rate(self) -> float:
        return self.ok / self.seconds


def run_wrk(
    url: str,
    script: Path,
    env: Mapping[str, str],
    *,
    duration: float,
    connections: int = 32,
    threads: int = 1,
    rate: float | None = None,
) -> WrkResult:
    """Run wrk with a Lua script whose ``done`` prints one ``BENCH_JSON {...}`` line.

    With ``rate`` (requests/s), the requests are paced: by wrk2's ``-R`` when a ``wrk2`` binary exists,
    otherwise by the script's ``delay()`` (``BENCH_RATE``, requests/s per wrk thread).
    """
    path = wrk_path()
    paced_by = ""
    extra: list[str] = []
    env = dict(env)
    if rate is not None:
        if (wrk2 := wrk2_path()) is not None:
            path, paced_by, extra = wrk2, "wrk2 -R", [f"-R{rate:g}"]
        else:
            paced_by = "lua delay()"
            env["BENCH_RATE"] = f"{rate / threads:g}"
    if path is None:
        raise RuntimeError(f"wrk is not installed: {WRK_INSTALL}")
    argv = [
        path,
        f"-t{threads}",
        f"-c{connections}",
        f"-d{duration:g}s",
        *extra,
        "--timeout",
        "10s",
        "-s",
        str(script),
        url,
    ]
    before = children_cpu_seconds()
    proc = subprocess.run(argv, env={**os.environ, **env}, capture_output=True, text=True, check=False)
    cpu = children_cpu_seconds() - before
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("BENCH_JSON ")), None)
    if proc.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {proc.stdout}\n{proc.stderr}")
    data = json.loads(line.removeprefix("BENCH_JSON "))
    shown = [Path(a).relative_to(ROOT).as_posix() if a.startswith(str(ROOT)) else a for a in argv]
    shown[0] = Path(path).name
    if "BENCH_RATE" in env:
        shown.insert(0, f"BENCH_RATE={env['BENCH_RATE']}")
    return WrkResult(
        command=" ".join(shown),
        seconds=data["duration_us"] / 1e6,
        requests=int(data["requests"]),
        sent=int(data["sent"]),
        non_2xx=int(data["status"]),
        socket_errors=int(data["connect"] + data["read"] + data["write"] + data["timeout"]),
        p50_ms=data["p50"] / 1000,
        p99_ms=data["p99"] / 1000,
        p999_ms=data["p999"] / 1000,
        max_ms=data["max"] / 1000,
        cpu_seconds=cpu,
        paced_by=paced_by,
    )

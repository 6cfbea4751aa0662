"""(f) of ``moments.py``, parts 3 and 4: delivery throughput to a loopback receiver, and a healthy destination's
latency beside a broken one. The real worker (``kairos.activate.worker.run_forever``) runs in a thread of
this process against an in-process Kairos on SQLite; the receiver runs in its own process."""

from __future__ import annotations

import contextlib
import socket
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import _compat
from _common import PYTHON, free_port, percentile, tmp_dir

__all__ = ["IsolationRun", "ThroughputRun", "hanging", "isolation_run", "receiver", "throughput_run"]


# -- (3) and (4): delivery ----------------------------------------------------------------------------
RECEIVER = """
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route

async def hook(request):
    await request.body()
    return Response(status_code=204)

app = Starlette(routes=[Route("/hook", hook, methods=["POST"])])
"""


@contextlib.contextmanager
def receiver(workdir: Path) -> Iterator[int]:
    """A Starlette app on uvicorn in its own process (not sharing our GIL), answering 204."""
    port = free_port()
    (workdir / "receiver.py").write_text(RECEIVER)
    argv = [PYTHON, "-m", "uvicorn", "receiver:app", "--port", str(port), "--log-level", "warning"]
    proc = subprocess.Popen(argv, cwd=workdir)
    try:
        deadline = time.monotonic() + 20
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("the receiver did not start")
            time.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


@contextlib.contextmanager
def hanging() -> Iterator[int]:
    """A receiver that accepts connections and never answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    sock.settimeout(0.2)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError, OSError):
                held.append(sock.accept()[0])

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield int(sock.getsockname()[1])
    finally:
        stop.set()
        thread.join()
        for s in held:
            s.close()
        sock.close()


def _open(workdir: Path, **delivery: Any) -> Any:
    from kairos.config import load_settings
    from kairos.runtime import Kairos

    settings = load_settings(store={"url": f"sqlite:///{workdir / 'kairos.db'}"}, delivery=delivery)
    return Kairos(settings)


def _destination(kairos: Any, key: str, port: int) -> None:
    from kairos.activate import destinations

    body = {"url": f"http://127.0.0.1:{port}/hook", "secret": "s" * 20, "subscribe": {"segments": ["vip"]}}
    destinations.save(kairos, key, {**body, "traits": ["plan"], "purpose": "analytics"})


def _identifies(kairos: Any, source: Any, start: int, n: int) -> None:
    batch = [
        {"type": "identify", "userId": f"u{j}", "traits": {"plan": "pro"}, "messageId": f"m{j}"}
        for j in range(start, start + n)
    ]
    kairos.ingest({"batch": batch}, "batch", source.write_key)


def _count(db: Path, destination: str) -> int:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        row = conn.execute(
            "SELECT count(*) FROM deliveries WHERE destination = ? AND status = 'delivered'", (destination,)
        ).fetchone()
        return int(row[0])
    finally:
        conn.close()


@dataclass(slots=True)
class ThroughputRun:
    concurrency: int
    messages: int
    seconds: float
    cpu_ms_per_delivery: float

    @property
    def per_s(self) -> float:
        return self.messages / self.seconds


def throughput_run(port: int, messages: int, concurrency: int | None) -> ThroughputRun:
    from kairos.activate.worker import run_forever

    with tmp_dir("moments-delivery") as workdir:
        k = _open(workdir, **({"concurrency": concurrency} if concurrency else {}))
        try:
            source = k.store.admin.add_source("web", "observed", 0)
            k.store.admin.put_definition("segment", "vip", {"rule": 'traits.plan == "pro"'}, k.clock.now())
            _destination(k, "bench", port)
            for i in range(0, messages, 500):
                _identifies(k, source, i, min(500, messages - i))
            k.processor.run_until_caught_up()
            # The worker runs on a Kairos of its own, tuned as its process tunes itself: by default deliveries
            # run in their own process, without the processor's cached profiles in the heap.
            k.close()
            k = _open(workdir, **({"concurrency": concurrency} if concurrency else {}))
            _compat.tune_like_serve()
            stop = threading.Event()
            thread = threading.Thread(target=run_forever, args=(k, stop))
            started, cpu = time.perf_counter(), time.process_time()
            thread.start()
            state = workdir / "kairos-state.db"
            deadline = started + 120
            while _count(state, "bench") < messages:
                if time.perf_counter() > deadline:
                    raise RuntimeError(f"only {_count(state, 'bench')} of {messages} delivered in 120 s")
                time.sleep(0.02)
            wall, cpu = time.perf_counter() - started, time.process_time() - cpu
            stop.set()
            thread.join()
            return ThroughputRun(k.settings.delivery.concurrency, messages, wall, cpu / messages * 1000)
        finally:
            k.close()


@dataclass(slots=True)
class IsolationRun:
    beside: str  # "alone", "refused" or "hanging"
    messages: int
    delivered: int
    latency_ms: list[float]  # healthy destination: outbox created_at -> delivered (updated_at)
    other_attempts: int = 0  # attempts made to the broken destination

    @property
    def p99(self) -> float:
        return percentile(sorted(self.latency_ms), 99)

    @property
    def p50(self) -> float:
        return percentile(sorted(self.latency_ms), 50)


def isolation_run(port: int, beside: str, flow: float, flow_for: float) -> IsolationRun:
    from kairos.activate.worker import run_forever

    with tmp_dir("moments-isolation") as workdir, contextlib.ExitStack() as stack:
        k = _open(workdir)
        try:
            source = k.store.admin.add_source("web", "observed", 0)
            k.store.admin.put_definition("segment", "vip", {"rule": 'traits.plan == "pro"'}, k.clock.now())
            _destination(k, "ok", port)
            if beside == "refused":
                _destination(k, "broken", free_port())  # nothing listens there
            elif beside == "hanging":
                _destination(k, "broken", stack.enter_context(hanging()))
            stop = threading.Event()
            thread = threading.Thread(target=run_forever, args=(k, stop))
            thread.start()
            time.sleep(1.5)  # the worker has loaded the destinations and started their loops
            step, per_step = 0.1, max(1, round(flow * 0.1))
            steps = int(flow_for / step)
            start = time.monotonic()
            for i in range(steps):
                time.sleep(max(0.0, start + i * step - time.monotonic()))
                _identifies(k, source, i * per_step, per_step)
                k.processor.run_until_caught_up()
            messages = steps * per_step
            state = workdir / "kairos-state.db"
            deadline = time.monotonic() + 30
            while _count(state, "ok") < messages and time.monotonic() < deadline:
                time.sleep(0.05)
            stop.set()
            thread.join()
            conn = sqlite3.connect(f"file:{state}?mode=ro", uri=True, timeout=5)
            try:
                rows = conn.execute(
                    "SELECT d.updated_at - o.created_at FROM deliveries d JOIN outbox o ON o.id = d.position"
                    " WHERE d.destination = 'ok' AND d.status = 'delivered' AND d.source = 'outbox'"
                ).fetchall()
                other = conn.execute(
                    "SELECT coalesce(sum(attempts), 0) FROM deliveries WHERE destination = 'broken'"
                ).fetchone()[0]
            finally:
                conn.close()
            return IsolationRun(beside, messages, len(rows), [float(r[0]) for r in rows], int(other))
        finally:
            k.close()

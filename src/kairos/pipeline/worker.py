"""Running the processor beside the API: in its own process (default), in a thread, or not at all.

``kairos serve`` starts one worker in its lifespan (``processor.mode``). In one process the processor and
ingest share one core through Python's GIL, and under load the processor starves; :class:`ProcessWorker`
runs it in a child process of its own, supervised by a thread of the API process.

The pipe between them carries pickled tuples:

- child → parent ``("batch", [profile ids])`` after each committed batch; the parent drops those profiles
  from its read cache, so a read right after the commit sees it whatever ``store.cache_ttl_seconds`` is.
- child → parent ``("status", snapshot)`` every ``status_interval`` seconds and as its last word: the pid,
  the processor's own :meth:`~kairos.pipeline.Processor.status` (state ``running``/``paused``/``stopped``,
  pause reason, totals, last error class) and its counters, which the parent mirrors into its
  ``/metrics`` (they are invisible to it otherwise).
- parent → child ``("stop",)``: finish the current batch and exit. The end of the pipe (the parent died,
  even by SIGKILL) means the same, so a killed ``kairos serve`` leaves no processor behind.

Lifecycle: ``start`` spawns the child; a child that exits on its own is started again after a capped
exponential backoff (reset once a child has lived ``healthy_after`` seconds), and counted in
``kairos_processor_restarts_total``. ``stop`` asks, waits ``processor.stop_timeout_seconds``, then
terminates (SIGTERM) and finally kills. Stopping mid-batch is safe: the batch commits with its checkpoint
or not at all.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import threading
import time
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from typing import TYPE_CHECKING, Any, Protocol

from kairos.collect import iso
from kairos.config import ProcessorMode, Settings
from kairos.metrics import PROCESSOR_COUNTERS, PROCESSOR_LAST_BATCH, PROCESSOR_RESTARTS
from kairos.pipeline import _child
from kairos.store.cache import Cache

if TYPE_CHECKING:
    from kairos.pipeline.processor import Processor
    from kairos.runtime import Kairos

__all__ = ["NoWorker", "ProcessWorker", "ThreadWorker", "Worker", "backoff_delay", "create_worker"]

log = logging.getLogger("kairos.processor")


class Worker(Protocol):
    """How ``kairos serve`` runs its processor; :meth:`status` is the ``processor`` object of ``/healthz``."""

    mode: ProcessorMode

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def status(self) -> dict[str, Any]:
        """``mode``, ``state`` (running, paused, restarting, stopped or off), ``pid``, ``restarts``, and
        ``reason``, ``last_batch_at``, ``last_error`` when known."""
        ...


def create_worker(kairos: Kairos, mode: ProcessorMode) -> Worker:
    if mode == "process":
        return ProcessWorker(kairos.settings, kairos.cache)
    if mode == "thread":
        return ThreadWorker(kairos.processor, kairos.settings.processor.poll_interval_ms / 1000, kairos.cache)
    return NoWorker()


def backoff_delay(failures: int, base: float, cap: float) -> float:
    """Seconds before restart number ``failures`` in a row: base, 2·base, 4·base... at most ``cap``."""
    return min(cap, base * 2.0 ** max(0, failures - 1))


def _status(
    mode: ProcessorMode, state: str, pid: int | None, restarts: int, last_batch_at: float | None, info: dict[str, Any]
) -> dict[str, Any]:
    out: dict[str, Any] = {"mode": mode, "state": state, "pid": pid, "restarts": restarts}
    if info.get("reason"):
        out["reason"] = info["reason"]
    if last_batch_at is not None:
        out["last_batch_at"] = iso(int(last_batch_at * 1000))
    if info.get("last_error"):
        out["last_error"] = info["last_error"]
    return out


class NoWorker:
    """``processor.mode = "off"``: the processor runs elsewhere (``kairos process``)."""

    mode: ProcessorMode = "off"

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def status(self) -> dict[str, Any]:
        return _status("off", "off", None, 0, None, {})


class ThreadWorker:
    """``processor.mode = "thread"``: the processor in a thread of the API process (shares its GIL)."""

    mode: ProcessorMode = "thread"

    def __init__(self, processor: Processor, poll_seconds: float, cache: Cache) -> None:
        self.processor = processor
        self.poll_seconds = poll_seconds
        self.cache = cache
        self.last_batch_at: float | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self.processor.run_forever,
            args=(self.poll_seconds, self._on_batch),
            name="kairos-processor",
            daemon=True,
        )
        self._thread.start()

    def _on_batch(self, changed: list[str]) -> None:
        self.cache.invalidate(changed)
        self.last_batch_at = time.time()
        PROCESSOR_LAST_BATCH.set(self.last_batch_at)

    def stop(self) -> None:
        self.processor.stop()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def status(self) -> dict[str, Any]:
        alive = self._thread is not None and self._thread.is_alive()
        get = getattr(self.processor, "status", None)
        info: dict[str, Any] = get() if callable(get) else {}
        state = info.get("state", "running") if alive else "stopped"
        return _status("thread", state, os.getpid() if alive else None, 0, self.last_batch_at, info)


class ProcessWorker:
    """``processor.mode = "process"``: the processor in a supervised child process (see the module doc)."""

    mode: ProcessorMode = "process"

    def __init__(
        self,
        settings: Settings,
        cache: Cache,
        *,
        target: Any = _child.run,
        name: str = "kairos-processor",
        stop_timeout: float | None = None,
        status_interval: float = 0.5,
        backoff_base: float = 0.5,
        backoff_cap: float = 30.0,
        healthy_after: float = 30.0,
    ) -> None:
        self.settings_data = settings.model_dump(mode="json")
        self.stop_timeout = stop_timeout or settings.processor.stop_timeout_seconds
        # The child's main function, ``(settings data, pipe, parent pid, status interval)``: the processor's
        # by default; the delivery worker speaks the same protocol (kairos.activate._child).
        self.target = target
        self.name = name
        self.cache = cache
        self.status_interval = status_interval
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.healthy_after = healthy_after
        self.restarts = 0
        self._ctx = multiprocessing.get_context("spawn")
        # Guards the fields below: the supervisor thread, stop() and status() (request threads) share them.
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._process: BaseProcess | None = None
        self._conn: Connection | None = None
        self._started_at = 0.0
        self._state = "stopped"
        self._info: dict[str, Any] = {}
        self._mirrored: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        self._last_batch_at: float | None = None
        self._supervisor: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------------
    def start(self) -> None:
        assert self._supervisor is None, "a ProcessWorker starts once"
        self._spawn()  # here, not in the thread: the child's pid is known when start() returns
        self._supervisor = threading.Thread(target=self._supervise, name=f"{self.name}-supervisor", daemon=True)
        self._supervisor.start()

    def _spawn(self, restart: bool = False) -> bool:
        with self._lock:
            if self._stopping.is_set():
                return False
            if restart:
                self.restarts += 1
                if self.target is _child.run:
                    PROCESSOR_RESTARTS.inc()
            conn, child_conn = self._ctx.Pipe()
            process = self._ctx.Process(
                target=self.target,
                args=(self.settings_data, child_conn, os.getpid(), self.status_interval),
                name=self.name,
                daemon=True,  # should the parent exit without stop(), multiprocessing terminates the child
            )
            process.start()
            # Only the child may hold its end: our copy would hide the child's death (no EOF on our end).
            child_conn.close()
            self._process, self._conn = process, conn
            self._started_at = time.monotonic()
            self._state, self._mirrored = "running", {}
            self._info = {"last_error": self._info.get("last_error")}
        log.info("child process started", extra={"pid": process.pid, "child": self.name})
        return True

    def _supervise(self) -> None:
        failures = 0
        while True:
            process, conn = self._process, self._conn
            assert process is not None and conn is not None
            self._read(conn)
            process.join()  # EOF: the child has exited or is exiting (only this thread reaps it)
            with self._lock:
                if self._stopping.is_set():
                    return  # stop() closes what is left
                lived = time.monotonic() - self._started_at
                failures = 1 if lived >= self.healthy_after else failures + 1
                delay = backoff_delay(failures, self.backoff_base, self.backoff_cap)
                self._state = "restarting"
                self._process = self._conn = None
                pid, exitcode = process.pid, process.exitcode
                conn.close()
                process.close()
            # The child may have committed a batch it could not report: what it changed is unknown.
            self.cache.clear()
            log.error(
                "child process exited unexpectedly; restarting",
                extra={"pid": pid, "exitcode": exitcode, "restart_in": delay, "failures": failures},
            )
            if self._stopping.wait(delay) or not self._spawn(restart=True):
                return

    def _read(self, conn: Connection) -> None:
        while True:
            try:
                kind, body = conn.recv()
            except (EOFError, OSError):
                return
            try:
                self._handle(kind, body)
            except Exception:  # e.g. a cache backend that is down: never lose the supervisor for it
                log.exception("processor report could not be handled", extra={"kind": kind})

    def _handle(self, kind: str, body: Any) -> None:
        if kind == "batch":
            self.cache.invalidate(body)
            self._last_batch_at = time.time()
            PROCESSOR_LAST_BATCH.set(self._last_batch_at)
        elif kind == "status":
            self._mirror(body.get("counters", []))
            with self._lock:
                # The last error outlives the child that hit it: a crash loop shows why it loops.
                self._info = {**body, "last_error": body.get("last_error") or self._info.get("last_error")}
                self._state = body.get("state", "running")

    def _mirror(self, counters: list[tuple[str, dict[str, str], float]]) -> None:
        """Add what the child's counters grew by since its last snapshot to ours (a new child starts at 0)."""
        for name, labels, value in counters:
            key = (name, tuple(sorted(labels.items())))
            delta = value - self._mirrored.get(key, 0.0)
            self._mirrored[key] = value
            counter = PROCESSOR_COUNTERS.get(name)
            if counter is not None and delta > 0:
                (counter.labels(**labels) if labels else counter).inc(delta)

    def stop(self) -> None:
        """Ask the child to finish its batch and exit; terminate, then kill, if it does not in time."""
        with self._lock:
            self._stopping.set()
            process, conn = self._process, self._conn
        if process is not None and conn is not None:
            with contextlib.suppress(OSError):  # already gone
                conn.send(("stop",))
            if not wait([process.sentinel], self.stop_timeout):
                log.warning("processor process did not stop in time; terminating", extra={"pid": process.pid})
                process.terminate()
                if not wait([process.sentinel], 2.0):
                    process.kill()
                    wait([process.sentinel], 5.0)
        if self._supervisor is not None:
            self._supervisor.join(timeout=10.0)
        with self._lock:
            self._state = "stopped"
            self._process = self._conn = None
            if process is not None and conn is not None:
                conn.close()
                if process.exitcode is not None:
                    process.close()

    # -- status ------------------------------------------------------------------------------------
    @property
    def pid(self) -> int | None:
        with self._lock:
            return self._process.pid if self._process is not None else None

    def status(self) -> dict[str, Any]:
        with self._lock:
            state, info = self._state, self._info
            pid = self._process.pid if self._process is not None and state != "stopped" else None
        return _status("process", state, pid, self.restarts, self._last_batch_at, info)

    def metrics_text(self) -> bytes:
        """Prometheus text the child sent with its last status (the delivery worker's metrics)."""
        with self._lock:
            text = self._info.get("metrics", "")
        return text.encode() if isinstance(text, str) else b""

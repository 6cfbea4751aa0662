"""The processor process: what :class:`~kairos.pipeline.worker.ProcessWorker` runs in its child.

The child is started with multiprocessing's "spawn" context, so it shares nothing with ``kairos serve`` but
what it is handed: the settings (JSON-safe data, not the environment) and its end of a pipe. It builds its
own :class:`~kairos.runtime.Kairos`, runs ``Processor.run_forever`` and speaks the protocol described in
:mod:`kairos.pipeline.worker`. It stops, after the batch in progress, when the parent asks or is gone.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any

from kairos.metrics import PROCESSOR_COUNTERS

if TYPE_CHECKING:
    from kairos.pipeline.processor import Processor

__all__ = ["run"]

log = logging.getLogger("kairos.processor")


class _Link:
    """The child's end of the pipe. Sends are serialised (the processor and the watcher both send); once
    the parent is gone every send is a no-op, so a batch never fails because nobody listens any more."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.broken = False
        self._lock = threading.Lock()

    def send(self, message: tuple[Any, ...]) -> None:
        with self._lock:
            if self.broken:
                return
            try:
                self.conn.send(message)
            except OSError:  # BrokenPipeError: the parent died
                self.broken = True


def counter_values() -> list[tuple[str, dict[str, str], float]]:
    """This process's processor counters as ``(name, labels, value)``, for the parent to mirror."""
    out = []
    for name, counter in PROCESSOR_COUNTERS.items():
        for metric in counter.collect():
            out += [(name, s.labels, s.value) for s in metric.samples if s.name.endswith("_total")]
    return out


def snapshot(processor: Processor, state: str | None = None) -> dict[str, Any]:
    """The status the parent shows in ``/healthz`` and ``/metrics``; JSON-safe: the processor's own
    ``status()`` (state, pause reason, totals, last error) and its counters, for the parent to mirror."""
    snap: dict[str, Any] = {"pid": os.getpid(), **processor.status(), "counters": counter_values()}
    if state is not None:
        snap["state"] = state
    return snap


def _watch(link: _Link, processor: Processor, parent_pid: int, interval: float) -> None:
    """Report status every ``interval`` s; stop the processor when asked, or when the parent is gone: its
    end of the pipe closes when it dies, even by SIGKILL (EOF), and we are re-parented (pid change)."""
    next_status = 0.0
    try:
        while not link.broken and os.getppid() == parent_pid:
            if time.monotonic() >= next_status:
                link.send(("status", snapshot(processor)))
                next_status = time.monotonic() + interval
            if link.conn.poll(min(interval, 1.0)) and link.conn.recv()[0] == "stop":
                break
    except (EOFError, OSError):
        pass
    processor.stop()


def run(settings_data: dict[str, Any], conn: Connection, parent_pid: int, status_interval: float) -> None:
    """The child's main function."""
    # Ctrl-C in a terminal signals the whole process group; the parent decides when the processor stops.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from kairos._gc import tune_for_server
    from kairos.config import Settings
    from kairos.logs import setup_logging
    from kairos.runtime import Kairos

    settings = Settings.model_validate(settings_data)  # exactly the parent's settings, not re-read
    setup_logging(settings.server.log_level)
    link = _Link(conn)
    if settings.processor.nice:
        os.nice(settings.processor.nice)
    try:
        kairos = Kairos(settings)
    except Exception as exc:
        log.exception("processor process could not start")
        link.send(("status", {"state": "stopped", "pid": os.getpid(), "last_error": type(exc).__name__}))
        conn.close()
        raise SystemExit(1) from None

    tune_for_server()

    def on_batch(changed: list[str]) -> None:
        link.send(("batch", changed))

    watcher = threading.Thread(
        target=_watch,
        args=(link, kairos.processor, parent_pid, status_interval),
        name="kairos-processor-watch",
        daemon=True,
    )
    watcher.start()
    log.info("processor process running", extra={"pid": os.getpid(), "nice": settings.processor.nice})
    try:
        kairos.processor.run_forever(settings.processor.poll_interval_ms / 1000, on_batch)
    finally:
        watcher.join(status_interval + 1.0)  # it asked for the stop; let it go before the pipe closes
        link.send(("status", snapshot(kairos.processor, state="stopped")))
        kairos.close()
        conn.close()

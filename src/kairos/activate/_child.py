"""The delivery worker's process under ``kairos serve`` (``delivery.mode = "process"``).

It speaks the protocol of :mod:`kairos.pipeline.worker` (the processor's child does too): it sends
``("status", {pid, state, metrics})`` every ``status_interval`` seconds, ``metrics`` being the Prometheus
text of its delivery registry, which the API process appends to its ``/metrics``; it stops when asked
(``("stop",)``) or when the parent is gone.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from prometheus_client import generate_latest

from kairos._gc import tune_for_server
from kairos.metrics import DELIVERY_REGISTRY

__all__ = ["run", "watch_parent"]

log = logging.getLogger("kairos.delivery")


def _status(state: str) -> tuple[str, dict[str, Any]]:
    return "status", {"pid": os.getpid(), "state": state, "metrics": generate_latest(DELIVERY_REGISTRY).decode()}


def watch_parent(
    conn: Connection,
    stop: threading.Event,
    parent_pid: int,
    interval: float,
    status: Callable[[str], tuple[str, dict[str, Any]]],
) -> None:
    """A child's watcher thread (the protocol of :mod:`kairos.pipeline.worker`): send ``status("running")``
    every ``interval`` seconds until the parent asks it to stop or is gone; then set ``stop``. The learner's
    child (:mod:`kairos.decide._child`) uses it too."""
    try:
        while not stop.is_set() and os.getppid() == parent_pid:
            conn.send(status("running"))
            if conn.poll(interval) and conn.recv()[0] == "stop":
                break
    except (EOFError, OSError):
        pass
    stop.set()


def run(settings_data: dict[str, Any], conn: Connection, parent_pid: int, status_interval: float) -> None:
    """The child's main function."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from kairos.activate.worker import run_forever
    from kairos.config import Settings
    from kairos.logs import setup_logging
    from kairos.runtime import Kairos

    settings = Settings.model_validate(settings_data)
    setup_logging(settings.server.log_level)
    kairos = Kairos(settings)
    # This process's heap is mostly Kairos itself (modules, settings, definitions), alive until it stops; the
    # cyclic GC walked all of it at each full collection (tens of ms, every few thousand deliveries).
    # Frozen, it is left out of collections; only what the worker allocates from now on is collected.
    tune_for_server()
    stop = threading.Event()
    watcher = threading.Thread(
        target=watch_parent, args=(conn, stop, parent_pid, status_interval, _status), daemon=True
    )
    watcher.start()
    log.info("delivery process running", extra={"pid": os.getpid()})
    try:
        run_forever(kairos, stop)
    finally:
        watcher.join(status_interval + 1.0)
        with contextlib.suppress(OSError):  # the parent is gone
            conn.send(_status("stopped"))
        kairos.close()
        conn.close()

"""The learner's process under ``kairos serve`` (``decide.learner_mode = "process"``, the default).

Learning is CPU work in Python and numpy; in a thread of the API process it would hold the GIL for
milliseconds at a time and show in the decision path's tail latency. Here it has a process (a core) of its
own. It speaks the protocol of :mod:`kairos.pipeline.worker`: ``("status", {pid, state})`` every
``status_interval`` seconds; it stops when asked (``("stop",)``) or when its parent is gone. API processes
see its work through the stored policy snapshots, which they reload within a second.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from multiprocessing.connection import Connection
from typing import Any

__all__ = ["run"]

log = logging.getLogger("kairos.decide")


def _status(state: str) -> tuple[str, dict[str, Any]]:
    return "status", {"pid": os.getpid(), "state": state}


def run(settings_data: dict[str, Any], conn: Connection, parent_pid: int, status_interval: float) -> None:
    """The child's main function."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from kairos._gc import tune_for_server
    from kairos.activate._child import watch_parent
    from kairos.config import Settings
    from kairos.decide.learning import LearnerThread, Trainer
    from kairos.logs import setup_logging
    from kairos.privacy.training import training_gate
    from kairos.runtime import Kairos

    settings = Settings.model_validate(settings_data)
    setup_logging(settings.server.log_level)
    kairos = Kairos(settings)
    stop = threading.Event()
    watcher = threading.Thread(
        target=watch_parent, args=(conn, stop, parent_pid, status_interval, _status), daemon=True
    )
    watcher.start()
    trainer = Trainer(
        kairos.store.decisions, settings.decide, kairos.clock, outbox=kairos.store.outbox, gate=training_gate(kairos)
    )
    # As the processor and delivery children: the heap built so far (Kairos, the loaded policy) leaves the
    # cyclic GC's sight; its full collections had walked it for 22-35 ms every few seconds, on a core the
    # API's decisions share.
    tune_for_server()
    learner = LearnerThread(trainer)
    log.info("learner process running", extra={"pid": os.getpid()})
    learner.start()
    try:
        stop.wait()
    finally:
        learner.stop()  # stores what was learned since the last snapshot
        kairos.close()
        with contextlib.suppress(OSError, ValueError):
            conn.send(_status("stopped"))

"""The processor process of ``kairos serve``: it ends with the server, however the server ends."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.conftest import pid_alive
from tests.e2e.conftest import Server

pytestmark = pytest.mark.e2e

GONE_WITHIN = 5.0  # seconds


def processor_pid(server: Server) -> int:
    processor = server.health()["processor"]
    assert processor["mode"] == "process" and processor["state"] == "running", processor
    pid: int = processor["pid"]
    assert server.process is not None
    parent = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    assert parent == server.process.pid, "the processor is not a child of kairos serve"
    return pid


def wait_gone(pid: int) -> None:
    deadline = time.monotonic() + GONE_WITHIN
    while pid_alive(pid):
        if time.monotonic() > deadline:
            pytest.fail(f"processor process {pid} still running {GONE_WITHIN} s after kairos serve ended")
        time.sleep(0.05)


def test_no_orphan_after_kill_9(fresh_server: Server) -> None:
    pid = processor_pid(fresh_server)
    fresh_server.kill()
    wait_gone(pid)
    fresh_server.start()  # and a new server starts a new processor, which catches up
    assert processor_pid(fresh_server) != pid
    fresh_server.wait_caught_up()


def test_sigterm_stops_the_processor(fresh_server: Server) -> None:
    pid = processor_pid(fresh_server)
    assert fresh_server.stop() in (0, -15)
    assert not pid_alive(pid)
    assert '"processor process running"' in fresh_server.log_tail()

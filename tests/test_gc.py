"""The collector pause used by the processor's batches and by scans of every profile."""

from __future__ import annotations

import gc
import threading

from kairos._gc import paused


def test_paused_turns_the_collector_back_on_only_when_the_last_user_ends() -> None:
    assert gc.isenabled()
    entered, release = threading.Event(), threading.Event()

    def other() -> None:
        with paused():
            entered.set()
            release.wait(5)

    t = threading.Thread(target=other)
    with paused():
        assert not gc.isenabled()
        t.start()
        assert entered.wait(5)
    assert not gc.isenabled()  # the other thread's work still runs
    release.set()
    t.join(5)
    assert gc.isenabled()


def test_paused_leaves_a_disabled_collector_disabled() -> None:
    gc.disable()
    try:
        with paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    finally:
        gc.enable()

"""Rate limits per API key and per collect source, counted by the ``limits`` library (``[limits]``).

One counter check per request (never per event: a batch of 500 events costs what one event does). The
counters live in this process (``memory://``: embedded) or in Redis (``redis://``: shared by every API
process). If Redis fails or is slower than ``limits.storage_timeout_seconds``, requests are let through (fail
open) and a warning is logged: a down counter store must not stop every source and every key, and the
limits are a guard against runaway clients, not an access control (keys and scopes are). Redis is then
left alone for a second before it is tried again, so that requests do not each wait for its timeout. A Redis
counter is counted from a worker thread (:meth:`RateLimits.acheck`): its round trip never stalls the event loop,
which serves every other request meanwhile.

In memory, the counters are ``limits``' own :class:`~limits.storage.MemoryStorage`, with one change: its sweep
of expired counters starts at most once a second instead of after every 10 ms of traffic (see
:class:`_MemoryStorage`).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from typing import Literal

import anyio.to_thread
from limits import RateLimitItem, parse
from limits.errors import StorageError
from limits.storage import MemoryStorage, Storage, storage_from_string
from limits.strategies import (
    FixedWindowRateLimiter,
    MovingWindowRateLimiter,
    RateLimiter,
    SlidingWindowCounterRateLimiter,
)

from kairos.config import LimitsSettings
from kairos.errors import RateLimited

__all__ = ["RateLimits"]

log = logging.getLogger("kairos.limits")

_STRATEGIES: dict[str, type[RateLimiter]] = {
    "fixed-window": FixedWindowRateLimiter,
    "sliding-window-counter": SlidingWindowCounterRateLimiter,
    "moving-window": MovingWindowRateLimiter,
}
DOWN_BACKOFF_SECONDS = 1.0
SWEEP_SECONDS = 1.0
Kind = Literal["key", "source"]


class _MemoryStorage(MemoryStorage):
    """``limits``' memory storage, its sweep of expired counters started at most once per ``SWEEP_SECONDS``.

    On a hit, the library starts a new ``threading.Timer`` of 10 ms once the previous one has ended, so a busy
    server started about 100 threads a second, each start waiting on the request path for the new thread to
    run: a profile of ``kairos serve`` under ingest load put 6% of the event loop's time there. The sweep only
    frees memory (a counter past its window is dropped when it is next read; the moving window finds its entries
    by time), so sweeping later counts the same. The timer is a daemon thread: it never holds up the exit.
    """

    def _MemoryStorage__schedule_expiry(self) -> None:  # the library's private hook, called on every hit
        if not self.timer.is_alive():
            self.timer = threading.Timer(SWEEP_SECONDS, self._MemoryStorage__expire_events)  # type: ignore[attr-defined]
            self.timer.daemon = True
            self.timer.start()


def _storage(settings: LimitsSettings, options: dict[str, float | str | bool]) -> Storage:
    if settings.storage.startswith("memory://"):
        return _MemoryStorage(settings.storage, wrap_exceptions=True)
    return storage_from_string(settings.storage, wrap_exceptions=True, **options)  # type: ignore[return-value]


class RateLimits:
    """Checks ``[limits]`` for one process; :meth:`check` raises :class:`RateLimited` (429) when over."""

    def __init__(self, settings: LimitsSettings) -> None:
        self.enabled = settings.enabled
        self.items: dict[Kind, RateLimitItem] = {"key": parse(settings.per_key), "source": parse(settings.per_source)}
        options: dict[str, float | str | bool] = {}
        if settings.storage.startswith("redis"):
            timeout = settings.storage_timeout_seconds
            options = {"socket_timeout": timeout, "socket_connect_timeout": timeout}
        self.storage_name = settings.storage.partition("://")[0]  # never the URL: it may hold a password
        self.remote = not settings.storage.startswith("memory://")
        self.limiter = _STRATEGIES[settings.strategy](_storage(settings, options))
        self._down_until = 0.0
        self._lock = threading.Lock()

    async def acheck(self, kind: Kind, ident: str, field: str) -> None:
        """:meth:`check` for the event loop: a counter in Redis is counted from a worker thread, so that its
        round trip (up to ``limits.storage_timeout_seconds`` when Redis is slow) never holds up the other
        requests; one in memory costs microseconds and is counted here."""
        if not self.enabled or time.monotonic() < self._down_until:
            return
        if self.remote:
            await anyio.to_thread.run_sync(self.check, kind, ident, field)
        else:
            self.check(kind, ident, field)

    def check(self, kind: Kind, ident: str, field: str) -> None:
        """Count one request of key or source ``ident``; over the rate, a 429 naming ``field``."""
        if not self.enabled or time.monotonic() < self._down_until:
            return
        item = self.items[kind]
        try:
            if self.limiter.hit(item, "kairos", kind, ident):
                self._up()
                return
            reset = self.limiter.get_window_stats(item, "kairos", kind, ident).reset_time
        except StorageError as exc:
            self._down(exc)
            return
        what = "API key" if kind == "key" else "source"
        raise RateLimited(
            f"this {what} is over its rate limit of {item}; retry later",
            retry_after=math.ceil(reset - time.time()),
            field=field,
        )

    def _down(self, exc: StorageError) -> None:
        with self._lock:
            was_up = self._down_until == 0.0
            self._down_until = time.monotonic() + DOWN_BACKOFF_SECONDS
        if was_up:
            log.warning(
                "rate limit storage unavailable: requests are let through unlimited",
                extra={"storage": self.storage_name, "error": type(exc.storage_error).__name__},
            )

    def _up(self) -> None:
        if self._down_until:
            with self._lock:
                self._down_until = 0.0
            log.info("rate limit storage reachable again", extra={"storage": self.storage_name})

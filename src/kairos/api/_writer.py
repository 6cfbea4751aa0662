"""Group commit: many concurrent collect requests share one durable log transaction.

A request hands its events to :class:`LogWriter` and awaits a future. One writer thread takes everything
queued, appends it in one transaction, and resolves each request's future only after the commit returned,
so a ``200`` is never sent for an event that is not yet in the log.

The queue is bounded by events, not requests: past ``max_pending`` a request is refused at once with
:class:`~kairos.errors.Overloaded` (``503`` + ``Retry-After``) rather than held in memory, and the event
loop never waits on the writer. A failure of the store is :class:`~kairos.errors.StoreUnavailable`: the
transaction rolled back, so the whole request may be retried.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable, Sequence

from kairos.collect import NewEvent
from kairos.errors import Overloaded, StoreUnavailable

__all__ = ["LogWriter"]

log = logging.getLogger("kairos.collect")
Append = Callable[[Sequence[tuple[str, Sequence[NewEvent]]]], list[list[int]]]
_Item = tuple[str, Sequence[NewEvent], asyncio.AbstractEventLoop, "asyncio.Future[list[int]]"]
MAX_GROUP_EVENTS = 20_000


class LogWriter:
    def __init__(
        self, append: Append, *, max_pending: int = 50_000, store_errors: tuple[type[Exception], ...] = ()
    ) -> None:
        self._append = append
        self._max_pending = max_pending
        self._store_errors = store_errors
        self._pending = 0  # events queued or being appended
        self._lock = threading.Lock()  # guards _pending only: held for a few instructions on either side
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="kairos-log-writer", daemon=True)
        self._thread.start()

    @property
    def pending(self) -> int:
        return self._pending

    async def append(self, source: str, events: Sequence[NewEvent]) -> list[int]:
        n = len(events)
        with self._lock:
            # A request larger than the bound is still taken when nothing waits, or it could never be.
            if self._pending and self._pending + n > self._max_pending:
                raise Overloaded(f"{self._pending} events are waiting to be written; retry shortly")
            self._pending += n
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[int]] = loop.create_future()
        self._queue.put((source, events, loop, future))
        return await future

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=30)

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            items = [first]
            size = len(first[1])
            stop = False
            while size < MAX_GROUP_EVENTS:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    break
                items.append(nxt)
                size += len(nxt[1])
            self._commit(items)
            if stop:
                return

    def _commit(self, items: list[_Item]) -> None:
        try:
            seqs = self._append([(source, events) for source, events, _, _ in items])
        except Exception as exc:
            log.exception("log append failed", extra={"requests": len(items)})
            error: BaseException = exc
            if isinstance(exc, self._store_errors):
                error = StoreUnavailable("the event log could not be written; nothing was stored, retry shortly")
                error.__cause__ = exc
            self._release(items)
            for _, _, loop, future in items:
                loop.call_soon_threadsafe(_fail, future, error)
            return
        self._release(items)
        for (_, _, loop, future), result in zip(items, seqs, strict=True):
            loop.call_soon_threadsafe(_done, future, result)

    def _release(self, items: list[_Item]) -> None:
        n = sum(len(events) for _, events, _, _ in items)
        with self._lock:
            self._pending -= n


def _done(future: asyncio.Future[list[int]], result: list[int]) -> None:
    if not future.done():
        future.set_result(result)


def _fail(future: asyncio.Future[list[int]], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)

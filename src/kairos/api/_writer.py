"""Group commit: many concurrent requests share one durable transaction.

A request hands its items to a :class:`GroupWriter` and awaits a future. One writer thread takes everything
queued, writes it in one transaction, and resolves each request's future only after the commit returned,
so a ``200`` is never sent for something that is not yet stored: :class:`LogWriter` for collect's events,
and the decision log's writer for ``POST /v1/decide`` (``kairos.api.decide``). One writer per database also
means no request thread waits on another's write lock (SQLite's busy handler sleeps in growing steps).

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
from typing import Any, Generic, TypeVar

from kairos.collect import NewEvent
from kairos.errors import Overloaded, StoreUnavailable

__all__ = ["GroupWriter", "LogWriter"]

log = logging.getLogger("kairos.collect")
T = TypeVar("T")
R = TypeVar("R")
MAX_GROUP_EVENTS = 20_000


class GroupWriter(Generic[T, R]):
    """``write`` takes the items of several requests (in order) and returns one result per item, in one
    transaction. The queue is bounded by the items' ``size`` (events for the log; 1 per decision)."""

    def __init__(
        self,
        write: Callable[[list[T]], list[R]],
        *,
        size: Callable[[T], int] = lambda item: 1,
        max_pending: int = 50_000,
        max_group: int = MAX_GROUP_EVENTS,
        store_errors: tuple[type[Exception], ...] = (),
        what: str = "events",
        name: str = "kairos-writer",
    ) -> None:
        self._write = write
        self._size = size
        self._max_pending = max_pending
        self._max_group = max_group
        self._store_errors = store_errors
        self._what = what
        self._pending = 0  # items' sizes queued or being written
        self._lock = threading.Lock()  # guards _pending only: held for a few instructions on either side
        self._queue: queue.SimpleQueue[_Item[T, R] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    @property
    def pending(self) -> int:
        return self._pending

    async def submit(self, item: T) -> R:
        n = self._size(item)
        with self._lock:
            # A request larger than the bound is still taken when nothing waits, or it could never be.
            if self._pending and self._pending + n > self._max_pending:
                raise Overloaded(f"{self._pending} {self._what} are waiting to be written; retry shortly")
            self._pending += n
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        self._queue.put((item, loop, future))
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
            size = self._size(first[0])
            stop = False
            while size < self._max_group:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    break
                items.append(nxt)
                size += self._size(nxt[0])
            self._commit(items)
            if stop:
                return

    def _commit(self, items: list[_Item[T, R]]) -> None:
        try:
            results = self._write([item for item, _, _ in items])
        except Exception as exc:
            log.exception("group write failed", extra={"requests": len(items), "what": self._what})
            error: BaseException = exc
            if isinstance(exc, self._store_errors):
                error = StoreUnavailable(f"the {self._what} could not be written; nothing was stored, retry shortly")
                error.__cause__ = exc
            self._release(items)
            _settle(items, [error] * len(items), _fail)
            return
        self._release(items)
        _settle(items, results, _done)

    def _release(self, items: list[_Item[T, R]]) -> None:
        n = sum(self._size(item) for item, _, _ in items)
        with self._lock:
            self._pending -= n


_Item = tuple[T, asyncio.AbstractEventLoop, "asyncio.Future[R]"]
Append = Callable[[Sequence[tuple[str, Sequence[NewEvent]]]], list[list[int]]]
Group = tuple[str, Sequence[NewEvent]]


class LogWriter(GroupWriter[Group, list[int]]):
    """Collect's writer: each request's (source, events) appended to the log, their seqs back."""

    def __init__(
        self, append: Append, *, max_pending: int = 50_000, store_errors: tuple[type[Exception], ...] = ()
    ) -> None:
        super().__init__(
            append,
            size=lambda group: len(group[1]),
            max_pending=max_pending,
            store_errors=store_errors,
            what="events",
            name="kairos-log-writer",
        )

    async def append(self, source: str, events: Sequence[NewEvent]) -> list[int]:
        return await self.submit((source, events))


def _settle(items: Sequence[_Item[Any, Any]], outcomes: Sequence[Any], settle: Callable[[Any, Any], None]) -> None:
    """Settle each request's future in its event loop: one call per loop for the whole group (each
    ``call_soon_threadsafe`` writes to the loop's wake-up socket: a system call and a wake-up per request)."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], Any]]] = {}
    for (_, loop, future), outcome in zip(items, outcomes, strict=True):
        by_loop.setdefault(loop, []).append((future, outcome))
    for loop, settled in by_loop.items():
        loop.call_soon_threadsafe(_each, settle, settled)


def _each(settle: Callable[[Any, Any], None], settled: list[tuple[asyncio.Future[Any], Any]]) -> None:
    for future, outcome in settled:
        settle(future, outcome)


def _done(future: asyncio.Future[Any], result: Any) -> None:
    if not future.done():
        future.set_result(result)


def _fail(future: asyncio.Future[Any], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)

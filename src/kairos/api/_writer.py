"""Group commit: many concurrent collect requests share one durable log transaction.

A request hands its events to :class:`LogWriter` and awaits a future. One writer thread takes everything
queued, appends it in one transaction, and resolves each request's future only after the commit returned,
so a ``200`` is never sent for an event that is not yet in the log.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable, Sequence

from kairos.collect import NewEvent

__all__ = ["LogWriter"]

log = logging.getLogger("kairos.collect")
Append = Callable[[Sequence[tuple[str, Sequence[NewEvent]]]], list[list[int]]]
_Item = tuple[str, Sequence[NewEvent], asyncio.AbstractEventLoop, "asyncio.Future[list[int]]"]
MAX_GROUP_EVENTS = 20_000


class LogWriter:
    def __init__(self, append: Append) -> None:
        self._append = append
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="kairos-log-writer", daemon=True)
        self._thread.start()

    async def append(self, source: str, events: Sequence[NewEvent]) -> list[int]:
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
            for _, _, loop, future in items:
                loop.call_soon_threadsafe(_fail, future, exc)
            return
        for (_, _, loop, future), result in zip(items, seqs, strict=True):
            loop.call_soon_threadsafe(_done, future, result)


def _done(future: asyncio.Future[list[int]], result: list[int]) -> None:
    if not future.done():
        future.set_result(result)


def _fail(future: asyncio.Future[list[int]], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)

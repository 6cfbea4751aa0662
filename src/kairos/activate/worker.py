"""The delivery worker: pushes each destination's messages, signed, at least once, without letting one
destination hold up another.

One asyncio task per enabled push destination, each with its own HTTP connection pool (``aiohttp``, chosen
by measurement: docs/decisions.md) and at most ``delivery.concurrency`` requests in flight. A task loops:

1. **plan**: read the outbox (and, for an event subscription, the applied part of the log) after the
   destination's cursor, and insert a pending delivery for each message it subscribes to, moving the cursor
   in the same transaction (:meth:`kairos.store.Deliveries.plan`);
2. **send** up to ``delivery.concurrency`` deliveries that are due (read ``delivery.batch_size`` at a time,
   oldest first): each body is built when it is sent (current traits, consent checked again: a person who
   withdrew consent meanwhile gets nothing), signed, and POSTed;
3. **record** the outcomes, a few rounds' in one transaction (``RECORD_ROUNDS``), always before due
   deliveries are read again and when the loop stops: ``delivered`` on 2xx; on 5xx, 408, 429, a timeout or a
   connection error, another attempt after an exponential back-off with jitter (``Retry-After`` honoured),
   ``dead`` after ``delivery.max_attempts``; any other 4xx is ``dead`` at once (the receiver refuses it), and
   so are a request aiohttp refuses to build and one whose host is or resolves to an address in
   ``delivery.blocked_networks`` (neither is sent); ``suppressed`` when the consent gate forbids it.

A crash between sending and recording means the delivery goes out again, with the same id: receivers
de-duplicate on ``Idempotency-Key``. A circuit breaker per destination stops requests after
``delivery.breaker_failures`` failures in a row, and lets one probe through after the cool-down.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import ipaddress
import itertools
import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any, Protocol
from urllib.parse import urlsplit

import aiohttp
from prometheus_client import generate_latest

from kairos import __version__
from kairos.activate._network import BlockedAddress, GuardedResolver, Network, blocked_by, networks
from kairos.activate.destinations import Destination, load, url_problem
from kairos.activate.messages import Item, delivery_id, items_at, render, select
from kairos.activate.signing import sign
from kairos.config import DeliverySettings
from kairos.metrics import (
    DELIVERED,
    DELIVERY_CIRCUIT_OPEN,
    DELIVERY_DEAD,
    DELIVERY_FAILED,
    DELIVERY_QUEUE,
    DELIVERY_REGISTRY,
    DELIVERY_SECONDS,
    DELIVERY_SUPPRESSED,
)
from kairos.runtime import Kairos
from kairos.store import Delivery

__all__ = [
    "Breaker",
    "DeliveryService",
    "DeliveryThread",
    "DeliveryWorker",
    "NoDelivery",
    "backoff_seconds",
    "create_delivery_worker",
    "retry_after_seconds",
    "run_forever",
]

log = logging.getLogger("kairos.delivery")
MAX_ANSWER_BYTES = 64 * 1024  # read (and dropped) of a receiver's answer, so the connection can be reused
RECORD_ROUNDS = 4  # outcomes of up to this many full rounds are recorded in one transaction


def backoff_seconds(attempt: int, settings: DeliverySettings, rng: random.Random) -> float:
    """Wait after failed attempt number ``attempt``: base·2^(attempt-1), capped, half of it random
    ("equal jitter"), so that many failed deliveries do not come back at the same instant."""
    ceiling = min(settings.backoff_cap_seconds, settings.backoff_base_seconds * 2.0 ** min(attempt - 1, 60))
    return ceiling / 2 + rng.uniform(0, ceiling / 2)


def retry_after_seconds(header: str | None, now: float) -> float | None:
    """``Retry-After`` as seconds from ``now``: delay-seconds or an HTTP date; None if absent or unreadable."""
    if not header:
        return None
    header = header.strip()
    if header.isdigit():
        return float(header)
    try:
        when = email.utils.parsedate_to_datetime(header)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now)


class Breaker:
    """A circuit breaker: ``closed`` (send), ``open`` (send nothing until the cool-down has passed), then
    ``half_open`` (one probe: success closes it, failure opens it again)."""

    def __init__(self, failures: int, cooldown: float) -> None:
        self.threshold = failures
        self.cooldown = cooldown
        self.state = "closed"
        self.failures = 0
        self.opened_at = 0.0

    def capacity(self, concurrency: int, now: float) -> int:
        """How many requests may go now."""
        if self.state == "open":
            if now - self.opened_at < self.cooldown:
                return 0
            self.state = "half_open"
        return 1 if self.state == "half_open" else concurrency

    def wait(self, now: float) -> float:
        return max(0.0, self.opened_at + self.cooldown - now) if self.state == "open" else 0.0

    def succeeded(self) -> None:
        self.state, self.failures = "closed", 0

    def failed(self, now: float) -> None:
        self.failures += 1
        if self.state == "half_open" or self.failures >= self.threshold:
            self.state, self.opened_at = "open", now


@dataclass(frozen=True, slots=True)
class _Answer:
    status: int | None  # HTTP status, None when no answer came
    error: str | None  # reason of a failure, without personal data
    retry_after: float | None
    seconds: float
    refused: str | None = None  # why it was not sent and never will be (a metric's reason): dead at once


class Runner:
    """One destination's loop (see the module doc).

    The store work of a round (record the last rounds' outcomes, plan, read what is due, build the bodies)
    is one call in a thread of the destination's own, so that it runs in order on one database connection;
    due deliveries are read ``delivery.batch_size`` at a time and kept in memory until sent, since only this
    loop changes a pending delivery of its destination (the bodies are still built when sent)."""

    def __init__(self, kairos: Kairos, dest: Destination, rng: random.Random) -> None:
        self.kairos = kairos
        self.dest = dest
        self.settings = kairos.settings.delivery
        self.rng = rng
        self.breaker = Breaker(self.settings.breaker_failures, self.settings.breaker_cooldown_seconds)
        # Both are the store thread's while it runs a round's call, the loop's otherwise.
        self.queue: deque[Delivery] = deque()  # due, read ahead, not sent yet
        self.outcomes: list[Delivery] = []  # answered, not recorded yet
        key = dest.key
        self._delivered = DELIVERED.labels(key)
        self._dead = DELIVERY_DEAD.labels(key)
        self._suppressed = DELIVERY_SUPPRESSED.labels(key)
        self._seconds = DELIVERY_SECONDS.labels(key)
        self._circuit_open = DELIVERY_CIRCUIT_OPEN.labels(key)
        self._headers = {**dest.headers, "Content-Type": "application/json", "User-Agent": f"Kairos/{__version__}"}
        self._blocked = networks(self.settings.blocked_networks)
        self._literal = _literal_blocked(dest.url, self._blocked)
        self._bad_url = url_problem(dest.url)  # saved before the rule that refuses it: never sent

    async def run(self, stop: asyncio.Event) -> None:
        s = self.settings
        store = ThreadPoolExecutor(1, thread_name_prefix=f"kairos-deliver-{self.dest.key}")
        # aiohttp connects to an IP address host without asking the resolver: that case is _literal's.
        resolver = GuardedResolver(aiohttp.DefaultResolver(), self._blocked)
        connector = aiohttp.TCPConnector(limit=s.concurrency, resolver=resolver)
        timeout = aiohttp.ClientTimeout(total=s.timeout_seconds)
        try:
            async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
                while not stop.is_set():
                    try:
                        busy = await self._round(session, store)
                    except asyncio.CancelledError:
                        raise
                    except Exception:  # the store is down, ...: never lose the loop for it
                        log.exception("delivery round failed", extra={"destination": self.dest.key})
                        busy = False
                    if not busy:
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(stop.wait(), self._idle())
        finally:
            # Stopped (or cancelled): what was answered but not recorded yet is recorded now rather than sent
            # again, after any store call under way (the store thread takes one at a time); then wait for it,
            # as asyncio.run waits for its own executor, so that nothing writes after the worker returned.
            store.submit(self._record_or_log)
            await asyncio.to_thread(store.shutdown)
            await resolver.close()  # the connector closes only a resolver of its own

    def _idle(self) -> float:
        poll = self.settings.poll_interval_ms / 1000
        wait = self.breaker.wait(time.monotonic())
        return max(poll, min(wait, 1.0)) if wait else poll

    async def _round(self, session: aiohttp.ClientSession, store: Executor) -> bool:
        """Record what earlier rounds got back, plan, then send what is due; True when there may be more to do
        at once."""
        capacity = self.breaker.capacity(self.settings.concurrency, time.monotonic())
        self._circuit_open.set(1 if self.breaker.state == "open" else 0)
        batch, more = await asyncio.get_running_loop().run_in_executor(store, self._prepare, capacity)
        if not batch:
            return more
        answers = await asyncio.gather(*(self._post(session, d.id, body) for d, body in batch))
        self.outcomes += [self._outcome(d, a) for (d, _), a in zip(batch, answers, strict=True)]
        return True

    def _prepare(self, capacity: int) -> tuple[list[tuple[Delivery, bytes | None]], bool]:
        """The store thread's part of a round: record the last rounds' outcomes (kept for the next round if
        that fails), then the deliveries to send now with their bodies, and whether planning has more to read."""
        store = self.kairos.store
        # Recorded a few rounds at a time (fewer, larger transactions), and always before due deliveries are
        # read again: one sent but not yet recorded is still pending in the store.
        if not self.queue or capacity == 0 or len(self.outcomes) >= RECORD_ROUNDS * capacity:
            self._record()
        more = self._plan()
        if capacity == 0:
            return [], False
        if not self.queue:
            self.queue.extend(store.deliveries.due(self.dest.key, self.kairos.clock.now(), self.settings.batch_size))
        due = list(itertools.islice(self.queue, capacity))
        bodies = self._bodies(due)
        for _ in due:  # taken only once their bodies are built: after a failure they are tried again
            self.queue.popleft()
        return list(zip(due, bodies, strict=True)), more

    def _record(self) -> None:
        if self.outcomes:
            self.kairos.store.deliveries.record(self.dest.key, self.outcomes, self.dest.purpose)
            self.outcomes = []

    def _record_or_log(self) -> None:
        try:
            self._record()
        except Exception:  # the store is down: they will be sent again, with the same ids
            log.exception("could not record deliveries at stop", extra={"destination": self.dest.key})

    # -- planning ---------------------------------------------------------------------------------
    def _plan(self) -> bool:
        store = self.kairos.store
        cursor = store.deliveries.cursor(self.dest.key)
        if cursor is None:  # created before its cursor could be (an older version): start at the end
            cursor = store.deliveries.start(self.dest.key, store.outbox.last_id(), store.log.last_seq(), 0)
        limit = self.settings.batch_size
        items, outbox_to, log_to = select(self.kairos, self.dest, cursor.outbox, cursor.log, limit)
        if outbox_to == cursor.outbox and log_to == cursor.log:
            return False
        now = self.kairos.clock.now()
        rows = [self._pending(item, now) for item in items]
        store.deliveries.plan(self.dest.key, rows, outbox_to, log_to)
        return outbox_to - cursor.outbox >= limit or log_to - cursor.log >= limit

    def _pending(self, item: Item, now: int) -> Delivery:
        return Delivery(
            self.dest.key,
            delivery_id(self.dest.key, item.ref),
            item.source,
            item.position,
            item.type,
            item.key,
            item.profile_id,
            "pending",
            0,
            now,
            now,
            now,
        )

    # -- sending ----------------------------------------------------------------------------------
    def _bodies(self, due: Sequence[Delivery]) -> list[bytes | None]:
        items = items_at(self.kairos, [(d.source, d.position) for d in due])
        found = [items.get((d.source, d.position)) for d in due]
        rendered = iter(render(self.kairos, self.dest, [i for i in found if i is not None]))
        return [next(rendered) if i is not None else None for i in found]

    async def _post(self, session: aiohttp.ClientSession, id_: str, body: bytes | None) -> _Answer | None:
        if body is None:
            return None
        dest = self.dest
        assert dest.url is not None and dest.secret is not None
        if self._literal is not None:
            return _Answer(None, self._literal.reason, None, 0.0, refused="blocked")
        if self._bad_url is not None:
            return _Answer(None, f"invalid url: {self._bad_url}", None, 0.0, refused="invalid_request")
        headers = {
            **self._headers,
            "Idempotency-Key": id_,
            "Kairos-Signature": sign(dest.secret, body, int(time.time())),
        }
        started = time.perf_counter()
        try:
            async with session.post(dest.url, data=body, headers=headers, allow_redirects=False) as r:
                await r.content.read(MAX_ANSWER_BYTES)
                status, after = r.status, retry_after_seconds(r.headers.get("Retry-After"), time.time())
        except TimeoutError:
            return _Answer(None, "timeout", None, time.perf_counter() - started)
        except aiohttp.ClientConnectorDNSError as exc:
            seconds = time.perf_counter() - started
            if isinstance(exc.os_error, BlockedAddress):
                return _Answer(None, exc.os_error.reason, None, seconds, refused="blocked")
            return _Answer(None, f"connection: {type(exc).__name__}", None, seconds)
        except aiohttp.ClientError as exc:
            return _Answer(None, f"connection: {type(exc).__name__}", None, time.perf_counter() - started)
        except ValueError as exc:  # aiohttp refused to build the request (a definition saved before it was checked)
            seconds = time.perf_counter() - started
            return _Answer(None, f"invalid request: {type(exc).__name__}", None, seconds, refused="invalid_request")
        return _Answer(status, None, after, time.perf_counter() - started)

    def _outcome(self, d: Delivery, a: _Answer | None) -> Delivery:
        now = self.kairos.clock.now()
        if a is None:
            self._suppressed.inc()
            return replace(d, status="suppressed", updated_at=now, last_error="consent or profile missing")
        attempts = d.attempts + 1
        if a.refused is not None:  # never sent, never will be: no latency, and the receiver's breaker stays as is
            DELIVERY_FAILED.labels(self.dest.key, a.refused).inc()
            self._dead.inc()
            return replace(d, status="dead", attempts=attempts, updated_at=now, last_status=None, last_error=a.error,
                           latency_ms=None)  # fmt: skip
        self._seconds.observe(a.seconds)
        latency = round(a.seconds * 1000)
        if a.status is not None and 200 <= a.status < 300:
            self.breaker.succeeded()
            self._delivered.inc()
            return replace(d, status="delivered", attempts=attempts, updated_at=now, last_status=a.status,
                           last_error=None, latency_ms=latency)  # fmt: skip
        if a.status is None:
            reason, error = ("timeout" if a.error == "timeout" else "connection"), a.error
        else:
            reason = f"http_{a.status}" if a.status in (408, 429) else f"http_{a.status // 100}xx"
            error = f"HTTP {a.status}"
        DELIVERY_FAILED.labels(self.dest.key, reason).inc()
        self.breaker.failed(time.monotonic())
        retryable = a.status is None or a.status in (408, 429) or a.status >= 500
        if not retryable or attempts >= self.settings.max_attempts:
            self._dead.inc()
            return replace(d, status="dead", attempts=attempts, updated_at=now, last_status=a.status,
                           last_error=error, latency_ms=latency)  # fmt: skip
        wait = backoff_seconds(attempts, self.settings, self.rng)
        if a.retry_after is not None:
            wait = min(max(a.retry_after, 0.0), self.settings.backoff_cap_seconds)
        return replace(d, attempts=attempts, next_attempt_at=now + round(wait * 1000), updated_at=now,
                       last_status=a.status, last_error=error, latency_ms=latency)  # fmt: skip


def _literal_blocked(url: str | None, nets: tuple[Network, ...]) -> BlockedAddress | None:
    """Why a url whose host is an IP address may not be sent to (it may have been saved before
    ``delivery.blocked_networks`` held its network), else None."""
    if url is None:
        return None
    try:
        address = ipaddress.ip_address(urlsplit(url).hostname or "")
    except ValueError:  # a name (checked when resolved), or a url aiohttp refuses itself
        return None
    net = blocked_by(str(address), nets)
    return BlockedAddress(str(address), net) if net is not None else None


class DeliveryService:
    """Runs one :class:`Runner` per enabled push destination, restarting it when its definition changes."""

    def __init__(self, kairos: Kairos, seed: int | None = None) -> None:
        self.kairos = kairos
        self.rng = random.Random(seed)
        self.tasks: dict[str, tuple[int, asyncio.Task[None], asyncio.Event]] = {}

    async def run(self, stop: asyncio.Event) -> None:
        try:
            while not stop.is_set():
                try:
                    await self._sync()
                except Exception:
                    log.exception("could not load destinations")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 1.0)
        finally:
            for _version, task, halt in self.tasks.values():
                halt.set()
                task.cancel()
            await asyncio.gather(*(t for _, t, _ in self.tasks.values()), return_exceptions=True)

    async def _sync(self) -> None:
        wanted = {k: d for k, d in (await asyncio.to_thread(load, self.kairos)).items() if d.enabled and not d.pull}
        stopped = []
        for key in list(self.tasks):
            version, task, halt = self.tasks[key]
            if key not in wanted or wanted[key].version != version or task.done():
                halt.set()
                task.cancel()
                stopped.append(task)
                del self.tasks[key]
        # A stopped runner records the outcomes it holds (up to RECORD_ROUNDS rounds' answers) as it ends: its
        # replacement must not read what is due before that, or it sends those deliveries again.
        await asyncio.gather(*stopped, return_exceptions=True)
        for key, dest in wanted.items():
            if key not in self.tasks:
                halt = asyncio.Event()
                runner = Runner(self.kairos, dest, random.Random(self.rng.random()))
                task = asyncio.create_task(runner.run(halt), name=f"kairos-deliver-{key}")
                self.tasks[key] = (dest.version, task, halt)
        depth = await asyncio.to_thread(self.kairos.store.deliveries.depth)
        for key in wanted:
            DELIVERY_QUEUE.labels(key).set(depth.get(key, 0))


def run_forever(kairos: Kairos, stop: threading.Event, seed: int | None = None) -> None:
    """Deliver until ``stop`` is set (``kairos deliver``, the delivery thread or process)."""

    async def main() -> None:
        halt = asyncio.Event()
        service = asyncio.create_task(DeliveryService(kairos, seed).run(halt))
        await asyncio.to_thread(stop.wait)
        halt.set()
        await service

    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        runner.run(main())


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop where it is installed (with ``uvicorn[standard]``, as uvicorn itself uses it): the worker's CPU
    per delivery is mostly the event loop and aiohttp, and uvloop's loop and transports take a quarter less
    of it (docs/decisions.md); else asyncio's own."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


class DeliveryThread:
    """``delivery.mode = "thread"``: the delivery worker in a thread of the API process."""

    mode = "thread"

    def __init__(self, kairos: Kairos) -> None:
        self.kairos = kairos
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(
            target=run_forever, args=(self.kairos, self._stop), name="kairos-delivery", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def status(self) -> dict[str, Any]:
        alive = self._thread is not None and self._thread.is_alive()
        return {"mode": "thread", "state": "running" if alive else "stopped"}

    def metrics_text(self) -> bytes:
        return generate_latest(DELIVERY_REGISTRY)


class NoDelivery:
    """``delivery.mode = "off"``: deliveries are made elsewhere (``kairos deliver``)."""

    mode = "off"

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def status(self) -> dict[str, Any]:
        return {"mode": "off", "state": "off"}

    def metrics_text(self) -> bytes:
        return b""


class DeliveryWorker(Protocol):
    def start(self) -> None: ...

    def stop(self) -> None: ...

    def status(self) -> dict[str, Any]: ...

    def metrics_text(self) -> bytes: ...


def create_delivery_worker(kairos: Kairos, mode: str) -> DeliveryWorker:
    """How ``kairos serve`` runs deliveries (``delivery.mode``)."""
    if mode == "process":
        from kairos.activate import _child
        from kairos.pipeline.worker import ProcessWorker

        return ProcessWorker(
            kairos.settings, kairos.cache, target=_child.run, name="kairos-delivery", stop_timeout=10.0
        )
    if mode == "thread":
        return DeliveryThread(kairos)
    return NoDelivery()

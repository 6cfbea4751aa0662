"""Server-Sent Events for systems that pull: ``GET /v1/subscriptions/{key}/stream``.

A pull subscription is a destination without ``url``: the same filters, the same messages (same ids), the
same consent gate. Each message is one SSE event whose ``data`` is the message JSON and whose ``id`` is the
position reached in the outbox and the log, ``"<outbox id>.<log seq>"``. A client that reconnects with
``Last-Event-ID`` (browsers' ``EventSource`` does it by itself) resumes right after the last message it
received: nothing is lost and nothing repeats. Without it the stream starts where the subscription was
created, and it never starts earlier: a ``Last-Event-ID`` of ``0.0`` does not replay what happened before.
Each message about a person is written to their data-use ledger before it is sent. When a batch advances the
position without a message for this subscriber, an event with only an ``id`` moves the client's position on
(it is not dispatched to the application).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator

from kairos.activate.destinations import Destination
from kairos.activate.messages import delivery_id, render, select
from kairos.errors import ValidationError
from kairos.metrics import DELIVERY_SUPPRESSED
from kairos.runtime import Kairos
from kairos.store import UseRow

__all__ = ["events", "parse_position"]

_POSITION = re.compile(r"(\d{1,18})\.(\d{1,18})")


def parse_position(text: str) -> tuple[int, int]:
    """``"12.340"`` → (12, 340); anything else is a 400 ``invalid_cursor``."""
    m = _POSITION.fullmatch(text.strip())
    if m is None:
        raise ValidationError(
            "Last-Event-ID is '<outbox id>.<log seq>' as this stream sent it",
            code="invalid_cursor",
            field="Last-Event-ID",
        )
    return int(m.group(1)), int(m.group(2))


async def events(
    kairos: Kairos, dest: Destination, outbox: int, log: int, limit: int | None = None
) -> AsyncIterator[bytes]:
    """The stream's bytes from position (``outbox``, ``log``); ends after ``limit`` messages, if given."""
    settings = kairos.settings.delivery
    poll = settings.poll_interval_ms / 1000
    sent = 0
    beat = time.monotonic()
    yield b"retry: 1000\n\n"
    while limit is None or sent < limit:
        items, outbox_to, log_to = await asyncio.to_thread(select, kairos, dest, outbox, log, settings.batch_size)
        bodies = await asyncio.to_thread(render, kairos, dest, items) if items else []
        chunk: list[bytes] = []
        uses: list[UseRow] = []
        for item, body in zip(items, bodies, strict=True):
            if item.source == "outbox":
                outbox = item.position
            else:
                outbox, log = outbox_to, item.position
            if body is None:
                DELIVERY_SUPPRESSED.labels(dest.key).inc()
                continue
            chunk.append(b"id: %d.%d\ndata: %s\n\n" % (outbox, log, body))
            if item.profile_id is not None:
                ref = delivery_id(dest.key, item.ref)
                uses.append(UseRow(item.profile_id, kairos.clock.now(), dest.purpose, "stream", dest.key, ref))
            sent += 1
            if limit is not None and sent >= limit:
                break
        else:
            if (outbox_to, log_to) != (outbox, log):
                outbox, log = outbox_to, log_to
                chunk.append(b"id: %d.%d\n\n" % (outbox, log))
        if uses:  # each message about a person is a use of their data: in the ledger before it is sent
            await asyncio.to_thread(kairos.store.uses.record, uses)
        if chunk:
            yield b"".join(chunk)
            beat = time.monotonic()
            continue
        if time.monotonic() - beat >= settings.stream_keepalive_seconds:
            yield b": keep-alive\n\n"
            beat = time.monotonic()
        await asyncio.sleep(poll)

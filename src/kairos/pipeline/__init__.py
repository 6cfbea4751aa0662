"""The pipeline that turns the event log into derived state: projections, the processor, time.

Every kind of derived state is a :class:`Projection` (``kairos.profiles`` holds the first four: counters,
traits, consents, timeline); the :class:`Processor` applies the log to them through identity resolution,
with durable timers and an outbox; the :class:`Clock` is injected everywhere time is read.
"""

from __future__ import annotations

from kairos.pipeline.clock import Clock, ManualClock, SystemClock
from kairos.pipeline.processor import Processor, dedup_key
from kairos.pipeline.projection import Context, Entry, Event, ProfileState, Projection, Timer

__all__ = [
    "Clock",
    "Context",
    "Entry",
    "Event",
    "ManualClock",
    "Processor",
    "ProfileState",
    "Projection",
    "SystemClock",
    "Timer",
    "dedup_key",
]

"""Collect: the Segment-compatible way in. Validates each event and appends it to the durable log."""

from __future__ import annotations

from kairos.collect._body import Body, body_from_payload, decode_body
from kairos.collect._message import EVENT_TYPES, SHORT_PATHS, EventError, Message, validate
from kairos.collect.ingest import NewEvent, Prepared, iso, prepare

__all__ = [
    "EVENT_TYPES",
    "SHORT_PATHS",
    "Body",
    "EventError",
    "Message",
    "NewEvent",
    "Prepared",
    "body_from_payload",
    "decode_body",
    "iso",
    "prepare",
    "validate",
]

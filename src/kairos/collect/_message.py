"""The Segment Tracking API message, validated one event at a time.

Events are decoded untyped (so that every field the client sent is kept in the log) and then checked with
:func:`msgspec.convert` against :class:`Message`, which names the spec's fields and their types. The checks
the type system cannot express (which ids a type requires, sizes) follow in :func:`validate`.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, Final, Literal

import msgspec

__all__ = ["EVENT_TYPES", "SHORT_PATHS", "EventError", "EventType", "Message", "validate"]

EventType = Literal["identify", "track", "page", "screen", "group", "alias"]
EVENT_TYPES: Final[frozenset[str]] = frozenset(("identify", "track", "page", "screen", "group", "alias"))
# analytics.js' short paths: /v1/t, /v1/i, ... ("b" is batch).
SHORT_PATHS: Final[dict[str, str]] = {
    "t": "track",
    "i": "identify",
    "p": "page",
    "s": "screen",
    "g": "group",
    "a": "alias",
    "b": "batch",
}

TRAIT_KINDS: Final[frozenset[str]] = frozenset(("stated", "observed", "inferred", "third_party"))
Id = str | int  # Segment clients send numeric ids too; they are stored as the client sent them.


class Message(msgspec.Struct, kw_only=True):
    """Fields of the spec Kairos reads; others are kept in the log but not interpreted."""

    type: EventType | None = None
    messageId: str | None = None
    userId: Id | None = None
    anonymousId: Id | None = None
    previousId: Id | None = None
    groupId: Id | None = None
    event: str | None = None
    name: str | None = None
    category: str | None = None
    properties: dict[str, Any] | None = None
    traits: dict[str, Any] | None = None
    context: dict[str, Any] | None = None
    integrations: dict[str, Any] | None = None
    timestamp: datetime | None = None
    originalTimestamp: datetime | None = None
    sentAt: datetime | None = None
    writeKey: str | None = None


class EventError(msgspec.Struct):
    """Why one event of a request was rejected."""

    index: int
    code: str
    field: str | None
    message: str


_PATH = re.compile(r" - at `\$\.?([^`]*)`$")
MAX_ID_LENGTH: Final = 512
MAX_NAME_LENGTH: Final = 512


def _error(index: int, code: str, field: str | None, message: str) -> EventError:
    return EventError(index=index, code=code, field=field, message=message)


def _id_ok(value: Id | None) -> bool:
    if value is None:
        return False
    if isinstance(value, int):
        return True
    return 0 < len(value.strip()) <= MAX_ID_LENGTH


def validate(index: int, item: Any, type_: str | None) -> Message | EventError:
    """Check one decoded event; ``type_`` is the type the endpoint implies (``None`` in a batch)."""
    if not isinstance(item, dict):
        return _error(index, "invalid_type", None, "an event must be a JSON object")
    try:
        msg = msgspec.convert(item, Message, strict=False)
    except msgspec.ValidationError as exc:
        text = str(exc)
        found = _PATH.search(text)
        field = found.group(1) if found else None
        return _error(index, "invalid_field", field, _PATH.sub("", text))
    if type_ is not None:
        if msg.type is not None and msg.type != type_:
            return _error(index, "type_mismatch", "type", f"type {msg.type!r} sent to the {type_} endpoint")
        msg.type = type_  # type: ignore[assignment]  # endpoints are named after the event types
    if msg.type is None:
        return _error(index, "missing_field", "type", "type is required in a batch")
    for field in ("userId", "anonymousId", "previousId", "groupId"):
        value = getattr(msg, field)
        if value is not None and not _id_ok(value):
            return _error(index, "invalid_field", field, f"{field} must be 1 to {MAX_ID_LENGTH} characters")
    if msg.type == "alias":
        if msg.previousId is None:
            return _error(index, "missing_field", "previousId", "alias requires previousId")
        if msg.userId is None:
            return _error(index, "missing_field", "userId", "alias requires userId")
    elif msg.userId is None and msg.anonymousId is None:
        return _error(index, "missing_field", "userId", "userId or anonymousId is required")
    if msg.type == "track" and not (msg.event and msg.event.strip()):
        return _error(index, "missing_field", "event", "track requires a non-empty event name")
    if msg.type == "group" and msg.groupId is None:
        return _error(index, "missing_field", "groupId", "group requires groupId")
    for field in ("event", "name", "category"):
        value = getattr(msg, field)
        if value is not None and len(value) > MAX_NAME_LENGTH:
            return _error(index, "invalid_field", field, f"{field} is longer than {MAX_NAME_LENGTH} characters")
    kairos = (msg.context or {}).get("kairos")
    if kairos is not None:
        kind = kairos.get("trait_kind") if isinstance(kairos, dict) else None
        if not isinstance(kairos, dict) or (
            kind is not None and (not isinstance(kind, str) or kind not in TRAIT_KINDS)
        ):
            return _error(
                index,
                "invalid_field",
                "context.kairos.trait_kind",
                f"context.kairos must be an object whose trait_kind is one of {sorted(TRAIT_KINDS)}",
            )
    if msg.messageId is not None and not (0 < len(msg.messageId) <= 256):
        return _error(index, "invalid_field", "messageId", "messageId must be 1 to 256 characters")
    return msg

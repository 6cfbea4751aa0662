"""The Segment Tracking API message, validated one event at a time.

Each event arrives as the JSON bytes the client sent and is decoded straight into :class:`Message`, which
names the spec's fields and their types; the bytes themselves are what the log keeps, so fields outside the
spec are never lost. The checks the type system cannot express (which ids a type requires, sizes) follow
in :func:`validate`.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Final, Literal, final

import msgspec
from msgspec import UNSET, Meta, UnsetType

from kairos._numbers import first_path

__all__ = [
    "EVENT_TYPES",
    "SHORT_PATHS",
    "UNPAIRED",
    "EventError",
    "EventType",
    "Message",
    "check_message",
    "decode",
    "encode",
    "surrogate_path",
    "validate",
]

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
MAX_ID_LENGTH: Final = 512
MAX_NAME_LENGTH: Final = 512
MAX_MESSAGE_ID_LENGTH: Final = 256
# Segment clients send numeric ids too; they are stored as the client sent them. Lengths are checked
# while decoding; a blank id (only spaces) in validate().
Id = Annotated[str, Meta(min_length=1, max_length=MAX_ID_LENGTH)] | int
Name = Annotated[str, Meta(max_length=MAX_NAME_LENGTH)]


class Message(msgspec.Struct, kw_only=True):
    """Fields of the spec Kairos reads; others are kept in the log but not interpreted.

    ``UNSET`` tells a key the client did not send from one it sent as ``null``: an event that lacks only
    its ``type`` (implied by the endpoint) and holds none of the keys Kairos reserves is stored verbatim.
    """

    type: EventType | UnsetType | None = UNSET
    messageId: Annotated[str, Meta(min_length=1, max_length=MAX_MESSAGE_ID_LENGTH)] | None = None
    userId: Id | None = None
    anonymousId: Id | None = None
    previousId: Id | None = None
    groupId: Id | None = None
    event: Name | None = None
    name: Name | None = None
    category: Name | None = None
    properties: dict[str, Any] | None = None
    traits: dict[str, Any] | None = None
    context: dict[str, Any] | None = None
    integrations: dict[str, Any] | None = None
    timestamp: datetime | None = None
    originalTimestamp: datetime | None = None
    sentAt: datetime | None = None
    writeKey: str | UnsetType | None = UNSET
    # Reserved: Kairos used to write them into the log, and a client must not pass its own off as Kairos'.
    receivedAt: Any = UNSET
    kairos: Any = msgspec.field(default=UNSET, name="_kairos")
    # Not read, but sent by the common libraries: named so that their events stay on the fast path.
    channel: Any = UNSET
    version: Any = UNSET
    metadata: Any = msgspec.field(default=UNSET, name="_metadata")


class _Known(Message, forbid_unknown_fields=True):
    """A :class:`Message` with no key outside the struct: every byte of it was decoded, and so checked."""


@final  # so that `type(x) is EventError` narrows, for mypy: isinstance() is slow on Structs
class EventError(msgspec.Struct):
    """Why one event of a request was rejected."""

    index: int
    code: str
    field: str | None
    message: str


_PATH = re.compile(r" - at `\$\.?([^`]*)`$")
_ID_FIELDS: Final = ("userId", "anonymousId", "previousId", "groupId")
_DATES: Final = ("timestamp", "originalTimestamp", "sentAt")
_GOT = re.compile(r"got `(\w+)`$")
_JSON_KINDS: Final = {"int": "a number", "float": "a fractional number", "bool": "a boolean", "str": "a string"}
_LIMITS: Final = {
    **{f: f"{f} must be 1 to {MAX_ID_LENGTH} characters" for f in _ID_FIELDS},
    **{f: f"{f} is longer than {MAX_NAME_LENGTH} characters" for f in ("event", "name", "category")},
    "messageId": f"messageId must be 1 to {MAX_MESSAGE_ID_LENGTH} characters",
    **{f: f"{f} must be an ISO-8601 string (2026-03-01T12:00:00.000Z)" for f in _DATES},
}
UNPAIRED = "holds an unpaired UTF-16 surrogate (such as \\ud800), which is not valid Unicode"
_known = msgspec.json.Decoder(_Known)
_lenient = msgspec.json.Decoder(Message)
_untyped = msgspec.json.Decoder()
_encoder = msgspec.json.Encoder()


def _error(index: int, code: str, field: str | None, message: str) -> EventError:
    return EventError(index=index, code=code, field=field, message=message)


def decode(index: int, raw: bytes) -> Message | EventError:
    """Decode one event's JSON into a :class:`Message`, or say which field is wrong.

    A typed decode skips keys outside the struct without checking all of them (a number out of range,
    say), yet the log keeps them: an event that has any is decoded untyped as well, so that nothing is
    stored that the processor could not read back.
    """
    try:
        return _known.decode(raw)
    except (msgspec.ValidationError, RecursionError):
        pass  # a key outside the spec, or a real error: the slower path below tells them apart
    try:
        msg = _lenient.decode(raw)
        _untyped.decode(raw)  # the keys outside the struct, which the typed decode skipped
    except RecursionError:
        return _error(index, "too_deep", None, "event nests objects and lists too deeply")
    except msgspec.DecodeError as exc:  # ValidationError included
        text = str(exc)
        if text.startswith("Expected `object`, got"):
            return _error(index, "invalid_type", None, "an event must be a JSON object")
        found = _PATH.search(text)
        field = found.group(1) if found else None
        if field is None or field.startswith("["):  # an untyped decode names no key
            return _error(index, "invalid_field", None, _PATH.sub("", text))
        # A bad length, or anything but a date-time where one belongs, gets the field's own words; a wrong
        # scalar type is named; a container keeps msgspec's ("Expected `str | int | null`, got `array`").
        words = _PATH.sub("", text)
        found_kind = _GOT.search(words)
        kind = found_kind.group(1) if found_kind is not None else None
        if field in _LIMITS and (kind is None or field in _DATES):
            words = _LIMITS[field]
        elif field in _LIMITS and kind is not None and kind not in ("array", "object"):
            expected = "a string or an integer" if field in _ID_FIELDS else "a string"
            words = f"{field} must be {expected}, not {_JSON_KINDS.get(kind, kind)}"
        return _error(index, "invalid_field", field, words)
    return msg


def encode(index: int, value: Any) -> bytes | EventError:
    """Encode a decoded event (import, the demo, a rewrite), refusing what JSON text cannot hold."""
    try:
        return _encoder.encode(value)
    except RecursionError:
        return _error(index, "too_deep", None, "event nests objects and lists too deeply")
    except UnicodeEncodeError:
        where = surrogate_path(value)
        return _error(index, "invalid_field", where or None, f"{where or 'the event'} {UNPAIRED}")
    except (TypeError, ValueError) as exc:
        return _error(index, "invalid_field", None, f"event cannot be encoded as JSON: {exc}")


def validate(index: int, event: bytes | Any, type_: str | None) -> Message | EventError:
    """Check one event: its JSON, or (import, tests) the decoded value. ``type_`` is the type the endpoint
    implies (``None`` in a batch).

    The message is returned as sent: its ``type`` is unset (or null) when the endpoint implied it.
    """
    raw = event if type(event) is bytes else encode(index, event)
    if isinstance(raw, EventError):
        return raw
    msg = decode(index, raw)
    if isinstance(msg, EventError):
        return msg
    return check_message(index, msg, type_)


def check_message(index: int, msg: Message, type_: str | None) -> Message | EventError:
    """The checks of :func:`validate` that follow decoding: which ids the type requires, blank ids,
    ``context.kairos``. Returns ``msg`` unchanged when it passes."""
    etype: object = msg.type
    if type_ is not None:
        if isinstance(etype, str) and etype != type_:
            return _error(index, "type_mismatch", "type", f"type {etype!r} sent to the {type_} endpoint")
        etype = type_
    elif not isinstance(etype, str):
        return _error(index, "missing_field", "type", "type is required in a batch")
    user_id, anonymous_id = msg.userId, msg.anonymousId
    if (
        (type(user_id) is str and user_id.isspace())
        or (type(anonymous_id) is str and anonymous_id.isspace())
        or (msg.previousId is not None and _blank(msg.previousId))
        or (msg.groupId is not None and _blank(msg.groupId))
    ):
        field = next(f for f in _ID_FIELDS if _blank(getattr(msg, f)))
        return _error(index, "invalid_field", field, _LIMITS[field])
    if etype == "alias":
        if msg.previousId is None:
            return _error(index, "missing_field", "previousId", "alias requires previousId")
        if user_id is None:
            return _error(index, "missing_field", "userId", "alias requires userId")
    elif user_id is None and anonymous_id is None:
        return _error(index, "missing_field", "userId", "userId or anonymousId is required")
    elif etype == "track" and (not msg.event or msg.event.isspace()):
        return _error(index, "missing_field", "event", "track requires a non-empty event name")
    elif etype == "group" and msg.groupId is None:
        return _error(index, "missing_field", "groupId", "group requires groupId")
    kairos = msg.context.get("kairos") if msg.context is not None else None
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
    return msg


def _blank(value: object) -> bool:
    return isinstance(value, str) and value.isspace()


def surrogate_path(node: Any) -> str | None:
    """The dotted path of the first string (or key) holding an unpaired surrogate, ``""`` for the root."""
    return first_path(node, lambda v: isinstance(v, str) and not v.isascii() and _has_surrogate(v), _has_surrogate)


def _has_surrogate(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return True
    return False

"""Turn a collect request into log records: validate each event, decide its time, keep its bytes.

This module knows nothing of HTTP or storage; the API and ``kairos import`` both call :func:`prepare`.
Everything that makes processing deterministic is decided here, once, and stored in the log's columns:
the ``messageId`` (generated when missing), the time received and the skew-corrected event time. The
payload is the event as the client sent it, byte for byte, unless something in it must change: a key
Kairos reserves, a batch's ``context``/``integrations`` to merge in, or a ``type`` the endpoint implies.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
from msgspec import UNSET

from kairos._numbers import LONG_NUMBER, MESSAGE, first_path, out_of_range
from kairos.collect._body import Body, body_from_payload
from kairos.collect._message import EventError, check_message, decode, encode
from kairos.config import CollectSettings
from kairos.errors import ValidationError

__all__ = ["NewEvent", "Prepared", "epoch_ms", "iso", "prepare"]

_decoder = msgspec.json.Decoder()
# Keys a client may not set: Kairos stamps them (``_kairos`` and ``receivedAt`` in logs written before
# they became columns).
_RESERVED = ("writeKey", "receivedAt", "_kairos")


class NewEvent(msgspec.Struct, frozen=True, gc=False):
    """One validated event, ready to append to the log (a struct: a tenth of a frozen dataclass' cost)."""

    message_id: str
    received_at: int  # epoch milliseconds
    ts: int  # event time, epoch milliseconds, corrected for the client's clock skew
    trait_kind: str  # the source's trait kind: the strongest kind the event's traits may claim
    payload: bytes  # the event as JSON: as the client sent it unless it had to change


@dataclass(slots=True)
class Prepared:
    write_key: str | None
    events: list[NewEvent] = field(default_factory=list)
    errors: list[EventError] = field(default_factory=list)


_MIN_MS, _MAX_MS = -62135596800000, 253402300799999  # 0001-01-01 .. 9999-12-31T23:59:59.999


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NAIVE_EPOCH = datetime(1970, 1, 1)
_MS = timedelta(milliseconds=1)


def epoch_ms(value: datetime) -> int:
    """Exact milliseconds since the epoch (``timestamp() * 1000`` is a float and can land 1 ms short);
    a time without a zone is UTC."""
    if value.tzinfo is None:
        return (value - _NAIVE_EPOCH) // _MS
    return (value - _EPOCH) // _MS


def iso(ms: int) -> str:
    """RFC 3339 UTC with milliseconds (``2026-03-01T12:00:00.000Z``); per event, so kept cheap."""
    if not _MIN_MS <= ms <= _MAX_MS:
        raise OverflowError(f"{ms} ms is outside years 1-9999")
    secs, milli = divmod(ms, 1000)
    t = time.gmtime(secs)
    return f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}T{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}.{milli:03d}Z"


def prepare(
    payload: Body | Any,
    endpoint: str,
    received_at: datetime,
    limits: CollectSettings,
    *,
    trait_kind: str = "observed",
) -> Prepared:
    """Validate the events of one request and make their log records.

    ``payload`` is a :class:`Body` from :func:`decode_body`, or a decoded request (``kairos import``, the
    demo). ``endpoint`` is an event type or ``"batch"``. Invalid events land in ``errors`` with their
    index; the valid ones become ``events``, in request order.
    """
    body = payload if isinstance(payload, Body) else body_from_payload(payload, endpoint, limits)
    type_ = None if endpoint == "batch" else endpoint
    received_ms = epoch_ms(received_at)
    latest = received_ms + limits.max_future_seconds * 1000
    # Clock skew: the client's clock is off by (sentAt - receivedAt); its timestamps move back by it.
    skew = None if body.sent_at is None else epoch_ms(_batch_sent_at(body.sent_at)) - received_ms
    merge = body.context is not None or body.integrations is not None
    out = Prepared(write_key=body.write_key)
    events, errors = out.events, out.errors
    max_bytes = limits.max_event_bytes
    # Per event, so the common case (bytes as sent, valid, stored verbatim) runs as few calls as it can.
    for index, item in enumerate(body.items):
        if type(item) is bytes:
            raw = item
        else:
            encoded = encode(index, item)
            if isinstance(encoded, EventError):
                errors.append(encoded)
                continue
            raw = encoded
        # type() is, not isinstance(): a Struct's metaclass makes isinstance() take the slow path.
        msg = decode(index, raw)
        if type(msg) is not EventError:
            msg = check_message(index, msg, type_)
        if type(msg) is EventError:
            errors.append(msg)
            continue
        client_time = msg.timestamp or msg.originalTimestamp
        if client_time is None:
            ts = received_ms
        else:
            ts = epoch_ms(client_time)
            if msg.sentAt is not None:
                ts -= epoch_ms(msg.sentAt) - received_ms
            elif skew is not None:
                ts -= skew
            if not _MIN_MS <= ts <= _MAX_MS:
                errors.append(EventError(index, "invalid_field", "timestamp", "timestamp is out of range"))
                continue
            if ts > latest:  # from the future: the time received (collect.max_future_seconds)
                ts = received_ms
        # A key Kairos reserves is stripped before the event is stored.
        reserved = msg.writeKey is not UNSET or msg.receivedAt is not UNSET or msg.kairos is not UNSET
        if merge or msg.type is None or reserved:
            rewritten = _rewrite(index, raw, type_ or msg.type, body)
            if isinstance(rewritten, EventError):
                errors.append(rewritten)
                continue
            stored = rewritten
        elif msg.type is UNSET:
            stored = _with_type(raw, type_ or "")
        else:
            stored = raw
        # What _check can refuse is long, holds many brackets or an escape: tested inline, without a call. The
        # brackets counted as the bytes a translate() drops: one pass, where two count()s took 1.4 times as long.
        size = len(stored)
        suspicious = (
            size > max_bytes
            or size - len(stored.translate(None, b"{[")) > MAX_DEPTH
            or b"\\" in stored
            or LONG_NUMBER.search(stored) is not None
        )
        if suspicious and (error := _check(index, stored, limits)) is not None:
            errors.append(error)
            continue
        events.append(NewEvent(msg.messageId or f"kairos-{uuid.uuid4()}", received_ms, ts, trait_kind, stored))
    return out


def _batch_sent_at(value: Any) -> datetime:
    try:
        return msgspec.convert(value, datetime)
    except msgspec.ValidationError as exc:
        raise ValidationError(
            "sentAt of the batch must be an ISO-8601 string", code="invalid_field", field="sentAt"
        ) from exc


def _with_type(raw: bytes, type_: str) -> bytes:
    """The event with the type its endpoint implies put first: a splice, the rest stays as sent."""
    rest = raw[1:].lstrip()
    return b'{"type":"' + type_.encode() + (b'"' if rest[:1] == b"}" else b'",') + rest


def _rewrite(index: int, raw: bytes, type_: Any, body: Body) -> bytes | EventError:
    """The slow path: decode, drop the reserved keys, set the type, merge the batch's keys, encode."""
    event = _decoder.decode(raw)  # cannot fail: the event was just validated
    for key in _RESERVED:
        event.pop(key, None)
    event["type"] = type_
    _merge(body.context, event, "context")
    _merge(body.integrations, event, "integrations")
    return encode(index, event)


def _merge(top: dict[str, Any] | None, item: dict[str, Any], key: str) -> None:
    """Batch-level ``context``/``integrations`` apply to each item; the item's own keys win."""
    if top:
        own = item.get(key)
        item[key] = {**top, **own} if isinstance(own, dict) else dict(top)


def _depth(node: Any, limit: int) -> int:
    if limit < 0:
        return 1
    if isinstance(node, dict):
        return 1 + max((_depth(v, limit - 1) for v in node.values()), default=0)
    if isinstance(node, list):
        return 1 + max((_depth(v, limit - 1) for v in node), default=0)
    return 0


def _nul_path(node: Any) -> str | None:
    """The dotted path of the first string holding a NUL, or of the object holding such a key; None."""
    found = first_path(node, lambda v: isinstance(v, str) and "\x00" in v, lambda k: "\x00" in k)
    return None if found is None else found[:200]  # keys are the client's: as out_of_range cuts its path


MAX_DEPTH = 64


def _too_deep(index: int) -> EventError:
    return EventError(index, "too_deep", None, f"event nests objects and lists deeper than {MAX_DEPTH} levels")


def _check(index: int, payload: bytes, limits: CollectSettings) -> EventError | None:
    """Refuse what could not be stored or served back (size, depth, NUL, integers beyond 64 bits)."""
    if len(payload) > limits.max_event_bytes:
        return EventError(index, "too_large", None, f"event is larger than {limits.max_event_bytes} bytes")
    # The precise checks run only for suspicious events: nesting cannot be deeper than the number of
    # opening brackets, and a NUL always shows as the bytes \u0000, behind a backslash most events lack.
    if (
        payload.count(b"{") + payload.count(b"[") > MAX_DEPTH
        and _depth(_decoder.decode(payload), MAX_DEPTH) > MAX_DEPTH
    ):
        return _too_deep(index)
    # PostgreSQL text and jsonb cannot hold NUL, and no identifier or name legitimately has one.
    if b"\\" in payload and b"\\u0000" in payload and (nul := _nul_path(_decoder.decode(payload))) is not None:
        return EventError(
            index, "invalid_character", nul or None, f"{nul or 'the event'}: NUL characters (\\u0000) are not accepted"
        )
    if LONG_NUMBER.search(payload) is not None and (where := out_of_range(_decoder.decode(payload))) is not None:
        return EventError(index, "invalid_field", where or None, f"{where}: {MESSAGE}")
    return None

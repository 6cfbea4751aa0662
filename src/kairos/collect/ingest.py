"""Turn a collect request into log records: decode, check sizes, validate each event, normalize.

This module knows nothing of HTTP or storage; the API and ``kairos import`` both call :func:`prepare`.
Everything that makes processing deterministic is decided here, once, and written into the log:
the ``messageId`` (generated when missing), ``receivedAt``, and the skew-corrected ``timestamp``.
"""

from __future__ import annotations

import time
import uuid
import zlib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec

from kairos.collect._message import EventError, Message, validate
from kairos.config import CollectSettings
from kairos.errors import PayloadTooLarge, ValidationError

__all__ = ["NewEvent", "Prepared", "decode_body", "iso", "prepare"]

_decoder = msgspec.json.Decoder()
_encoder = msgspec.json.Encoder()
# Keys a client may not set: Kairos stamps them.
_RESERVED = ("writeKey", "receivedAt", "_kairos")


@dataclass(frozen=True, slots=True)
class NewEvent:
    """One validated, normalized event, ready to append to the log."""

    message_id: str
    received_at: int  # epoch milliseconds
    ts: int  # event time, epoch milliseconds, corrected for the client's clock skew
    trait_kind: str  # the source's trait kind: the strongest kind the event's traits may claim
    payload: bytes  # the event as JSON


@dataclass(slots=True)
class Prepared:
    write_key: str | None
    events: list[NewEvent] = field(default_factory=list)
    errors: list[EventError] = field(default_factory=list)


def decode_body(body: bytes, content_encoding: str | None, limits: CollectSettings) -> Any:
    """Gunzip (bounded, so a small bomb cannot expand past the limit) and decode JSON."""
    if len(body) > limits.max_request_bytes:
        raise PayloadTooLarge(f"request body is larger than {limits.max_request_bytes} bytes", field="body")
    encoding = (content_encoding or "").strip().lower()
    if encoding in ("gzip", "x-gzip", "deflate"):
        wbits = 16 + zlib.MAX_WBITS if encoding != "deflate" else zlib.MAX_WBITS
        inflater = zlib.decompressobj(wbits)
        try:
            body = inflater.decompress(body, limits.max_request_bytes + 1)
        except zlib.error as exc:
            raise ValidationError(f"body is not valid {encoding}: {exc}", code="invalid_encoding") from exc
        if len(body) > limits.max_request_bytes or inflater.unconsumed_tail:
            raise PayloadTooLarge(f"decompressed body is larger than {limits.max_request_bytes} bytes", field="body")
    elif encoding not in ("", "identity"):
        raise ValidationError(f"unsupported Content-Encoding {encoding!r}", code="invalid_encoding")
    if not body.strip():
        raise ValidationError("request body is empty", code="invalid_json", field="body")
    try:
        return _decoder.decode(body)
    except msgspec.DecodeError as exc:
        raise ValidationError(f"body is not valid JSON: {exc}", code="invalid_json", field="body") from exc
    except RecursionError as exc:
        raise ValidationError("body is nested too deeply", code="invalid_json", field="body") from exc


_MIN_MS, _MAX_MS = -62135596800000, 253402300799999  # 0001-01-01 .. 9999-12-31T23:59:59.999


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


def epoch_ms(value: datetime) -> int:
    """Exact milliseconds since the epoch (``timestamp() * 1000`` is a float and can land 1 ms short)."""
    return (_utc(value) - _EPOCH) // _MS


def iso(ms: int) -> str:
    """RFC 3339 UTC with milliseconds (``2026-03-01T12:00:00.000Z``); per event, so kept cheap."""
    if not _MIN_MS <= ms <= _MAX_MS:
        raise OverflowError(f"{ms} ms is outside years 1-9999")
    secs, milli = divmod(ms, 1000)
    t = time.gmtime(secs)
    return f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}T{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}.{milli:03d}Z"


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def _merge(top: Any, item: dict[str, Any], key: str) -> None:
    """Batch-level ``context``/``integrations`` apply to each item; the item's own keys win."""
    if isinstance(top, dict) and top:
        own = item.get(key)
        item[key] = {**top, **own} if isinstance(own, dict) else dict(top)


def prepare(
    payload: Any,
    endpoint: str,
    received_at: datetime,
    limits: CollectSettings,
    *,
    source: str = "",
    trait_kind: str = "observed",
) -> Prepared:
    """Validate and normalize the events of one request.

    ``endpoint`` is an event type or ``"batch"``. Invalid events land in ``errors`` with their index; the
    valid ones are normalized into ``events`` in request order.
    """
    if not isinstance(payload, dict):
        raise ValidationError("body must be a JSON object", code="invalid_json", field="body")
    if endpoint == "batch":
        items = payload.get("batch")
        if not isinstance(items, list):
            raise ValidationError("batch must be a list of events", code="invalid_field", field="batch")
        if len(items) > limits.max_batch_items:
            raise PayloadTooLarge(f"batch holds more than {limits.max_batch_items} events", field="batch")
        type_: str | None = None
    else:
        items = [payload]
        type_ = endpoint
    top_sent_at = payload.get("sentAt") if endpoint == "batch" else None
    out = Prepared(write_key=body_write_key(payload))
    received_ms = epoch_ms(received_at)
    stamp = {"source": source, "trait_kind": trait_kind}
    received_iso = iso(received_ms)
    for index, item in enumerate(items):
        if endpoint == "batch" and isinstance(item, dict):
            _merge(payload.get("context"), item, "context")
            _merge(payload.get("integrations"), item, "integrations")
            if top_sent_at is not None and "sentAt" not in item:
                item["sentAt"] = top_sent_at
        checked = validate(index, item, type_)
        if isinstance(checked, EventError):
            out.errors.append(checked)
            continue
        try:
            event, ts = _normalize(item, checked, received_at, received_iso, stamp)
        except (OverflowError, ValueError, OSError):
            out.errors.append(EventError(index, "invalid_field", "timestamp", "timestamp is out of range"))
            continue
        error = _check_encoded(index, event, limits)
        if isinstance(error, EventError):
            out.errors.append(error)
            continue
        out.events.append(NewEvent(event["messageId"], received_ms, ts, trait_kind, error))
    return out


def body_write_key(payload: Any) -> str | None:
    """The write key sent in the body: top level, or on the items of a batch (some clients do that)."""
    if not isinstance(payload, dict):
        return None
    key = payload.get("writeKey")
    if key is not None and not isinstance(key, str):
        raise ValidationError("writeKey must be a string", code="invalid_field", field="writeKey")
    if key:
        return key
    items = payload.get("batch")
    if isinstance(items, list):
        for item in items:
            if isinstance(item, dict) and isinstance(item.get("writeKey"), str) and item["writeKey"]:
                return str(item["writeKey"])
    return None


def _depth(node: Any, limit: int) -> int:
    if limit < 0:
        return 1
    if isinstance(node, dict):
        return 1 + max((_depth(v, limit - 1) for v in node.values()), default=0)
    if isinstance(node, list):
        return 1 + max((_depth(v, limit - 1) for v in node), default=0)
    return 0


def _has_nul(node: Any) -> bool:
    if isinstance(node, str):
        return "\x00" in node
    if isinstance(node, dict):
        return any("\x00" in k or _has_nul(v) for k, v in node.items())
    if isinstance(node, list):
        return any(_has_nul(v) for v in node)
    return False


MAX_DEPTH = 64


def _check_encoded(index: int, event: dict[str, Any], limits: CollectSettings) -> bytes | EventError:
    """Encode one event and refuse what could not be stored or served back (size, depth, NUL)."""
    too_deep = EventError(index, "too_deep", None, f"event nests objects and lists deeper than {MAX_DEPTH} levels")
    try:
        encoded = _encoder.encode(event)
    except RecursionError:
        return too_deep
    if len(encoded) > limits.max_event_bytes:
        return EventError(index, "too_large", None, f"event is larger than {limits.max_event_bytes} bytes")
    # The precise checks run only for suspicious events: nesting cannot be deeper than the number of
    # opening brackets, and a NUL always shows as the bytes \u0000 in the encoding.
    if encoded.count(b"{") + encoded.count(b"[") > MAX_DEPTH and _depth(event, MAX_DEPTH) > MAX_DEPTH:
        return too_deep
    # PostgreSQL text and jsonb cannot hold NUL, and no identifier or name legitimately has one.
    if b"\\u0000" in encoded and _has_nul(event):
        return EventError(index, "invalid_character", None, "NUL characters (\\u0000) are not accepted")
    return encoded


def _normalize(
    item: dict[str, Any], msg: Message, received_at: datetime, received_iso: str, stamp: dict[str, str]
) -> tuple[dict[str, Any], int]:
    event = dict(item)
    for key in _RESERVED:
        event.pop(key, None)
    event["type"] = msg.type
    if msg.messageId is None:
        event["messageId"] = f"kairos-{uuid.uuid4()}"
    # Clock skew: the client's clock is off by (sentAt - receivedAt); its timestamps are shifted back by it.
    client_time = msg.timestamp or msg.originalTimestamp
    if client_time is None:
        corrected = received_at
    elif msg.sentAt is not None:
        corrected = received_at - (_utc(msg.sentAt) - _utc(client_time))
    else:
        corrected = _utc(client_time)
    if client_time is not None:
        event["originalTimestamp"] = item.get("timestamp", item.get("originalTimestamp"))
    ts = epoch_ms(corrected)
    event["timestamp"] = iso(ts)
    event["receivedAt"] = received_iso
    event["_kairos"] = stamp
    return event, ts

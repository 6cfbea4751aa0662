"""A collect request's body: inflated, checked to be UTF-8 JSON, and split into its events' raw bytes.

The events are not decoded here. Each keeps the bytes the client sent, so that :func:`kairos.collect.prepare`
decodes it straight into a typed message and stores it as it came when nothing about it must change.
"""

from __future__ import annotations

import json
import re
import zlib
from dataclasses import dataclass
from typing import Any

import msgspec

from kairos.collect._message import UNPAIRED, surrogate_path
from kairos.config import CollectSettings
from kairos.errors import PayloadTooLarge, ValidationError

__all__ = ["Body", "body_from_payload", "decode_body", "inflate"]


@dataclass(slots=True)
class Body:
    """One request, its events not decoded yet."""

    # Each event's JSON as the client sent it; from import, demo and the tolerant path below, a decoded value.
    items: list[Any]
    write_key: str | None = None
    sent_at: Any = None  # a batch's own sentAt: the clock of the items that carry none
    context: dict[str, Any] | None = None  # a batch's context and integrations, merged into each item
    integrations: dict[str, Any] | None = None


class _Batch(msgspec.Struct):
    batch: list[msgspec.Raw] | None = None
    writeKey: Any = None
    sentAt: Any = None
    context: Any = None
    integrations: Any = None


class _Single(msgspec.Struct):
    writeKey: Any = None


_batch = msgspec.json.Decoder(_Batch)
_single = msgspec.json.Decoder(_Single)
# A JSON escape of a UTF-16 surrogate (paired or not): msgspec's error then says "Input data was truncated".
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def inflate(body: bytes, content_encoding: str | None, limits: CollectSettings) -> bytes:
    """Gunzip (bounded, so a small bomb cannot expand past the limit) and refuse empty bodies."""
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
        if not inflater.eof:  # the stream stops before its end: cut in transit, or never finished
            raise ValidationError(f"body is not valid {encoding}: the stream is truncated", code="invalid_encoding")
    elif encoding not in ("", "identity"):
        raise ValidationError(f"unsupported Content-Encoding {encoding!r}", code="invalid_encoding")
    if not body.strip():
        raise ValidationError("request body is empty", code="invalid_json", field="body")
    return body


def decode_body(body: bytes, content_encoding: str | None, endpoint: str, limits: CollectSettings) -> Body:
    """Inflate a request body and split it into events (``endpoint``: an event type or ``"batch"``)."""
    body = inflate(body, content_encoding, limits)
    # JSON text is UTF-8 (RFC 8259). msgspec checks the strings it decodes, but not the ones it skips, and
    # the events are stored as sent: the whole body is checked once (ASCII, the common case, at memory speed).
    if not body.isascii():
        try:
            body.decode()
        except UnicodeDecodeError as exc:
            raise ValidationError(
                f"body is not valid UTF-8 (byte {exc.start}: {exc.reason})", code="invalid_json", field="body"
            ) from exc
    try:
        if endpoint != "batch":
            single = _single.decode(body)
            return Body([body.strip()], _write_key(single.writeKey))
        envelope = _batch.decode(body)
    except msgspec.ValidationError as exc:
        raise _shape_error(str(exc)) from exc
    except msgspec.DecodeError as exc:
        return _tolerant(body, endpoint, limits, exc)
    except RecursionError as exc:
        raise ValidationError("body is nested too deeply", code="invalid_json", field="body") from exc
    if envelope.batch is None:
        raise ValidationError("batch must be a list of events", code="invalid_field", field="batch")
    if len(envelope.batch) > limits.max_batch_items:
        raise PayloadTooLarge(f"batch holds more than {limits.max_batch_items} events", field="batch")
    items = [bytes(raw) for raw in envelope.batch]
    key = _write_key(envelope.writeKey)
    if not key and b'"writeKey"' in body:
        key = _item_write_key(items)
    return Body(items, key, envelope.sentAt, _object(envelope.context), _object(envelope.integrations))


def body_from_payload(payload: Any, endpoint: str, limits: CollectSettings) -> Body:
    """A body already decoded (``kairos import``, the demo, tests): the same checks as :func:`decode_body`."""
    if not isinstance(payload, dict):
        raise ValidationError("body must be a JSON object", code="invalid_json", field="body")
    if endpoint != "batch":
        return Body([payload], _write_key(payload.get("writeKey")))
    items = payload.get("batch")
    if not isinstance(items, list):
        raise ValidationError("batch must be a list of events", code="invalid_field", field="batch")
    if len(items) > limits.max_batch_items:
        raise PayloadTooLarge(f"batch holds more than {limits.max_batch_items} events", field="batch")
    return Body(
        list(items),
        _write_key(payload.get("writeKey")) or _item_write_key(items),
        payload.get("sentAt"),
        _object(payload.get("context")),
        _object(payload.get("integrations")),
    )


def _write_key(value: Any) -> str | None:
    if value is not None and not isinstance(value, str):
        raise ValidationError("writeKey must be a string", code="invalid_field", field="writeKey")
    return value or None


def _item_write_key(items: list[Any]) -> str | None:
    """Some clients put the write key on the items of a batch instead of the batch."""
    for item in items:
        if isinstance(item, bytes):
            try:
                item = {"writeKey": _single.decode(item).writeKey}
            except (msgspec.DecodeError, RecursionError):
                continue  # the event's own error is reported when it is validated
        if isinstance(item, dict) and isinstance(item.get("writeKey"), str) and item["writeKey"]:
            return str(item["writeKey"])
    return None


def _object(value: Any) -> dict[str, Any] | None:
    return value if isinstance(value, dict) and value else None


def _shape_error(text: str) -> ValidationError:
    if text.startswith("Expected `object`") and " - at `$" not in text:
        return ValidationError("body must be a JSON object", code="invalid_json", field="body")
    if "`$.batch" in text:
        return ValidationError("batch must be a list of events", code="invalid_field", field="batch")
    return ValidationError(f"body is not valid JSON: {text}", code="invalid_json", field="body")


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _tolerant(body: bytes, endpoint: str, limits: CollectSettings, exc: msgspec.DecodeError) -> Body:
    """msgspec refuses a string holding an unpaired surrogate (``"\\ud800"``) with a misleading "Input data
    was truncated", for the whole body. Python's json accepts it: decoded so, the events that hold one are
    told apart (each gets its error when it is encoded) and the others are kept."""
    invalid = ValidationError(f"body is not valid JSON: {exc}", code="invalid_json", field="body")
    if not _SURROGATE_ESCAPE.search(body):
        raise invalid from exc
    try:
        payload = json.loads(body, parse_constant=_refuse_constant)
    except (ValueError, RecursionError):
        raise invalid from exc
    outside = {k: v for k, v in payload.items() if k != "batch"} if isinstance(payload, dict) else None
    where = surrogate_path(outside) if endpoint == "batch" else None
    if where is not None:
        raise ValidationError(f"{where or 'body'} {UNPAIRED}", code="invalid_json", field=where or "body")
    return body_from_payload(payload, endpoint, limits)

"""Collect: per-event validation, normalization, limits (no HTTP here; see test_api and e2e)."""

from __future__ import annotations

import gzip
from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest

from kairos.collect import decode_body, prepare
from kairos.config import CollectSettings
from kairos.errors import PayloadTooLarge, ValidationError

LIMITS = CollectSettings()
NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


def run(payload: Any, endpoint: str = "batch") -> Any:
    return prepare(payload, endpoint, NOW, LIMITS, source="web")


def decoded(result: Any, i: int = 0) -> dict[str, Any]:
    out: dict[str, Any] = msgspec.json.decode(result.events[i].payload)
    return out


@pytest.mark.parametrize(
    ("event", "code", "field"),
    [
        ({"type": "track", "userId": "u"}, "missing_field", "event"),
        ({"type": "track", "event": "X"}, "missing_field", "userId"),
        ({"type": "alias", "userId": "u"}, "missing_field", "previousId"),
        ({"type": "alias", "previousId": "p"}, "missing_field", "userId"),
        ({"type": "group", "userId": "u"}, "missing_field", "groupId"),
        ({"type": "nope", "userId": "u"}, "invalid_field", "type"),
        ({"userId": "u"}, "missing_field", "type"),
        ({"type": "identify", "userId": ["u"]}, "invalid_field", "userId"),
        ({"type": "identify", "userId": True}, "invalid_field", "userId"),
        ({"type": "identify", "userId": "u", "traits": "x"}, "invalid_field", "traits"),
        ({"type": "identify", "userId": "u", "context": []}, "invalid_field", "context"),
        ({"type": "identify", "userId": "u", "timestamp": "yesterday"}, "invalid_field", "timestamp"),
        ({"type": "identify", "userId": "   "}, "invalid_field", "userId"),
        ({"type": "identify", "userId": "x" * 513}, "invalid_field", "userId"),
        ({"type": "identify", "userId": "u", "messageId": ""}, "invalid_field", "messageId"),
        ({"type": "track", "userId": "u", "event": "e" * 600}, "invalid_field", "event"),
        (
            {"type": "identify", "userId": "u", "context": {"kairos": {"trait_kind": "made_up"}}},
            "invalid_field",
            "context.kairos.trait_kind",
        ),
        ("not an object", "invalid_type", None),
    ],
)
def test_invalid_event_is_rejected_with_index_code_field(event: Any, code: str, field: str | None) -> None:
    good = {"type": "identify", "userId": "ok"}
    result = run({"batch": [good, event, good]})
    assert len(result.events) == 2
    [error] = result.errors
    assert (error.index, error.code, error.field) == (1, code, field)
    assert error.message


def test_type_from_endpoint_and_mismatch() -> None:
    assert len(run({"userId": "u", "event": "E"}, "track").events) == 1
    [error] = run({"type": "identify", "userId": "u"}, "track").errors
    assert (error.code, error.field) == ("type_mismatch", "type")


def test_batch_context_and_integrations_merge_into_items() -> None:
    result = run(
        {
            "context": {"library": {"name": "x"}, "ip": "1.2.3.4"},
            "integrations": {"All": False},
            "batch": [{"type": "identify", "userId": "u", "context": {"ip": "5.6.7.8"}}],
        }
    )
    event = decoded(result)
    assert event["context"] == {"library": {"name": "x"}, "ip": "5.6.7.8"}
    assert event["integrations"] == {"All": False}


def test_clock_skew_is_corrected_from_sent_at() -> None:
    # The client clock is one hour fast: sentAt 13:00 while the server receives at 12:00.
    result = run(
        {
            "sentAt": "2026-03-01T13:00:00Z",
            "batch": [{"type": "identify", "userId": "u", "timestamp": "2026-03-01T12:59:50Z"}],
        }
    )
    event = decoded(result)
    assert event["timestamp"] == "2026-03-01T11:59:50.000Z"
    assert event["originalTimestamp"] == "2026-03-01T12:59:50Z"
    assert event["receivedAt"] == "2026-03-01T12:00:00.000Z"


def test_timestamp_defaults_to_received_at_and_naive_times_are_utc() -> None:
    assert decoded(run({"userId": "u"}, "identify"))["timestamp"] == "2026-03-01T12:00:00.000Z"
    event = decoded(run({"userId": "u", "timestamp": "2026-02-01T08:00:00"}, "identify"))
    assert event["timestamp"] == "2026-02-01T08:00:00.000Z"


def test_message_id_generated_and_reserved_keys_stripped() -> None:
    result = run(
        {
            "userId": "u",
            "writeKey": "secret",
            "receivedAt": "2020-01-01T00:00:00Z",
            "_kairos": {"source": "forged"},
            "extra": {"kept": True},
        },
        "identify",
    )
    event = decoded(result)
    assert "writeKey" not in event and event["receivedAt"] == "2026-03-01T12:00:00.000Z"
    assert event["_kairos"]["source"] == "web"
    assert event["extra"] == {"kept": True}  # fields outside the spec are kept, not lost
    assert result.events[0].message_id.startswith("kairos-")
    assert result.write_key == "secret"


def test_event_size_limit() -> None:
    big = {"type": "track", "userId": "u", "event": "E", "properties": {"blob": "x" * 40_000}}
    result = run({"batch": [big, {"type": "identify", "userId": "u"}]})
    assert [e.code for e in result.errors] == ["too_large"]
    assert len(result.events) == 1


def test_batch_item_limit() -> None:
    with pytest.raises(PayloadTooLarge):
        run({"batch": [{"type": "identify", "userId": "u"}] * (LIMITS.max_batch_items + 1)})


@pytest.mark.parametrize(
    ("payload", "field"),
    [([], "body"), ({"batch": "x"}, "batch"), ({"batch": [], "writeKey": 5}, "writeKey")],
)
def test_malformed_request_shapes(payload: Any, field: str) -> None:
    with pytest.raises(ValidationError) as info:
        run(payload)
    assert info.value.field == field


def test_decode_body_gzip_plain_and_errors() -> None:
    body = b'{"userId": "u"}'
    assert decode_body(gzip.compress(body), "gzip", LIMITS) == {"userId": "u"}
    assert decode_body(body, None, LIMITS) == {"userId": "u"}
    with pytest.raises(ValidationError, match="not valid JSON"):
        decode_body(b"{nope", None, LIMITS)
    with pytest.raises(ValidationError, match="empty"):
        decode_body(b"  ", None, LIMITS)
    with pytest.raises(ValidationError, match="gzip"):
        decode_body(b"not gzip", "gzip", LIMITS)
    with pytest.raises(ValidationError, match="Content-Encoding"):
        decode_body(body, "br", LIMITS)


def test_gzip_bomb_is_refused_without_inflating_it_all() -> None:
    bomb = gzip.compress(b"[" + b" " * 50_000_000 + b"]")
    assert len(bomb) < LIMITS.max_request_bytes
    with pytest.raises(PayloadTooLarge):
        decode_body(bomb, "gzip", LIMITS)


def test_deeply_nested_json_is_a_clean_error_or_value() -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    with pytest.raises(ValidationError):
        decode_body(deep, None, CollectSettings(max_request_bytes=1_000_000))


def test_timestamps_keep_exact_milliseconds() -> None:
    # A date where float seconds * 1000 truncates to one millisecond less.
    event = decoded(run({"userId": "u", "timestamp": "6398-07-14T18:14:24.291Z"}, "identify"))
    assert event["timestamp"] == "6398-07-14T18:14:24.291Z"

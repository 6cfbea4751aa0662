"""Collect: per-event validation, the stored payload, limits (no HTTP here; see test_api and e2e)."""

from __future__ import annotations

import gzip
from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest

from kairos.collect import Prepared, decode_body, iso, prepare
from kairos.config import CollectSettings
from kairos.errors import PayloadTooLarge, ValidationError

LIMITS = CollectSettings()
NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
NOW_MS = 1772366400000


def run(payload: Any, endpoint: str = "batch") -> Prepared:
    """Through the HTTP path: the payload encoded, then split and validated from its bytes."""
    body = payload if isinstance(payload, bytes) else msgspec.json.encode(payload)
    return prepare(decode_body(body, None, endpoint, LIMITS), endpoint, NOW, LIMITS)


def run_decoded(payload: Any, endpoint: str = "batch") -> Prepared:
    """Through the path of import and the demo: an already decoded request."""
    return prepare(payload, endpoint, NOW, LIMITS)


def decoded(result: Prepared, i: int = 0) -> dict[str, Any]:
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
        # msgspec would read a number as seconds since 1970; a client that sends one meant something else.
        ({"type": "identify", "userId": "u", "timestamp": 12345}, "invalid_field", "timestamp"),
        ({"type": "identify", "userId": "u", "sentAt": 12345}, "invalid_field", "sentAt"),
        ({"type": "identify", "userId": "u", "originalTimestamp": 1.5}, "invalid_field", "originalTimestamp"),
        ({"type": "identify", "userId": "u", "messageId": "m" * 257}, "invalid_field", "messageId"),
        ({"type": "identify", "anonymousId": "a", "groupId": " "}, "invalid_field", "groupId"),
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
@pytest.mark.parametrize("path", [run, run_decoded])
def test_invalid_event_is_rejected_with_index_code_field(path: Any, event: Any, code: str, field: str | None) -> None:
    good = {"type": "identify", "userId": "ok"}
    result = path({"batch": [good, event, good]})
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


def test_an_event_that_needs_no_change_is_stored_byte_for_byte() -> None:
    item = b'{"type":"track", "userId":"u","event":"E",  "properties":{"price":1.50,"n":1e3},"zz":[1, 2]}'
    body = b'{"sentAt":"2026-03-01T12:00:00Z","batch":[' + item + b' , {"type":"identify","userId":"v"}]}'
    result = run(body)
    assert result.errors == []
    assert result.events[0].payload == item  # whitespace, number spellings and unknown keys as sent
    assert result.events[1].payload == b'{"type":"identify","userId":"v"}'


def test_single_event_gets_the_endpoints_type_and_keeps_the_rest() -> None:
    assert run(b' {"userId": "u", "event": "E"}\n', "track").events[0].payload == (
        b'{"type":"track","userId": "u", "event": "E"}'
    )
    same = b'{"type":"track","userId":"u","event":"E"}'
    assert run(same, "track").events[0].payload == same
    # "type": null takes the slow path; the result says what the endpoint implies.
    assert decoded(run({"type": None, "userId": "u", "event": "E"}, "track"))["type"] == "track"


def test_clock_skew_is_corrected_from_sent_at() -> None:
    # The client clock is one hour fast: sentAt 13:00 while the server receives at 12:00.
    for body in (
        {
            "sentAt": "2026-03-01T13:00:00Z",
            "batch": [{"type": "identify", "userId": "u", "timestamp": "2026-03-01T12:59:50Z"}],
        },
        {
            "batch": [
                {
                    "type": "identify",
                    "userId": "u",
                    "timestamp": "2026-03-01T12:59:50Z",
                    "sentAt": "2026-03-01T13:00:00Z",
                }
            ]
        },
    ):
        [event] = run(body).events
        assert iso(event.ts) == "2026-03-01T11:59:50.000Z"
        assert event.received_at == NOW_MS
        # The payload keeps the client's own times; Kairos' decisions are columns.
        assert decoded(run(body))["timestamp"] == "2026-03-01T12:59:50Z"
        assert "receivedAt" not in decoded(run(body))


def test_an_invalid_batch_sent_at_is_a_request_error() -> None:
    with pytest.raises(ValidationError) as info:
        run({"sentAt": 5, "batch": [{"type": "identify", "userId": "u"}]})
    assert info.value.field == "sentAt"


def test_timestamp_defaults_to_received_at_and_naive_times_are_utc() -> None:
    assert run({"userId": "u"}, "identify").events[0].ts == NOW_MS
    event = run({"userId": "u", "originalTimestamp": "2026-02-01T08:00:00"}, "identify").events[0]
    assert iso(event.ts) == "2026-02-01T08:00:00.000Z"


@pytest.mark.parametrize("path", [run, run_decoded])
def test_message_id_generated_and_reserved_keys_stripped(path: Any) -> None:
    result = path(
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
    assert event == {"userId": "u", "extra": {"kept": True}, "type": "identify"}  # outside the spec: kept
    assert result.events[0].message_id.startswith("kairos-")
    assert result.events[0].received_at == NOW_MS
    assert result.write_key == "secret"


def test_import_path_stores_what_the_http_path_stores() -> None:
    batch = {"batch": [{"type": "track", "userId": "u", "event": "E", "messageId": "m1", "properties": {"a": [1]}}]}
    assert [e.payload for e in run(batch).events] == [e.payload for e in run_decoded(batch).events]
    assert run(batch).events[0].message_id == "m1"


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
    assert decode_body(gzip.compress(body), "gzip", "track", LIMITS).items == [body]
    assert decode_body(body, None, "track", LIMITS).items == [body]
    with pytest.raises(ValidationError, match="not valid JSON"):
        decode_body(b"{nope", None, "track", LIMITS)
    with pytest.raises(ValidationError, match="empty"):
        decode_body(b"  ", None, "track", LIMITS)
    with pytest.raises(ValidationError, match="gzip"):
        decode_body(b"not gzip", "gzip", "track", LIMITS)
    with pytest.raises(ValidationError, match="Content-Encoding"):
        decode_body(body, "br", "track", LIMITS)
    for cut in (5, 12, len(gzip.compress(body)) - 4):  # a stream cut in transit: said so, not "empty"
        with pytest.raises(ValidationError, match="truncated") as caught:
            decode_body(gzip.compress(body)[:cut], "gzip", "track", LIMITS)
        assert caught.value.code == "invalid_encoding"


@pytest.mark.parametrize("endpoint", ["track", "batch"])
@pytest.mark.parametrize(
    "body",
    [
        b'{"userId": "\xff", "event": "e"}',  # not UTF-8 at all
        b'{"userId": "\xed\xa0\x80", "event": "e"}',  # a surrogate encoded as UTF-8 (CESU-8)
        # A truncated sequence in a key a typed decode skips.
        b'{"batch": [{"type": "track", "userId": "u", "event": "e", "x": "\xc3"}]}',
    ],
)
def test_body_that_is_not_utf8_is_invalid_json(body: bytes, endpoint: str) -> None:
    with pytest.raises(ValidationError) as info:
        decode_body(body, None, endpoint, LIMITS)
    assert (info.value.code, info.value.field) == ("invalid_json", "body")
    assert "UTF-8" in info.value.message


def test_lone_surrogate_is_a_per_event_error_and_the_others_are_kept() -> None:
    good = b'{"type": "track", "userId": "u", "event": "e"}'
    bad = b'{"type": "track", "userId": "u", "event": "e", "properties": {"name": "x\\ud800y"}}'
    result = run(b'{"batch": [' + good + b", " + bad + b"]}")
    assert len(result.events) == 1
    [error] = result.errors
    assert (error.index, error.code, error.field) == (1, "invalid_field", "properties.name")
    assert "unpaired" in error.message and "truncated" not in error.message
    [error] = run(b'{"userId": "\\udc00", "event": "e"}', "track").errors
    assert (error.index, error.field) == (0, "userId")
    # A paired surrogate is a character like any other.
    assert run(b'{"userId": "\\ud83d\\ude00", "event": "e"}', "track").errors == []


def test_lone_surrogate_outside_the_events_is_a_request_error() -> None:
    with pytest.raises(ValidationError) as info:
        run(b'{"context": {"ip": "\\ud800"}, "batch": [{"type": "track", "userId": "u", "event": "e"}]}')
    assert (info.value.code, info.value.field) == ("invalid_json", "context.ip")
    assert "unpaired" in info.value.message


def test_lone_surrogate_in_a_decoded_request_is_a_per_event_error() -> None:
    [error] = run_decoded({"userId": "u", "event": "\ud800"}, "track").errors
    assert (error.code, error.field) == ("invalid_field", "event")


def test_truncated_json_is_still_reported_as_such() -> None:
    with pytest.raises(ValidationError, match="truncated"):
        decode_body(b'{"batch": [{"type": "track"', None, "batch", LIMITS)


def test_number_out_of_range_outside_the_spec_is_refused_not_stored() -> None:
    good = b'{"type": "identify", "userId": "u"}'
    for bad in (
        b'{"type": "identify", "userId": "u", "x": 1e999}',
        b'{"type": "identify", "userId": "u", "x": {"n": 1e999}}',
    ):
        result = run(b'{"batch": [' + good + b", " + bad + b"]}")
        assert len(result.events) == 1
        assert [(e.index, e.code) for e in result.errors] == [(1, "invalid_field")]


def test_nul_and_depth_are_refused_wherever_they_are() -> None:
    deep = b"[" * 70 + b"]" * 70
    items = [b'"a\\u0000"', deep, b'"a\\\\u0000 is fine"']
    batch = b'{"batch": [%s]}' % b", ".join(b'{"type": "identify", "userId": "u", "x": %s}' % x for x in items)
    result = run(batch)
    assert [(e.index, e.code) for e in result.errors] == [(0, "invalid_character"), (1, "too_deep")]
    assert len(result.events) == 1
    # The error names where the NUL is: a field, or the object holding a key with one.
    for body, field in ((b'{"type": "track", "userId": "u", "event": "X\\u0000"}', "event"),
                        (b'{"type": "track", "userId": "u", "event": "X", "properties": {"a": ["b\\u0000"]}}',
                         "properties.a[0]"),
                        (b'{"type": "track", "userId": "u", "event": "X", "properties": {"k\\u0000": 1}}',
                         "properties")):  # fmt: skip
        [error] = run(b'{"batch": [%s]}' % body).errors
        assert (error.code, error.field) == ("invalid_character", field), error
        assert error.message.startswith(f"{field}: NUL"), error
    long_keys = {"type": "track", "userId": "u", "event": "X", "properties": {"k" * 300: {"j" * 300: "a\x00"}}}
    [error] = run({"batch": [long_keys]}).errors
    assert error.code == "invalid_character" and error.field is not None and len(error.field) == 200, error


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [("event", 1, "event must be a string, not a number"), ("name", True, "name must be a string, not a boolean"),
     ("userId", True, "userId must be a string or an integer, not a boolean"),
     ("userId", 1.5, "userId must be a string or an integer, not a fractional number"),
     ("messageId", 7, "messageId must be a string, not a number"),
     ("event", "e" * 600, "event is longer than 512 characters")],
)  # fmt: skip
def test_a_wrong_type_is_named_as_such_not_as_a_bad_length(field: str, value: Any, words: str) -> None:
    """A number where the event name belongs was "event is longer than 512 characters"."""
    event = {"type": "track", "userId": "u", "event": "X", field: value}
    [error] = run({"batch": [event]}).errors
    assert (error.code, error.field, error.message) == ("invalid_field", field, words)


def test_gzip_bomb_is_refused_without_inflating_it_all() -> None:
    bomb = gzip.compress(b"[" + b" " * 50_000_000 + b"]")
    assert len(bomb) < LIMITS.max_request_bytes
    with pytest.raises(PayloadTooLarge):
        decode_body(bomb, "gzip", "batch", LIMITS)


@pytest.mark.parametrize("endpoint", ["track", "batch"])
def test_deeply_nested_json_is_a_clean_error_or_value(endpoint: str) -> None:
    for deep in (b"[" * 100_000 + b"]" * 100_000, b'{"batch": [' + b"[" * 100_000 + b"]" * 100_000 + b"]}"):
        with pytest.raises(ValidationError):
            decode_body(deep, None, endpoint, CollectSettings(max_request_bytes=1_000_000))


def test_timestamps_keep_exact_milliseconds() -> None:
    # A date where float seconds * 1000 truncates to one millisecond less.
    [event] = run({"userId": "u", "timestamp": "2004-10-28T23:41:18.916Z"}, "identify").events
    assert iso(event.ts) == "2004-10-28T23:41:18.916Z"


def test_an_event_time_from_the_future_is_the_time_received() -> None:
    """A consent granted "in 9999" beat every later withdrawal, ordered by event time (found by a trial)."""
    body = {"userId": "u", "timestamp": "9999-12-31T23:59:59Z"}
    [event] = run(body, "identify").events
    assert event.ts == event.received_at
    assert b"9999-12-31T23:59:59Z" in event.payload  # kept as sent
    soon = iso(event.received_at + 299_000)  # within collect.max_future_seconds: a clock a little ahead
    [near] = run({"userId": "u", "timestamp": soon}, "identify").events
    assert near.ts == event.received_at + 299_000
    # With the batch's sentAt, skew is corrected first: a client whose clock is a year ahead keeps its order.
    ahead = {"batch": [{"type": "identify", "userId": "u", "timestamp": "2027-11-25T00:00:00Z"}],
             "sentAt": "2027-11-25T00:00:10Z"}  # fmt: skip
    [skewed] = run(ahead).events
    assert skewed.ts == skewed.received_at - 10_000


def test_absurd_skew_is_out_of_range_not_a_crash() -> None:
    body = {"userId": "u", "timestamp": "9999-12-31T23:59:59Z", "sentAt": "0001-01-01T00:00:00Z"}
    [error] = run(body, "identify").errors
    assert (error.code, error.field) == ("invalid_field", "timestamp")

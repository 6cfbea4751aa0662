"""File readers for ``kairos import``: Segment JSONL (plain and gzip) and CSV with a column mapping."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pytest

from kairos.collect import Message, validate
from kairos.collect.files import CsvMapping, Item, RowError, parse_mapping, read_csv, read_jsonl
from kairos.errors import ValidationError

MAPPING = parse_mapping(
    [
        "customer_no=identity:crm_id",
        "email_address=identity:email",
        "mobile=identity:phone",
        "card=identity:loyalty_card",
        "first=trait:first_name",
        "orders=trait:lifetime_orders:int",
        "score=trait:score:float",
        "town=city",
    ],
    id_column="customer_no",
    timestamp_column="updated",
)
HEADER = "customer_no,email_address,mobile,card,first,orders,score,town,updated,ignored\n"


def _write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_text(text, encoding=encoding)
    return path


def _events(items: list[Item]) -> list[dict[str, Any]]:
    return [event for _, event, _ in items if event is not None]


def _errors(items: list[Item]) -> list[tuple[int, str]]:
    return [(n, error.message) for n, _, error in items if error is not None]


def _codes(items: list[Item]) -> list[tuple[int, str]]:
    return [(n, error.code) for n, _, error in items if error is not None]


# -- JSONL --------------------------------------------------------------------------------------------------

JSONL_LINES = [
    json.dumps({"type": "track", "userId": "u1", "event": "Signed Up", "messageId": "m1"}),
    "",
    "{not json",
    "[1, 2]",
    json.dumps(
        {
            "batch": [
                {"type": "page", "anonymousId": "a1", "context": {"ip": "10.0.0.1"}},
                {"type": "identify", "userId": "u2"},
                "oops",
            ],
            "context": {"library": {"name": "batcher"}, "ip": "10.0.0.9"},
        }
    ),
    "   ",
    json.dumps({"batch": "not a list"}),
]


def test_jsonl_good_bad_and_batch_lines(tmp_path: Path) -> None:
    path = _write(tmp_path / "events.jsonl", "\n".join(JSONL_LINES) + "\n")
    items = list(read_jsonl(path))
    assert [(n, event is not None) for n, event, _ in items] == [
        (1, True), (3, False), (4, False), (5, True), (5, True), (5, False), (7, False),
    ]  # fmt: skip
    events = _events(items)
    assert events[0]["messageId"] == "m1"
    # Batch context applies to every item; the item's own keys win.
    assert events[1]["context"] == {"library": {"name": "batcher"}, "ip": "10.0.0.1"}
    assert events[2]["context"] == {"library": {"name": "batcher"}, "ip": "10.0.0.9"}
    errors = dict(_errors(items))
    assert errors[3].startswith("line 3: invalid JSON")
    assert errors[4] == "line 4: expected a JSON object, got list"
    assert errors[5] == "line 5: batch item 2 is not a JSON object"
    assert errors[7] == "line 7: batch must be a list of events"
    assert _codes(items) == [(3, "invalid_json"), (4, "invalid_row"), (5, "invalid_row"), (7, "invalid_row")]
    for i, event in enumerate(events):
        assert isinstance(validate(i, event, None), Message)


def test_jsonl_gzip_by_suffix_and_by_magic_bytes(tmp_path: Path) -> None:
    body = ("\n".join(JSONL_LINES) + "\n").encode()
    plain = list(read_jsonl(_write(tmp_path / "plain.jsonl", body.decode())))
    (tmp_path / "events.jsonl.gz").write_bytes(gzip.compress(body))
    (tmp_path / "events.export").write_bytes(gzip.compress(body))
    assert list(read_jsonl(tmp_path / "events.jsonl.gz")) == plain
    assert list(read_jsonl(str(tmp_path / "events.export"))) == plain


def test_jsonl_bad_gzip_raises(tmp_path: Path) -> None:
    (tmp_path / "fake.jsonl.gz").write_bytes(b'{"type": "track"}\n')
    with pytest.raises(ValidationError, match="not a valid gzip file"):
        list(read_jsonl(tmp_path / "fake.jsonl.gz"))
    (tmp_path / "cut.jsonl.gz").write_bytes(gzip.compress(b'{"a": 1}\n' * 1000)[:60])
    with pytest.raises(ValidationError, match="not a valid gzip file"):
        list(read_jsonl(tmp_path / "cut.jsonl.gz"))


def test_jsonl_bom_and_crlf(tmp_path: Path) -> None:
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"type": "identify", "userId": "u1"}\r\n{"type": "page", "anonymousId": "a"}\r\n')
    assert [(n, e is not None, err) for n, e, err in read_jsonl(path)] == [(1, True, None), (2, True, None)]


def test_jsonl_line_that_is_not_utf8_or_too_deep_is_one_error(tmp_path: Path) -> None:
    good = [json.dumps({"type": "identify", "userId": f"u{i}"}).encode() for i in range(3)]
    bad_utf8 = b'{"type": "identify", "userId": "caf\xe9"}'  # latin-1, not UTF-8
    too_deep = b'{"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    (tmp_path / "mixed.jsonl").write_bytes(b"\n".join([good[0], bad_utf8, good[1], too_deep, good[2]]) + b"\n")
    items = list(read_jsonl(tmp_path / "mixed.jsonl"))
    assert [event["userId"] for event in _events(items)] == ["u0", "u1", "u2"]
    assert _codes(items) == [(2, "invalid_encoding"), (4, "invalid_json")]
    assert _errors(items)[0][1] == "line 2: not UTF-8 text"
    assert "caf" not in _errors(items)[0][1]  # the line's content stays out of the message


def test_jsonl_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        list(read_jsonl(tmp_path / "nope.jsonl"))


# -- CSV ----------------------------------------------------------------------------------------------------

ROWS = (
    "C-1, Jane.Doe@Example.com ,(415) 555-0132,LC-0042-7781,Jane,12,4.5,Oakland,2026-10-01T09:30:00Z,x\n"
    "C-2,bob@example.com,,,Bob,,,,2026-10-02,\n"
    "\n"
    "C-3,,,,,not-a-number,,,,\n"
    ",,,,,,,,,\n"
    "C-4,,,,Eve,3,abc,,,\n"
    "C-5,,,,Max,,,,yesterday,\n"
    "C-6,carol@example.com,,,Carol,,,,,,,\n"
    "C-7,dan@example.com,,,Dan,,,,,,surplus\n"
    "C-8,,,,Short\n"
)


def test_csv_happy_path_and_row_errors(tmp_path: Path) -> None:
    path = _write(tmp_path / "customers.csv", HEADER + ROWS)
    items = list(read_csv(path, MAPPING))
    assert _errors(items) == [
        (5, "row 5: column orders: not an integer"),
        (7, "row 7: column score: not a number"),
        (8, "row 8: column updated: not an ISO-8601 timestamp"),
        (10, "row 10: 11 cells but the header has 10 columns"),
    ]
    jane, bob, carol, short = _events(items)
    assert jane == {
        "type": "identify",
        "timestamp": "2026-10-01T09:30:00.000Z",
        "anonymousId": jane["anonymousId"],
        "traits": {
            "crm_id": "C-1",
            "email": " Jane.Doe@Example.com ",  # identity normalization trims and lower-cases, not the reader
            "phone": "(415) 555-0132",
            "loyalty_card": "LC-0042-7781",
            "first_name": "Jane",
            "lifetime_orders": 12,
            "score": 4.5,
            "city": "Oakland",
        },
        "context": {"kairos": {"trait_kind": "observed"}},
        "messageId": jane["messageId"],
    }
    assert jane["anonymousId"].startswith("csv-") and jane["messageId"].startswith("csv-")
    # Blank cells are omitted; a date without a time or offset is midnight UTC.
    assert bob["traits"] == {"crm_id": "C-2", "email": "bob@example.com", "first_name": "Bob"}
    assert bob["timestamp"] == "2026-10-02T00:00:00.000Z"
    assert "timestamp" not in carol  # trailing empty cells beyond the header are fine
    assert short["traits"] == {"crm_id": "C-8", "first_name": "Short"}
    assert [n for n, event, _ in items if event is not None] == [2, 3, 9, 11]
    for i, event in enumerate(_events(items)):
        assert isinstance(validate(i, event, None), Message)


def test_csv_consent_columns_become_consent_choices(tmp_path: Path) -> None:
    path = _write(tmp_path / "c.csv", "id,email,news,ads\n1,a@x.io,Yes,0\n2,b@x.io,maybe,\n3,c@x.io,,granted\n")
    mapping = parse_mapping(
        ["email=identity:email", "news=consent:marketing_email", "ads=consent:advertising"],
        id_column="id",
        purposes={"marketing_email", "advertising"},
    )
    items = list(read_csv(path, mapping))
    assert _errors(items) == [(3, "row 3: column news: not a consent (true/false, yes/no, 1/0)")]
    first, third = _events(items)
    assert first["context"]["consent"] == {"categoryPreferences": {"marketing_email": True, "advertising": False}}
    assert third["context"]["consent"] == {"categoryPreferences": {"advertising": True}}
    with pytest.raises(ValidationError) as err:
        parse_mapping(["email=identity:email", "x=consent:nope"], purposes={"advertising"})
    assert err.value.field == "x" and "not configured" in err.value.message


def test_csv_rerun_gives_same_ids_and_changed_row_new_message(tmp_path: Path) -> None:
    first = _events(list(read_csv(_write(tmp_path / "a.csv", HEADER + ROWS), MAPPING)))
    again = _events(list(read_csv(_write(tmp_path / "b.csv", HEADER + ROWS), MAPPING)))
    assert first == again
    assert len({e["messageId"] for e in first}) == len(first)
    changed = _events(list(read_csv(_write(tmp_path / "c.csv", HEADER + ROWS.replace(",12,", ",13,")), MAPPING)))
    # Same person (same anonymousId from the id column), but an update, so a new messageId.
    assert changed[0]["anonymousId"] == first[0]["anonymousId"]
    assert changed[0]["messageId"] != first[0]["messageId"]
    assert [e["messageId"] for e in changed[1:]] == [e["messageId"] for e in first[1:]]


def test_csv_bom_and_user_id_columns(tmp_path: Path) -> None:
    path = _write(tmp_path / "bom.csv", "user,anon,email,plan\nu-1,a-1,x@example.com,pro\n", "utf-8-sig")
    assert path.read_bytes().startswith(b"\xef\xbb\xbf")
    mapping = CsvMapping(
        identities={"user": "user_id", "anon": "anonymous_id", "email": "email"},
        traits={"plan": "plan"},
        trait_kind="stated",
    )
    ((n, event, error),) = list(read_csv(path, mapping))
    assert (n, error) == (2, None)
    assert event is not None
    assert (event["userId"], event["anonymousId"]) == ("u-1", "a-1")
    assert event["traits"] == {"email": "x@example.com", "plan": "pro"}
    assert event["context"] == {"kairos": {"trait_kind": "stated"}}


def test_csv_without_id_column_hashes_the_identifiers(tmp_path: Path) -> None:
    mapping = parse_mapping(["email=identity:email", "device=identity:device_id", "plan=plan"])
    one = _write(tmp_path / "one.csv", "email,device,plan\nx@example.com,d-1,free\n")
    two = _write(tmp_path / "two.csv", "email,device,plan\nx@example.com,d-1,pro\n")
    (a,), (b,) = _events(list(read_csv(one, mapping))), _events(list(read_csv(two, mapping)))
    assert a["context"]["device"] == {"id": "d-1"}
    assert a["anonymousId"] == b["anonymousId"]  # same person, whatever their traits
    assert a["messageId"] != b["messageId"]


def test_csv_row_with_every_mapped_cell_empty(tmp_path: Path) -> None:
    mapping = parse_mapping(["email=identity:email"])
    path = _write(tmp_path / "p.csv", "email,note\n,just a note\n")
    assert list(read_csv(path, mapping)) == [(2, None, RowError("empty_row", "row 2: every mapped cell is empty"))]


def test_csv_missing_column_raises_before_reading(tmp_path: Path) -> None:
    path = _write(tmp_path / "p.csv", "email,first\nx@example.com,X\n")
    mapping = parse_mapping(["email=identity:email", "surname=trait:last_name"])
    with pytest.raises(ValidationError, match="'surname' is not in the header") as caught:
        read_csv(path, mapping)  # raised on the call, not on the first next()
    assert caught.value.field == "surname"
    with pytest.raises(ValidationError, match="'updated' is not in the header"):
        read_csv(path, parse_mapping(["email=identity:email"], timestamp_column="updated"))


def test_csv_file_level_errors(tmp_path: Path) -> None:
    mapping = parse_mapping(["email=identity:email"])
    with pytest.raises(ValidationError, match="no header row"):
        read_csv(_write(tmp_path / "empty.csv", ""), mapping)
    with pytest.raises(ValidationError, match="appears 2 times"):
        read_csv(_write(tmp_path / "dup.csv", "email,email\n"), mapping)
    (tmp_path / "latin1.csv").write_bytes("ren\xe9,email\nx,a@example.com\n".encode("latin-1"))
    with pytest.raises(ValidationError, match="header row is not UTF-8"):
        read_csv(tmp_path / "latin1.csv", mapping)
    with pytest.raises(ValidationError, match="header row: a quoted field is never closed") as caught:
        read_csv(_write(tmp_path / "quote.csv", 'email,"note\na@example.com,x\n'), mapping)
    assert caught.value.code == "invalid_csv"
    with pytest.raises(ValidationError, match="header row: field larger than field limit"):
        read_csv(_write(tmp_path / "huge.csv", "email," + "n" * 200_000 + "\n"), mapping)


def test_csv_unterminated_quote_names_the_row_and_loses_nothing_silently(tmp_path: Path) -> None:
    mapping = parse_mapping(["email=identity:email", "note=trait:note"])
    rows = ["a@example.com,ok", 'b@example.com,"multi\nline",', 'c@example.com,"never closed', "d@example.com,x"]
    rows += [f"{c}@example.com,y" for c in "efg"]
    items = list(read_csv(_write(tmp_path / "p.csv", "email,note\n" + "\n".join(rows) + "\n"), mapping))
    assert [e["traits"]["email"] for e in _events(items)] == ["a@example.com", "b@example.com"]
    assert _events(items)[1]["traits"]["note"] == "multi\nline"  # a closed quote may span lines
    assert _codes(items) == [(4, "unterminated_quote")]
    assert _errors(items) == [
        (4, "row 4 (line 5): a quoted field is never closed, so lines 5 to 9, the end of the file, were not read")
    ]


def test_csv_broken_or_non_utf8_record_is_one_error_and_reading_goes_on(tmp_path: Path) -> None:
    mapping = parse_mapping(["email=identity:email", "note=trait:note"])
    text = b'email,note\na@example.com,"quoted"junk\nb@example.com,caf\xe9\nc@example.com,fine\n'
    (tmp_path / "p.csv").write_bytes(text)
    items = list(read_csv(tmp_path / "p.csv", mapping))
    assert [e["traits"]["email"] for e in _events(items)] == ["c@example.com"]
    assert _codes(items) == [(2, "invalid_csv"), (3, "invalid_encoding")]
    assert _errors(items)[1] == (3, "row 3 (line 3): not UTF-8 text")


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (["email"], "expected COLUMN=identity:TYPE"),
        (["=email"], "expected COLUMN=identity:TYPE"),
        (["email=identity:"], "needs a name"),
        (["email=identity:Email"], "lower_snake_case"),
        (["email=identity:email", "email=trait:x"], "mapped twice"),
        (["a=identity:email", "b=identity:email"], "already filled from column a"),
        (["a=identity:loyalty_card", "b=trait:loyalty_card"], "already filled"),
        (["a=identity:email", "b=trait:n:bool"], "unknown trait type 'bool'"),
        (["first=trait:first_name"], "at least one identity column"),
    ],
)
def test_parse_mapping_errors(spec: list[str], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        parse_mapping(spec)


def test_parse_mapping_refuses_identity_types_that_are_not_configured() -> None:
    types = {"user_id": ["userId"], "email": ["traits.email"], "crm_id": ["context.traits.crm_id"]}
    with pytest.raises(ValidationError) as caught:
        parse_mapping(["mail=identity:email", "x=identity:nosuchtype"], identity_types=types)
    assert (caught.value.code, caught.value.field) == ("invalid_mapping", "x")
    assert caught.value.message == (
        "column x: identity type 'nosuchtype' is not configured (configured: crm_id, email, user_id); "
        "declare it under [identity.types] in kairos.toml"
    )
    # Configured, but not read from traits.crm_id, where the mapping would write it: it would be a trait.
    with pytest.raises(
        ValidationError, match=r"'crm_id' is read from context\.traits\.crm_id, not from traits\.crm_id"
    ):
        parse_mapping(["c=identity:crm_id"], identity_types=types)
    mapping = parse_mapping(["u=identity:user_id", "m=identity:email"], identity_types=types)
    assert mapping == parse_mapping(["u=identity:user_id", "m=identity:email"])


def test_parse_mapping_forms() -> None:
    mapping = parse_mapping(
        ["a=b=identity:crm_id", "n=trait:orders:int", "c=city"], id_column="a=b", trait_kind="third_party"
    )
    assert mapping == CsvMapping(
        identities={"a=b": "crm_id"},
        traits={"n": "orders:int", "c": "city"},
        id_column="a=b",
        trait_kind="third_party",
    )
    with pytest.raises(ValidationError, match="trait kind"):
        parse_mapping(["e=identity:email"], trait_kind="guessed")

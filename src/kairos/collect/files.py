"""Readers for ``kairos import FILE``: Segment JSONL (optionally gzipped) and CSV person records.

Both readers yield ``(number, event, error)`` triples: exactly one of ``event`` and ``error`` (a
:class:`RowError` with a machine-readable code) is set, so that a bad line or row (invalid JSON, bytes that
are not UTF-8, a broken CSV record) is reported and skipped without stopping the import. Problems with the
file as a whole (an unreadable gzip stream, a CSV header that lacks a mapped column) raise
:class:`~kairos.errors.ValidationError` instead. Events are not validated here: they go through
:func:`kairos.collect.prepare` like any other.

JSONL: one Segment message per line, or a batch object ``{"batch": [...]}`` whose items share the line's
number (the batch's own ``context`` and ``integrations`` apply to each item; the item's keys win).
Blank lines are skipped. A file is read as gzip when its name ends in ``.gz`` or it starts with gzip's
magic bytes.

CSV: one person per row, the first row being the header (UTF-8, a leading BOM is ignored). Quoting is read
strictly: a quoted field that is never closed is reported with its row and line numbers, not read as one
field holding the rest of the file; a row that is not UTF-8 is reported and the next one read. Each row
becomes an ``identify``; the mapping says which columns are identifiers and which are traits. On the command line::

    kairos import customers.csv \\
        --map customer_no=identity:crm_id --map email_address=identity:email \\
        --map first=trait:first_name --map orders=trait:lifetime_orders:int --map town=city \\
        --id customer_no --timestamp updated

Each ``--map`` is ``COLUMN=TARGET`` where ``TARGET`` is one of

* ``identity:TYPE``: ``user_id`` fills ``userId``, ``anonymous_id`` fills ``anonymousId``, ``device_id``
  fills ``context.device.id``; any other type (``email``, ``phone``, or a custom type such as
  ``loyalty_card``) is written to ``traits.TYPE``, where the identity types read it; ``kairos import``
  refuses a type that is not configured, or whose configured paths do not include where it is written;
* ``trait:NAME``, ``trait:NAME:int`` or ``trait:NAME:float``: ``traits.NAME``, a string unless typed (a
  cell that does not parse is an error for that row); a bare ``NAME`` means ``trait:NAME``;
* ``consent:PURPOSE``: the person's consent for a configured purpose, from a cell reading ``true``/``false``,
  ``yes``/``no``, ``1``/``0``, ``granted``/``denied`` (any case); the consent ledger records the import.

Empty cells are omitted. A row without a ``userId`` or ``anonymousId`` gets ``anonymousId`` ``csv-HASH``,
from the ``--id`` column's value or else from the row's identifier cells, so the same person gets the same
id on every import. ``messageId`` is ``csv-HASH`` of the ``--id`` value and the row's event: importing the
same file again yields the same ids, which the log drops as duplicates, while a later export in which a
person's cells changed yields a new event (an id-only hash would silently drop that update).
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import math
import re
import zlib
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from os import PathLike
from pathlib import Path
from typing import Any, Final, TextIO

import msgspec

from kairos.collect._message import TRAIT_KINDS
from kairos.errors import ValidationError

__all__ = ["CsvMapping", "Item", "RowError", "parse_mapping", "read_csv", "read_jsonl"]


@dataclass(frozen=True, slots=True)
class RowError:
    """Why one line or row was not read: ``code`` for scripts, ``message`` (naming the line) for people."""

    code: str
    message: str


# (line or row number, event, error): exactly one of event and error is set.
Item = tuple[int, dict[str, Any] | None, RowError | None]
StrPath = str | PathLike[str]

_GZIP_MAGIC: Final = b"\x1f\x8b"
_BOM: Final = b"\xef\xbb\xbf"
_TYPE_NAME: Final = re.compile(r"^[a-z][a-z0-9_]*$")
_SURROGATE: Final = re.compile("[\udc80-\udcff]")  # what errors="surrogateescape" makes of a non-UTF-8 byte
_TRAIT_TYPES: Final = ("int", "float")
_CONSENT_WORDS: Final = {
    **dict.fromkeys(("true", "yes", "1", "granted", "y"), True),
    **dict.fromkeys(("false", "no", "0", "denied", "n"), False),
}
# Identity types that are top-level fields of a message rather than traits.
_ID_FIELDS: Final = {"user_id": "userId", "anonymous_id": "anonymousId"}


# -- JSONL --------------------------------------------------------------------------------------------------


def _is_gzip(path: Path) -> bool:
    if path.suffix == ".gz":
        return True
    with path.open("rb") as f:
        return f.read(2) == _GZIP_MAGIC


def _batch_item(top: dict[str, Any], item: dict[str, Any]) -> dict[str, Any]:
    item = dict(item)
    for key in ("context", "integrations"):
        shared, own = top.get(key), item.get(key)
        if isinstance(shared, dict) and shared:
            item[key] = {**shared, **own} if isinstance(own, dict) else dict(shared)
    return item


def _jsonl_line(n: int, line: bytes) -> Iterator[Item]:
    try:
        value = msgspec.json.decode(line)
    except msgspec.DecodeError as exc:
        yield n, None, RowError("invalid_json", f"line {n}: invalid JSON: {exc}")
        return
    except UnicodeDecodeError:  # msgspec checks UTF-8 inside strings, and raises this rather than its own
        yield n, None, RowError("invalid_encoding", f"line {n}: not UTF-8 text")
        return
    except RecursionError:
        yield n, None, RowError("invalid_json", f"line {n}: JSON nested too deeply")
        return
    if not isinstance(value, dict):
        yield n, None, RowError("invalid_row", f"line {n}: expected a JSON object, got {type(value).__name__}")
        return
    if "batch" not in value:
        yield n, value, None
        return
    items = value["batch"]
    if not isinstance(items, list):
        yield n, None, RowError("invalid_row", f"line {n}: batch must be a list of events")
        return
    for k, item in enumerate(items):
        if isinstance(item, dict):
            yield n, _batch_item(value, item), None
        else:
            yield n, None, RowError("invalid_row", f"line {n}: batch item {k} is not a JSON object")


def read_jsonl(path: StrPath) -> Iterator[Item]:
    """``(line_number, event, error)`` for each message of a Segment JSONL file (see the module docstring)."""
    path = Path(path)
    gzipped = _is_gzip(path)
    try:
        with gzip.open(path, "rb") if gzipped else path.open("rb") as f:
            for n, raw in enumerate(f, start=1):
                line = raw.removeprefix(_BOM) if n == 1 else raw
                if line.strip():
                    yield from _jsonl_line(n, line)
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
        # Only gzip raises these here: a corrupt or truncated stream, or a ".gz" that is not gzip.
        raise ValidationError(f"{path.name}: not a valid gzip file: {exc}", code="invalid_encoding") from exc


# -- CSV ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CsvMapping:
    """Which CSV columns are identifiers and which are traits (see the module docstring).

    >>> CsvMapping(identities={"email_address": "email"}, traits={"orders": "lifetime_orders:int"}).trait_kind
    'observed'
    """

    identities: dict[str, str] = field(default_factory=dict)  # column -> identity type
    traits: dict[str, str] = field(default_factory=dict)  # column -> trait name, optionally ":int"/":float"
    id_column: str | None = None
    timestamp_column: str | None = None
    trait_kind: str = "observed"
    # The configured identity types and the paths each is read from (``settings.identity.types``); when
    # given, a column mapped to any other type, or to one that would not read the value, is refused.
    identity_types: Mapping[str, Sequence[str]] | None = field(default=None, compare=False)
    consents: dict[str, str] = field(default_factory=dict)  # column -> consent purpose
    # The configured consent purposes; when given, a column mapped to another purpose is refused.
    purposes: Collection[str] | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if not self.identities and self.id_column is None:
            raise ValidationError(
                "map at least one identity column (e.g. email=identity:email) or name an id column",
                code="invalid_mapping",
            )
        if self.trait_kind not in TRAIT_KINDS:
            raise ValidationError(
                f"trait kind must be one of {sorted(TRAIT_KINDS)}, not {self.trait_kind!r}",
                code="invalid_mapping",
                field="trait_kind",
            )
        # Every target is a distinct key of the event; two columns writing one key would race per row.
        targets: dict[str, str] = {}
        for column, kind in self.identities.items():
            if not _TYPE_NAME.match(kind):
                raise _bad_target(column, f"identity type {kind!r} must be lower_snake_case")
            self._check_configured(column, kind)
            _claim(targets, _ID_FIELDS.get(kind, "context.device.id" if kind == "device_id" else kind), column)
        for column, target in self.traits.items():
            name, _, type_ = target.partition(":")
            if not name.strip():
                raise _bad_target(column, "trait name is empty")
            if type_ and type_ not in _TRAIT_TYPES:
                raise _bad_target(column, f"unknown trait type {type_!r} (use :int or :float)")
            _claim(targets, name, column)
        for column, purpose in self.consents.items():
            if self.purposes is not None and purpose not in self.purposes:
                configured = ", ".join(sorted(self.purposes))
                raise _bad_target(column, f"consent purpose {purpose!r} is not configured (configured: {configured})")
            _claim(targets, f"consent:{purpose}", column)

    def _check_configured(self, column: str, kind: str) -> None:
        if self.identity_types is None:
            return
        # Without this check an unknown type would be written to traits.TYPE and stored as a plain trait.
        if kind not in self.identity_types:
            configured = ", ".join(sorted(self.identity_types))
            raise _bad_target(
                column,
                f"identity type {kind!r} is not configured (configured: {configured}); "
                "declare it under [identity.types] in kairos.toml",
            )
        path = _ID_FIELDS.get(kind, "context.device.id" if kind == "device_id" else f"traits.{kind}")
        paths = self.identity_types[kind]
        if path not in paths:
            read_from = ", ".join(paths) or "context.externalIds only"
            raise _bad_target(column, f"identity type {kind!r} is read from {read_from}, not from {path}")


def _bad_target(column: str, reason: str) -> ValidationError:
    return ValidationError(f"column {column}: {reason}", code="invalid_mapping", field=column)


def _claim(targets: dict[str, str], key: str, column: str) -> None:
    if key in targets:
        raise _bad_target(column, f"{key!r} is already filled from column {targets[key]}")
    targets[key] = column


def parse_mapping(
    spec: list[str],
    *,
    id_column: str | None = None,
    timestamp_column: str | None = None,
    trait_kind: str = "observed",
    identity_types: Mapping[str, Sequence[str]] | None = None,
    purposes: Collection[str] | None = None,
) -> CsvMapping:
    """Build a :class:`CsvMapping` from ``--map COLUMN=TARGET`` options (``identity_types``: see there).

    >>> m = parse_mapping(["email_address=identity:email", "first=trait:first_name", "town=city"])
    >>> m.identities, m.traits
    ({'email_address': 'email'}, {'first': 'first_name', 'town': 'city'})
    """
    identities: dict[str, str] = {}
    traits: dict[str, str] = {}
    consents: dict[str, str] = {}
    for option in spec:
        # Split at the last "=": a column name may contain one, a target never does.
        column, eq, target = option.rpartition("=")
        if not eq or not column or not target:
            raise ValidationError(
                f"--map {option!r}: expected COLUMN=identity:TYPE or COLUMN=trait:NAME",
                code="invalid_mapping",
            )
        if column in identities or column in traits or column in consents:
            raise _bad_target(column, "mapped twice")
        kind, _, name = target.partition(":")
        if kind == "identity" and name:
            identities[column] = name
        elif kind == "trait" and name:
            traits[column] = name
        elif kind == "consent" and name:
            consents[column] = name
        elif kind in ("identity", "trait", "consent"):
            raise _bad_target(column, f"{kind}: needs a name")
        else:
            traits[column] = target
    return CsvMapping(identities, traits, id_column, timestamp_column, trait_kind, identity_types, consents, purposes)


def _columns(mapping: CsvMapping) -> list[str]:
    named = [mapping.id_column, mapping.timestamp_column]
    mapped = [*mapping.identities, *mapping.traits, *mapping.consents]
    return list(dict.fromkeys([*mapped, *(c for c in named if c is not None)]))


def _open_csv(path: Path) -> TextIO:
    # Bytes that are not UTF-8 decode to lone surrogates, so that one bad row is reported as such instead
    # of ending the file; a real UTF-8 file cannot hold a surrogate.
    return path.open(encoding="utf-8-sig", errors="surrogateescape", newline="")


def _bad_bytes(row: list[str]) -> bool:
    return any(_SURROGATE.search(cell) for cell in row)


def _read_header(path: Path, mapping: CsvMapping) -> dict[str, int]:
    """Column positions of the mapped columns; checked before any row is read."""
    with _open_csv(path) as f:
        reader = csv.reader(f, strict=True)
        try:
            header = next(reader, None)
        except csv.Error as exc:
            raise ValidationError(f"{path.name}: header row: {_csv_problem(exc, reader)}", code="invalid_csv") from exc
    if not header:
        raise ValidationError(f"{path.name}: no header row", code="invalid_csv")
    if _bad_bytes(header):
        raise ValidationError(f"{path.name}: the header row is not UTF-8 text", code="invalid_encoding")
    positions: dict[str, int] = {}
    for column in _columns(mapping):
        count = header.count(column)
        if count != 1:
            problem = "is not in the header" if count == 0 else f"appears {count} times in the header"
            raise ValidationError(
                f"{path.name}: column {column!r} {problem} (columns: {', '.join(header)})",
                code="unknown_column",
                field=column,
            )
        positions[column] = header.index(column)
    return positions


def _csv_problem(exc: csv.Error, reader: Any) -> str:
    if str(exc) == "unexpected end of data":
        return f"a quoted field is never closed (it runs to the end of the file, line {reader.line_num})"
    return str(exc)


def _hash(*parts: Any) -> str:
    canonical = msgspec.json.encode(parts, order="sorted")
    return "csv-" + hashlib.sha256(canonical).hexdigest()[:32]


def _typed(value: str, type_: str) -> int | float | None:
    text = value.strip()
    # int() and float() also accept "1_000" and non-ASCII digits, which no export means as a number.
    if "_" in text or not text.isascii():
        return None
    try:
        if type_ == "int":
            return int(text)
        number = float(text)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _timestamp(value: str) -> str | None:
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)  # an export without an offset is taken as UTC
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _row_event(n: int, cells: dict[str, str], mapping: CsvMapping) -> dict[str, Any] | RowError:
    """The identify for one row's non-empty mapped cells, or the reason it has none."""
    event: dict[str, Any] = {"type": "identify"}
    traits: dict[str, Any] = {}
    context: dict[str, Any] = {"kairos": {"trait_kind": mapping.trait_kind}}
    identity_cells: list[tuple[str, str]] = []
    for column, kind in mapping.identities.items():
        if column in cells:
            identity_cells.append((kind, cells[column]))
            if kind in _ID_FIELDS:
                event[_ID_FIELDS[kind]] = cells[column]
            elif kind == "device_id":
                context["device"] = {"id": cells[column]}
            else:
                traits[kind] = cells[column]
    for column, target in mapping.traits.items():
        if column not in cells:
            continue
        name, _, type_ = target.partition(":")
        if not type_:
            traits[name] = cells[column]
            continue
        value = _typed(cells[column], type_)
        if value is None:
            article = "an integer" if type_ == "int" else "a number"
            # Not the cell itself: a shifted column may hold an e-mail address, and errors carry no personal data.
            return RowError("invalid_value", f"row {n}: column {column}: not {article}")
        traits[name] = value
    choices: dict[str, bool] = {}
    for column, purpose in mapping.consents.items():
        if column not in cells:
            continue
        said = _CONSENT_WORDS.get(cells[column].strip().lower())
        if said is None:
            return RowError("invalid_value", f"row {n}: column {column}: not a consent (true/false, yes/no, 1/0)")
        choices[purpose] = said
    if choices:
        context["consent"] = {"categoryPreferences": choices}
    if mapping.timestamp_column is not None and mapping.timestamp_column in cells:
        stamp = _timestamp(cells[mapping.timestamp_column])
        if stamp is None:
            return RowError("invalid_value", f"row {n}: column {mapping.timestamp_column}: not an ISO-8601 timestamp")
        event["timestamp"] = stamp
    if not traits and not identity_cells and not choices:
        return RowError("empty_row", f"row {n}: every mapped cell is empty")
    id_value = cells.get(mapping.id_column) if mapping.id_column is not None else None
    if "userId" not in event and "anonymousId" not in event:
        # Stable per person, not per row: the same customer must land on the same profile next import.
        key = (mapping.id_column, id_value) if id_value is not None else sorted(identity_cells) or cells
        event["anonymousId"] = _hash(key)
    event["traits"] = traits
    event["context"] = context
    event["messageId"] = _hash(id_value, event)
    return event


def read_csv(path: StrPath, mapping: CsvMapping) -> Iterator[Item]:
    """``(row_number, event, error)`` per data row of a CSV file (see the module docstring).

    Row numbers count the header as row 1, as a spreadsheet shows them. The header is checked when this
    is called, so a mapped column missing from it raises :class:`ValidationError` before any row is read.
    """
    path = Path(path)
    positions = _read_header(path, mapping)
    return _rows(path, mapping, positions)


def _rows(path: Path, mapping: CsvMapping, positions: dict[str, int]) -> Iterator[Item]:
    with _open_csv(path) as f:
        # strict: a quote that is never closed is an error instead of one field holding the rest of the file.
        reader = csv.reader(f, strict=True)
        width = len(next(reader))
        n = 1
        while True:
            n += 1
            first_line = reader.line_num + 1
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                if str(exc) == "unexpected end of data":
                    lines = f"lines {first_line} to {reader.line_num}, the end of the file,"
                    yield (
                        n,
                        None,
                        RowError(
                            "unterminated_quote",
                            f"row {n} (line {first_line}): a quoted field is never closed, so {lines} were not read",
                        ),
                    )
                    return
                # The reader goes on with the next line: one broken record does not end the file.
                yield n, None, RowError("invalid_csv", f"row {n} (line {first_line}): {exc}")
                continue
            if not any(cell.strip() for cell in row):
                continue
            if _bad_bytes(row):
                yield n, None, RowError("invalid_encoding", f"row {n} (line {first_line}): not UTF-8 text")
                continue
            if any(cell.strip() for cell in row[width:]):
                yield n, None, RowError("invalid_row", f"row {n}: {len(row)} cells but the header has {width} columns")
                continue
            # A short row (trailing cells left off) is read as if those cells were empty.
            cells = {c: row[i] for c, i in positions.items() if i < len(row) and row[i].strip()}
            result = _row_event(n, cells, mapping)
            yield (n, None, result) if isinstance(result, RowError) else (n, result, None)

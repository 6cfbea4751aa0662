"""``kairos import FILE``: Segment JSONL or CSV person records, through the same validation and log."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import msgspec
import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.text import Text

from kairos.cli._common import console, fail, open_kairos, print_json
from kairos.cli.admin import Kind
from kairos.collect import NewEvent
from kairos.collect.files import Item, parse_mapping, read_csv, read_jsonl
from kairos.errors import KairosError, ValidationError
from kairos.pipeline import dedup_key
from kairos.runtime import Kairos
from kairos.store import Source, digest

__all__ = ["ImportSummary", "import_events", "import_file"]

CHUNK = 500
MAX_REASONS = 1000


class Format(StrEnum):
    auto = "auto"
    jsonl = "jsonl"
    csv = "csv"


@dataclass(slots=True)
class ImportSummary:
    read: int = 0
    accepted: int = 0
    already_imported: int = 0
    rejected: int = 0
    reasons: list[dict[str, Any]] = field(default_factory=list)

    def reject(self, line: int, code: str, field_: str | None, message: str) -> None:
        self.rejected += 1
        if len(self.reasons) < MAX_REASONS:
            self.reasons.append({"line": line, "code": code, "field": field_, "message": message})


def _stable_id(source: str, event: dict[str, Any]) -> str:
    """A messageId from the content, so that importing the same file twice adds nothing."""
    return "import-" + hashlib.sha256(source.encode() + msgspec.json.encode(event, order="sorted")).hexdigest()[:32]


def import_events(
    kairos: Kairos,
    source: Source,
    rows: Iterator[Item],
    summary: ImportSummary,
    progress: Any = None,
) -> None:
    """Validate and append ``rows`` (line, event, error) in chunks; already-applied messageIds are skipped."""
    chunk: list[tuple[int, dict[str, Any]]] = []

    def flush() -> None:
        if not chunk:
            return
        lines = [line for line, _ in chunk]
        events, errors = kairos.prepare_for(source, {"batch": [e for _, e in chunk]}, "batch")
        for error in errors:
            summary.reject(lines[error.index], error.code, error.field, error.message)
        keys: dict[bytes, NewEvent] = {}
        for e in events:  # the first of repeated message ids wins, as in the processor
            keys.setdefault(digest(dedup_key(source.name, e.message_id)), e)
        applied = kairos.store.state.seen(keys)
        fresh = [e for k, e in keys.items() if k not in applied]
        summary.already_imported += len(events) - len(fresh)
        fresh = kairos.unsuppressed(source.name, fresh)  # people who asked to be forgotten stay so
        if fresh:
            kairos.append([(source.name, fresh)])
        summary.accepted += len(fresh)
        chunk.clear()

    for line, event, error in rows:
        summary.read += 1
        if progress is not None:
            progress()
        if event is None:
            assert error is not None  # the readers set exactly one of the two
            summary.reject(line, error.code, None, error.message)
            continue
        if not event.get("messageId"):
            event["messageId"] = _stable_id(source.name, event)
        chunk.append((line, event))
        if len(chunk) >= CHUNK:
            flush()
    flush()


def import_file(
    path: Annotated[Path, typer.Argument(help="A .jsonl/.ndjson (optionally .gz) or .csv file.")],
    format: Annotated[Format, typer.Option("--format", help="File format; auto = from the extension.")] = Format.auto,
    source_name: Annotated[str, typer.Option("--source", help="Source the events are recorded under.")] = "import",
    mapping: Annotated[
        list[str] | None,
        typer.Option("--map", help="CSV: COLUMN=identity:TYPE or COLUMN=trait:NAME[:int|:float] (repeat)."),
    ] = None,
    id_column: Annotated[str | None, typer.Option("--id", help="CSV: column that identifies a row.")] = None,
    timestamp_column: Annotated[
        str | None, typer.Option("--timestamp", help="CSV: column with the record time.")
    ] = None,
    kind: Annotated[
        Kind, typer.Option(help="Kind of the imported traits; a new source gets it, an existing one caps it.")
    ] = Kind.observed,
    process: Annotated[bool, typer.Option(help="Apply the imported events to profiles before returning.")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Import events (Segment JSONL) or person records (CSV); safe to re-run."""
    if not path.is_file():
        problem = "is a directory, not a file" if path.is_dir() else "is not a file" if path.exists() else None
        message = f"{path} {problem}" if problem else f"no such file: {path}"
        raise fail(ValidationError(message, code="not_found", field="FILE"), as_json)
    fmt = format.value
    if fmt == "auto":
        suffixes = [s.lower() for s in path.suffixes]
        fmt = "csv" if ".csv" in suffixes else "jsonl"
    summary = ImportSummary()
    with open_kairos(as_json) as kairos:
        try:
            if fmt == "csv":
                spec = parse_mapping(
                    mapping or [],
                    id_column=id_column,
                    timestamp_column=timestamp_column,
                    trait_kind=kind.value,
                    identity_types={name: t.paths for name, t in kairos.settings.identity.types.items()},
                    purposes=kairos.consent_policy.purposes,
                )
                rows = read_csv(path, spec)
            else:
                rows = read_jsonl(path)
            source = kairos.source_named(source_name, kind.value)
            with Progress(
                TextColumn(f"importing {path.name}"),
                BarColumn(),
                MofNCompleteColumn(),
                console=console,
                disable=as_json,
                transient=True,
            ) as bar:
                task = bar.add_task("import", total=None)
                import_events(kairos, source, rows, summary, lambda: bar.advance(task))
            if process:
                kairos.processor.run_until_caught_up()
        except KairosError as exc:
            raise fail(exc, as_json) from exc
    out = {
        "file": str(path),
        "format": fmt,
        "read": summary.read,
        "accepted": summary.accepted,
        "already_imported": summary.already_imported,
        "rejected": summary.rejected,
        "errors": summary.reasons,
    }
    if as_json:
        print_json(out)
    else:
        console.print(
            Text.assemble(
                f"{path.name}: {summary.read} read, ",
                (f"{summary.accepted} accepted", "green"),
                f", {summary.already_imported} already imported, ",
                (f"{summary.rejected} rejected", "red"),
            )
        )
        for reason in summary.reasons[:20]:
            where = f" {reason['field']}" if reason["field"] else ""
            console.print(
                f"  line {reason['line']}: {reason['code']}{where}: {reason['message']}", highlight=False, markup=False
            )
        if summary.rejected > 20:
            console.print(f"  ... {summary.rejected - 20} more (use --json for all, up to {MAX_REASONS})")
    if summary.rejected:
        raise typer.Exit(1)

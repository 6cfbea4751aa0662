"""Shared CLI plumbing: opening the configured store, printing for people or for scripts."""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator
from typing import Any

import typer
from rich import table as rich_table
from rich.console import Console, RenderableType
from rich.text import Text

from kairos.errors import KairosError
from kairos.runtime import Kairos

__all__ = ["Table", "console", "err_console", "fail", "open_kairos", "print_json"]

console = Console()
err_console = Console(stderr=True)


class Table(rich_table.Table):
    """A table whose string cells are plain text: names, messages and urls come from the store or the user, and
    Rich would read ``[...]`` in them as markup (dropping it, or failing on ``[/x]``). Style a cell with
    :class:`rich.text.Text`."""

    def add_row(self, *renderables: RenderableType | None, **options: Any) -> None:
        super().add_row(*(Text(r) if isinstance(r, str) else r for r in renderables), **options)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def fail(error: KairosError, as_json: bool = False) -> typer.Exit:
    if as_json:
        print_json({"error": error.to_dict()})
    else:
        where = f" ({error.field})" if error.field else ""
        err_console.print(Text.assemble(("error", "red"), f" {error.code}{where}: {error.message}"), highlight=False)
    return typer.Exit(2)


@contextlib.contextmanager
def open_kairos(as_json: bool = False) -> Iterator[Kairos]:
    """The same configured store `kairos serve` uses (kairos.toml and KAIROS__* variables)."""
    try:
        kairos = Kairos()
    except KairosError as exc:
        raise fail(exc, as_json) from exc
    try:
        yield kairos
    except KairosError as exc:
        raise fail(exc, as_json) from exc
    finally:
        kairos.close()


def json_argument(text: str, field: str = "body") -> Any:
    """A command's JSON argument (BODY), read as the API reads a request body: strict JSON (no NaN), then
    :func:`kairos._json.check_document`; else a precise error naming ``field``."""
    import msgspec

    from kairos._json import check_document
    from kairos.errors import ValidationError

    try:
        value = msgspec.json.decode(text)
    except (msgspec.DecodeError, RecursionError) as exc:
        raise ValidationError(f"{field.upper()} is not valid JSON", code="invalid_json", field=field) from exc
    check_document(text, value, field.upper(), field)
    return value

"""``kairos traits`` and ``kairos segments``: define, list, show and delete, and follow a backfill."""

from __future__ import annotations

import json
import time
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from kairos.cli._common import Table, console, json_argument, open_kairos, print_json
from kairos.errors import ValidationError
from kairos.runtime import Kairos
from kairos.segments.admin import definition_view, job_of, remove, save

__all__ = ["moments", "segments", "traits"]

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
Body = Annotated[str, typer.Argument(help="The JSON body of PUT /v1/traits/KEY or /v1/segments/KEY.")]
Wait = Annotated[
    str,
    typer.Option(
        help="After saving: 'no' returns at once; 'watch' follows the backfill a running `kairos serve` or "
        "`kairos process` does; 'run' does the backfill in this command (no processor running)."
    ),
]


def _follow(kairos: Kairos, kind: str, key: str, how: str, as_json: bool) -> dict[str, Any]:
    """Show the backfill's progress until it is done (Rich progress bar)."""
    if how == "no" or kind == "moment":  # a moment applies from the next event on: no backfill
        return definition_view(kairos, _stored(kairos, kind, key), job_of(kairos, kind, key))
    columns = (TextColumn(f"backfilling {kind} {key}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, disable=as_json) as bar:
        task = bar.add_task("backfill", total=None)
        while True:
            if how == "run":
                kairos.processor.run_once()
            job = job_of(kairos, kind, key)
            d = _stored(kairos, kind, key)
            if job is not None and job.version == d.version:
                bar.update(task, total=job.total, completed=job.done)
                if job.status == "done":
                    break
            if how != "run":
                time.sleep(0.2)
    return definition_view(kairos, d, job)


def _stored(kairos: Kairos, kind: str, key: str) -> Any:
    d = kairos.store.admin.definition(kind, key)
    if d is None:
        raise ValidationError(f"no {kind} named {key!r}", code="not_found", field="key")
    return d


def _show(view: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print_json(view)
        return
    table = Table(show_header=False)
    for name, value in view.items():
        table.add_row(name, value if isinstance(value, str) else json.dumps(value))
    console.print(table)


def _group(kind: str) -> typer.Typer:
    group = typer.Typer(
        help={
            "trait": "Computed traits: aggregates over a profile's events.",
            "segment": "Segments: rules over profiles, kept current.",
            "moment": "Moments: patterns of events, segment changes and trait crossings, fired as they happen.",
        }[kind],
        no_args_is_help=True,
    )

    @group.command("list")
    def list_(as_json: JsonOpt = False) -> None:
        """Every definition, with its backfill."""
        with open_kairos(as_json) as kairos:
            jobs = {j.key: j for j in kairos.store.state.jobs() if j.kind == kind}
            views = [definition_view(kairos, d, jobs.get(d.key)) for d in kairos.store.admin.definitions(kind)]
        if as_json:
            print_json(views)
            return
        table = Table(
            "key", "definition" if kind == "trait" else "rule", "version", "backfill", "size" * (kind == "segment")
        )
        for v in views:
            what = v.get("rule") or json.dumps(
                {k: v[k] for k in ("aggregate", "event", "property", "window", "where", "when", "cooldown") if k in v}
            )
            job = v.get("backfill")
            table.add_row(
                v["key"],
                what,
                str(v["version"]),
                f"{job['status']} {job['done']}/{job['total']}" if job else f"fired {v.get('total', 0)}",
                str(v.get("size", "")),
            )
        console.print(table)

    @group.command("show")
    def show(key: str, as_json: JsonOpt = False) -> None:
        """One definition, its backfill (and a segment's size)."""
        with open_kairos(as_json) as kairos:
            view = definition_view(kairos, _stored(kairos, kind, key), job_of(kairos, kind, key))
        _show(view, as_json)

    @group.command("put")
    def put(
        key: str,
        body: Body,
        wait: Wait = "no",
        as_json: JsonOpt = False,
    ) -> None:
        """Create or change a definition."""
        if wait not in ("no", "watch", "run"):
            raise typer.BadParameter("--wait is no, watch or run")
        with open_kairos(as_json) as kairos:
            parsed = json_argument(body)
            view, _ = save(kairos, kind, key, parsed)
            warnings = view.get("warnings", [])
            view = {**_follow(kairos, kind, key, wait, as_json), "changed": view["changed"]}
            if warnings:
                view["warnings"] = warnings
        _show(view, as_json)

    @group.command("delete")
    def delete(key: str, as_json: JsonOpt = False) -> None:
        """Delete a definition (every profile loses it)."""
        with open_kairos(as_json) as kairos:
            out = remove(kairos, kind, key)
        _show(out, as_json)

    return group


traits = _group("trait")
segments = _group("segment")
moments = _group("moment")

"""``kairos deadletters list|retry``: events the processor could not apply."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import typer

from kairos._numbers import INT64_MAX
from kairos.cli._common import Table, console, open_kairos, print_json
from kairos.errors import ValidationError
from kairos.store import DeadLetter

__all__ = ["deadletters"]

deadletters = typer.Typer(help="Events the processor could not apply (no event data is shown).", no_args_is_help=True)
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]


def _when(ms: int | None) -> str | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds")


def _row(d: DeadLetter) -> dict[str, object]:
    return {
        "seq": d.seq,
        "source": d.source,
        "error_class": d.error_class,
        "message": d.message,
        "failed_at": _when(d.failed_at),
        "retried_at": _when(d.retried_at),
    }


@deadletters.command("list")
def list_(
    limit: Annotated[int, typer.Option(min=1, max=100_000, help="Most rows to show.")] = 1000,
    as_json: JsonOpt = False,
) -> None:
    """List dead-lettered events: log position, source, error class and where it was raised."""
    with open_kairos(as_json) as kairos:
        rows = kairos.store.state.deadletters(limit)
    if as_json:
        print_json([_row(d) for d in rows])
        return
    table = Table("seq", "source", "error", "where", "failed", "retried")
    for d in rows:
        table.add_row(str(d.seq), d.source, d.error_class, d.message, _when(d.failed_at), _when(d.retried_at) or "")
    console.print(table)


@deadletters.command("retry")
def retry(
    seqs: Annotated[list[int] | None, typer.Argument(help="Log positions to retry (see `list`).")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Retry every dead letter not yet applied.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Apply dead-lettered events again (after the cause was fixed); what still fails stays listed."""
    with open_kairos(as_json) as kairos:
        if all_:
            wanted = [d.seq for d in kairos.store.state.deadletters(100_000) if d.retried_at is None]
        elif seqs:
            impossible = [seq for seq in seqs if not 0 < seq <= INT64_MAX]  # a log position is a positive int64
            if impossible:
                raise ValidationError(f"not dead-lettered: {impossible[:10]}", code="not_found", field="SEQ")
            known = {d.seq for d in kairos.store.state.deadletters(seqs=seqs)}
            unknown = sorted(set(seqs) - known)
            if unknown:
                raise ValidationError(f"not dead-lettered: {unknown[:10]}", code="not_found", field="SEQ")
            wanted = list(seqs)
        else:
            raise ValidationError("name the log positions to retry, or --all", code="missing_argument", field="SEQ")
        still = kairos.processor.retry(wanted)
    out = {"retried": len(wanted), "applied": len(wanted) - len(still), "failed": [_row(d) for d in still]}
    if as_json:
        print_json(out)
    else:
        console.print(f"retried {out['retried']}: {out['applied']} applied, {len(still)} still failing")
    if still:
        raise typer.Exit(1)

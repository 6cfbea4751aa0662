"""``kairos destinations list|deliveries|retry`` and ``kairos deliver``."""

from __future__ import annotations

import contextlib
import threading
from datetime import UTC, datetime
from typing import Annotated, Any

import typer

from kairos.cli._common import Table, console, open_kairos, print_json

__all__ = ["deliver", "destinations"]

destinations = typer.Typer(
    help="Where moments, segment changes and events are pushed (webhooks) or pulled (SSE).", no_args_is_help=True
)
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]


def _when(ms: int | None) -> str:
    return "" if ms is None else datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds")


@destinations.command("list")
def list_(as_json: JsonOpt = False) -> None:
    """List destinations and pull subscriptions (secrets show only their last 4 characters)."""
    from kairos.activate.destinations import KIND, destination_view

    with open_kairos(as_json) as kairos:
        views = [destination_view(kairos, d) for d in kairos.store.admin.definitions(KIND)]
    if as_json:
        print_json(views)
        return
    table = Table("key", "kind", "url", "purpose", "enabled", "queue")
    for v in views:
        table.add_row(v["key"], v["kind"], v.get("url", ""), v["purpose"], str(v["enabled"]), str(v["queue_depth"]))
    console.print(table)


@destinations.command("deliveries")
def deliveries(
    key: Annotated[str, typer.Argument(help="The destination's key.")],
    status: Annotated[
        str | None, typer.Option(help="Only deliveries in this state: pending, delivered, dead or suppressed.")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="Most rows to show (newest first).")] = 100,
    as_json: JsonOpt = False,
) -> None:
    """A destination's deliveries: status, attempts, last answer and error (no message content)."""
    from kairos.api.destinations import deliveries as list_deliveries

    with open_kairos(as_json) as kairos:
        out: dict[str, Any] = list_deliveries(kairos, key, status, limit)
    if as_json:
        print_json(out)
        return
    table = Table("id", "type", "key", "status", "attempts", "last", "error", "updated")
    for d in out["items"]:
        table.add_row(
            d["id"], d["type"], d["key"], d["status"], str(d["attempts"]), str(d["last_status"] or ""),
            d["last_error"] or "", _when(d["updated_at"]),
        )  # fmt: skip
    console.print(table)


@destinations.command("retry")
def retry(key: Annotated[str, typer.Argument(help="The destination's key.")], as_json: JsonOpt = False) -> None:
    """Send a destination's dead deliveries again (after the receiver was fixed)."""
    from kairos.api.destinations import retry as retry_dead

    with open_kairos(as_json) as kairos:
        out = retry_dead(kairos, key)
    if as_json:
        print_json(out)
    else:
        console.print(f"{out['retried']} dead deliveries of {key} are pending again", markup=False)


def deliver() -> None:
    """Run the delivery worker alone (e.g. beside `kairos serve` with KAIROS__DELIVERY__MODE=off)."""
    from kairos.activate.worker import run_forever
    from kairos.logs import setup_logging

    with open_kairos() as kairos:
        setup_logging(kairos.settings.server.log_level)
        console.print("delivering; Ctrl-C to stop", highlight=False)
        stop = threading.Event()
        thread = threading.Thread(target=run_forever, args=(kairos, stop), name="kairos-delivery")
        thread.start()
        with contextlib.suppress(KeyboardInterrupt):
            while thread.is_alive():
                thread.join(0.5)
        stop.set()
        thread.join()

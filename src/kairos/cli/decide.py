"""``kairos offers list|show|put|delete``, ``kairos report decisions|experience`` and ``kairos learn``."""

from __future__ import annotations

import json
import threading
import time
from typing import Annotated, Any

import typer
from rich.text import Text

from kairos.cli._common import Table, console, json_argument, open_kairos, print_json

__all__ = ["learn", "offers", "report"]

offers = typer.Typer(help="The offer catalogue the decision API chooses from.", no_args_is_help=True)
report = typer.Typer(help="Reports over the decision log.", no_args_is_help=True)
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
From = Annotated[str | None, typer.Option("--from", help="ISO 8601 start (default: 30 days before --to).")]
To = Annotated[str | None, typer.Option("--to", help="ISO 8601 end (default: now).")]


@offers.command("list")
def list_(as_json: JsonOpt = False) -> None:
    """List the offers, in the baseline's priority order (value * weight)."""
    from kairos.api.decide import offer_view
    from kairos.decide.offers import KIND

    with open_kairos(as_json) as kairos:
        views = [offer_view(kairos, d) for d in kairos.store.admin.definitions(KIND)]
    views.sort(key=lambda v: (-v["value"] * v["weight"], v["key"]))
    if as_json:
        print_json(views)
        return
    table = Table("key", "name", "purpose", "channels", "value", "weight", "impressions")
    for v in views:
        table.add_row(
            v["key"], v["name"], v["purpose"], ", ".join(v["channels"]) or "any", f"{v['value']:g}",
            f"{v['weight']:g}", str(v["impressions"]),
        )  # fmt: skip
    console.print(table)


@offers.command("show")
def show(key: str, as_json: JsonOpt = False) -> None:
    """One offer, with its impressions (and what is left of its budget)."""
    from kairos.api.decide import get_offer, offer_view

    with open_kairos(as_json) as kairos:
        view = offer_view(kairos, get_offer(kairos, key))
    _print(view, as_json)


@offers.command("put")
def put(
    key: str,
    body: Annotated[str, typer.Argument(help="The JSON body of PUT /v1/offers/KEY.")],
    as_json: JsonOpt = False,
) -> None:
    """Create or change an offer."""
    from kairos.api.decide import save_offer

    with open_kairos(as_json) as kairos:
        parsed = json_argument(body)
        view, _ = save_offer(kairos, key, parsed)
    _print(view, as_json)


@offers.command("delete")
def delete(key: str, as_json: JsonOpt = False) -> None:
    """Delete an offer (decisions stop showing it within a second; its history stays)."""
    from kairos.api.decide import remove_offer

    with open_kairos(as_json) as kairos:
        out = remove_offer(kairos, key)
    _print(out, as_json)


def _print(view: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print_json(view)
        return
    for name, value in view.items():
        shown = json.dumps(value) if isinstance(value, dict | list) else str(value)
        console.print(Text.assemble((name, "bold"), f": {shown}"), highlight=False)


def _pct(share: float | None) -> str:
    return "-" if share is None else f"{100 * share:.1f}%"


@report.command("experience")
def experience(start: From = None, end: To = None, as_json: JsonOpt = False) -> None:
    """Which experience the business delivers per channel: mass, niche, targeted or one-to-one."""
    from kairos.decide import reports

    with open_kairos(as_json) as kairos:
        out = reports.experience(
            kairos.store.decisions,
            reports.period(start, end, kairos.clock.now()),
            kairos.settings.decide.experience_threshold,
        )
    if as_json:
        print_json(out)
        return
    table = Table("channel", "decisions", "interaction", "customization", "quadrant")
    rows = [("all channels", out["overall"]), *sorted(out["channels"].items())]
    for name, p in rows:
        table.add_row(name, str(p["decisions"]), _pct(p["interaction"]), _pct(p["customization"]), p["quadrant"] or "-")
    console.print(table)
    for move in out["overall"].get("moves", [])[:5]:
        console.print(f"- {move['text']}", highlight=False, markup=False)


@report.command("decisions")
def decisions(start: From = None, end: To = None, as_json: JsonOpt = False) -> None:
    """Decisions by group, uplift vs control, and off-policy estimates of the policy and the baseline."""
    from kairos.decide import reports
    from kairos.decide.learning import PolicyHolder

    with open_kairos(as_json) as kairos:
        policy = PolicyHolder(kairos.store.decisions, kairos.settings.decide).current(max_age=0).policy
        out = reports.decisions(kairos.store.decisions, policy, reports.period(start, end, kairos.clock.now()))
    if as_json:
        print_json(out)
        return
    table = Table("group", "decisions", "impressions", "rewarded", "rate", "95% interval")
    for name, g in out["groups"].items():
        rate = g["rate"]
        interval = "-" if rate["low"] is None else f"{100 * rate['low']:.2f}% - {100 * rate['high']:.2f}%"
        value = "-" if rate["value"] is None else f"{100 * rate['value']:.2f}%"
        table.add_row(name, str(g["decisions"]), str(g["impressions"]), str(g["rewarded"]), value, interval)
    console.print(table)
    console.print(f"uplift vs control: {json.dumps(out['uplift'])}", highlight=False, markup=False)


def learn(
    once: Annotated[bool, typer.Option("--once", help="Learn what is waiting, store a snapshot and exit.")] = False,
) -> None:
    """Run the learner alone (with decide.learner_mode = "off" in the API processes)."""
    from kairos.decide.learning import LearnerThread, Trainer
    from kairos.logs import setup_logging
    from kairos.privacy.training import training_gate

    with open_kairos() as kairos:
        setup_logging(kairos.settings.server.log_level)
        trainer = Trainer(
            kairos.store.decisions,
            kairos.settings.decide,
            kairos.clock,
            outbox=kairos.store.outbox,
            gate=training_gate(kairos),
        )
        if once:
            learned = trainer.step(force_snapshot=True)
            console.print(f"learned {learned} rewards; policy snapshot {trainer.version}", highlight=False)
            return
        console.print("learning; Ctrl-C to stop", highlight=False)
        thread = LearnerThread(trainer)
        thread.start()
        stop = threading.Event()
        try:
            while not stop.is_set():
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass
        thread.stop()

"""The ``kairos`` command: serve, replay, demo, import, sources, keys."""

from __future__ import annotations

import contextlib
import os
import time
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.text import Text

from kairos import __version__
from kairos.cli._common import console, err_console, open_kairos, print_json
from kairos.cli.admin import keys, sources
from kairos.cli.deadletters import deadletters
from kairos.cli.decide import learn, offers, report
from kairos.cli.definitions import moments, segments, traits
from kairos.cli.destinations import deliver, destinations
from kairos.cli.importer import import_file
from kairos.cli.microsegments import microsegments
from kairos.cli.privacy import privacy
from kairos.demo.load import demo
from kairos.privacy.erasure import run_pending
from kairos.runtime import Kairos

__all__ = ["app", "main"]

app = typer.Typer(
    help="Kairos: real-time customer data and personalization platform.",
    no_args_is_help=True,
    add_completion=False,
)
app.add_typer(sources, name="sources")
app.add_typer(keys, name="keys")
app.add_typer(deadletters, name="deadletters")
app.add_typer(traits, name="traits")
app.add_typer(segments, name="segments")
app.add_typer(moments, name="moments")
app.add_typer(microsegments, name="microsegments")
app.add_typer(destinations, name="destinations")
app.add_typer(offers, name="offers")
app.add_typer(report, name="report")
app.add_typer(privacy, name="privacy")
app.command("deliver")(deliver)
app.command("import")(import_file)
app.command("learn")(learn)
app.command("demo")(demo)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]


def _version(value: bool) -> None:
    if value:
        print(__version__)
        raise typer.Exit()


@app.callback()
def root(
    config: Annotated[
        str | None,
        typer.Option("--config", help="TOML settings file (default ./kairos.toml).", envvar="KAIROS_CONFIG"),
    ] = None,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    if config:
        os.environ["KAIROS_CONFIG"] = config


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Listen address (default: server.host).")] = None,
    port: Annotated[int | None, typer.Option(help="Listen port (default: server.port).")] = None,
) -> None:
    """Run the HTTP API, and the processor as `processor.mode` says (by default a supervised child process)."""
    import uvicorn

    from kairos._gc import tune_for_server
    from kairos.api import create_app
    from kairos.logs import setup_logging

    with open_kairos() as kairos:
        server = kairos.settings.server
        setup_logging(server.log_level)
        tune_for_server()
        console.print(
            f"Kairos {__version__} on http://{host or server.host}:{port or server.port} "
            f"(store: {kairos.store.name}); API docs at /docs",
            highlight=False,
        )
        uvicorn.run(
            create_app(kairos),
            host=host or server.host,
            port=port or server.port,
            log_config=None,
            access_log=False,
            server_header=False,
        )


@app.command()
def replay(as_json: JsonOpt = False) -> None:
    """Rebuild all derived state (profiles, identities, timelines, merges) from the event log."""
    with open_kairos(as_json) as kairos:
        started = time.perf_counter()
        total = kairos.store.log.count()
        kairos.store.state.reset()
        with Progress(
            TextColumn("replaying"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=console,
            disable=as_json,
        ) as bar:
            task = bar.add_task("replay", total=total)
            done = kairos.processor.run_until_caught_up(lambda n: bar.advance(task, n))
        _paused(kairos, as_json)
        summary = {
            "events": done,
            "profiles": kairos.store.state.count_profiles(),
            "seconds": round(time.perf_counter() - started, 2),
        }
    if as_json:
        print_json(summary)
    else:
        console.print(
            f"replayed {summary['events']} events into {summary['profiles']} profiles in {summary['seconds']} s"
        )


@app.command()
def process(
    follow: Annotated[bool, typer.Option(help="Keep running and apply new events as they arrive.")] = True,
    as_json: JsonOpt = False,
) -> None:
    """Run the processor alone (e.g. beside `kairos serve` with KAIROS__PROCESSOR__ENABLED=false)."""
    from kairos.logs import setup_logging

    with open_kairos(as_json) as kairos:
        setup_logging(kairos.settings.server.log_level)
        started = time.perf_counter()
        done = kairos.processor.run_until_caught_up()
        run_pending(kairos)  # erasure requests waiting for this processor (it runs them between batches too)
        if follow:
            console.print(f"processor caught up ({done} events); following the log, Ctrl-C to stop", highlight=False)
            with contextlib.suppress(KeyboardInterrupt):
                kairos.processor.run_forever(kairos.settings.processor.poll_interval_ms / 1000)
            return
        _paused(kairos, as_json)
        summary = {"events": done, "seconds": round(time.perf_counter() - started, 2), "lag": 0}
    if as_json:
        print_json(summary)
    else:
        console.print(f"applied {summary['events']} events in {summary['seconds']} s")


def _paused(kairos: Kairos, as_json: bool) -> None:
    """A paused processor is an error the operator must see (exit status 1), not a quiet early stop."""
    reason = kairos.processor.paused
    if reason:
        if as_json:
            print_json({"error": {"code": "processor_paused", "message": reason}})
        else:
            err_console.print(Text.assemble(("processor paused", "red"), f": {reason}"), highlight=False)
        raise typer.Exit(1)


def main() -> None:
    app()

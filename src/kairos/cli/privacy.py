"""``kairos privacy``: export everything held about a person, erase them, follow an erasure request, and give
them a link to their preference centre."""

from __future__ import annotations

import json
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from kairos.cli._common import console, open_kairos, print_json
from kairos.collect import iso
from kairos.errors import ValidationError
from kairos.identity import profile_id_for
from kairos.privacy import _hooks
from kairos.privacy.erasure import find_request, request_erasure, request_view, wait_complete
from kairos.privacy.export import export, person
from kairos.privacy.links import create_link, parse_ttl

__all__ = ["privacy"]

privacy = typer.Typer(help="Export and erasure on request (docs/privacy.md).", no_args_is_help=True)
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
Ref = Annotated[str, typer.Argument(help="A profile id or type:value (user_id:u1, email:jane@example.com).")]


@privacy.command("export")
def export_command(
    ref: Ref,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write the JSON here, not to stdout.")] = None,
) -> None:
    """Everything held about one person, as JSON (the format of POST /v1/privacy/export)."""
    with open_kairos(True) as kairos:
        who = person(kairos, ref)
        if output is None:
            document = export(kairos, who)
            sys.stdout.write(json.dumps(document, indent=2, ensure_ascii=False) + "\n")
        else:
            document = _export_to(output, lambda: export(kairos, who))
        _hooks.audit(kairos, "privacy.export", document["export_id"], "cli")
    if output is not None:
        console.print(f"wrote {output}", highlight=False, markup=False)


def _export_to(path: Path, make: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Write the document ``make`` builds to ``path``, through a temporary file beside it (readable by its owner
    only) made *before* the document: an export joins the person's data-use ledger, so a path that cannot be
    written fails first, and ``path`` is replaced only by a whole document, never emptied by a failure."""
    if path.is_dir():
        raise _bad_output(path, "it is a directory")
    try:
        handle = tempfile.NamedTemporaryFile(  # noqa: SIM115 (closed below, then renamed)
            "w", encoding="utf-8", dir=path.parent, prefix=f".{path.name}.", suffix=".tmp", delete=False
        )
    except OSError as exc:  # no such directory, no permission, a read-only file system, ...
        raise _bad_output(path, exc.strerror or str(exc)) from None
    try:
        with handle:
            document = make()
            handle.write(json.dumps(document, indent=2, ensure_ascii=False) + "\n")
        os.replace(handle.name, path)
    except OSError as exc:  # the disk filled up, ...
        raise _bad_output(path, exc.strerror or str(exc)) from None
    finally:
        Path(handle.name).unlink(missing_ok=True)
    return document


def _bad_output(path: Path, why: str) -> ValidationError:
    return ValidationError(f"cannot write {path}: {why}", code="bad_output", field="--output")


@privacy.command("erase")
def erase_command(
    ref: Ref,
    suppress: Annotated[
        bool, typer.Option("--suppress", help="Keep keyed hashes of the identifiers: later events are dropped.")
    ] = False,
    wait: Annotated[
        bool, typer.Option("--wait", help="Carry it out now (from this process if need be) and wait for the end.")
    ] = False,
    timeout: Annotated[float, typer.Option(help="Seconds --wait waits at most.")] = 300.0,
    as_json: JsonOpt = False,
) -> None:
    """Erase one person from every store and cache (the processor carries it out; --wait to see it end)."""
    with open_kairos(as_json) as kairos:
        made = request_erasure(kairos, person(kairos, ref), suppress)
        _hooks.audit(kairos, "privacy.erase", made.id, "cli")
        view = request_view(wait_complete(kairos, made.id, timeout) if wait else made)
    if as_json:
        print_json(view)
    else:
        console.print(f"erasure {view['request_id']}: {view['status']}", highlight=False, markup=False)
    if wait and view["status"] != "complete":
        raise typer.Exit(1)


@privacy.command("link")
def link_command(
    ref: Ref,
    ttl: Annotated[str | None, typer.Option(help='How long it lasts ("15m", "1h", "7d"); privacy.link_ttl.')] = None,
    as_json: JsonOpt = False,
) -> None:
    """A signed, expiring link to the person's preference centre (as POST /v1/privacy/links answers)."""
    with open_kairos(as_json) as kairos:
        settings = kairos.settings
        ms = parse_ttl(ttl, settings.privacy.link_ttl, settings.privacy.link_max_ttl)
        base = settings.privacy.public_url or f"http://{settings.server.host}:{settings.server.port}"
        pk = person(kairos, ref)
        made = create_link(kairos, pk, ms, base)
        _hooks.audit(kairos, "privacy.link", profile_id_for(pk), "cli")
    view = {"url": made.url, "expires_at": iso(made.expires_at)}
    if as_json:
        print_json(view)
    else:
        console.print(
            f"{view['url']}\n(valid until {view['expires_at']})", highlight=False, soft_wrap=True, markup=False
        )


@privacy.command("status")
def status_command(
    request_id: Annotated[str, typer.Argument(help="The request id (pr_...).")], as_json: JsonOpt = False
) -> None:
    """Where an erasure request stands: pending, running, complete or failed, with its step counts."""
    with open_kairos(as_json) as kairos:
        view = request_view(find_request(kairos, request_id))
    if as_json:
        print_json(view)
        return
    console.print(
        f"{view['request_id']}: {view['status']} (created {view['created_at']})", highlight=False, markup=False
    )
    for key, value in sorted(view["steps"].items()):
        console.print(f"  {key}: {value}", highlight=False, markup=False)

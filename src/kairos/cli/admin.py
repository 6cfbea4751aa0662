"""``kairos sources ...`` and ``kairos keys ...``: write keys for sources, API keys for everything else."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated

import typer
from rich.table import Table

from kairos.cli._common import console, open_kairos, print_json

__all__ = ["keys", "sources"]

sources = typer.Typer(help="Event sources and their write keys.", no_args_is_help=True)
keys = typer.Typer(help="API keys for the profile and admin APIs.", no_args_is_help=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]


class Kind(StrEnum):
    stated = "stated"
    observed = "observed"
    inferred = "inferred"
    third_party = "third_party"


class Scope(StrEnum):
    read = "read"
    decide = "decide"  # POST /v1/decide and /v1/rewards: what an execution system needs, nothing more
    admin = "admin"


def _when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds")


@sources.command("add")
def sources_add(
    name: Annotated[str, typer.Argument(help="Source name, e.g. web, ios, pos.")],
    kind: Annotated[Kind, typer.Option(help="Kind of the traits this source sends.")] = Kind.observed,
    as_json: JsonOpt = False,
) -> None:
    """Create a source and print its write key."""
    with open_kairos(as_json) as kairos:
        source = kairos.store.admin.add_source(name, kind.value, kairos.clock.now())
    if as_json:
        print_json(
            {
                "id": source.id,
                "name": source.name,
                "write_key": source.write_key,
                "trait_kind": source.trait_kind,
            }
        )
    else:
        console.print(f"source [bold]{source.name}[/bold] created; write key:")
        print(source.write_key)


@sources.command("list")
def sources_list(as_json: JsonOpt = False) -> None:
    """List sources with their write keys."""
    with open_kairos(as_json) as kairos:
        rows = kairos.store.admin.sources()
    if as_json:
        print_json(
            [
                {
                    "name": s.name,
                    "write_key": s.write_key,
                    "enabled": s.enabled,
                    "trait_kind": s.trait_kind,
                    "created_at": _when(s.created_at),
                }
                for s in rows
            ]
        )
        return
    table = Table("name", "write key", "enabled", "trait kind", "created")
    for s in rows:
        table.add_row(s.name, s.write_key, "yes" if s.enabled else "[red]no[/red]", s.trait_kind, _when(s.created_at))
    console.print(table)


def _set_enabled(name: str, enabled: bool, as_json: bool) -> None:
    with open_kairos(as_json) as kairos:
        source = kairos.store.admin.set_source_enabled(name, enabled)
    if as_json:
        print_json({"name": source.name, "enabled": source.enabled})
    else:
        console.print(f"source [bold]{source.name}[/bold] {'enabled' if enabled else 'disabled'}")


@sources.command("disable")
def sources_disable(name: str, as_json: JsonOpt = False) -> None:
    """Refuse events from a source (within 5 seconds on running servers)."""
    _set_enabled(name, False, as_json)


@sources.command("enable")
def sources_enable(name: str, as_json: JsonOpt = False) -> None:
    """Accept events from a disabled source again."""
    _set_enabled(name, True, as_json)


@keys.command("add")
def keys_add(
    name: Annotated[str, typer.Argument(help="Who or what uses the key.")],
    scope: Annotated[list[Scope], typer.Option(help="Scope; repeat for several. admin implies read.")],
    as_json: JsonOpt = False,
) -> None:
    """Create an API key; the secret is printed once and only its hash is kept."""
    with open_kairos(as_json) as kairos:
        key, secret = kairos.store.admin.add_api_key(name, frozenset(s.value for s in scope), kairos.clock.now())
    if as_json:
        print_json({"id": key.id, "name": key.name, "scopes": sorted(key.scopes), "key": secret})
    else:
        console.print(
            f"API key [bold]{key.name}[/bold] ({', '.join(sorted(key.scopes))}); keep it, it is not shown again:"
        )
        print(secret)


@keys.command("list")
def keys_list(as_json: JsonOpt = False) -> None:
    """List API keys (names and scopes; secrets are not stored)."""
    with open_kairos(as_json) as kairos:
        rows = kairos.store.admin.api_keys()
    if as_json:
        print_json(
            [{"id": k.id, "name": k.name, "scopes": sorted(k.scopes), "created_at": _when(k.created_at)} for k in rows]
        )
        return
    table = Table("name", "scopes", "created")
    for k in rows:
        table.add_row(k.name, ", ".join(sorted(k.scopes)), _when(k.created_at))
    console.print(table)

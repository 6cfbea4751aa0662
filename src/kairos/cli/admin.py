"""``kairos sources ...`` and ``kairos keys ...``: write keys for sources, API keys for everything else."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.text import Text

from kairos import audit
from kairos.cli._common import Table, console, fail, open_kairos, print_json
from kairos.errors import KairosError, ValidationError
from kairos.scopes import SCOPES, parse_scopes
from kairos.store import ApiKey

__all__ = ["keys", "sources"]

sources = typer.Typer(help="Event sources and their write keys.", no_args_is_help=True)
keys = typer.Typer(help="API keys for the profile and admin APIs.", no_args_is_help=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]


class Kind(StrEnum):
    stated = "stated"
    observed = "observed"
    inferred = "inferred"
    third_party = "third_party"


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
        audit.record(kairos, None, "sources.add", source.id, 200)
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
        console.print(f"source [bold]{escape(source.name)}[/bold] created; write key:")
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
        table.add_row(
            s.name, s.write_key, "yes" if s.enabled else Text("no", style="red"), s.trait_kind, _when(s.created_at)
        )
    console.print(table)


def _set_enabled(name: str, enabled: bool, as_json: bool) -> None:
    with open_kairos(as_json) as kairos:
        source = kairos.store.admin.set_source_enabled(name, enabled)
        audit.record(kairos, None, "sources.enable" if enabled else "sources.disable", source.id, 200)
    if as_json:
        print_json({"name": source.name, "enabled": source.enabled})
    else:
        console.print(f"source [bold]{escape(source.name)}[/bold] {'enabled' if enabled else 'disabled'}")


@sources.command("disable")
def sources_disable(name: str, as_json: JsonOpt = False) -> None:
    """Refuse events from a source (within 5 seconds on running servers)."""
    _set_enabled(name, False, as_json)


@sources.command("enable")
def sources_enable(name: str, as_json: JsonOpt = False) -> None:
    """Accept events from a disabled source again."""
    _set_enabled(name, True, as_json)


def _key_view(k: ApiKey) -> dict[str, Any]:
    """A key as the CLI shows it: never its secret, which is not stored, nor its hash."""
    return {
        "id": k.id,
        "name": k.name,
        "scopes": sorted(k.scopes),
        "created_at": _when(k.created_at),
        "rotated_at": _when(k.rotated_at) if k.rotated_at is not None else None,
        "revoked_at": _when(k.revoked_at) if k.revoked_at is not None else None,
        "revoked": k.revoked_at is not None,
    }


def _grace(text: str) -> int:
    """``0``, ``90s``, ``15m``, ``1h``, ``2d`` → milliseconds (at most 30 days)."""
    units = {"s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
    number, unit = (text[:-1], text[-1]) if text[-1:] in units else (text, "s")
    if not (number.isascii() and number.isdigit()) or len(number) > 9:
        raise ValidationError(
            "grace is a whole number with s, m, h or d, e.g. 30m or 1h (0: the old secret stops at once)",
            field="grace",
        )
    ms = int(number) * units[unit]
    if ms > 30 * 86_400_000:
        raise ValidationError("grace is at most 30 days", field="grace")
    return ms


@keys.command("add")
def keys_add(
    name: Annotated[str, typer.Argument(help="Who or what uses the key.")],
    scope: Annotated[
        list[str],
        typer.Option(
            help=f"Scope, one of {', '.join(SCOPES)}; repeat for several. admin implies read, write and decide "
            "(not privacy)."
        ),
    ],
    as_json: JsonOpt = False,
) -> None:
    """Create an API key; the secret is printed once and only its hash is kept."""
    with open_kairos(as_json) as kairos:
        key, secret = kairos.store.admin.add_api_key(name, frozenset(parse_scopes(scope)), kairos.clock.now())
        audit.record(kairos, None, "keys.add", key.id, 200, {"scopes": sorted(key.scopes)})
    if as_json:
        print_json({"id": key.id, "name": key.name, "scopes": sorted(key.scopes), "key": secret})
    else:
        console.print(
            f"API key [bold]{escape(key.name)}[/bold] ({', '.join(sorted(key.scopes))}), id {key.id}; keep it, "
            "it is not shown again:"
        )
        print(secret)


@keys.command("list")
def keys_list(as_json: JsonOpt = False) -> None:
    """List API keys: id, name, scopes, when created, rotated and revoked (secrets are not stored)."""
    with open_kairos(as_json) as kairos:
        rows = kairos.store.admin.api_keys()
    if as_json:
        print_json([_key_view(k) for k in rows])
        return
    table = Table("id", "name", "scopes", "created", "rotated", "revoked")
    for k in rows:
        v = _key_view(k)
        table.add_row(
            k.id,
            k.name,
            ", ".join(v["scopes"]),
            v["created_at"],
            v["rotated_at"] or "",
            Text(v["revoked_at"] or "", style="red") if v["revoked"] else "",
        )
    console.print(table)


@keys.command("revoke")
def keys_revoke(
    key: Annotated[str, typer.Argument(help="The key's id or name (kairos keys list).")],
    as_json: JsonOpt = False,
) -> None:
    """Revoke an API key: refused at once here, and by running servers within 5 seconds (their key cache)."""
    with open_kairos(as_json) as kairos:
        revoked = kairos.store.admin.revoke_api_key(key, kairos.clock.now())
        audit.record(kairos, None, "keys.revoke", revoked.id, 200)
    if as_json:
        print_json(_key_view(revoked))
    else:
        console.print(f"API key [bold]{escape(revoked.name)}[/bold] ({revoked.id}) revoked")


@keys.command("rotate")
def keys_rotate(
    key: Annotated[str, typer.Argument(help="The key's id or name (kairos keys list).")],
    grace: Annotated[
        str, typer.Option(help="How long the old secret keeps working: 0 (stops at once), 30m, 1h, 2d.")
    ] = "0",
    as_json: JsonOpt = False,
) -> None:
    """Give an API key a new secret (printed once); the old one works until the grace period ends."""
    with open_kairos(as_json) as kairos:
        try:
            grace_ms = _grace(grace)
        except KairosError as exc:
            raise fail(exc, as_json) from exc
        rotated, secret = kairos.store.admin.rotate_api_key(key, kairos.clock.now(), grace_ms)
        audit.record(kairos, None, "keys.rotate", rotated.id, 200, {"grace_seconds": grace_ms // 1000})
    if as_json:
        print_json({**_key_view(rotated), "key": secret, "old_key_valid_for_seconds": grace_ms // 1000})
    else:
        until = f"for {grace}" if grace_ms else "no longer"
        console.print(
            f"API key [bold]{escape(rotated.name)}[/bold] ({rotated.id}) rotated; the old secret works {until}. "
            "New secret, keep it, it is not shown again:"
        )
        print(secret)

"""``kairos demo``: load the multi-channel story and a few thousand background profiles."""

from __future__ import annotations

from collections import defaultdict
from typing import Annotated, Any

import typer

from kairos.cli._common import console, open_kairos, print_json
from kairos.demo._story import STORY_USER_ID, demo_events
from kairos.runtime import Kairos

__all__ = ["demo", "load_demo"]

STORY_TYPES = ("loyalty_card", "crm_id")
# The web and app identify what customers type into sign-up and profile forms, so they may send
# `stated` traits; everything else is `observed`. (A source's kind caps what its events can claim.)
SOURCE_KINDS = {"web": "stated", "app": "stated"}


# Computed traits and segments the demo defines (docs/segments.md), unless the store has them already.
DEFINITIONS: list[tuple[str, str, dict[str, Any]]] = [
    ("trait", "orders_90d", {"aggregate": "count", "event": "Order Completed", "window": "90d"}),
    ("trait", "spent_90d", {"aggregate": "sum", "event": "Order Completed", "property": "total", "window": "90d"}),
    ("segment", "buyers", {"rule": "traits.orders_90d >= 1", "description": "Bought in the last 90 days"}),
    ("segment", "big_spenders", {"rule": '"buyers" in segments && traits.spent_90d >= 150.0'}),
    (
        "segment",
        "lapsed",
        {
            "rule": 'traits.orders_90d == 0 && profile.updated_at < now - duration("14d")',
            "description": "No order in 90 days and not seen for two weeks",
        },
    ),
]


# Offers the demo's decision API chooses from (docs/decide.md), unless the store has them already.
OFFERS: list[tuple[str, dict[str, Any]]] = [
    (
        "free_shipping",
        {
            "name": "Free shipping this week",
            "content": {"default": {"title": "Free shipping on every order this week"}},
            "attributes": {"category": "service", "price_tier": "low"},
            "contact_policy": {"max_impressions": 5, "window": "7d"},
        },
    ),
    (
        "vip_preview",
        {
            "name": "Early access for our best customers",
            "content": {"web": {"title": "Your early access is open"}, "email": {"subject": "You are in first"}},
            "attributes": {"category": "collection", "price_tier": "high"},
            "eligibility": '"big_spenders" in segments',
            "value": 3.0,
        },
    ),
    (
        "come_back",
        {
            "name": "We miss you: 15% off",
            "content": {"default": {"title": "15% off your next order"}},
            "attributes": {"category": "discount", "price_tier": "mid"},
            "eligibility": '"lapsed" in segments',
            "purpose": "marketing_email",
            "contact_policy": {"suppress_after_ignored": 3, "suppress_for": "30d"},
            "value": 2.0,
        },
    ),
    (
        "evening_picks",
        {
            "name": "Tonight's picks",
            "content": {"app": {"title": "Picked for your evening"}, "web": {"title": "Tonight's picks"}},
            "attributes": {"category": "recommendation", "price_tier": "mid"},
            "eligibility": 'context.daypart == "evening" || context.daypart == "night"',
        },
    ),
]


def load_demo(kairos: Kairos, profiles: int, seed: int) -> dict[str, Any]:
    """Append the demo events through the normal validation and log, then process them."""
    from kairos.api.decide import save_offer
    from kairos.decide.offers import KIND
    from kairos.segments.admin import save

    for kind, key, body in DEFINITIONS:
        if kairos.store.admin.definition(kind, key) is None:
            save(kairos, kind, key, body)
    for key, body in OFFERS:
        if kairos.store.admin.definition(KIND, key) is None:
            save_offer(kairos, key, body)
    by_source: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for source_name, event in demo_events(profiles, seed):
        by_source[source_name].append(event)
    accepted = rejected = 0
    for name, events in by_source.items():
        source = kairos.source_named(name, SOURCE_KINDS.get(name, "observed"))
        for i in range(0, len(events), 500):
            prepared, errors = kairos.prepare_for(source, {"batch": events[i : i + 500]}, "batch")
            kairos.append([(source.name, kairos.unsuppressed(source.name, prepared))])
            accepted += len(prepared)
            rejected += len(errors)
    kairos.processor.run_until_caught_up()
    return {"events": accepted, "rejected": rejected, "profiles": kairos.store.state.count_profiles()}


def demo(
    profiles: Annotated[int, typer.Option(help="Background profiles to generate.")] = 3000,
    seed: Annotated[int, typer.Option(help="Seed of the generator: same seed, same data.")] = 7,
    if_empty: Annotated[bool, typer.Option("--if-empty", help="Do nothing if the store already holds events.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """Load demo data: one person across web, app, store, call centre and CRM, plus background profiles."""
    with open_kairos(as_json) as kairos:
        if if_empty and kairos.store.log.last_seq() > 0:
            if not as_json:
                console.print(
                    "demo: the store already holds events; nothing loaded (kairos keys add NAME --scope read for a key)"
                )
            return
        missing = [t for t in STORY_TYPES if t not in kairos.processor.identifiers.types]
        if missing and not as_json:
            console.print(
                f"[yellow]note[/yellow]: identity types {', '.join(missing)} are not configured (see kairos.toml); "
                "the in-store purchase will not stitch to Jane's profile"
            )
        summary = load_demo(kairos, profiles, seed)
        server = kairos.settings.server
        host = "127.0.0.1" if server.host in ("0.0.0.0", "::", "") else server.host  # where to reach it from here
        base = f"http://{f'[{host}]' if ':' in host else host}:{server.port}"
        _, secret = kairos.store.admin.add_api_key("demo", frozenset({"read"}), kairos.clock.now())
    summary["read_key"] = secret
    summary["story_profile"] = f"user_id:{STORY_USER_ID}"
    if as_json:
        print_json(summary)
        return
    console.print(
        f"demo loaded: {summary['events']} events, {summary['profiles']} profiles. Jane's profile:\n"
        f"  curl -H 'Authorization: Bearer {secret}' {base}/v1/profiles/user_id:{STORY_USER_ID}",
        highlight=False,
        soft_wrap=True,
    )

"""What a destination receives: which outbox messages and events it selects, and the JSON it is sent.

The same functions serve webhooks (:mod:`kairos.activate.worker`) and pull subscriptions
(:mod:`kairos.activate.stream`), so both carry the same messages with the same ids, through the same
consent gate. A message is::

    {"id": "dl_…", "type": "moment|segment_entered|segment_exited|event", "key": "vip",
     "profile_id": "…", "occurred_at": "2026-03-01T12:00:00.000Z", "traits": {"plan": "pro"}, "data": {…}}

``id`` is derived from the destination and the message (the outbox key, or the event's log position), so a
redelivery, after a retry or a crash, carries the same id. ``traits`` are the profile's values when the
message is sent (only the keys the destination lists); ``data`` is what the message says beyond its key.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from kairos.activate.destinations import Destination
from kairos.collect import iso
from kairos.identity import profile_id_for
from kairos.pipeline import ProfileState
from kairos.pipeline.projection import Entry, Event, Projection
from kairos.profiles.computed import event_variables
from kairos.runtime import Kairos
from kairos.store import LogEntry, OutboxMessage

__all__ = ["Item", "delivery_id", "from_log", "from_outbox", "items_at", "render", "select"]

_encode = msgspec.json.Encoder().encode
_decode_event = msgspec.json.Decoder(Event).decode


@dataclass(frozen=True, slots=True)
class Item:
    """One message a destination selected, before consent and traits are applied."""

    source: str  # "outbox" or "log"
    position: int  # outbox id or log seq
    ref: str  # stable over replays: the outbox key, or "log:<seq>"
    type: str
    key: str
    profile_id: str | None
    occurred_at: int  # epoch ms
    data: dict[str, Any]


def delivery_id(destination: str, ref: str) -> str:
    """The same for the same (destination, message), whatever happens in between."""
    return "dl_" + hashlib.blake2b(f"{destination}\x00{ref}".encode(), digest_size=16).hexdigest()


def from_outbox(m: OutboxMessage) -> Item | None:
    payload = m.payload if isinstance(m.payload, dict) else {}
    name = {"segment_entered": "segment", "segment_exited": "segment", "moment": "moment"}.get(m.type)
    key = payload.get(name) if name else None
    if not isinstance(key, str):
        return None
    at = payload.get("at")
    data = {k: v for k, v in payload.items() if k not in (name, "at")}
    return Item("outbox", m.id, m.key, m.type, key, m.profile_id, at if isinstance(at, int) else m.created_at, data)


def _event_item(kairos: Kairos, e: LogEntry) -> tuple[Item, Entry] | None:
    try:
        event = _decode_event(e.payload)
    except msgspec.DecodeError:
        return None  # the processor dead-letters it as well
    entry = Entry(e.seq, e.source, e.trait_kind, e.received_at, e.ts, e.message_id, event)
    name = event.event if event.type == "track" else event.name
    data = {"event_type": event.type, "message_id": e.message_id, "properties": event.properties or {}}
    item = Item("log", e.seq, f"log:{e.seq}", "event", name or event.type, None, e.ts, data)
    return item, entry


def from_log(kairos: Kairos, e: LogEntry) -> Item | None:
    found = _event_item(kairos, e)
    return None if found is None else _with_profile(kairos, found[0], found[1])


def _with_profile(kairos: Kairos, item: Item, entry: Entry) -> Item:
    """The event's profile, found through its identifiers (highest priority first)."""
    keys = kairos.processor.identifiers.extract(entry.event)
    owners = kairos.store.state.find_identities(keys) if keys else {}
    pk = next((owners[k] for k in keys if k in owners), None)
    return dataclasses.replace(item, profile_id=profile_id_for(pk) if pk is not None else None)


def select(
    kairos: Kairos, dest: Destination, outbox_after: int, log_after: int, limit: int
) -> tuple[list[Item], int, int]:
    """The messages ``dest`` subscribes to after the two positions, and how far that read went: the outbox
    by id; the log only as far as the processor has applied it (an event's profile must exist)."""
    items: list[Item] = []
    messages = kairos.store.outbox.read(outbox_after, limit)
    outbox_to = messages[-1].id if messages else outbox_after
    for m in messages:
        item = from_outbox(m)
        if item is not None and dest.wants(item.type, item.key):
            items.append(item)
    log_to = log_after
    if dest.events is not None:
        applied = kairos.store.state.checkpoint().seq
        entries = kairos.store.log.read(log_after, min(limit, applied - log_after)) if applied > log_after else []
        for e in entries:
            found = _event_item(kairos, e)
            if found is not None and dest.events.evaluate(event_variables(found[1])):
                items.append(_with_profile(kairos, *found))
        log_to = entries[-1].seq if entries else log_after
    return items, outbox_to, log_to


def items_at(kairos: Kairos, refs: Sequence[tuple[str, int]]) -> dict[tuple[str, int], Item]:
    """The items at (source, position) pairs: what a stored delivery is re-read from when it is sent."""
    out: dict[tuple[str, int], Item] = {}
    outbox_ids = [p for s, p in refs if s == "outbox"]
    for mid, m in kairos.store.outbox.get(outbox_ids).items() if outbox_ids else ():
        item = from_outbox(m)
        if item is not None:
            out["outbox", mid] = item
    seqs = [p for s, p in refs if s == "log"]
    for seq, e in kairos.store.log.get(seqs).items() if seqs else ():
        found = from_log(kairos, e)
        if found is not None:
            out["log", seq] = found
    return out


def _profiles(kairos: Kairos, items: Sequence[Item], names: Collection[str]) -> dict[str, ProfileState]:
    """Current profiles by the ids the items name (following merges), with only the sections ``names``
    decoded (every other section is absent)."""
    kairos.definitions()  # computed traits are decoded through the current definitions
    pks: dict[str, int] = {}
    for item in items:
        if item.profile_id is not None and item.profile_id not in pks:
            pk = kairos.store.state.resolve_id(item.profile_id)
            if pk is not None:
                pks[item.profile_id] = pk
    rows = kairos.store.state.load_profiles(set(pks.values()))
    return {pid: kairos.codec.state(rows[pk], names) for pid, pk in pks.items() if pk in rows}


def render(kairos: Kairos, dest: Destination, items: Sequence[Item]) -> list[bytes | None]:
    """Each item's message as sent to ``dest``, or None where the consent gate forbids it (the person
    denied the destination's purpose, or is unknown)."""
    # A message needs the consents and the trait values it carries: the rest of a profile is not decoded.
    sources = [p.name for p in kairos.codec.projections if dest.traits and type(p).traits is not Projection.traits]
    profiles = _profiles(kairos, items, {"consents", *sources})
    consents = kairos.consent_policy
    out: list[bytes | None] = []
    for item in items:
        profile = profiles.get(item.profile_id) if item.profile_id is not None else None
        if not consents.allows(profile, dest.purpose):
            out.append(None)
            continue
        assert profile is not None
        values = kairos.codec.traits(profile) if sources else {}
        body = {
            "id": delivery_id(dest.key, item.ref),
            "type": item.type,
            "key": item.key,
            "profile_id": profile.id,
            "occurred_at": iso(item.occurred_at),
            "traits": {k: values[k] for k in dest.traits if k in values},
            "data": item.data,
        }
        out.append(_encode(body))
    return out

"""Rewards from events: a track event that carries ``properties.decision_id``, or a configured conversion event.

Two halves, so that each stays simple and exact:

- :class:`RewardAttribution` is a projection: on such an event it emits a ``conversion`` message to the
  durable outbox, in the processor's transaction, naming the person as the decision log knows them (the
  profile id and a digest of each identity, so a decision made before Kairos knew the person is found too).
  It keeps no state; replaying the log re-emits the same messages with the same keys, which are ignored.
- :func:`attribute` (run by the learner, ``kairos.decide.learning``) reads those messages after its cursor
  and records the rewards: the decision the event names (its ``offer_id``, else the first item shown), or for
  a conversion the person's latest decision still waiting for rewards when the event happened (its first item).
  Recording is idempotent (one reward per item, the first wins), so reading a message twice is harmless.

An event's reward is ``properties.reward`` when it is a finite number, else ``decide.conversion_reward``; it is
recorded clipped into ``decide.reward_range`` (an event cannot be refused the way ``POST /v1/rewards`` refuses
a reward outside it).
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

from kairos.config import MAX_REWARD, DecideSettings
from kairos.pipeline.projection import Context, Entry, Projection
from kairos.store import Outbox, SqlDecisions

__all__ = ["BATCH", "CONVERSION", "RewardAttribution", "attribute", "subject_of", "subjects"]

CONVERSION = "conversion"
CURSOR = "attribution_outbox"
BATCH = 1000


def subject_of(kind: str, value: str) -> str:
    """The decision log's subject for an identity: a digest, never the identity itself."""
    return "h:" + hashlib.blake2b(f"{kind}:{value}".encode(), digest_size=16).hexdigest()


def subjects(profile_id: str, identities: Any) -> list[str]:
    return [profile_id, *sorted(subject_of(kind, value) for kind, value in identities)]


class RewardAttribution(Projection[None]):
    name = "reward_attribution"

    def __init__(self, settings: DecideSettings | None = None) -> None:
        self.conversions = frozenset((settings or DecideSettings()).conversion_events)

    def initial(self) -> None:
        return None

    def apply(self, state: None, entry: Entry, ctx: Context) -> None:
        event = entry.event
        if event.type != "track":
            return None
        props = event.properties or {}
        decision = props.get("decision_id")
        named = isinstance(decision, str) and 0 < len(decision) <= 64
        if not named and event.event not in self.conversions:
            return None
        payload: dict[str, Any] = {
            "at": min(entry.ts, entry.received_at),  # an event from the future cannot reach a later decision
            "seq": entry.seq,
            "subjects": subjects(ctx.profile.id, ctx.profile.identities),
        }
        if named:
            payload["decision_id"] = decision
            offer = props.get("offer_id")
            if isinstance(offer, str) and len(offer) <= 64:
                payload["offer_id"] = offer
        reward = props.get("reward")
        if isinstance(reward, int | float) and not isinstance(reward, bool):
            # An integer beyond floats (stored before collect refused them) is clipped like any other.
            number = reward if isinstance(reward, float) else max(-MAX_REWARD, min(MAX_REWARD, reward))
            if math.isfinite(number):
                payload["reward"] = max(-MAX_REWARD, min(MAX_REWARD, float(number)))
        ctx.emit(CONVERSION, payload)
        return None

    def merge(self, winner: None, loser: None, ctx: Context) -> None:
        return None


def attribute(outbox: Outbox, decisions: SqlDecisions, settings: DecideSettings, now: int) -> int:
    """Record the rewards of the outbox messages after the cursor (at most ``BATCH``); how many were read."""
    after = decisions.meta_int(CURSOR)
    messages = outbox.read(after, BATCH)
    if not messages:
        return 0
    rows: list[tuple[str, str, float, int, str]] = []
    wait = int(settings.reward_wait_seconds * 1000)
    for message in messages:
        if message.type != CONVERSION or not isinstance(message.payload, dict):
            continue
        p = message.payload
        reward = settings.clip_reward(float(p.get("reward", settings.conversion_reward)))
        at = int(p.get("at", now))
        if "decision_id" in p:
            row = decisions.decision(p["decision_id"])
            if row is None or row.closed or at >= row.closes_at or at < row.at - 60_000 or not row.offers:
                continue
            named = p.get("offer_id")
            offer = named if isinstance(named, str) and named in row.offers else row.offers[0]
            rows.append((row.id, offer, reward, now, "event"))
            continue
        history, _ = decisions.history(list(p.get("subjects") or ()), at - wait, limit=20, records=False)
        waiting = [d for d in history if d.at <= at < d.closes_at and not d.closed and d.offers]
        if waiting:
            latest = max(waiting, key=lambda d: (d.at, d.seq))
            rows.append((latest.id, latest.offers[0], reward, now, "conversion"))
    if rows:
        decisions.add_rewards(rows)
    decisions.set_meta_int(CURSOR, messages[-1].id)
    return len(messages)

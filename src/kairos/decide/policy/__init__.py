"""Learning policies for the decision API: one interface, a registry, and snapshots any process can load.

A policy ranks the eligible offers of a decision and learns from the rewards that arrive later::

    policy = make_policy("linucb", seed=7)
    ranked = policy.rank(shared, actions, limit=3, rng=random.Random(decision_seed), weights=weights)
    ...
    policy.learn(shared, actions[ranked.order[0]], reward=1.0, propensity=ranked.propensities[0])
    blob = policy.dumps()              # stored as a versioned snapshot
    same = load_policy(blob)           # in every API process

The registered policies: ``priority`` (the control baseline: weight order, no exploration), ``uniform``
(random order), and three learners on one linear model of every shared x offer interaction that differ in
how they explore: ``linucb`` (the default, chosen by ``bench/learners.py``: see ``docs/decisions.md``),
``squarecb`` and ``epsilon_greedy``. ``docs/learning.md`` describes features, exploration and propensities.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from kairos.decide.policy._base import FORMAT, VERSION, Policy, PolicySnapshotError, Scoring
from kairos.decide.policy._baseline import PriorityPolicy, UniformPolicy
from kairos.decide.policy._linear import EpsilonGreedyPolicy, LinUCBPolicy, SquareCBPolicy

__all__ = [
    "DEFAULT_POLICY",
    "POLICIES",
    "EpsilonGreedyPolicy",
    "LinUCBPolicy",
    "Policy",
    "PolicySnapshotError",
    "PriorityPolicy",
    "Scoring",
    "SquareCBPolicy",
    "UniformPolicy",
    "load_policy",
    "make_policy",
]

POLICIES: Mapping[str, type[Policy]] = {
    cls.name: cls for cls in (PriorityPolicy, UniformPolicy, EpsilonGreedyPolicy, LinUCBPolicy, SquareCBPolicy)
}
DEFAULT_POLICY = "linucb"


def make_policy(name: str, *, seed: int = 0, **options: Any) -> Policy:
    """A new, untrained policy; unknown names and bad options raise ``ValueError``."""
    cls = POLICIES.get(name)
    if cls is None:
        raise ValueError(f"unknown policy {name!r}; known: {', '.join(sorted(POLICIES))}")
    try:
        return cls(seed=seed, **options)
    except TypeError as error:  # an option this policy does not have
        raise ValueError(f"policy {name!r}: {error}") from None


def load_policy(data: bytes) -> Policy:
    """The policy a :meth:`Policy.dumps` blob holds; anything else raises :class:`PolicySnapshotError`."""
    try:
        envelope = msgspec.msgpack.decode(data)
    except (msgspec.DecodeError, TypeError, ValueError) as error:
        raise PolicySnapshotError(f"not a policy snapshot: {error}") from None
    if not isinstance(envelope, dict) or envelope.get("format") != FORMAT:
        raise PolicySnapshotError("not a policy snapshot (no kairos.policy envelope)")
    if envelope.get("version") != VERSION:
        raise PolicySnapshotError(f"policy snapshot version {envelope.get('version')!r}; this code reads {VERSION}")
    cls = POLICIES.get(envelope.get("name"))  # type: ignore[arg-type]
    if cls is None:
        raise PolicySnapshotError(f"policy snapshot of an unknown policy {envelope.get('name')!r}")
    try:
        return cls._from_envelope(envelope)
    except (KeyError, ValueError, TypeError, IndexError, AttributeError, UnicodeDecodeError) as error:
        raise PolicySnapshotError(f"corrupt {cls.name} snapshot: {error!r}") from None

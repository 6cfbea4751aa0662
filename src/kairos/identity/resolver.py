"""Deterministic, real-time identity resolution: which profile an event's identifiers belong to.

:meth:`Resolver.resolve` decides, and returns a :class:`Resolution`; the processor carries it out (each
projection merges its own state), so identity resolution knows nothing of traits or consents:

1. find the profiles that already hold any of the event's identifiers;
2. if folding them and the event's identifiers into one profile would exceed a per-type limit (by default
   one ``user_id``), drop the lowest-priority identifier that takes part in the conflict and try again,
   so a shared device or a re-used anonymous id never merges two known people;
3. merge what is left into the oldest profile (the lowest key: keys are the log positions that created
   them), or create a profile keyed by this event's position when nothing matched.
"""

from __future__ import annotations

import functools
import hashlib
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

from kairos.identity.normalize import Identifiers
from kairos.metrics import IDENTITY_CONFLICTS

__all__ = ["Graph", "Resolution", "Resolver", "profile_id_for"]

IdentityKey = tuple[str, str]
_NAMESPACE = uuid.UUID("6b616972-6f73-4000-8000-000000000000")


_PREFIX = _NAMESPACE.bytes


@functools.lru_cache(maxsize=65_536)  # every profile read and decision asks (a pure function)
def profile_id_for(pk: int) -> str:
    """The public id of the profile created at log position ``pk``: the same on every replay.

    ``uuid.uuid5(_NAMESPACE, str(pk))``, written out (SHA-1 of the namespace and the name, version and variant
    bits set): the processor asks once per new profile, and ``uuid5`` builds two ``UUID`` objects to answer.

    >>> profile_id_for(42) == str(uuid.uuid5(_NAMESPACE, "42"))
    True
    """
    h = bytearray(hashlib.sha1(_PREFIX + str(pk).encode()).digest()[:16])
    h[6] = (h[6] & 0x0F) | 0x50
    h[8] = (h[8] & 0x3F) | 0x80
    x = h.hex()
    return f"{x[:8]}-{x[8:12]}-{x[12:16]}-{x[16:20]}-{x[20:]}"


class Graph(Protocol):
    """The identity graph as one batch sees it."""

    def owner(self, key: IdentityKey) -> int | None:
        """The (canonical) profile holding ``key``, if any."""
        ...

    def identities(self, pk: int) -> set[IdentityKey]: ...


@dataclass(slots=True)
class Resolution:
    pk: int  # the profile the event belongs to
    created: bool  # a new profile, keyed by the event's log position
    merges: list[tuple[int, list[IdentityKey]]] = field(default_factory=list)  # (loser, identifiers linking it)
    keys: list[IdentityKey] = field(default_factory=list)  # the event's admissible identifiers


class Resolver:
    def __init__(self, identifiers: Identifiers) -> None:
        self.ids = identifiers

    def _violations(self, keys: Iterable[IdentityKey]) -> set[str]:
        limits = self.ids.limits
        counts: dict[str, int] = {}
        for kind, _ in keys:
            if kind in limits:
                counts[kind] = counts.get(kind, 0) + 1
        return {k for k, n in counts.items() if n > limits[k]}

    def _admissible(self, graph: Graph, keys: list[IdentityKey]) -> list[IdentityKey]:
        """Drop identifiers, lowest priority first, until no identity limit is exceeded."""
        keys = list(keys)
        while len(keys) > 1:
            owners = {k: graph.owner(k) for k in keys}
            union = set(keys)
            for pk in {p for p in owners.values() if p is not None}:
                union |= graph.identities(pk)
            violated = self._violations(union)
            if not violated:
                break
            anchor = owners[keys[0]]  # the highest-priority identifier is never dropped
            involved = []
            for k in keys[1:]:
                owner = owners[k]
                if k[0] in violated or (
                    owner is not None and owner != anchor and any(t in violated for t, _ in graph.identities(owner))
                ):
                    involved.append(k)
            if not involved:
                break
            IDENTITY_CONFLICTS.inc()  # a merge that limits forbid: worth watching (shared devices, bad data)
            keys.remove(involved[-1])
        return keys

    def resolve(self, graph: Graph, keys: list[IdentityKey], seq: int) -> Resolution | None:
        """Where an event with identifiers ``keys`` (highest priority first), at log position ``seq``, goes."""
        if not keys:
            return None
        keys = self._admissible(graph, keys)
        owned = [(k, graph.owner(k)) for k in keys]
        owners = sorted({pk for _, pk in owned if pk is not None})
        if not owners:
            return Resolution(seq, True, [], keys)
        winner = owners[0]
        merges = [(loser, [k for k, pk in owned if pk == loser]) for loser in owners[1:]]
        return Resolution(winner, False, merges, keys)

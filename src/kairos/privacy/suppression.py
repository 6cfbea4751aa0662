"""Suppressed identifiers: events that carry one are dropped at collect and skipped by the processor.

The list is stored as keyed hashes (:func:`kairos.privacy.keys.keyed_hash` of the normalized identifier), so
the database never holds the identifiers of people who asked to be forgotten. Each process keeps the hashes
in memory and looks for new ones at most every ``refresh_seconds`` (one indexed ``MAX(id)`` query), so the
collect path makes no query per event; with an empty list it does no work at all.

An event is suppressed when any identifier it carries, as the processor reads it (``userId``,
``anonymousId``, e-mail and phone traits, configured types, an alias's ``previousId``), is on the list.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Sequence

import msgspec

from kairos.identity import Identifiers
from kairos.pipeline.projection import Event
from kairos.privacy.keys import keyed_hash
from kairos.store import SqlPrivacy

__all__ = ["Suppressions", "identifiers_of"]

_decode = msgspec.json.Decoder(Event).decode
IdentityKey = tuple[str, str]


def identifiers_of(identifiers: Identifiers, event: Event) -> list[IdentityKey]:
    """Every normalized identifier an event names, an alias's ``previousId`` included (as either type)."""
    keys = identifiers.extract(event)
    if event.type == "alias":
        keys += [(k, v) for k in ("user_id", "anonymous_id") if (v := identifiers.usable(k, event.previousId))]
    return keys


class Suppressions:
    """The installation's suppression list, in memory; ``secret`` is read only once the list is not empty."""

    def __init__(self, store: SqlPrivacy, secret: Callable[[], bytes], refresh_seconds: float = 0.5) -> None:
        self.store = store
        self._secret_of = secret
        self._secret: bytes | None = None
        self.refresh_seconds = refresh_seconds
        self._hashes: frozenset[str] = frozenset()
        self._revision = 0
        self._checked = float("-inf")
        self._lock = threading.Lock()

    def refresh(self, force: bool = False) -> None:
        """Load hashes stored since the last look, if that look is older than ``refresh_seconds``."""
        now = time.monotonic()
        if not force and now - self._checked < self.refresh_seconds:
            return
        with self._lock:
            self._checked = now
            if self.store.suppression_revision() == self._revision:
                return
            new = self.store.suppressions_after(self._revision)
            if new:
                self._hashes = self._hashes | {h for _, h in new}
                self._revision = max(i for i, _ in new)

    def __len__(self) -> int:
        return len(self._hashes)

    def hashes(self, keys: Iterable[IdentityKey]) -> list[str]:
        if self._secret is None:
            self._secret = self._secret_of()
        return [keyed_hash(self._secret, kind, value) for kind, value in keys]

    def blocks(self, keys: Sequence[IdentityKey]) -> bool:
        """Whether any of these normalized identifiers is suppressed (call :meth:`refresh` first)."""
        hashes = self._hashes
        return bool(hashes) and bool(keys) and any(h in hashes for h in self.hashes(keys))

    def blocks_payload(self, identifiers: Identifiers, payload: bytes) -> bool:
        """Whether a logged or collected event (its JSON bytes) carries a suppressed identifier."""
        if not self._hashes:
            return False
        try:
            event = _decode(payload)
        except msgspec.DecodeError:
            return False  # not an event the processor could attribute to anyone either
        return self.blocks(identifiers_of(identifiers, event))

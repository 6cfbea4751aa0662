"""Identifier extraction and normalization: what counts as the same person's id.

Values are normalized before they are compared or stored (emails: trimmed and lower-cased; phones: E.164
through ``phonenumbers``; others: trimmed). A value that normalizes to nothing or matches a blocked value or
pattern is dropped: it must never stitch two people together.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import phonenumbers

from kairos.config import IdentitySettings, IdentityTypeSettings
from kairos.errors import ConfigError

__all__ = ["EVENT_FIELDS", "Identifiers", "IdentityKey", "normalize"]

IdentityKey = tuple[str, str]  # (type, normalized value)
# Top-level fields of a logged event that identity paths may start from (the processor decodes these).
EVENT_FIELDS = frozenset(
    ("userId", "anonymousId", "previousId", "groupId", "event", "name", "category", "properties", "traits", "context")
)

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
MAX_VALUE = 512
_KNOWN = 50_000  # identifiers whose answer Identifiers.usable remembers (cleared when full)


def normalize(kind: str, raw: Any, region: str) -> str | None:
    """The canonical form of one identifier value, or ``None`` when it is not a usable identifier.

    >>> normalize("email", "  Jane.Doe@Example.COM ", "US")
    'jane.doe@example.com'
    >>> normalize("phone", "(415) 555-0132", "US")
    '+14155550132'
    """
    if isinstance(raw, bool) or raw is None:
        return None
    if isinstance(raw, int | float):
        raw = str(int(raw)) if isinstance(raw, int) or raw.is_integer() else str(raw)
    if not isinstance(raw, str):
        return None
    value = raw.strip()
    if not value or len(value) > MAX_VALUE or "\x00" in value:
        return None
    if kind == "email":
        value = value.lower()
        return value if _EMAIL.match(value) else None
    if kind == "phone":
        try:
            number = phonenumbers.parse(value, region)
        except phonenumbers.NumberParseException:
            return None
        if not phonenumbers.is_possible_number(number):
            return None
        return str(phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164))
    return value


class Identifiers:
    """Reads the identifiers of an event according to the configured identity types."""

    def __init__(self, settings: IdentitySettings) -> None:
        self.types: dict[str, IdentityTypeSettings] = settings.resolved_types()
        self.region = settings.default_region
        self.blocked = {v.strip().lower() for v in settings.blocked_values}
        # Kept apart, not joined into one regex: group numbers in back-references (``\\1``) must not shift.
        self.patterns = [re.compile(p, re.IGNORECASE).search for p in settings.blocked_patterns]
        # Highest priority first; the name breaks ties so that the order never depends on dict order.
        self.order = sorted(self.types, key=lambda t: (-self.types[t].priority, t))
        self.rank = {t: i for i, t in enumerate(self.order)}
        # Paths split once: extraction runs for every event and is the processor's hottest loop.
        self._paths = [(kind, tuple(path.split("."))) for kind in self.order for path in self.types[kind].paths]
        for kind, parts in self._paths:
            if parts[0] not in EVENT_FIELDS or not all(parts):
                raise ConfigError(
                    f"identity.types.{kind}.paths: {'.'.join(parts)!r} must start at one of {sorted(EVENT_FIELDS)}",
                    field=f"identity.types.{kind}.paths",
                )
        # A group call's traits describe the company (Segment spec), never the person: skip them there.
        self._group_paths = [(kind, parts) for kind, parts in self._paths if parts[0] != "traits"]
        self.limits = {t: c.limit for t, c in self.types.items() if c.limit is not None}
        # A person's identifiers come back with each of their events: answers for text are remembered.
        self._known: dict[tuple[str, str], str | None] = {}

    def usable(self, kind: str, raw: Any) -> str | None:
        if type(raw) is not str:
            return self._usable(kind, raw)
        key = (kind, raw)
        try:
            return self._known[key]
        except KeyError:
            pass
        if len(self._known) >= _KNOWN:
            self._known.clear()
        value = self._known[key] = self._usable(kind, raw)
        return value

    def _usable(self, kind: str, raw: Any) -> str | None:
        value = normalize(kind, raw, self.region)
        if value is None or value.lower() in self.blocked:
            return None
        for search in self.patterns:
            if search(value):
                return None
        return value

    def extract(self, event: Any) -> list[IdentityKey]:
        """The usable identifiers of a decoded event (its top-level fields are attributes), highest priority
        first, without duplicates."""
        found: dict[IdentityKey, None] = {}
        for kind, parts in self._group_paths if event.type == "group" else self._paths:
            node: Any = getattr(event, parts[0], None)
            for part in parts[1:]:
                if node is None:
                    break
                node = node.get(part) if type(node) is dict else None
            if node is not None and (value := self.usable(kind, node)) is not None:
                found[(kind, value)] = None
        external = _external_ids(event)
        if not external:
            return list(found)  # already in priority order
        for kind, raw in external:
            if kind in self.types and (value := self.usable(kind, raw)) is not None:
                found[(kind, value)] = None
        return self.sort(found)

    def sort(self, keys: Iterable[IdentityKey]) -> list[IdentityKey]:
        return sorted(keys, key=lambda k: (self.rank.get(k[0], len(self.rank)), k[1]))


def _external_ids(event: Any) -> list[tuple[str, Any]]:
    """Segment's ``context.externalIds``: ``[{"id": ..., "type": ...}, ...]``."""
    context = event.context
    items = context.get("externalIds") if isinstance(context, dict) else None
    if not isinstance(items, list):
        return []
    return [(x["type"], x.get("id")) for x in items if isinstance(x, dict) and isinstance(x.get("type"), str)]

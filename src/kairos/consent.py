"""The consent gate: may something about this person be used for this purpose? One place, for every use.

Destinations and pull subscriptions declare the purpose they serve (``"purpose": "marketing_email"``);
nothing about a person whose consent for that purpose is denied leaves Kairos through them. The answer is
read from what the profile holds (the ``consents`` section: purpose → ``{granted, source, updated_at}``,
the customer's latest word, see :mod:`kairos.profiles.consents`)::

    >>> from kairos.pipeline import ProfileState
    >>> jane = ProfileState(1, "p1", {"consents": {"marketing_email": {"granted": False}}}, set())
    >>> allows(jane, "marketing_email"), allows(jane, "analytics"), allows(jane, "analytics", unstated="allow")
    (False, False, True)

A purpose the person never spoke about is denied unless ``consent.unstated = "allow"``; a person Kairos
does not know (no profile) is always denied.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from kairos.pipeline import ProfileState

__all__ = ["Unstated", "allows", "allows_view"]

Unstated = Literal["deny", "allow"]


def allows(profile: ProfileState | None, purpose: str, *, unstated: Unstated = "deny") -> bool:
    """True when ``profile``'s consents let it be used for ``purpose``."""
    if profile is None:
        return False
    consents = profile.sections.get("consents") or {}
    said = consents.get(purpose)
    if said is None:
        return unstated == "allow"
    return bool(said.get("granted"))


def allows_view(view: Mapping[str, Any] | None, purpose: str, *, unstated: Unstated = "deny") -> bool:
    """:func:`allows` for a profile as the profile API shows it (the decision path reads the cached view)."""
    if view is None:
        return False
    said = (view.get("consents") or {}).get(purpose)
    if said is None:
        return unstated == "allow"
    return bool(said.get("granted"))

"""The consent model and its gate: may something about this person be used for this purpose? One place, for
every use (decisions, destinations and streams, exports, model training, segment exports).

A business configures its purposes (``[consent.purposes.KEY]``: a title and a plain-language text with a
version, and a default: ``opt_in`` = denied until the person says yes, ``opt_out`` = allowed until they say
no). A profile holds the person's latest word per purpose, ``{granted, source, updated_at, text_version}``
(:mod:`kairos.profiles.consents`, which also keeps the append-only ledger of every change)::

    >>> from kairos.config import ConsentSettings
    >>> from kairos.pipeline import ProfileState
    >>> policy = ConsentPolicy(ConsentSettings())
    >>> jane = ProfileState(1, "p1", {"consents": {"marketing_email": {"granted": False}}}, set())
    >>> policy.allows(jane, "marketing_email"), policy.allows(jane, "personalization")
    (False, True)
    >>> policy.allows(jane, "marketing_sms"), policy.allows(None, "personalization")
    (False, False)

``personalization`` is opt-out by default, ``marketing_sms`` opt-in; a person Kairos does not know (no
profile) is never allowed anything, nor is a purpose that is not configured (destinations and offers must
name a configured one).

Which answer wins when two sources disagree: the newest by event time; at the same time a denial wins over a
grant; then the later log position. So an older grant, however late it arrives, never overwrites a denial
(:func:`newer`), live and when two profiles merge.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from kairos.config import ConsentSettings
from kairos.errors import ValidationError
from kairos.pipeline import ProfileState

__all__ = ["ConsentPolicy", "Default", "Purpose", "allows", "newer"]

Default = Literal["opt_in", "opt_out"]


@dataclass(frozen=True, slots=True)
class Purpose:
    key: str
    title: str
    text: str
    version: str
    default: Default


def newer(new: Mapping[str, Any], old: Mapping[str, Any] | None) -> bool:
    """``new`` replaces ``old`` as the person's word on one purpose (see the module's docstring)::

    >>> grant = {"granted": True, "updated_at": 100, "seq": 9}
    >>> deny = {"granted": False, "updated_at": 100, "seq": 3}
    >>> newer(deny, grant), newer(grant, deny)
    (True, False)
    """
    if old is None:
        return True
    return (new["updated_at"], not new["granted"], new["seq"]) >= (old["updated_at"], not old["granted"], old["seq"])


def _consents(profile: ProfileState | Mapping[str, Any]) -> Mapping[str, Any]:
    sections = profile.sections if isinstance(profile, ProfileState) else profile
    return sections.get("consents") or {}


class ConsentPolicy:
    """The configured purposes, the mapping of sources' category names, and the gate."""

    def __init__(self, settings: ConsentSettings) -> None:
        self.purposes: dict[str, Purpose] = {
            key: Purpose(key, p.title, p.text, p.version, p.default) for key, p in settings.purposes.items()
        }
        self._everywhere = dict(settings.categories.get("*", {}))
        self._by_source = {source: {**self._everywhere, **m} for source, m in settings.categories.items()}

    def check(self, purpose: str, field: str = "purpose") -> str:
        """``purpose`` if it is configured, else a precise 400 (``unknown_purpose``) naming the ones that are."""
        if purpose not in self.purposes:
            raise ValidationError(
                f"not a configured consent purpose (consent.purposes: {', '.join(sorted(self.purposes))})",
                code="unknown_purpose",
                field=field,
            )
        return purpose

    def purpose_for(self, source: str, category: str) -> str | None:
        """The purpose a source's consent category stands for: mapped in ``consent.categories``, else the
        category itself when it is a configured purpose, else None (ignored)."""
        mapped = self._by_source.get(source, self._everywhere).get(category)
        if mapped is not None:
            return mapped
        return category if category in self.purposes else None

    def allows(self, profile: ProfileState | Mapping[str, Any] | None, purpose: str) -> bool:
        """True when ``profile`` (its state, or its view as the profile API shows it) may be used for
        ``purpose``: the person's own word if they gave one, else the purpose's default."""
        if profile is None:
            return False
        said = _consents(profile).get(purpose)
        if said is not None:
            return bool(said.get("granted"))
        configured = self.purposes.get(purpose)
        return configured is not None and configured.default == "opt_out"

    def effective(self, profile: ProfileState | Mapping[str, Any]) -> dict[str, bool]:
        """What rules read as ``consents``: every configured purpose → whether ``profile`` allows it (the
        person's own word, else the purpose's default, as :meth:`allows`), and any other purpose the person
        spoke about → their word."""
        out = {key: self.allows(profile, key) for key in self.purposes}
        for key, said in _consents(profile).items():
            if key not in out:
                out[key] = bool(said.get("granted"))
        return out

    def state(self, profile: ProfileState | Mapping[str, Any]) -> dict[str, dict[str, Any]]:
        """Every configured purpose (and any other the person spoke about) as the person sees it: allowed or
        not, whether that is their own word (``stated``) or the default, where and when they said it."""
        consents = _consents(profile)
        out: dict[str, dict[str, Any]] = {}
        for key in [*self.purposes, *sorted(k for k in consents if k not in self.purposes)]:
            said = consents.get(key)
            purpose = self.purposes.get(key)
            out[key] = {
                "granted": self.allows(profile, key),
                "stated": said is not None,
                "default": purpose.default if purpose else None,
                "source": said.get("source") if said else None,
                "updated_at": said.get("updated_at") if said else None,
                "text_version": said.get("text_version") if said else None,
            }
        return out


_DEFAULT = ConsentPolicy(ConsentSettings())


def allows(profile: ProfileState | Mapping[str, Any] | None, purpose: str, policy: ConsentPolicy | None = None) -> bool:
    """:meth:`ConsentPolicy.allows` of ``policy`` (the default purposes when none is given)."""
    return (policy or _DEFAULT).allows(profile, purpose)

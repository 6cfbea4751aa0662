"""Stated preferences from the preference centre's form: checked against ``[privacy.preferences.KEY]``.

:func:`read_preferences` turns the submitted fields (``pref.KEY``, one per value) into the traits to record
as ``stated`` and a message per field that is wrong, worded for the person who typed it::

    >>> from kairos.config import PreferenceSettings
    >>> prefs = {"channel": PreferenceSettings(label="Channel", options=["email", "sms"]),
    ...          "nickname": PreferenceSettings(label="Nickname", type="text", max_length=5)}
    >>> read_preferences(prefs, [("pref.channel", "sms"), ("pref.nickname", " Jo ")], {})
    ({'channel': 'sms', 'nickname': 'Jo'}, {})
    >>> read_preferences(prefs, [("pref.channel", "fax"), ("pref.nickname", "Joanna")], {})[1]
    {'channel': 'Choose one of the options shown.', 'nickname': 'Use at most 5 characters.'}

Only what changed is recorded: an answer equal to the current trait is left out, so saving the form twice
appends nothing the second time.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping, Sequence
from typing import Any

from kairos.config import PreferenceSettings

__all__ = ["read_preferences"]


def _clean_text(value: str, pref: PreferenceSettings) -> tuple[str | None, str | None]:
    """The text to store (trimmed, NFC) or a message."""
    value = unicodedata.normalize("NFC", value.strip())
    if any(unicodedata.category(c) in ("Cc", "Cs", "Co", "Cn") for c in value):
        return None, "Use letters, digits, spaces and punctuation only."
    if any(unicodedata.category(c) == "Cf" for c in value):  # bidi overrides and other invisible controls
        return None, "Remove the invisible formatting characters."
    if len(value) > pref.max_length:
        return None, f"Use at most {pref.max_length} characters."
    return value, None


def read_preferences(
    prefs: Mapping[str, PreferenceSettings],
    fields: Sequence[tuple[str, str]],
    current: Mapping[str, Any],
) -> tuple[dict[str, Any], dict[str, str]]:
    """(traits that changed, messages by preference key) for the submitted ``fields``; ``current`` holds the
    person's traits now. A ``choice`` left unanswered is left alone; a ``multi`` shown with every box
    unticked becomes an empty list (the form marks which ``multi`` it showed with ``shown=KEY``)."""
    values: dict[str, list[str]] = {}
    shown = set()
    for name, value in fields:
        if name == "shown":
            shown.add(value)
        elif name.startswith("pref."):
            values.setdefault(name[5:], []).append(value)
    changed: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for key, pref in prefs.items():
        given = values.get(key)
        if pref.type == "choice":
            if not given:
                continue
            if len(given) > 1 or given[0] not in pref.options:
                errors[key] = "Choose one of the options shown."
                continue
            answer: Any = given[0]
        elif pref.type == "multi":
            if given is None and key not in shown:
                continue
            picked = given or []
            if len(set(picked)) != len(picked) or any(v not in pref.options for v in picked):
                errors[key] = "Choose among the options shown."
                continue
            answer = [o for o in pref.options if o in picked]  # the business's order, not the form's
        else:
            if given is None:
                continue
            if len(given) > 1:
                errors[key] = "Give one answer."
                continue
            text, problem = _clean_text(given[0], pref)
            if problem is not None:
                errors[key] = problem
                continue
            answer = text
        if current.get(key) != answer:
            changed[key] = answer
    return changed, errors

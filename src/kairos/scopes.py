"""API key scopes: the fixed vocabulary, and the one rule of what a key's scopes let it do.

>>> grants(frozenset({"admin"}), "read"), grants(frozenset({"admin"}), "privacy")
(True, False)
>>> sorted(effective(frozenset({"admin"})))
['admin', 'decide', 'read', 'write']
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal, get_args

from kairos.errors import ValidationError

__all__ = ["IMPLIED", "SCOPES", "Scope", "effective", "grants", "parse_scopes"]

# write: change a person's data through the API (consents); read: profiles, definitions, reports; decide:
# decisions and rewards; admin: definitions, offers, destinations and the audit log; privacy: export and
# erasure of a person's data (/v1/privacy/*).
Scope = Literal["write", "read", "decide", "admin", "privacy"]
SCOPES: tuple[Scope, ...] = get_args(Scope)

# admin implies the everyday scopes, never privacy: exporting or erasing a person's data is a separate duty
# that an operator grants on purpose (docs/decisions.md).
IMPLIED: dict[Scope, frozenset[Scope]] = {"admin": frozenset({"read", "write", "decide"})}


def effective(held: Iterable[str]) -> frozenset[str]:
    """The scopes a key acts with: those it holds and those they imply."""
    out = set(held)
    for scope in list(out):
        out |= IMPLIED.get(scope, frozenset())  # type: ignore[call-overload]
    return frozenset(out)


def grants(held: Iterable[str], needed: Scope) -> bool:
    """Whether a key holding ``held`` may use a route that needs ``needed``."""
    return needed in effective(held)


def parse_scopes(values: Iterable[str]) -> frozenset[Scope]:
    """Known scopes only (at least one), else a 400 ``invalid_scope`` naming the known ones."""
    out: set[Scope] = set()
    for value in values:
        if value not in SCOPES:
            shown = value[:40] if value.isprintable() else "(unprintable)"
            raise ValidationError(
                f"unknown scope {shown!r}: use {', '.join(SCOPES)}", code="invalid_scope", field="scope"
            )
        out.add(value)
    if not out:
        raise ValidationError(f"give at least one scope: {', '.join(SCOPES)}", code="invalid_scope", field="scope")
    return frozenset(out)

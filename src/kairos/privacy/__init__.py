"""Trust: what the customer controls and what Kairos can prove it did with their data.

- :mod:`kairos.consent` (one module) holds the consent model and the one gate every use calls.
- :mod:`kairos.privacy.keys`: the installation's privacy secret, and keyed hashes of identifiers (suppression
  lists, pseudonymous references) that cannot be reversed or recomputed without it.
- The preference centre: :mod:`kairos.privacy.links` (signed, expiring links and the forms' CSRF tokens),
  :mod:`kairos.privacy.centre` (what the person's page shows, and the one call site of each privacy operation
  its forms start), :mod:`kairos.privacy.preferences` (stated preferences checked against the business's
  list); its HTTP side is :mod:`kairos.api.centre`, its templates and stylesheet ship in this package.
"""

from __future__ import annotations

__all__: list[str] = []

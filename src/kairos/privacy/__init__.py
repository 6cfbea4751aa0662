"""Trust: what the customer controls and what Kairos can prove it did with their data.

- :mod:`kairos.consent` (one module) holds the consent model and the one gate every use calls.
- :mod:`kairos.privacy.keys`: the installation's privacy secret, and keyed hashes of identifiers (suppression
  lists, pseudonymous references) that cannot be reversed or recomputed without it.
"""

from __future__ import annotations

__all__: list[str] = []

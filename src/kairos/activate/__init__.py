"""Activation: moments, segment changes and events leave Kairos for execution systems.

- :mod:`kairos.activate.destinations`: what is sent where (``PUT /v1/destinations/{key}``), stored as
  definitions of kind ``"destination"``; one without a ``url`` is a pull subscription.
- :mod:`kairos.activate.messages`: which messages a destination selects and the JSON each one receives,
  through the consent gate (:meth:`kairos.consent.ConsentPolicy.allows`).
- :mod:`kairos.activate.signing`: the ``Kairos-Signature`` header, and how a receiver checks it.
- :mod:`kairos.activate.worker`: the delivery worker (at least once, back-off, dead letters, circuit
  breaker), run by ``kairos serve`` or ``kairos deliver``.
- :mod:`kairos.activate.stream`: Server-Sent Events for systems that pull.
"""

from __future__ import annotations

from kairos.activate.signing import sign, verify

__all__ = ["sign", "verify"]

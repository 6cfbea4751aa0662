"""Signing webhook deliveries, and checking a signature as a receiver does.

Every delivery carries ``Kairos-Signature: t=<unix seconds>,v1=<hex>``, where ``<hex>`` is the HMAC-SHA256,
keyed with the destination's secret, of ``"<t>.<body>"`` (the timestamp, a dot, and the raw body bytes).
A receiver recomputes it over the bytes it received (before any JSON parsing), compares in constant time,
and refuses a timestamp too far from its clock (a replayed request). ``Idempotency-Key`` (equal to the
body's ``id``) lets it drop a redelivery it has already handled::

    >>> body = b'{"id":"dl_1","type":"segment_entered"}'
    >>> header = sign("whsec_0123456789abcdef", body, at=1_700_000_000)
    >>> header
    't=1700000000,v1=...'
    >>> verify("whsec_0123456789abcdef", body, header, now=1_700_000_060)
    True
    >>> verify("whsec_0123456789abcdef", body + b" ", header, now=1_700_000_060)  # body changed
    False
    >>> verify("whsec_0123456789abcdef", body, header, now=1_700_001_000)  # older than 5 minutes
    False

``verify`` uses only the standard library; ``docs/destinations.md`` shows a receiver written without Kairos.
"""

from __future__ import annotations

import hashlib
import hmac

__all__ = ["TOLERANCE_SECONDS", "sign", "verify"]

TOLERANCE_SECONDS = 300


def _digest(secret: str, at: int, body: bytes) -> str:
    return hmac.new(secret.encode(), str(at).encode() + b"." + body, hashlib.sha256).hexdigest()


def sign(secret: str, body: bytes, at: int) -> str:
    """The ``Kairos-Signature`` header of ``body`` sent at unix time ``at``."""
    return f"t={at},v1={_digest(secret, at, body)}"


def verify(secret: str, body: bytes, header: str, now: int, tolerance: int = TOLERANCE_SECONDS) -> bool:
    """True when ``header`` signs ``body`` with ``secret`` and its time is within ``tolerance`` of ``now``.

    Several ``v1=`` entries may appear (one per secret while a secret is being rotated); any match counts.
    """
    at: int | None = None
    signatures: list[str] = []
    for part in header.split(","):
        name, _, value = part.strip().partition("=")
        if name == "t" and value.isdigit():
            at = int(value)
        elif name == "v1":
            signatures.append(value)
    if at is None or not signatures or abs(now - at) > tolerance:
        return False
    expected = _digest(secret, at, body)
    return any(hmac.compare_digest(expected, s) for s in signatures)

"""The control group: a share of people served by the baseline, so that uplift is measured, not assumed."""

from __future__ import annotations

import hashlib

__all__ = ["in_control"]


def in_control(subject: str, share: float, salt: str) -> bool:
    """Whether ``subject`` is in the control group: a stable hash of salt and subject in [0, 1) below ``share``.

    >>> in_control("p1", 0.0, "s"), in_control("p1", 1.0, "s")
    (False, True)
    """
    if not 0.0 <= share <= 1.0:
        raise ValueError("share is from 0 to 1")
    digest = hashlib.blake2b(f"{salt}\x00{subject}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64 < share

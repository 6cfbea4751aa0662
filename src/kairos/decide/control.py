"""The control group: a fixed share of people served by the baseline, so that uplift is measured, not assumed.

Assignment is a pure function of ``(salt, subject)``: the same person lands in the same group on every
request, in every process and after every restart, with nothing stored. ``blake2b`` of ``salt``, a NUL and
``subject`` gives 64 bits read as an integer ``h``; the person's bucket is ``h / 2**64`` in ``[0, 1)`` and
they are in control when ``bucket < share``. Python's ``hash`` is not used: it is salted per process
(``PYTHONHASHSEED``), so it would move people between groups on every restart.

Invariants that the reports rely on:

* ``share = 0`` puts nobody in control and ``share = 1`` everybody, without hashing.
* Groups are nested: raising the share only *adds* people to control (their bucket does not change), so
  growing the control group never moves someone who already saw the baseline back to the policy.
* Over many subjects the control fraction is ``share`` within binomial noise: the digest is uniform.
* A different ``salt`` gives an independent assignment: changing it re-draws the groups (for a new
  experiment), which is why the salt is configuration and not a constant.

The NUL between salt and subject keeps ``("ab", "c")`` and ``("a", "bc")`` apart.

>>> in_control("profile-42", 0.0, "kairos") or not in_control("profile-42", 1.0, "kairos")
False
>>> in_control("profile-42", 0.1, "kairos") == in_control("profile-42", 0.1, "kairos")
True
"""

from __future__ import annotations

import hashlib
import math

__all__ = ["bucket", "in_control"]

_SCALE = float(2**64)


def bucket(subject: str, salt: str) -> float:
    """The subject's position in ``[0, 1)``: uniform over subjects, fixed for a ``(salt, subject)`` pair."""
    digest = hashlib.blake2b(f"{salt}\x00{subject}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / _SCALE


def in_control(subject: str, share: float, salt: str) -> bool:
    """Whether ``subject`` belongs to the control group of size ``share`` (a fraction in ``[0, 1]``).

    Raises :class:`ValueError` for a share outside ``[0, 1]`` or not a number: a misconfigured share must
    fail loudly rather than silently put everybody (or nobody) in control.
    """
    if isinstance(share, bool) or not isinstance(share, int | float) or math.isnan(share) or not 0 <= share <= 1:
        raise ValueError(f"control share must be a number between 0 and 1, not {share!r}")
    if share == 0:
        return False
    if share == 1:
        return True
    return bucket(subject, salt) < share

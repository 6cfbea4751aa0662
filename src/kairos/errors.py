"""One error root for Kairos, with a subtree per area.

Errors that cross the HTTP boundary carry a machine-readable ``code``, the ``field`` they concern (if any)
and a human ``message``; :data:`HTTP_STATUS` maps each class to its status in one table.
Transient errors may be retried by whoever caught them; terminal ones must not be.
"""

from __future__ import annotations

__all__ = [
    "HTTP_STATUS",
    "AuthError",
    "CheckpointConflict",
    "ConfigError",
    "ConflictError",
    "DefinitionsChanged",
    "ForbiddenError",
    "KairosError",
    "NotFoundError",
    "Overloaded",
    "PayloadTooLarge",
    "RateLimited",
    "RequestTimeout",
    "StoreError",
    "StoreUnavailable",
    "TransientError",
    "ValidationError",
    "http_status",
    "unknown_field",
]


class KairosError(Exception):
    """Root of every error Kairos raises on purpose."""

    code = "error"
    transient = False

    def __init__(self, message: str, *, code: str | None = None, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.field = field

    def to_dict(self) -> dict[str, str]:
        out = {"code": self.code, "message": self.message}
        if self.field is not None:
            out["field"] = self.field
        return out


class TransientError(KairosError):
    """Worth retrying: the same call may succeed later (lock held, server restarting).

    Over HTTP it is a ``503`` whose ``Retry-After`` header says when to try again.
    """

    code = "unavailable"
    transient = True
    retry_after = 1  # seconds


class Overloaded(TransientError):
    """More events are waiting for the log than the server accepts to hold (``collect.max_pending_events``)."""

    code = "overloaded"


class RateLimited(TransientError):
    """Over a rate limit (``[limits]``): ``429`` whose ``Retry-After`` says when the window allows more."""

    code = "rate_limited"

    def __init__(self, message: str, *, retry_after: int, field: str | None = None) -> None:
        super().__init__(message, field=field)
        self.retry_after = max(1, retry_after)


class StoreUnavailable(TransientError):
    """The store failed (locked, connection lost, timed out): nothing was written, the same request may succeed."""

    code = "store_unavailable"


class ConfigError(KairosError):
    code = "invalid_config"


class ValidationError(KairosError):
    code = "invalid"


class PayloadTooLarge(ValidationError):
    code = "too_large"


class RequestTimeout(ValidationError):
    """The client stopped sending the request body before it was complete."""

    code = "body_timeout"


class AuthError(KairosError):
    code = "unauthorized"


class ForbiddenError(KairosError):
    code = "forbidden"


class NotFoundError(KairosError):
    code = "not_found"


class ConflictError(KairosError):
    """The request is well formed but the state it acts on forbids it now (a reward after the wait is over)."""

    code = "conflict"


class StoreError(KairosError):
    code = "store_error"


class CheckpointConflict(TransientError):
    """Another processor committed past the checkpoint this one started from; re-read and retry."""

    code = "checkpoint_conflict"


class DefinitionsChanged(TransientError):
    """The stored definitions moved between a definition's checks (cycles, references) and its write."""

    code = "definitions_changed"


# Most specific class first: the first match wins.
HTTP_STATUS: list[tuple[type[KairosError], int]] = [
    (PayloadTooLarge, 413),
    (RequestTimeout, 408),
    (ValidationError, 400),
    (AuthError, 401),
    (ForbiddenError, 403),
    (NotFoundError, 404),
    (ConflictError, 409),
    (RateLimited, 429),
    (TransientError, 503),
    (KairosError, 500),
]


def http_status(error: KairosError) -> int:
    for cls, status in HTTP_STATUS:
        if isinstance(error, cls):
            return status
    return 500


def unknown_field(name: object, prefix: str = "", suffix: str = "") -> ValidationError:
    """A 400 ``unknown_field`` naming the first key a body may not hold (``prefix``: where it was), cut to 40
    characters: it is the caller's text, and may be anything."""
    short = str(name)[:40]
    return ValidationError(f"unknown field {short!r}{suffix}", code="unknown_field", field=f"{prefix}{short}")

"""Signed, expiring links to the preference centre, and the CSRF tokens of its forms.

A link is ``{public_url}/privacy/{token}``; the token is signed with the installation's privacy secret
(:func:`kairos.privacy.keys.privacy_secret`) by ``itsdangerous`` and carries, inside the signature, the
profile's internal id (never an identity: the URL may end up in logs and browser histories), the expiry in
epoch milliseconds and a random link id::

    >>> token = make_token(b"s" * 32, "p-1", expires_at=2_000)
    >>> read_token(b"s" * 32, token, now=1_000).profile_id
    'p-1'
    >>> read_token(b"s" * 32, token, now=3_000)
    Traceback (most recent call last):
    ...
    kairos.privacy.links.LinkExpired: this link has expired: ask for a new one

Forms carry a CSRF token bound to the link and to a random cookie (double submit): the hidden field is the
secret's signature of ``link id . cookie``, so a page on another site can neither read nor forge it.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from typing import Any

from itsdangerous import BadSignature, Signer, URLSafeSerializer

from kairos.errors import KairosError, NotFoundError, ValidationError
from kairos.privacy.keys import privacy_secret
from kairos.rules import duration_ms

__all__ = [
    "CSRF_COOKIE",
    "Link",
    "LinkClaims",
    "LinkExpired",
    "LinkGone",
    "LinkInvalid",
    "LinkRefused",
    "create_link",
    "csrf_field",
    "csrf_ok",
    "make_token",
    "new_csrf_cookie",
    "open_link",
    "parse_ttl",
    "read_token",
]

_SALT = "kairos.preference-centre.link"
_CSRF_SALT = "kairos.preference-centre.csrf"
_VERSION = 1
MAX_TOKEN = 400  # a real token is about 130 characters; anything longer is refused unread
CSRF_COOKIE = "kairos_pc"


class LinkRefused(KairosError):
    """A preference-centre link that opens nothing; ``status`` is the page's HTTP status."""

    status = 403


class LinkInvalid(LinkRefused):
    code = "link_invalid"


class LinkExpired(LinkRefused):
    code = "link_expired"
    status = 410


class LinkGone(LinkRefused):
    """The link was genuine but its profile no longer exists (erased)."""

    code = "link_gone"
    status = 410


@dataclass(frozen=True, slots=True)
class LinkClaims:
    profile_id: str
    expires_at: int  # epoch ms
    link_id: str


@dataclass(frozen=True, slots=True)
class Link:
    url: str
    token: str
    expires_at: int


def _serializer(secret: bytes) -> URLSafeSerializer:
    return URLSafeSerializer(secret, salt=_SALT, signer_kwargs={"digest_method": hashlib.sha256})


def parse_ttl(value: Any, default: str, maximum: str) -> int:
    """Milliseconds of a link's ``ttl`` (``"15m"``, ``"1h"``, ``"7d"``; ``None``: ``default``), at least one
    minute and at most ``maximum``; a precise :class:`ValidationError` (field ``ttl``) otherwise."""
    if value is None:
        value = default
    if not isinstance(value, str):
        raise ValidationError('ttl must be a string such as "15m", "1h" or "7d"', code="invalid_ttl", field="ttl")
    if not value.isascii() or len(value) > 20:  # \d in the duration grammar also matches other scripts' digits
        raise ValidationError('ttl must be a duration such as "15m", "1h" or "7d"', code="invalid_ttl", field="ttl")
    try:
        ms = duration_ms(value)
    except ValueError as exc:
        raise ValidationError(str(exc), code="invalid_ttl", field="ttl") from None
    longest = duration_ms(maximum)
    if ms < 60_000:
        raise ValidationError("ttl must be at least 1m", code="invalid_ttl", field="ttl")
    if ms > longest:
        raise ValidationError(f"ttl must be at most {maximum} (privacy.link_max_ttl)", code="ttl_too_long", field="ttl")
    return ms


def create_link(kairos: Any, pk: int, ttl_ms: int, base_url: str) -> Link:
    """A link to profile ``pk``'s preference centre, valid for ``ttl_ms`` from now."""
    from kairos.identity import profile_id_for

    expires = kairos.clock.now() + ttl_ms
    token = make_token(privacy_secret(kairos), profile_id_for(pk), expires)
    return Link(f"{base_url.rstrip('/')}/privacy/{token}", token, expires)


def make_token(secret: bytes, profile_id: str, expires_at: int) -> str:
    """A signed token naming ``profile_id`` until ``expires_at`` (epoch ms), with a fresh link id."""
    claims = {"v": _VERSION, "p": profile_id, "x": expires_at, "n": secrets.token_urlsafe(9)}
    return str(_serializer(secret).dumps(claims))


def read_token(secret: bytes, token: str, now: int) -> LinkClaims:
    """The claims of a genuine, unexpired token; :class:`LinkInvalid` or :class:`LinkExpired` otherwise."""
    if not token or len(token) > MAX_TOKEN or not token.isascii():
        raise LinkInvalid("this link is not valid: ask for a new one", field="token")
    try:
        claims = _serializer(secret).loads(token)
    except BadSignature:  # also a payload that is not JSON: it was signed by no one
        raise LinkInvalid("this link is not valid: ask for a new one", field="token") from None
    if (
        not isinstance(claims, dict)
        or claims.get("v") != _VERSION
        or not isinstance(claims.get("p"), str)
        or not isinstance(claims.get("x"), int)
        or not isinstance(claims.get("n"), str)
    ):
        raise LinkInvalid("this link is not valid: ask for a new one", field="token")
    if claims["x"] <= now:
        raise LinkExpired("this link has expired: ask for a new one", field="token")
    return LinkClaims(claims["p"], claims["x"], claims["n"])


def open_link(kairos: Any, token: str) -> tuple[LinkClaims, int]:
    """The claims of ``token`` and the profile it opens now (following merges); :class:`LinkGone` when the
    profile was erased."""
    claims = read_token(privacy_secret(kairos), token, kairos.clock.now())
    try:
        pk = kairos.resolve(claims.profile_id)
    except (ValidationError, NotFoundError):
        pk = None
    if pk is None or kairos.view(pk) is None:
        raise LinkGone("there is no data behind this link any more", field="token")
    return claims, pk


def new_csrf_cookie() -> str:
    return secrets.token_urlsafe(24)


def csrf_field(kairos: Any, claims: LinkClaims, cookie: str) -> str:
    """The hidden form field for this link and this browser's cookie."""
    signer = Signer(privacy_secret(kairos), salt=_CSRF_SALT, digest_method=hashlib.sha256)
    return signer.get_signature(f"{claims.link_id}.{cookie}").decode()


def csrf_ok(kairos: Any, claims: LinkClaims, cookie: str | None, field: str | None) -> bool:
    """The form's field matches this link and the browser's cookie (compared in constant time)."""
    if not cookie or not field or len(cookie) > 100 or len(field) > 100 or not (cookie + field).isascii():
        return False
    signer = Signer(privacy_secret(kairos), salt=_CSRF_SALT, digest_method=hashlib.sha256)
    return signer.verify_signature(f"{claims.link_id}.{cookie}".encode(), field.encode())

"""Destinations and pull subscriptions: what is sent where, validated once and stored as definitions.

A destination is a definition of kind ``"destination"`` (the table computed traits and segments use), so it
is saved, versioned and listed the same way. Its body::

    {"url": "https://crm.example.com/hooks/kairos",      # none: a pull subscription (Server-Sent Events)
     "secret": "at least 16 characters",                  # signs each delivery; required with a url
     "headers": {"X-Tenant": "acme"},                     # added to each request
     "subscribe": {"moments": ["cart_abandoned"], "segments": ["vip"], "events": "event == 'Order Completed'"},
     "traits": ["plan", "ltv"],                           # trait keys included in each delivery
     "purpose": "marketing_email",                        # the consent purpose it serves (required)
     "enabled": true}

``segments`` and ``moments`` list keys, or ``["*"]`` for all; ``events`` is a CEL condition over each event
(:data:`kairos.rules.Scope.EVENT`). The secret is stored as given (it must sign) and never shown again:
``GET`` answers ``secret_hint`` (its last 4 characters); header values are hidden the same way.
"""

from __future__ import annotations

import ipaddress
import re
import string
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from kairos.activate._network import Network, blocked_by, networks
from kairos.definitions import check_key, checked_write
from kairos.errors import NotFoundError, ValidationError, unknown_field
from kairos.rules import MAX_RULE_LENGTH, Rule, RuleError, Scope, compile_rule
from kairos.runtime import Kairos
from kairos.store import Definition

__all__ = ["KIND", "Destination", "destination_body", "destination_view", "load", "remove", "save", "url_problem"]

KIND = "destination"
ALL = "*"
MAX_KEYS = 200
MAX_HEADERS = 20
_FIELDS = ("url", "secret", "headers", "subscribe", "traits", "purpose", "enabled", "description")
_HEADER_NAME = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]{1,100}")
# Set by Kairos on every request: a destination cannot replace them.
_RESERVED = {"content-type", "content-length", "host", "idempotency-key", "kairos-signature", "user-agent"}
# Hop-by-hop headers (RFC 9110 7.6.1, and Proxy-Connection, Keep-Alive, HTTP2-Settings) concern one connection,
# not the message; the framing ones change how the body is sent or read: Transfer-Encoding beside the
# Content-Length Kairos sends is refused by the receiver, Content-Encoding says the JSON is compressed, and with
# Expect: 100-continue aiohttp holds the body until the receiver says 100 Continue (one that does not stalls
# each delivery to the timeout; any other expectation is answered 417).
_HOP_BY_HOP = {
    *("connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection", "te"),
    *("trailer", "transfer-encoding", "upgrade", "http2-settings", "expect", "content-encoding"),
}
_URL_CHARACTERS = frozenset(string.ascii_letters + string.digits + "-._~:/?#[]@!$&'()*+,;=%")  # RFC 3986
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
_AUTHORITY = re.compile(r"(?:\[(?P<ipv6>[^\]]*)\]|(?P<name>[^:\[\]]*))(?::(?P<port>[0-9]*))?")
_HOST_LABEL = re.compile(r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)")
_HEX = re.compile(r"0[xX][0-9A-Fa-f]*")


@dataclass(frozen=True, slots=True)
class Destination:
    """A stored destination, ready to use."""

    key: str
    version: int
    url: str | None
    secret: str | None
    headers: dict[str, str]
    segments: frozenset[str]
    moments: frozenset[str]
    events: Rule | None
    traits: tuple[str, ...]
    purpose: str
    enabled: bool

    @property
    def pull(self) -> bool:
        """A pull subscription (no url): read through ``GET /v1/subscriptions/{key}/stream``."""
        return self.url is None

    def wants(self, type_: str, key: str) -> bool:
        if type_ in ("segment_entered", "segment_exited"):
            return ALL in self.segments or key in self.segments
        if type_ == "moment":
            return ALL in self.moments or key in self.moments
        return False


def _bad(message: str, field: str, code: str = "invalid_field") -> ValidationError:
    return ValidationError(message, code=code, field=field)


def _string(value: Any, field: str, limit: int, required: bool = False) -> str | None:
    if value is None:
        if required:
            raise _bad(f"{field} is required", field, "missing_field")
        return None
    if not isinstance(value, str):
        raise _bad(f"{field} must be a string", field)
    if len(value) > limit:
        raise _bad(f"{field} is at most {limit} characters", field, "too_large")
    if any(c in value for c in "\x00\r\n"):
        raise _bad(f"{field} must not contain NUL or line breaks", field)
    try:
        value.encode()
    except UnicodeEncodeError:
        raise _bad(f"{field} must be valid Unicode text", field) from None
    return value


def url_problem(url: str | None) -> str | None:
    """Why ``url`` would be refused at save now (blocked networks aside), or None: the worker's check of a
    destination saved before a rule was added (yarl would otherwise send it where its author did not mean)."""
    try:
        _url(url, ())
    except ValidationError as exc:
        return exc.message
    return None


def _url(value: Any, blocked: Sequence[Network]) -> str | None:
    """A url the delivery worker's HTTP client (aiohttp, through yarl) reads as its author meant. yarl drops
    tabs and leading spaces, percent-encodes spaces and stray ``%``, takes ``[v1.x]`` for a host name and lets
    ``getaddrinfo`` read ``0x7f.1`` as 127.0.0.1: each of those is refused here rather than reinterpreted.
    Messages never quote the url (it may hold a token)."""
    url = _string(value, "url", 2048)
    if url is None:
        return None
    if not url.isascii():
        raise _bad("url must be ASCII (percent-encode the rest)", "url")
    if any(c <= " " or c == "\x7f" for c in url):
        raise _bad("url must not contain spaces or control characters (percent-encode them: %20)", "url")
    if any(c not in _URL_CHARACTERS for c in url):
        raise _bad('url must not contain any of " < > \\ ^ ` { | } unencoded (percent-encode them)', "url")
    if _BAD_ESCAPE.search(url):
        raise _bad("url has a '%' that does not start a percent-escape (%XX)", "url")
    try:
        parts = urlsplit(url)
    except ValueError:  # an unclosed '[', or what is inside is not an address
        raise _bad("url is not a valid URL (check the [] around an IPv6 address)", "url") from None
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise _bad("url must be an http:// or https:// URL with a host", "url")
    if "@" in parts.netloc:
        raise _bad(
            "url must not hold credentials (user:password@): it is shown to every reader; put them in headers "
            "(e.g. Authorization), whose values are never shown",
            "url",
        )
    if "#" in url:
        raise _bad("url must not have a fragment (#...): it is never sent", "url")
    authority = _AUTHORITY.fullmatch(parts.netloc)
    if authority is None:
        raise _bad("url's authority must be host[:port], the host a domain name, an IPv4 address or [IPv6]", "url")
    port = authority["port"]
    if port and not 1 <= int(port) <= 65535:
        raise _bad("url's port must be a number from 1 to 65535", "url")
    address = _address(authority["ipv6"], authority["name"])
    if address is not None:
        net = blocked_by(address, blocked)
        if net is not None:
            raise _bad(
                f"url's address is in {net}, which delivery.blocked_networks refuses (by default link-local and "
                "cloud metadata addresses)",
                "url",
                "blocked_address",
            )
    return url


def _address(ipv6: str | None, name: str | None) -> str | None:
    """The IP address a url's host is written as, None for a domain name; a ValidationError for a host the
    HTTP client would refuse or read differently."""
    if ipv6 is not None:
        try:
            ipaddress.IPv6Address(ipv6)
        except ValueError:
            raise _bad("url's host in [] must be an IPv6 address", "url") from None
        if "%" in ipv6:
            raise _bad("url's IPv6 address must not name a zone (%...)", "url")
        return ipv6
    assert name is not None
    labels = name[:-1].split(".") if name.endswith(".") else name.split(".")  # one final dot: a full name
    if not name or len(name) > 253 or not all(_HOST_LABEL.fullmatch(label) for label in labels):
        raise _bad(
            "url's host must be a domain name (labels of 1-63 letters, digits, '-' or '_', between dots) or an IP "
            "address",
            "url",
        )
    if labels[-1].isdigit() or _HEX.fullmatch(labels[-1]):  # the URL standard's "ends in a number": IPv4
        try:
            return str(ipaddress.IPv4Address(name))
        except ValueError:
            raise _bad("url's IPv4 address must be four decimal numbers (a.b.c.d, no leading zeros)", "url") from None
    return None


def _keys(value: Any, field: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or len(value) > MAX_KEYS:
        raise _bad(f"{field} is a list of at most {MAX_KEYS} keys", field)
    out = []
    for item in value:
        if item != ALL:
            try:
                check_key(item, field.rsplit(".", 1)[-1].rstrip("s"))
            except ValidationError as exc:
                raise _bad(exc.message, field, "invalid_key") from None
        out.append(item)
    return sorted(set(out))


def _headers(value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or len(value) > MAX_HEADERS:
        raise _bad(f"headers is an object of at most {MAX_HEADERS} names and string values", "headers")
    out: dict[str, str] = {}
    seen: set[str] = set()
    for name, v in value.items():
        if not isinstance(name, str) or not _HEADER_NAME.fullmatch(name):  # any text: cut as unknown_field cuts it
            raise _bad(
                "a header name is 1-100 token characters (letters, digits, '-', ...)", f"headers.{str(name)[:40]}"
            )
        field = f"headers.{name}"
        lower = name.lower()
        if lower in _RESERVED:
            raise _bad(f"header {name} is set by Kairos", field, "reserved_header")
        if lower in _HOP_BY_HOP:
            message = f"header {name} governs the connection or the body's framing: Kairos sets what it needs"
            raise _bad(message, field, "reserved_header")
        if lower in seen:
            raise _bad(f"header {name} is named twice (header names ignore case)", field)
        seen.add(lower)
        text = _string(v, field, 1024, required=True)
        assert text is not None
        if not text.isascii():
            raise _bad(f"headers.{name} must be ASCII", field)
        if not all(" " <= c < "\x7f" or c == "\t" for c in text):  # aiohttp refuses them at sending
            raise _bad(f"headers.{name} must not contain control characters", field)
        if text != text.strip(" \t"):  # dropped by the receiver: the value would not be the one given
            raise _bad(f"headers.{name} must not start or end with spaces", field)
        out[name] = text
    return out


def _events(source: Any) -> str | None:
    if source is None:
        return None
    if not isinstance(source, str) or not source.strip():
        raise _bad("subscribe.events is a CEL condition over the event", "subscribe.events")
    if len(source) > MAX_RULE_LENGTH:
        raise _bad(f"subscribe.events is at most {MAX_RULE_LENGTH} characters", "subscribe.events", "too_large")
    try:
        source.encode()
    except UnicodeEncodeError:  # a lone surrogate: the rule engine refuses the string itself
        raise _bad("subscribe.events must be valid Unicode text", "subscribe.events") from None
    try:
        compile_rule(source, Scope.EVENT)
    except RuleError as exc:
        exc.field = "subscribe.events"
        raise
    return source


def destination_body(body: Any, old: Definition | None = None, blocked: Sequence[Network] = ()) -> dict[str, Any]:
    """A destination's definition, validated and normalized (what is stored). A ``PUT`` without ``secret``
    keeps the stored one, since it cannot be read back. A url written as an address in ``blocked``
    (``delivery.blocked_networks``) is refused; one whose name resolves there fails when sent."""
    if not isinstance(body, dict):
        raise ValidationError("the body must be a JSON object", code="invalid_body", field="body")
    extra = sorted(set(body) - set(_FIELDS))
    if extra:
        raise unknown_field(extra[0])
    out: dict[str, Any] = {}
    url = _url(body.get("url"), blocked)
    secret = _string(body.get("secret"), "secret", 256)
    if secret is None and old is not None and body.get("url") is not None:
        secret = old.body.get("secret")
    if url is not None:
        out["url"] = url
        if secret is None:
            raise _bad("secret is required with a url (it signs every delivery)", "secret", "missing_field")
    if secret is not None and url is None:  # it would be stored and never used: a mistake to say
        raise _bad("secret signs pushed deliveries: a pull subscription (no url) has none", "secret")
    if secret is not None:
        if len(secret) < 16 or not secret.isascii() or not secret.isprintable():
            raise _bad("secret is 16-256 printable ASCII characters", "secret")
        out["secret"] = secret
    headers = _headers(body.get("headers"))
    if headers:
        out["headers"] = headers
    subscribe = body.get("subscribe")
    if not isinstance(subscribe, dict):
        raise _bad("subscribe is an object: moments, segments and/or events", "subscribe", "missing_field")
    extra = sorted(set(subscribe) - {"moments", "segments", "events"})
    if extra:
        raise _bad(f"unknown field subscribe.{extra[0]}", f"subscribe.{extra[0]}", "unknown_field")
    sub: dict[str, Any] = {}
    for name in ("moments", "segments"):
        keys = _keys(subscribe.get(name), f"subscribe.{name}")
        if keys:
            sub[name] = keys
    events = _events(subscribe.get("events"))
    if events is not None:
        sub["events"] = events
    if not sub:
        raise _bad("subscribe names at least one of moments, segments or events", "subscribe", "missing_field")
    out["subscribe"] = sub
    out["traits"] = _keys(body.get("traits"), "traits")
    purpose = _string(body.get("purpose"), "purpose", 64, required=True)
    assert purpose is not None
    try:
        check_key(purpose, "purpose")
    except ValidationError:
        raise _bad("purpose is 1-64 letters, digits or '_' (e.g. marketing_email)", "purpose") from None
    out["purpose"] = purpose
    enabled = body.get("enabled", True)
    if not isinstance(enabled, bool):
        raise _bad("enabled must be true or false", "enabled")
    out["enabled"] = enabled
    description = _string(body.get("description"), "description", 1000)
    if description is not None:
        out["description"] = description
    return out


def compile_destination(d: Definition) -> Destination:
    body = d.body
    sub = body["subscribe"]
    events = sub.get("events")
    return Destination(
        d.key,
        d.version,
        body.get("url"),
        body.get("secret"),
        dict(body.get("headers") or {}),
        frozenset(sub.get("segments") or ()),
        frozenset(sub.get("moments") or ()),
        compile_rule(events, Scope.EVENT) if events else None,
        tuple(body.get("traits") or ()),
        body["purpose"],
        bool(body.get("enabled", True)),
    )


def load(kairos: Kairos) -> dict[str, Destination]:
    """Every destination and subscription, compiled, by key."""
    return {d.key: compile_destination(d) for d in kairos.store.admin.definitions(KIND)}


def _hint(secret: str) -> str:
    return "…" + secret[-4:]


def _without_credentials(url: str) -> str:
    """``url`` with any ``user:password@`` shown as ``***@``: refused at save since, but a destination saved
    before kept one, and its view must not show it."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc="***@" + parts.netloc.rpartition("@")[2]))


def destination_view(kairos: Kairos, d: Definition) -> dict[str, Any]:
    """What the API shows: never the secret nor header values, only their last characters."""
    body = dict(d.body)
    secret = body.pop("secret", None)
    out: dict[str, Any] = {"key": d.key, **body, "kind": "pull" if "url" not in body else "push"}
    if "url" in body:
        out["url"] = _without_credentials(body["url"])
    if secret is not None:
        out["secret_hint"] = _hint(secret)
    if "headers" in body:
        out["headers"] = {name: _hint(value) for name, value in body["headers"].items()}
    cursor = kairos.store.deliveries.cursor(d.key)
    out["version"] = d.version
    out["created_at"] = d.created_at
    out["updated_at"] = d.updated_at
    out["queue_depth"] = kairos.store.deliveries.depth().get(d.key, 0) if cursor is not None else 0
    return out


def save(kairos: Kairos, key: str, body: Any) -> tuple[dict[str, Any], int]:
    """Validate and store; the destination's cursor starts at the current end of the outbox and the log,
    so it receives what happens from now on. 201 when created, else 200."""
    check_key(key, KIND)
    return checked_write(lambda: _save(kairos, key, body))


def _save(kairos: Kairos, key: str, body: Any) -> tuple[dict[str, Any], int]:
    revision = kairos.store.admin.definitions_revision()  # what follows is read at it; the write fails if it moved
    old = kairos.store.admin.definition(KIND, key)  # a secret left out is kept from it
    stored = destination_body(body, old, networks(kairos.settings.delivery.blocked_networks))
    kairos.consent_policy.check(stored["purpose"])
    d, changed = kairos.store.admin.put_definition(KIND, key, stored, kairos.clock.now(), expect_revision=revision)
    store = kairos.store
    store.deliveries.start(key, store.outbox.last_id(), store.log.last_seq(), kairos.clock.now())
    view = destination_view(kairos, d)
    view["changed"] = changed
    return view, 201 if changed and old is None else 200


def remove(kairos: Kairos, key: str) -> dict[str, Any]:
    """Delete a destination: its pending deliveries are dropped, its history kept."""
    check_key(key, KIND)
    d = kairos.store.admin.delete_definition(KIND, key, kairos.clock.now())
    kairos.store.deliveries.drop(key)
    return {"key": key, "deleted": True, "version": d.version}


def get(kairos: Kairos, key: str) -> Definition:
    check_key(key, KIND)
    d = kairos.store.admin.definition(KIND, key)
    if d is None:
        raise NotFoundError(f"no destination named {key!r}", field="key")
    return d

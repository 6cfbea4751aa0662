"""Typed settings: defaults < ``kairos.toml`` < environment (``KAIROS__SECTION__KEY``).

Every field has a default and a description; ``docs/configuration.md`` documents each one and a test fails
when one is missing there. The TOML file is ``./kairos.toml`` unless ``KAIROS_CONFIG`` names another, which
must exist.
"""

from __future__ import annotations

import ipaddress
import itertools
import math
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

__all__ = [
    "BLOCKED_NETWORKS",
    "BUILTIN_IDENTITY_TYPES",
    "MAX_REWARD",
    "CollectSettings",
    "ConsentSettings",
    "ContextSettings",
    "ContextSourceSettings",
    "DecideSettings",
    "DeliverySettings",
    "IdentitySettings",
    "IdentityTypeSettings",
    "LimitsSettings",
    "PreferenceSettings",
    "PrivacySettings",
    "ProcessorMode",
    "ProcessorSettings",
    "ProfileSettings",
    "PurposeSettings",
    "RfmSettings",
    "ServerSettings",
    "Settings",
    "StoreSettings",
    "load_settings",
]

TraitKind = Literal["stated", "observed", "inferred", "third_party"]
TRAIT_KINDS: tuple[TraitKind, ...] = ("stated", "observed", "inferred", "third_party")  # strongest first

MAX_REWARD = 1e9  # the widest decide.reward_range allowed
# Link-local (where every major cloud puts its metadata service, 169.254.169.254) and the metadata services
# outside it; loopback and private ranges stay allowed: self-hosted receivers live there (docs/decisions.md).
BLOCKED_NETWORKS = ("169.254.0.0/16", "fe80::/10", "fd00:ec2::254/128", "100.100.100.200/32")


class ServerSettings(BaseModel):
    host: str = Field("127.0.0.1", description="Address `kairos serve` listens on.")
    port: int = Field(8000, ge=1, le=65535, description="TCP port `kairos serve` listens on.")
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="Level of the structured (JSON) logs written to stderr."
    )
    cors_origins: list[str] = Field(
        default_factory=lambda: ["*"],
        description="Origins allowed to call the API from a browser (CORS). `*` lets any web site send events.",
    )
    body_timeout_seconds: float = Field(
        10.0,
        gt=0,
        description="Longest wait for the next part of a request body; a client that stalls longer is answered "
        "`408 body_timeout` and the connection closed.",
    )


def _rate(value: str) -> str:
    """A rate limit in the `limits` library's notation: ``1000/second``, ``100 per minute``, ``10/5 seconds``."""
    from limits import parse_many

    try:
        parsed = parse_many(value)
    except ValueError as exc:
        raise ValueError(f"{value!r} is not a rate such as '1000/second' or '100 per minute'") from exc
    if len(parsed) != 1:
        raise ValueError(f"{value!r}: give one rate, such as '1000/second'")
    return value


class LimitsSettings(BaseModel):
    """Rate limits on the API (docs/security.md), counted in requests."""

    enabled: bool = Field(True, description="Refuse requests beyond the rates below with `429` and `Retry-After`.")
    per_key: str = Field(
        "10000/second",
        description="Requests one API key may make (every route that takes `Authorization: Bearer`), e.g. "
        "`1000/second` or `100 per minute`.",
    )
    per_source: str = Field(
        "10000/second",
        description="Collect requests one source (write key) may make, whatever the number of events in each.",
    )
    storage: str = Field(
        "memory://",
        description="Where the counters live: `memory://` (each process counts alone: embedded) or "
        "`redis://HOST:PORT` (shared by every API process: scale-out; counted from a worker thread, so a slow "
        "Redis never stalls other requests). If Redis cannot be reached, requests are let through and a warning "
        "is logged.",
    )
    strategy: Literal["fixed-window", "sliding-window-counter", "moving-window"] = Field(
        "fixed-window",
        description="How requests are counted (the `limits` library's strategies): `fixed-window` is the "
        "cheapest and may let up to twice the rate through across a window boundary; `sliding-window-counter` "
        "smooths that; `moving-window` is exact and keeps one entry per request in the window.",
    )
    storage_timeout_seconds: float = Field(
        0.05,
        gt=0,
        le=5,
        description="Longest wait for the limits storage (Redis) per request; slower counts as down.",
    )

    @field_validator("per_key", "per_source")
    @classmethod
    def _rates(cls, value: str) -> str:
        return _rate(value)

    @field_validator("storage")
    @classmethod
    def _storage(cls, value: str) -> str:
        if not value.startswith(("memory://", "redis://", "rediss://")):
            raise ValueError("use memory:// or redis://HOST:PORT (the value is not repeated: it may hold a password)")
        return value


class StoreSettings(BaseModel):
    url: str = Field(
        "sqlite:///kairos.db",
        description="Where the event log and all state live: `sqlite:///PATH` (embedded, default; derived "
        "state goes beside it in PATH-state, e.g. kairos-state.db) or `postgresql://user@host:port/db`.",
    )
    schema_name: str = Field(
        "public", description="PostgreSQL only: schema that holds Kairos' tables (created if missing)."
    )
    synchronous: Literal["normal", "full"] = Field(
        "normal",
        description="SQLite only: `normal` survives a crash of Kairos (kill -9); `full` also fsyncs each "
        "commit so that it survives power loss, at a cost in throughput.",
    )
    pool_size: int = Field(
        4, ge=1, le=100, description="PostgreSQL only: most connections each Kairos process keeps open (a pool)."
    )
    cache_size: int = Field(100_000, ge=0, description="Profiles kept in the in-process read cache.")
    cache_ttl_seconds: float = Field(
        2.0, ge=0, description="How long a cached profile may be served before it is read again."
    )


class CollectSettings(BaseModel):
    max_event_bytes: int = Field(32 * 1024, ge=1024, description="Largest accepted event (Segment: 32 KB).")
    max_request_bytes: int = Field(
        500 * 1024, ge=1024, description="Largest accepted request body, after gunzip (Segment: 500 KB)."
    )
    max_batch_items: int = Field(2500, ge=1, description="Most events accepted in one batch request.")
    max_future_seconds: int = Field(
        300,
        ge=0,
        le=86_400,
        description="An event time (after clock-skew correction) more than this ahead of the time received is taken "
        "as the time received: a device with a wrong clock, or a client locking in a consent with a far-future "
        "timestamp, cannot place events after everything still to come. The event keeps its timestamp as sent.",
    )
    max_pending_events: int = Field(
        50_000,
        ge=1,
        description="Events accepted but not yet committed to the log; beyond it, collect answers `503` with "
        "`Retry-After` instead of queueing more (a request is always taken when nothing is pending).",
    )


class IdentityTypeSettings(BaseModel):
    """How one identity type is found in events and how many a profile may hold."""

    paths: list[str] = Field(
        default_factory=list,
        description="Dotted paths in an event where values of this type are read, e.g. `traits.loyalty_card`.",
    )
    limit: int | None = Field(None, ge=1, description="Most distinct values one profile may hold; none = no limit.")
    priority: int = Field(50, description="Higher wins when a limit forces a choice between identifiers.")


BUILTIN_IDENTITY_TYPES: dict[str, IdentityTypeSettings] = {
    "user_id": IdentityTypeSettings(paths=["userId"], limit=1, priority=100),
    "email": IdentityTypeSettings(paths=["traits.email", "context.traits.email"], priority=80),
    "phone": IdentityTypeSettings(paths=["traits.phone", "context.traits.phone"], priority=70),
    "device_id": IdentityTypeSettings(paths=["context.device.id"], priority=20),
    "anonymous_id": IdentityTypeSettings(paths=["anonymousId"], priority=10),
}


class IdentitySettings(BaseModel):
    types: dict[str, IdentityTypeSettings] = Field(
        default_factory=dict,
        validate_default=True,
        description="Identity types: the built-ins (user_id, email, phone, device_id, anonymous_id) may be "
        "re-tuned and custom ones (e.g. loyalty_card, crm_id) declared; see docs/identity.md.",
    )
    blocked_values: list[str] = Field(
        default_factory=lambda: [
            *("null", "none", "nil", "undefined", "anonymous", "unknown", "n/a", "na", "nan", "-1"),
            *("test", "test@test.com", "test@example.com", "example@example.com", "noemail@noemail.com"),
            *("[object object]", "true", "false"),
        ],
        description="Identifier values never used to stitch (compared after normalization, ignoring case).",
    )
    blocked_patterns: list[str] = Field(
        default_factory=lambda: [r"^[0\-]*$", r"^\s*$", r"^(.)\1{5,}$"],
        description="Regular expressions; an identifier value matching any of them is never used to stitch.",
    )
    default_region: str = Field(
        "US", description="Region (ISO 3166 alpha-2) for phone numbers written without a country code."
    )

    @field_validator("types")
    @classmethod
    def _merge_builtins(cls, value: dict[str, IdentityTypeSettings]) -> dict[str, IdentityTypeSettings]:
        merged = dict(BUILTIN_IDENTITY_TYPES)
        merged.update(value)
        for name in merged:
            if not name.replace("_", "").isalnum() or not name.islower():
                raise ValueError(f"identity type name {name!r} must be lower_snake_case")
        return merged

    def resolved_types(self) -> dict[str, IdentityTypeSettings]:
        return self._merge_builtins(self.types)


class ProfileSettings(BaseModel):
    kind_precedence: list[TraitKind] = Field(
        default_factory=lambda: list(TRAIT_KINDS),
        description="Trait kinds from strongest to weakest: a value is never overwritten by a weaker kind.",
    )
    precedence: Literal["kind_then_time", "time"] = Field(
        "kind_then_time",
        description="`kind_then_time`: stronger kind wins, newest within a kind; `time`: newest always wins.",
    )
    default_trait_kind: TraitKind = Field("observed", description="Kind of traits from a source that declares none.")


def _increasing(name: str, values: list[float]) -> list[float]:
    if len(values) != 4 or any(v <= 0 for v in values) or any(b <= a for a, b in itertools.pairwise(values)):
        raise ValueError(f"{name} must be 4 positive breakpoints in increasing order, e.g. [2, 3, 5, 10]")
    return values


class RfmSettings(BaseModel):
    """The built-in RFM model (see docs/analytics.md): fixed breakpoints, so a score depends on one profile only."""

    enabled: bool = Field(True, description="Keep RFM scores (`rfm_*` traits) on every profile that purchased.")
    event: str = Field("Order Completed", description="The track event that counts as a purchase.")
    amount_property: str = Field(
        "total", description="Property of the purchase event holding its amount (Segment's `total`)."
    )
    revenue_fallback: bool = Field(
        True,
        description="When the purchase event has no `amount_property`, read Segment's `revenue` property instead.",
    )
    recency_days: list[float] = Field(
        default_factory=lambda: [7.0, 30.0, 90.0, 180.0],
        description="Days since the last purchase: within the first breakpoint scores 5, ... older than the "
        "last scores 1.",
    )
    frequency: list[float] = Field(
        default_factory=lambda: [2.0, 3.0, 5.0, 10.0],
        description="Purchase counts: fewer than the first breakpoint scores 1, at least the last scores 5.",
    )
    monetary: list[float] = Field(
        default_factory=lambda: [50.0, 150.0, 500.0, 1500.0],
        description="Total spend: below the first breakpoint scores 1, at least the last scores 5.",
    )

    @field_validator("recency_days", "frequency", "monetary")
    @classmethod
    def _breakpoints(cls, value: list[float], info: ValidationInfo) -> list[float]:
        return _increasing(f"rfm.{info.field_name}", value)


def _zone(value: str | None) -> str | None:
    from kairos.context import is_zone

    if value is not None and not is_zone(value):
        raise ValueError(f"{value!r} is not an IANA time zone (e.g. Europe/Paris, America/New_York, UTC)")
    return value


def _country(value: str | None) -> str | None:
    if value is not None and (len(value) != 2 or not value.isascii() or not value.isalpha()):
        raise ValueError(f"{value!r} is not an ISO 3166 alpha-2 country code (e.g. US, FR)")
    return value.upper() if value is not None else None


class ContextSourceSettings(BaseModel):
    """What one source's events imply when they do not say it themselves (see docs/context.md)."""

    model_config = ConfigDict(extra="forbid")

    timezone: str | None = Field(None, description="IANA time zone of the source's people, e.g. Europe/Paris.")
    country: str | None = Field(None, description="ISO 3166 alpha-2 country of the source's people, e.g. FR.")
    channel: str | None = Field(
        None,
        pattern=r"^[a-z][a-z0-9_]{0,31}$",
        description="Channel of every event from the source unless the event sends `context.channel`, "
        "e.g. `store`, `call_centre`, `email`.",
    )

    _tz = field_validator("timezone")(_zone)
    _cc = field_validator("country")(_country)


class ContextSettings(BaseModel):
    """Derived context (docs/context.md): the fallbacks for time zone, country and channel."""

    default_timezone: str = Field(
        "UTC",
        description="Time zone of an event when neither the event, the profile nor its source has one.",
    )
    default_country: str | None = Field(
        None,
        description="Country (ISO 3166 alpha-2) for holidays and weekends when neither the event, the profile "
        "nor its source has one; none: no holidays.",
    )
    sources: dict[str, ContextSourceSettings] = Field(
        default_factory=dict,
        description="Per source (by name), `[context.sources.NAME]` with `timezone`, `country` and `channel`.",
    )

    _tz = field_validator("default_timezone")(_zone)
    _cc = field_validator("default_country")(_country)


ProcessorMode = Literal["process", "thread", "off"]


class ProcessorSettings(BaseModel):
    enabled: bool = Field(
        True, description='Run a processor under `kairos serve`; `false` is the same as `mode = "off"`.'
    )
    mode: ProcessorMode = Field(
        "process",
        description="How `kairos serve` runs the processor: `process` (its own OS process, supervised and "
        "restarted; ingest and processing use separate cores), `thread` (inside the API process: shares one "
        "core through Python's GIL; for tests and tiny deployments) or `off` (run `kairos process` elsewhere).",
    )
    nice: int = Field(
        10,
        ge=0,
        le=19,
        description='`mode = "process"` only: niceness the processor process adds to itself (`os.nice`), so '
        "that when both compete for a core, ingest latency wins and the processor catches up later; 0 disables.",
    )
    stop_timeout_seconds: float = Field(
        5.0,
        gt=0,
        description='`mode = "process"` only: how long shutdown waits for the processor to finish its batch '
        "before it is terminated (an interrupted batch is rolled back and applied again on the next start).",
    )
    batch_size: int = Field(
        20_000,
        ge=1,
        le=100_000,
        description="Most events applied in one state transaction (bigger: faster, more memory).",
    )
    poll_interval_ms: int = Field(50, ge=1, description="How often an idle processor looks for new events.")
    cache_profiles: int = Field(
        50_000,
        ge=0,
        description="Profiles the processor keeps in memory between batches (as committed), so that a batch "
        "loads only the ones it has not seen lately; 0 turns the cache off.",
    )
    max_consecutive_failures: int = Field(
        10,
        ge=1,
        description="Events in a row that may go to the dead-letter table before the processor pauses and "
        "says why in /healthz (a bug should stop the pipeline, not skip the log).",
    )
    timer_grace_ms: int = Field(
        2000,
        ge=0,
        description="When the log is idle, a timer fires this long after it is due, so that an event "
        "received before it but still being appended is applied first.",
    )

    def serve_mode(self) -> ProcessorMode:
        """How `kairos serve` runs the processor once ``enabled`` is taken into account."""
        return self.mode if self.enabled else "off"


class DeliverySettings(BaseModel):
    """Pushing moments, segment changes and events to destinations (see docs/destinations.md)."""

    enabled: bool = Field(
        True, description='Run the delivery worker under `kairos serve`; `false` is the same as `mode = "off"`.'
    )
    mode: ProcessorMode = Field(
        "process",
        description="How `kairos serve` runs the delivery worker: `process` (its own OS process, supervised and "
        "restarted, so that deliveries never take CPU from ingest), `thread` (inside the API process) or "
        "`off` (run `kairos deliver` elsewhere).",
    )
    max_attempts: int = Field(
        10, ge=1, le=100, description="Attempts before a delivery is dead (`kairos destinations retry` revives it)."
    )
    backoff_base_seconds: float = Field(
        1.0, gt=0, description="Wait before the first retry; it doubles with every attempt, with random jitter."
    )
    backoff_cap_seconds: float = Field(
        3600.0, gt=0, description="Longest wait between two attempts (also caps a receiver's `Retry-After`)."
    )
    timeout_seconds: float = Field(
        10.0, gt=0, description="Longest wait for a receiver's answer; a timeout is retried like a 5xx."
    )
    concurrency: int = Field(16, ge=1, le=256, description="Requests in flight at once, per destination.")
    batch_size: int = Field(
        500,
        ge=1,
        le=10_000,
        description="Outbox messages or events read per planning step, and due deliveries read ahead per "
        "destination (kept in memory until sent).",
    )
    poll_interval_ms: int = Field(200, ge=1, description="How often an idle destination looks for new messages.")
    breaker_failures: int = Field(
        5,
        ge=1,
        description="Failed attempts in a row that open a destination's circuit breaker: no request is sent to "
        "it until `breaker_cooldown_seconds` have passed, then one probe decides.",
    )
    breaker_cooldown_seconds: float = Field(
        30.0, gt=0, description="How long an open circuit breaker waits before it lets one probe through."
    )
    stream_keepalive_seconds: float = Field(
        15.0, gt=0, description="An idle Server-Sent Events stream sends a comment this often (keeps proxies open)."
    )
    blocked_networks: list[str] = Field(
        default_factory=lambda: list(BLOCKED_NETWORKS),
        description="Networks (CIDR) no destination may deliver to: a url whose host is such an address is refused "
        "at save, and a delivery whose host resolves to one is `dead` at once, unsent. The default holds the "
        "link-local ranges (169.254.0.0/16, fe80::/10) and the cloud metadata services (AWS fd00:ec2::254, "
        "Alibaba 100.100.100.200), not loopback nor private ranges; `[]` blocks nothing. An IPv6 address that leads "
        "to an IPv4 one (IPv4-mapped, NAT64 64:ff9b::/96, 6to4, Teredo) is checked as that IPv4 address too.",
    )

    @field_validator("blocked_networks")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        out = []
        for cidr in value:
            try:
                out.append(str(ipaddress.ip_network(cidr.strip())))
            except ValueError as exc:  # host bits set, not an address, ...: say which entry
                raise ValueError(
                    f"delivery.blocked_networks: {cidr!r} is not a network such as 10.0.0.0/8 ({exc})"
                ) from exc
        return out

    def serve_mode(self) -> ProcessorMode:
        return self.mode if self.enabled else "off"


class PurposeSettings(BaseModel):
    """One purpose a person can consent to, as the customer reads it."""

    model_config = ConfigDict(extra="forbid")

    title: str = Field(..., min_length=1, max_length=100, description="Short name shown to the customer.")
    text: str = Field(
        ..., min_length=1, max_length=2000, description="What saying yes allows, in plain language (shown as is)."
    )
    version: str = Field(
        "1",
        min_length=1,
        max_length=40,
        description="Version of the text; every consent change records the version the person was shown.",
    )
    default: Literal["opt_in", "opt_out"] = Field(
        "opt_in",
        description="`opt_in`: denied until the person says yes; `opt_out`: allowed until the person says no.",
    )


def _default_purposes() -> dict[str, PurposeSettings]:
    p = PurposeSettings
    return {
        "analytics": p(
            title="Analytics",
            text="Count and study visits and purchases to understand how our shop and services are used.",
            default="opt_out",
        ),
        "personalization": p(
            title="Personalised experience",
            text="Use what you did and told us to choose the offers and content you see.",
            default="opt_out",
        ),
        "marketing_email": p(title="Marketing e-mails", text="Send you offers and news by e-mail."),
        "marketing_sms": p(title="Marketing text messages", text="Send you offers and news by SMS."),
        "marketing_push": p(title="Push notifications", text="Send you offers and news as app notifications."),
        "advertising": p(title="Advertising", text="Show you our ads on other web sites and apps."),
        "third_party_sharing": p(
            title="Sharing with partners", text="Share what we know about you with carefully chosen partners."
        ),
    }


class ConsentSettings(BaseModel):
    purposes: dict[str, PurposeSettings] = Field(
        default_factory=_default_purposes,
        description="The purposes a person can consent to, `[consent.purposes.KEY]` with `title`, `text` (plain "
        "language), `version` and `default` (`opt_in` or `opt_out`). Replacing the table replaces the defaults "
        "(analytics and personalization opt-out; marketing_email, marketing_sms, marketing_push, advertising "
        "and third_party_sharing opt-in).",
    )
    categories: dict[str, dict[str, str]] = Field(
        default_factory=dict,
        description="How a source's consent categories (`context.consent.categoryPreferences`) map to purposes: "
        '`[consent.categories.SOURCE]` with `CATEGORY = "purpose"`; `[consent.categories."*"]` applies to every '
        "source. A category that is neither mapped nor a purpose's key is ignored.",
    )

    @field_validator("purposes")
    @classmethod
    def _purpose_keys(cls, value: dict[str, PurposeSettings]) -> dict[str, PurposeSettings]:
        for key in value:
            if not key or len(key) > 64 or not all(c.isalnum() or c == "_" for c in key) or not key.isascii():
                raise ValueError(f"purpose key {key!r}: use 1-64 ASCII letters, digits or '_'")
        return value


class PreferenceSettings(BaseModel):
    """One stated preference the preference centre asks about (``[privacy.preferences.KEY]``); the person's
    answer becomes the ``stated`` trait ``KEY``."""

    model_config = ConfigDict(extra="forbid")

    label: str = Field(..., min_length=1, max_length=100, description="The question or name shown to the person.")
    type: Literal["choice", "multi", "text"] = Field(
        "choice",
        description="`choice`: one of `options` (radio buttons); `multi`: any of `options` (check boxes, a list "
        "trait); `text`: free text up to `max_length` characters.",
    )
    options: list[str] = Field(
        default_factory=list, description="The values a `choice` or `multi` preference may take, in order."
    )
    option_labels: dict[str, str] = Field(
        default_factory=dict, description="How each option is shown (value → label); an option without one shows as is."
    )
    help: str = Field("", max_length=500, description="A short hint shown under the field.")
    max_length: int = Field(200, ge=1, le=2000, description="`text` only: the longest answer accepted.")

    @field_validator("options")
    @classmethod
    def _options(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value) or any(not v or len(v) > 100 or "\x00" in v for v in value):
            raise ValueError("options must be distinct, non-empty strings of at most 100 characters")
        return value


def _default_preferences() -> dict[str, PreferenceSettings]:
    return {
        "preferred_channel": PreferenceSettings(
            label="How would you like us to contact you?",
            type="choice",
            options=["email", "sms", "push"],
            option_labels={"email": "E-mail", "sms": "Text message", "push": "App notification"},
        )
    }


class PrivacySettings(BaseModel):
    secret: str | None = Field(
        None,
        min_length=32,
        description="Signs preference-centre links and keys the hashes of suppressed identifiers. Unset: drawn "
        "once and kept in the log database (all processes share it). Set it (32+ characters) to share one "
        "across installations; changing it invalidates links and suppression hashes.",
    )
    apply_wait_seconds: float = Field(
        5.0,
        ge=0,
        le=60,
        description="How long `PUT /v1/profiles/{ref}/consents` waits for the processor to apply the change before "
        "it answers `202` (accepted, applied when the processor gets there) instead of `200` with the new state.",
    )
    public_url: str | None = Field(
        None,
        max_length=500,
        description="Base URL of preference-centre links (`https://prefs.example.com`), as people reach Kairos; "
        "unset: the URL the `POST /v1/privacy/links` request came in on.",
    )
    link_ttl: str = Field("1h", description="How long a preference-centre link lasts when the request names no `ttl`.")
    link_max_ttl: str = Field(
        "7d", description="The longest `ttl` a preference-centre link may be given (a longer one is refused)."
    )
    preferences: dict[str, PreferenceSettings] = Field(
        default_factory=_default_preferences,
        description="The stated preferences the preference centre asks about, `[privacy.preferences.KEY]` with "
        "`label`, `type` (`choice`, `multi` or `text`), `options`, `option_labels`, `help` and `max_length`; the "
        "answer becomes the `stated` trait KEY. Replacing the table replaces the default (preferred_channel: "
        "email, sms or push).",
    )
    mask_identities: bool = Field(
        True,
        description="The preference centre shows the person's identifiers partly hidden (`j•••@example.com`), "
        "since the page may be read over a shoulder; `false` shows them whole.",
    )

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, value: str | None) -> str | None:
        if value is not None and not (value.startswith(("https://", "http://")) and value.isascii()):
            raise ValueError("privacy.public_url must be an http(s) URL, e.g. https://prefs.example.com")
        return value.rstrip("/") if value is not None else None

    @field_validator("link_ttl", "link_max_ttl")
    @classmethod
    def _ttl(cls, value: str) -> str:
        from kairos.rules import duration_ms

        if duration_ms(value) < 60_000:
            raise ValueError("a link lasts at least 1 minute")
        return value

    @field_validator("preferences")
    @classmethod
    def _preference_keys(cls, value: dict[str, PreferenceSettings]) -> dict[str, PreferenceSettings]:
        for key, pref in value.items():
            if not key or len(key) > 64 or not key.isascii() or not all(c.isalnum() or c == "_" for c in key):
                raise ValueError(f"preference key {key!r}: use 1-64 ASCII letters, digits or '_'")
            if pref.type != "text" and not pref.options:
                raise ValueError(f"preference {key!r}: a {pref.type} preference needs options")
        return value


class DecideSettings(BaseModel):
    """The decision API, its learner and its measurement (see docs/decide.md)."""

    policy: str = Field(
        "default",
        description="The learner that ranks offers (`docs/learning.md`): `default` (the measured choice), or "
        "a learner's name such as `priority` (no learning: offers in order of value * weight).",
    )
    seed: int = Field(0, description="Seed of the learner and of exploration (a decision is reproducible).")
    control_share: float = Field(
        0.05,
        ge=0.0,
        le=1.0,
        description="Share of people served by the baseline (offers in priority order) so that uplift is "
        "measured: assigned by profile, the same person always in the same group.",
    )
    control_salt: str = Field(
        "kairos", description="Changing it draws a new control group (the old one's history stays in reports)."
    )
    reward_wait_seconds: float = Field(
        3600.0,
        gt=0,
        le=90 * 86400,
        description="How long an item waits for a reward; then `default_reward` is learned and the item is closed "
        "(a later reward is refused).",
    )
    default_reward: float = Field(0.0, description="The reward of an item none arrived for within the wait.")
    reward_range: tuple[float, float] = Field(
        (-1.0, 1.0),
        description="The rewards the learner takes, `[lowest, highest]`: `POST /v1/rewards` refuses a reward "
        "outside it, a reward from an event is clipped into it. A click is 1; the offer's `value` carries money. "
        "Widen it to learn amounts (e.g. `[0, 500]`), knowing that one far-off reward weighs on the model for long.",
    )
    conversion_events: list[str] = Field(
        default_factory=list,
        description="Track events that reward the person's open decisions (each shown item of the latest one "
        'within the wait), e.g. `["Order Completed"]`; an event carrying `properties.decision_id` always does.',
    )
    conversion_reward: float = Field(1.0, description="The reward a conversion event gives.")
    channel_purposes: dict[str, str] = Field(
        default_factory=lambda: {"email": "marketing_email", "sms": "marketing_sms", "push": "marketing_push"},
        description='The consent purpose a channel needs (`channel: "auto"` only picks channels the person '
        "consented to); a channel not listed needs none beyond the offer's own purpose.",
    )
    preferred_channel_trait: str = Field(
        "preferred_channel",
        description='The stated trait holding the person\'s preferred channel, which `channel: "auto"` tries first.',
    )
    blas_threads: int = Field(
        1,
        ge=1,
        le=64,
        description="Threads the linear algebra library (OpenBLAS) may use in a process that decides or learns. "
        "One: a server's request threads and processes already use the cores, and a multi-threaded BLAS that "
        "finds them busy spins (measured here: a learner step 5x slower with 2 threads on 2 busy cores).",
    )
    max_offers: int = Field(500, ge=1, le=10_000, description="Most offers the catalogue may hold.")
    snapshot_seconds: float = Field(
        5.0, gt=0, description="How often the learner stores a snapshot of the policy that API processes load."
    )
    learner_mode: Literal["process", "thread", "off"] = Field(
        "process",
        description="Where `kairos serve` runs the learner: `process` (a supervised child process: learning "
        "never takes the GIL from decisions), `thread` (inside the API process) or `off` (run `kairos learn` "
        "elsewhere; one learner or several, snapshots are written with a compare-and-set).",
    )
    experience_threshold: float = Field(
        0.5,
        gt=0.0,
        lt=1.0,
        description="The share above which the experience report calls interaction or customization high.",
    )

    @field_validator("reward_range")
    @classmethod
    def _range(cls, value: tuple[float, float]) -> tuple[float, float]:
        low, high = value
        if not (math.isfinite(low) and math.isfinite(high) and -MAX_REWARD <= low < high <= MAX_REWARD):
            raise ValueError(f"reward_range is [lowest, highest], finite, lowest < highest, within +-{MAX_REWARD:g}")
        return value

    @model_validator(mode="after")
    def _rewards_in_range(self) -> DecideSettings:
        low, high = self.reward_range
        for name in ("default_reward", "conversion_reward"):
            if not low <= getattr(self, name) <= high:
                raise ValueError(f"{name} must be within reward_range [{low:g}, {high:g}]")
        return self

    def clip_reward(self, reward: float) -> float:
        """``reward`` moved into ``reward_range``."""
        low, high = self.reward_range
        return min(high, max(low, reward))


class Settings(BaseSettings):
    """All of Kairos' configuration."""

    model_config = SettingsConfigDict(
        env_prefix="KAIROS__",
        env_nested_delimiter="__",
        extra="forbid",
        nested_model_default_partial_update=True,
    )

    server: ServerSettings = Field(default_factory=ServerSettings)
    store: StoreSettings = Field(default_factory=StoreSettings)
    collect: CollectSettings = Field(default_factory=CollectSettings)
    identity: IdentitySettings = Field(default_factory=IdentitySettings)
    profiles: ProfileSettings = Field(default_factory=ProfileSettings)
    processor: ProcessorSettings = Field(default_factory=ProcessorSettings)
    rfm: RfmSettings = Field(default_factory=RfmSettings)
    context: ContextSettings = Field(default_factory=ContextSettings)
    delivery: DeliverySettings = Field(default_factory=DeliverySettings)
    consent: ConsentSettings = Field(default_factory=ConsentSettings)
    privacy: PrivacySettings = Field(default_factory=PrivacySettings)
    decide: DecideSettings = Field(default_factory=DecideSettings)
    limits: LimitsSettings = Field(default_factory=LimitsSettings)
    traits: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="Computed traits defined in the file, `[traits.KEY]` with the body of `PUT /v1/traits/{key}` "
        "(stored when Kairos starts; the API can change them until the next start).",
    )
    segments: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="Segments defined in the file, `[segments.KEY]` with the body of `PUT /v1/segments/{key}`.",
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        named = os.environ.get("KAIROS_CONFIG")
        toml_path = Path(named or "kairos.toml")
        if named and not toml_path.is_file():  # a typo would otherwise run on the defaults, with an empty store
            from kairos.errors import ConfigError

            what = "a directory" if toml_path.is_dir() else "not found"
            raise ConfigError(f"the settings file {named} (KAIROS_CONFIG or --config) is {what}")
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls, toml_file=toml_path))


def load_settings(**overrides: Any) -> Settings:
    """Read the settings; ``overrides`` (section → dict) win over everything else, for tests and the CLI."""
    from pydantic import ValidationError as PydanticError

    try:
        return Settings(**overrides)
    except PydanticError as exc:
        from kairos.errors import ConfigError

        # Where and what, never the value given: a misplaced section may hold a password.
        problems = "; ".join(
            f"{'.'.join(str(part) for part in e['loc']) or 'settings'}: {e['msg']}"
            for e in exc.errors(include_url=False, include_input=False)
        )
        raise ConfigError(f"invalid configuration: {problems}") from None
    except ValueError as exc:
        from kairos.errors import ConfigError

        raise ConfigError(f"invalid configuration: {exc}") from exc

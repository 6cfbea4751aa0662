"""Prometheus metrics, one registry for the process (served at ``/metrics``)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = [
    "EVENTS_APPLIED",
    "EVENTS_DEADLETTERED",
    "EVENTS_DUPLICATE",
    "EVENTS_UNATTRIBUTED",
    "IDENTITY_CONFLICTS",
    "INGESTED",
    "MERGES",
    "PROCESSOR_LAG",
    "REGISTRY",
    "REJECTED",
    "REQUEST_SECONDS",
    "TIMERS_FIRED",
]

REGISTRY = CollectorRegistry()
INGESTED = Counter("kairos_ingest_events", "Events durably appended to the log.", ["source"], registry=REGISTRY)
REJECTED = Counter(
    "kairos_ingest_rejected",
    "Events or requests refused at collect, by error code.",
    ["code"],
    registry=REGISTRY,
)
EVENTS_APPLIED = Counter("kairos_processor_events", "Events applied to profiles.", registry=REGISTRY)
EVENTS_DUPLICATE = Counter(
    "kairos_processor_duplicates",
    "Events skipped because their messageId was already applied.",
    registry=REGISTRY,
)
EVENTS_DEADLETTERED = Counter(
    "kairos_processor_deadlettered",
    "Events that could not be applied and went to the dead-letter table (kairos deadletters list).",
    registry=REGISTRY,
)
TIMERS_FIRED = Counter("kairos_processor_timers_fired", "Durable timers fired.", registry=REGISTRY)
EVENTS_UNATTRIBUTED = Counter(
    "kairos_processor_unattributed",
    "Events with no usable identifier (all blocked or invalid).",
    registry=REGISTRY,
)
IDENTITY_CONFLICTS = Counter(
    "kairos_identity_conflicts",
    "Identifiers dropped from an event because a merge would break a limit.",
    registry=REGISTRY,
)
MERGES = Counter("kairos_identity_merges", "Profiles merged into another.", ["reason"], registry=REGISTRY)
PROCESSOR_LAG = Gauge(
    "kairos_processor_lag_events", "Events in the log not yet applied to profiles.", registry=REGISTRY
)
REQUEST_SECONDS = Histogram(
    "kairos_http_request_seconds", "HTTP request latency by route group.", ["route"], registry=REGISTRY
)

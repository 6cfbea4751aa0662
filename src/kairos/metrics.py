"""Prometheus metrics, one registry for the process (served at ``/metrics``).

A processor running in its own process (``processor.mode = "process"``) increments its own copy of the
counters in :data:`PROCESSOR_COUNTERS`; it reports their values in its status snapshots and the API process
adds the differences to its copies, so ``/metrics`` of ``kairos serve`` shows them whatever the mode.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = [
    "DELIVERED",
    "DELIVERY_CIRCUIT_OPEN",
    "DELIVERY_DEAD",
    "DELIVERY_FAILED",
    "DELIVERY_QUEUE",
    "DELIVERY_REGISTRY",
    "DELIVERY_SECONDS",
    "DELIVERY_SUPPRESSED",
    "ERASURES",
    "EVENTS_APPLIED",
    "EVENTS_DEADLETTERED",
    "EVENTS_DUPLICATE",
    "EVENTS_SUPPRESSED",
    "EVENTS_UNATTRIBUTED",
    "IDENTITY_CONFLICTS",
    "INGESTED",
    "INGEST_SUPPRESSED",
    "MERGES",
    "PROCESSOR_COUNTERS",
    "PROCESSOR_LAG",
    "PROCESSOR_LAST_BATCH",
    "PROCESSOR_RESTARTS",
    "PROCESSOR_UP",
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
EVENTS_SUPPRESSED = Counter(
    "kairos_processor_suppressed",
    "Events skipped (and erased from the log) because they carry a suppressed identifier.",
    registry=REGISTRY,
)
INGEST_SUPPRESSED = Counter(
    "kairos_ingest_suppressed",
    "Events dropped at collect because they carry a suppressed identifier (answered as accepted).",
    ["source"],
    registry=REGISTRY,
)
ERASURES = Counter(
    "kairos_privacy_erasures",
    "Erasure requests finished, by outcome (complete, failed).",
    ["status"],
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
PROCESSOR_UP = Gauge(
    "kairos_processor_up",
    "1 while the processor of this server runs; 0 when it is paused, restarting, stopped or off.",
    registry=REGISTRY,
)
PROCESSOR_RESTARTS = Counter(
    "kairos_processor_restarts",
    "Times the processor process died unexpectedly and was started again.",
    registry=REGISTRY,
)
PROCESSOR_LAST_BATCH = Gauge(
    "kairos_processor_last_batch_timestamp_seconds",
    "Unix time at which the processor of this server last committed a batch.",
    registry=REGISTRY,
)

# The counters the processor increments, by metric name: what a processor process reports to its parent.
# A new processor counter belongs here too, or it stays invisible under `kairos serve`.
PROCESSOR_COUNTERS: dict[str, Counter] = {
    "kairos_processor_events": EVENTS_APPLIED,
    "kairos_processor_duplicates": EVENTS_DUPLICATE,
    "kairos_processor_deadlettered": EVENTS_DEADLETTERED,
    "kairos_processor_timers_fired": TIMERS_FIRED,
    "kairos_processor_unattributed": EVENTS_UNATTRIBUTED,
    "kairos_processor_suppressed": EVENTS_SUPPRESSED,
    "kairos_privacy_erasures": ERASURES,
    "kairos_identity_conflicts": IDENTITY_CONFLICTS,
    "kairos_identity_merges": MERGES,
}

# The delivery worker's metrics live in a registry of their own: under `kairos serve` the worker usually
# runs in a child process, which sends this registry's text to the API process for its `/metrics`.
DELIVERY_REGISTRY = CollectorRegistry()
DELIVERED = Counter(
    "kairos_delivery_delivered", "Deliveries a destination accepted (2xx).", ["destination"], registry=DELIVERY_REGISTRY
)
DELIVERY_FAILED = Counter(
    "kairos_delivery_failed",
    "Failed delivery attempts, by reason: http_5xx, http_429, http_408, http_4xx (not retried), timeout, connection, "
    "invalid_request and blocked (delivery.blocked_networks; neither sent nor retried).",
    ["destination", "reason"],
    registry=DELIVERY_REGISTRY,
)
DELIVERY_DEAD = Counter(
    "kairos_delivery_dead", "Deliveries given up on (dead-lettered).", ["destination"], registry=DELIVERY_REGISTRY
)
DELIVERY_SUPPRESSED = Counter(
    "kairos_delivery_suppressed",
    "Messages not delivered or streamed because the person's consent does not allow the destination's purpose.",
    ["destination"],
    registry=DELIVERY_REGISTRY,
)
DELIVERY_SECONDS = Histogram(
    "kairos_delivery_latency_seconds",
    "Time from sending a delivery to the destination's answer.",
    ["destination"],
    registry=DELIVERY_REGISTRY,
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
DELIVERY_QUEUE = Gauge(
    "kairos_delivery_queue_depth",
    "Deliveries pending (not yet accepted nor dead).",
    ["destination"],
    registry=DELIVERY_REGISTRY,
)
DELIVERY_CIRCUIT_OPEN = Gauge(
    "kairos_delivery_circuit_open",
    "1 while a destination's circuit breaker is open (nothing is sent to it until a probe succeeds).",
    ["destination"],
    registry=DELIVERY_REGISTRY,
)

"""The one schema source: tables declared once, rendered by each dialect.

Core tables (the log, sources, keys, checkpoints, identities, ...) are declared here; projections declare the
columns they keep on ``profiles`` and the tables they own (see :mod:`kairos.pipeline.projection`), so adding a
kind of derived state adds its storage without editing the store. A dialect turns a :class:`Table` into
``CREATE TABLE`` text (:meth:`kairos.store._sql.Dialect.column_type`), so SQLite and PostgreSQL cannot drift.

Tables are *durable* (the log and what people configure: never dropped) or *derived* (rebuilt from the log
by replay). When the derived schema changes, the store drops and recreates the derived tables and the
processor rebuilds them from the log: a schema change needs no hand-written migration of derived state.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "API_KEYS",
    "AUDIT",
    "CHECKPOINTS",
    "CORE_PROFILE_COLUMNS",
    "DATA_USES",
    "DEADLETTERS",
    "DECISIONS",
    "DECISION_RECORDS",
    "DECISION_TABLES",
    "DEFINITIONS",
    "DELIVERIES",
    "DELIVERY_CURSORS",
    "DURABLE",
    "IDENTITIES",
    "JOBS",
    "LOG",
    "LOG_FILE",
    "MERGES",
    "MODELS_FILE",
    "OFFER_IMPRESSIONS",
    "OUTBOX",
    "POLICY_MODELS",
    "POLICY_SNAPSHOTS",
    "PRIVACY_REQUESTS",
    "REWARDS",
    "SEEN",
    "STATE_FILE",
    "SUPPRESSIONS",
    "TIMERS",
    "Column",
    "ColumnType",
    "Index",
    "Table",
    "derived_tables",
    "fingerprint",
    "profiles_table",
]

# Logical types; each dialect maps them (``int`` → INTEGER / BIGINT, ``json`` → TEXT / JSONB, ...).
ColumnType = Literal["int", "float", "text", "bytes", "json", "serial"]


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    type: ColumnType
    nullable: bool = False
    default: str | None = None  # SQL literal, the same in both dialects (``0``, ``'{}'``)


@dataclass(frozen=True, slots=True)
class Index:
    name: str
    columns: tuple[str, ...]
    unique: bool = False
    where: str | None = None  # partial index condition, the same SQL in both dialects
    gin: bool = False  # PostgreSQL: a GIN index (jsonb containment); SQLite has none and skips it


@dataclass(frozen=True, slots=True)
class Table:
    name: str
    columns: tuple[Column, ...]
    primary_key: tuple[str, ...]
    indexes: tuple[Index, ...] = ()
    # The column holding a profile's key: on a merge the store moves the loser's rows to the winner.
    profile_column: str | None = None
    without_rowid: bool = False  # SQLite: a clustered primary key (the table is its index)
    # A counter table: rows are added to (``Context.count``), never replaced: the columns that are not
    # in the primary key are summed on conflict.
    counter: bool = False

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)


def _cols(*spec: tuple[str, ColumnType] | Column) -> tuple[Column, ...]:
    return tuple(c if isinstance(c, Column) else Column(*c) for c in spec)


# -- durable -------------------------------------------------------------------------------------------------
LOG = Table(
    "log",
    _cols(
        ("seq", "int"),
        ("source", "text"),
        ("received_at", "int"),
        ("message_id", "text"),
        ("payload", "bytes"),
        ("ts", "int"),
        ("trait_kind", "text"),
    ),
    ("seq",),
)
SOURCES = Table(
    "sources",
    _cols(
        ("id", "text"),
        ("name", "text"),
        ("write_key", "text"),
        ("enabled", "int"),
        ("trait_kind", "text"),
        ("created_at", "int"),
    ),
    ("id",),
    (Index("sources_name", ("name",), unique=True), Index("sources_write_key", ("write_key",), unique=True)),
)
API_KEYS = Table(
    "api_keys",
    _cols(
        ("id", "text"),
        ("name", "text"),
        ("key_hash", "text"),
        ("scopes", "text"),
        ("enabled", "int"),
        ("created_at", "int"),
        # Added by the hardened API (an older kairos.db gains them on start, see Database.migrate).
        Column("rotated_at", "int", nullable=True),
        Column("revoked_at", "int", nullable=True),
        # The secret a rotation replaced keeps working until prev_expires_at (the grace period).
        Column("prev_hash", "text", nullable=True),
        Column("prev_expires_at", "int", nullable=True),
    ),
    ("id",),
    (Index("api_keys_hash", ("key_hash",), unique=True), Index("api_keys_prev_hash", ("prev_hash",))),
)
# Admin and privacy actions (kairos.audit): who (key id and name, or the CLI), what, on which target, with
# which outcome. No personal data: a target is a definition key, a key id, a profile id or a request id.
AUDIT = Table(
    "audit",
    _cols(
        ("id", "serial"),
        ("at", "int"),
        ("actor", "text"),  # "api" or "cli"
        Column("key_id", "text", nullable=True),
        Column("key_name", "text", nullable=True),
        ("action", "text"),
        ("target", "text"),
        ("outcome", "int"),  # an HTTP status (the CLI's successes are 200)
        Column("detail", "json", nullable=True),
    ),
    ("id",),
    (Index("audit_action", ("action", "id")),),
)
# Side effects for subscribers. Durable: a replay re-emits with the same keys, which are ignored, so a
# subscriber never sees a message twice because state was rebuilt.
OUTBOX = Table(
    "outbox",
    _cols(
        ("id", "serial"),
        ("key", "text"),
        ("type", "text"),
        Column("profile_id", "text", nullable=True),
        ("payload", "json"),
        ("created_at", "int"),
    ),
    ("id",),
    (Index("outbox_key", ("key",), unique=True),),
)
META = Table("meta", _cols(("key", "text"), ("value", "text")), ("key",))
# What people define (computed traits, segments, later moments and offers), one row per (kind, key). A
# change bumps the key's ``version`` and the table-wide ``revision`` (the processor polls its maximum); a
# deletion keeps the row (``deleted``) so that versions keep growing if the key comes back.
DEFINITIONS = Table(
    "definitions",
    _cols(
        ("kind", "text"),
        ("key", "text"),
        ("version", "int"),
        ("revision", "int"),
        ("body", "json"),
        ("deleted", "int"),
        ("created_at", "int"),
        ("updated_at", "int"),
    ),
    ("kind", "key"),
    (Index("definitions_revision", ("revision",), unique=True),),
)
# Where each destination (and pull subscription) has got to: the last outbox id and log seq it has
# planned deliveries for (``kairos.activate``). Durable: a replay re-emits the outbox with the same ids
# (ignored), and the log keeps its seqs, so the cursors stay right and nothing is delivered twice.
DELIVERY_CURSORS = Table(
    "delivery_cursors",
    _cols(("destination", "text"), ("outbox", "int"), ("log", "int"), ("created_at", "int")),
    ("destination",),
)
# One row per (destination, message): ``id`` is derived from both, so a redelivery carries the same id.
# No payload and no personal data: the body is built from the outbox or the log when it is sent.
DELIVERIES = Table(
    "deliveries",
    _cols(
        ("destination", "text"),
        ("id", "text"),
        ("source", "text"),  # "outbox" or "log"
        ("position", "int"),  # outbox id or log seq
        ("type", "text"),
        ("key", "text"),
        Column("profile_id", "text", nullable=True),
        ("status", "text"),  # pending | delivered | dead | suppressed
        ("attempts", "int"),
        ("next_attempt_at", "int"),
        ("created_at", "int"),
        ("updated_at", "int"),
        Column("last_status", "int", nullable=True),
        Column("last_error", "text", nullable=True),
        Column("latency_ms", "int", nullable=True),
    ),
    ("destination", "id"),
    (
        Index("deliveries_due", ("destination", "status", "next_attempt_at")),
        Index("deliveries_order", ("destination", "created_at")),
        # A person's deliveries: the preference centre's "where your data went", and their erasure.
        Index("deliveries_profile", ("profile_id",)),
    ),
)
# The decision log (``kairos.decide``): one row per decision, with the whole record (features, candidates,
# items, propensities) as msgpack, so rewards can be joined and policies evaluated off-line. ``subject`` is the
# profile id, or a digest of the identity ref of someone Kairos did not know yet (never the identity itself).
# ``closes_at``: when its items stop waiting for rewards (the default reward is then recorded).
DECISIONS = Table(
    "decisions",
    _cols(
        ("seq", "serial"),
        ("id", "text"),
        ("at", "int"),
        ("subject", "text"),
        ("channel", "text"),
        Column("placement", "text", nullable=True),
        ("grp", "text"),
        ("policy", "text"),
        ("policy_version", "int"),
        ("offers", "json"),  # the keys shown, in slot order
        ("interaction", "int"),
        ("customization", "int"),
        ("closes_at", "int"),
        ("closed", "int"),
        ("learned", "int"),  # its shown items are in a stored policy snapshot (with the default reward)
    ),
    ("seq",),
    (
        Index("decisions_id", ("id",), unique=True),
        Index("decisions_unlearned", ("seq",), where="learned = 0"),
        Index("decisions_subject", ("subject", "at")),
        Index("decisions_at", ("at",)),
        Index("decisions_open", ("closes_at",), where="closed = 0"),
    ),
)
# What a decision saw and showed (features, candidates, items: ``kairos.decide.record``, a few KB), apart from
# the decision's row: the learner's and the closer's flags change on every decision once, and on SQLite an
# update rewrites the whole row's page (one page per decision with the record inline: a snapshot's commit
# rewrote ~20 MB for 5,000 decisions and held the write lock the decision path waits on for 50-160 ms).
DECISION_RECORDS = Table("decision_records", _cols(("id", "text"), ("record", "bytes")), ("id",))
# One outcome per shown item: the first reward that arrived (API, event, conversion) or the default once the
# wait passed. ``learned``: taken into a stored policy snapshot (set once that snapshot is stored).
REWARDS = Table(
    "rewards",
    _cols(
        ("seq", "serial"),
        ("decision_id", "text"),
        ("offer", "text"),
        ("reward", "float"),
        ("at", "int"),
        ("source", "text"),
        ("learned", "int"),
    ),
    ("seq",),
    (
        Index("rewards_item", ("decision_id", "offer"), unique=True),
        Index("rewards_unlearned", ("seq",), where="learned = 0"),
    ),
)
# Versioned policy snapshots: the learner writes version N+1 only if N is still the latest (compare-and-set),
# API processes load the latest.
# ``model_id``: the model is in ``policy_models`` (empty ``model`` here); snapshots of earlier releases hold it
# in ``model`` and have none. ``marks``: the runs of reward and decision seqs it learned, marked learned after
# it is stored (``kairos.store._decisions.MARK_CHUNK``); none for those of earlier releases (marked in its
# transaction).
POLICY_SNAPSHOTS = Table(
    "policy_snapshots",
    _cols(
        ("version", "int"),
        ("policy", "text"),
        ("at", "int"),
        ("learned", "int"),
        ("model", "bytes"),
        Column("model_id", "text", nullable=True),
        Column("marks", "json", nullable=True),
    ),
    ("version",),
)
# The snapshots' models (megabytes each), written before the snapshot's compare-and-set and apart from it:
# embedded, in a SQLite file of their own, so that writing one never holds the decision log's write lock.
POLICY_MODELS = Table("policy_models", _cols(("id", "text"), ("at", "int"), ("model", "bytes")), ("id",))
# Impressions per offer, for budgets and stats (a counter: added to, never replaced).
OFFER_IMPRESSIONS = Table(
    "offer_impressions", _cols(("offer", "text"), ("impressions", "int")), ("offer",), counter=True
)
# The data-use ledger (``kairos.privacy.uses``): each use of a person's data for a purpose that is not already
# in the decision log (deliveries, streams, exports, segment exports), written with the use. Durable: it is a
# record of what was done, not state derived from events.
DATA_USES = Table(
    "data_uses",
    _cols(
        ("id", "serial"),
        ("profile_id", "text"),
        ("at", "int"),
        ("purpose", "text"),
        ("use", "text"),  # delivery | stream | export | segment_export
        ("recipient", "text"),  # a destination, a subscription, "self", ...
        ("ref", "text"),  # the delivery id, the request id, ...
    ),
    ("id",),
    (Index("data_uses_profile", ("profile_id", "at")),),
)
# Export and erasure requests (``kairos.privacy.erasure``). No personal data: no identifier, no ref. ``target``
# is the profile's internal key, kept only while the request is pending or running (NULL once it ended);
# ``log_seq`` is the end of the log when it was made: the processor must have applied that far before the
# erasure runs, so every event of the person up to the request is attributed to them. ``lease_until``: a
# running request whose runner stopped renewing it (a crash) may be taken over after that time.
PRIVACY_REQUESTS = Table(
    "privacy_requests",
    _cols(
        ("id", "text"),
        ("kind", "text"),  # erase
        ("status", "text"),  # pending | running | complete | failed
        ("created_at", "int"),
        Column("finished_at", "int", nullable=True),
        ("log_seq", "int"),
        Column("target", "int", nullable=True),
        ("suppress", "int"),
        ("lease_until", "int"),
        ("attempts", "int"),
        ("steps", "json"),  # counts per step, never a value
        Column("error", "text", nullable=True),
    ),
    ("id",),
    (Index("privacy_requests_open", ("created_at",), where="status IN ('pending', 'running')"),),
)
# Suppressed identifiers, as keyed hashes (``kairos.privacy.keys.keyed_hash``) only: collect drops events that
# carry one, the processor skips (and erases) those already in the log. ``id`` orders them for refreshes.
SUPPRESSIONS = Table(
    "suppressions",
    _cols(("id", "serial"), ("hash", "text"), ("created_at", "int")),
    ("id",),
    (Index("suppressions_hash", ("hash",), unique=True),),
)
DECISION_TABLES: tuple[Table, ...] = (
    META,
    DECISIONS,
    DECISION_RECORDS,
    REWARDS,
    POLICY_SNAPSHOTS,
    OFFER_IMPRESSIONS,
)
DURABLE: tuple[Table, ...] = (
    LOG,
    SOURCES,
    API_KEYS,
    AUDIT,
    OUTBOX,
    META,
    DEFINITIONS,
    DELIVERY_CURSORS,
    DELIVERIES,
    DATA_USES,
    *DECISION_TABLES[1:],
    POLICY_MODELS,
    PRIVACY_REQUESTS,
    SUPPRESSIONS,
)
# Embedded, the log and derived state live in two SQLite files: each file has one writer at a time, and a
# processor commit must not make an append wait. The outbox is written in the state transaction; delivery
# bookkeeping sits beside it (its planning transaction moves a cursor over the outbox).
# Decisions have a file of their own: the decision path writes there without waiting on either writer.
# Privacy requests and suppressions sit with the log: collect reads suppressions, erasures tombstone the log.
LOG_FILE: tuple[Table, ...] = (LOG, SOURCES, API_KEYS, AUDIT, META, DEFINITIONS, PRIVACY_REQUESTS, SUPPRESSIONS)
STATE_FILE: tuple[Table, ...] = (OUTBOX, META, DELIVERY_CURSORS, DELIVERIES, DATA_USES)
# Policy models have a file of their own: the learner writes megabytes there without holding the decisions'.
MODELS_FILE: tuple[Table, ...] = (META, POLICY_MODELS)

# -- derived -------------------------------------------------------------------------------------------------
CHECKPOINTS = Table("checkpoints", _cols(("name", "text"), ("seq", "int"), ("version", "int")), ("name",))
SEEN = Table("seen", _cols(("key", "bytes")), ("key",), without_rowid=True)
# Profiles are keyed by an integer: the log position of the event that created them (``created_seq``), so
# keys grow with the log and index pages stay local. ``id`` is the public uuid derived from it.
CORE_PROFILE_COLUMNS = _cols(("pk", "int"), ("id", "text"), Column("merged_into", "int", nullable=True))
IDENTITIES = Table(
    "identities",
    _cols(("type", "text"), ("value", "text"), ("profile_pk", "int"), ("seq", "int")),
    ("type", "value"),
    (Index("identities_profile", ("profile_pk",)),),
    profile_column="profile_pk",
    without_rowid=True,
)
MERGES = Table(
    "merges",
    _cols(
        ("id", "serial"),
        ("winner", "int"),
        ("loser", "int"),
        ("at", "int"),
        ("seq", "int"),
        ("message_id", "text"),
        ("reason", "text"),
        ("identities", "json"),
    ),
    ("id",),
    (Index("merges_winner", ("winner",)),),
)
# Durable timers: "wake this profile at due_at"; one per (profile, projection, key), moved with the profile.
TIMERS = Table(
    "timers",
    _cols(
        ("profile_pk", "int"),
        ("projection", "text"),
        ("key", "text"),
        ("due_at", "int"),
        Column("payload", "json", nullable=True),
    ),
    ("profile_pk", "projection", "key"),
    (Index("timers_due", ("due_at",)),),
    profile_column="profile_pk",
)
# Events that could not be applied. No payload and no personal data: the event stays in the log.
DEADLETTERS = Table(
    "deadletters",
    _cols(
        ("seq", "int"),
        ("source", "text"),
        ("error_class", "text"),
        ("message", "text"),
        ("failed_at", "int"),
        Column("retried_at", "int", nullable=True),
    ),
    ("seq",),
)


# Which version of each definition the derived state follows, and the backfill that brings every profile to
# it: profiles with ``pk <= upto`` existed before the version took effect and are recomputed in ``pk`` order
# (``cursor``: the last one done); ``redo`` lists profiles a merge made stale behind the cursor.
JOBS = Table(
    "jobs",
    _cols(
        ("kind", "text"),
        ("key", "text"),
        ("version", "int"),
        ("deleted", "int"),
        ("status", "text"),
        ("upto", "int"),
        ("cursor", "int"),
        ("redo", "json"),
        ("total", "int"),
        ("done", "int"),
        ("started_at", "int"),
        Column("finished_at", "int", nullable=True),
    ),
    ("kind", "key"),
)


def profiles_table(columns: Iterable[Column], indexes: Iterable[Index] = ()) -> Table:
    """``profiles``: the core columns plus the columns (and indexes) the projections keep there."""
    return Table(
        "profiles",
        (*CORE_PROFILE_COLUMNS, *columns),
        ("pk",),
        (
            Index("profiles_id", ("id",), unique=True),
            Index("profiles_merged_into", ("merged_into",), where="merged_into IS NOT NULL"),
            *indexes,
        ),
    )


def derived_tables(profiles: Table, owned: Iterable[Table]) -> tuple[Table, ...]:
    return (CHECKPOINTS, SEEN, profiles, IDENTITIES, MERGES, TIMERS, DEADLETTERS, JOBS, *owned)


def fingerprint(tables: Iterable[Table]) -> str:
    """Changes whenever a derived table's declaration does: the store then rebuilds derived state."""
    return hashlib.sha256(repr(sorted(tables, key=lambda t: t.name)).encode()).hexdigest()[:16]

"""The running system: settings, the store they select, the processor, and the write path into the log.

``kairos serve`` and every CLI command that touches data build one :class:`Kairos` from the same settings,
so they all use the same configured store.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from cachetools import TTLCache

from kairos.collect import Body, EventError, NewEvent, body_from_payload, prepare
from kairos.config import Settings, load_settings
from kairos.consent import ConsentPolicy
from kairos.definitions import Catalog, catalog_of, load
from kairos.errors import AuthError, ForbiddenError, ValidationError
from kairos.identity import profile_id_for
from kairos.metrics import INGEST_SUPPRESSED, INGESTED, REJECTED
from kairos.pipeline import Clock, Processor, ProfileState, Projection, SystemClock
from kairos.pipeline._codec import ProfileCodec
from kairos.privacy.keys import privacy_secret
from kairos.privacy.suppression import Suppressions
from kairos.profiles import default_projections
from kairos.store import Source, Store, open_store
from kairos.store.cache import Cache, MemoryCache

__all__ = ["IngestResult", "Kairos"]


@dataclass(slots=True)
class IngestResult:
    accepted: int
    seqs: list[int] = field(default_factory=list)
    errors: list[EventError] = field(default_factory=list)


def _utf8(text: str) -> bool:
    """False for a string holding an unpaired surrogate (JSON allows the escape; no driver binds it)."""
    if text.isascii():
        return True
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


class Kairos:
    def __init__(
        self,
        settings: Settings | None = None,
        *,
        clock: Clock | None = None,
        projections: Sequence[Projection[Any]] | None = None,
    ) -> None:
        self.settings = settings or load_settings()
        self.consent_policy = ConsentPolicy(self.settings.consent)  # the one gate every use of data asks
        self.clock: Clock = clock or SystemClock()
        self.projections = list(projections if projections is not None else default_projections(self.settings))
        # The computed traits and segments the projections run; the processor keeps it current, and the
        # API process (which reads computed values through it) reloads it when definitions change.
        self.catalog = catalog_of(self.projections) or Catalog()
        self._catalog_checked = 0.0
        self.codec = ProfileCodec(self.projections)
        self.store: Store = open_store(self.settings.store, self.codec.columns, self.codec.indexes, self.codec.tables)
        self.processor = Processor(self.store, self.settings, self.projections, self.clock)
        # Privacy: events naming a suppressed identifier are dropped at collect and skipped by the processor,
        # which also carries out erasure requests between its batches (kairos.privacy.erasure).
        self.suppressions = Suppressions(self.store.privacy, lambda: privacy_secret(self))
        self.processor.suppressions = self.suppressions
        from kairos.privacy.erasure import ErasureTask

        self.processor.between_batches.append(ErasureTask(self))
        self.cache: Cache = MemoryCache(self.settings.store.cache_size, self.settings.store.cache_ttl_seconds)
        # Write keys are checked on every collect request; a disabled source takes effect within 5 s.
        self._sources: TTLCache[str, Source | None] = TTLCache(maxsize=10_000, ttl=5.0)
        if self.settings.traits or self.settings.segments:
            from kairos.segments.admin import sync_config

            try:
                sync_config(self)
            except BaseException:
                self.store.close()
                raise

    def definitions(self, max_age: float = 1.0) -> Catalog:
        """The catalog, reloaded from the store if it may be older than ``max_age`` seconds."""
        now = time.monotonic()
        if now - self._catalog_checked >= max_age:
            load(self.store.admin, self.catalog)
            self._catalog_checked = now
        return self.catalog

    def close(self) -> None:
        self.processor.stop()
        self.store.close()

    def source_for(self, write_key: str | None) -> Source:
        """The enabled source a write key belongs to, or an :class:`AuthError`."""
        if not write_key:
            raise AuthError("missing write key: send it as the Basic auth user name or as writeKey", field="writeKey")
        if "\x00" in write_key or len(write_key) > 200 or not _utf8(write_key):
            raise AuthError("unknown write key", code="invalid_write_key", field="writeKey")
        if write_key in self._sources:
            source = self._sources[write_key]
        else:
            source = self.store.admin.source_by_key(write_key)
            self._sources[write_key] = source
        if source is None:
            raise AuthError("unknown write key", code="invalid_write_key", field="writeKey")
        if not source.enabled:
            raise ForbiddenError(f"source {source.name!r} is disabled", code="source_disabled", field="writeKey")
        return source

    def prepare(
        self, payload: Body | Any, endpoint: str, write_key: str | None, received_at: datetime | None = None
    ) -> tuple[Source, list[NewEvent], list[EventError]]:
        """Authenticate and validate one request (a :class:`Body` or a decoded one); nothing is written yet."""
        if not isinstance(payload, Body):
            payload = body_from_payload(payload, endpoint, self.settings.collect)
        # The key in the body wins over Basic auth: a Bearer token beside it is for something else.
        source = self.source_for(payload.write_key or write_key)
        events, errors = self.prepare_for(source, payload, endpoint, received_at)
        return source, events, errors

    def prepare_for(
        self, source: Source, payload: Body | Any, endpoint: str, received_at: datetime | None = None
    ) -> tuple[list[NewEvent], list[EventError]]:
        """Validate one request for a known source (``kairos import`` has no write key)."""
        received_at = received_at or datetime.fromtimestamp(self.clock.now() / 1000, UTC)
        prepared = prepare(payload, endpoint, received_at, self.settings.collect, trait_kind=source.trait_kind)
        for error in prepared.errors:
            REJECTED.labels(error.code).inc()
        return prepared.events, prepared.errors

    def unsuppressed(self, source: str, events: list[NewEvent]) -> list[NewEvent]:
        """``events`` without those naming a suppressed identifier (counted, never logged). Callers answer as
        if they were accepted: the response must not tell whether someone asked to be forgotten."""
        suppressions = self.suppressions
        suppressions.refresh()
        if not len(suppressions):
            return events
        identifiers = self.processor.identifiers
        kept = [e for e in events if not suppressions.blocks_payload(identifiers, e.payload)]
        if len(kept) < len(events):
            INGEST_SUPPRESSED.labels(source).inc(len(events) - len(kept))
        return kept

    def append(self, groups: Sequence[tuple[str, Sequence[NewEvent]]]) -> list[list[int]]:
        seqs = self.store.log.append_many(groups)
        for source, events in groups:
            self.count_ingested(source, len(events))
        return seqs

    @staticmethod
    def count_ingested(source: str, n: int) -> None:
        INGESTED.labels(source).inc(n)

    def ingest(self, payload: Any, endpoint: str, write_key: str | None = None) -> IngestResult:
        """Validate and durably append one request's events (used by import, demo and tests)."""
        source, events, errors = self.prepare(payload, endpoint, write_key)
        kept = self.unsuppressed(source.name, events)
        seqs = self.append([(source.name, kept)])[0] if kept else []
        return IngestResult(len(events), seqs, errors)

    def source_named(self, name: str, trait_kind: str | None = None) -> Source:
        """The source called ``name``, created on first use (import and demo)."""
        for source in self.store.admin.sources():
            if source.name == name:
                return source
        return self.store.admin.add_source(
            name, trait_kind or self.settings.profiles.default_trait_kind, self.clock.now()
        )

    def wait_processed(self, timeout: float = 10.0) -> bool:
        """Block until the processor has applied everything in the log (tests, CLI)."""
        deadline = time.monotonic() + timeout
        target = self.store.log.last_seq()
        while self.store.state.checkpoint().seq < target:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    # -- reading profiles --------------------------------------------------------------------------
    def resolve(self, ref: str) -> int | None:
        """The canonical profile key for a profile id (following merges) or a ``type:value`` identity.

        An identity is normalized as the processor normalizes it (``email:Jane@X.io`` finds
        ``jane@x.io``); an unknown identity type, or a reference without a value (``""``, ``"email:"``), is a
        :class:`ValidationError` whose message never quotes the reference.
        """
        kind, sep, value = ref.partition(":")
        if not (value if sep else ref).strip():
            raise ValidationError(
                "a profile reference is an id or type:value, and this one has no value", code="invalid_ref", field="ref"
            )
        if not sep:
            return self.store.state.resolve_id(ref)
        identifiers = self.processor.identifiers
        if kind not in identifiers.types:
            # The part before ":" is not echoed: in a mistyped reference it may be part of a person's identifier.
            known = ", ".join(sorted(identifiers.types))
            raise ValidationError(f"unknown identity type: use one of {known}", code="invalid_ref", field="ref")
        usable = identifiers.usable(kind, value)
        return None if usable is None else self.store.state.resolve_identity((kind, usable))

    def profile_view(self, profile: ProfileState, merged_ids: list[str]) -> dict[str, Any]:
        """The profile as ``GET /v1/profiles/{ref}`` shows it."""
        view: dict[str, Any] = {
            "id": profile.id,
            "identities": [{"type": t, "value": v} for t, v in sorted(profile.identities)],
            "traits": {},
            "trait_meta": {},
            "segments": [],
            "consents": {},
        }
        view.update(self.codec.view(profile))  # each projection adds what it keeps
        view["merged_ids"] = merged_ids
        return view

    def view(self, pk: int) -> dict[str, Any] | None:
        """The view of profile ``pk`` from the read cache (the processor drops what each batch changed), else
        from the store, then cached. Callers must not change it."""
        key = profile_id_for(pk)  # the processor reports changed profiles by public id
        cached = self.cache.get(key)
        if cached is not None:
            return cached  # type: ignore[no-any-return]
        token = self.cache.token()
        profile = self.profile(pk)
        if profile is None:
            return None
        view = self.profile_view(profile, [profile_id_for(k) for k in self.store.state.merged_keys(pk)])
        self.cache.put(key, view, token)
        return view

    def profile(self, pk: int) -> ProfileState | None:
        self.definitions()  # computed traits are decoded through the current definitions
        row = self.store.state.load_profiles([pk]).get(pk)
        return None if row is None else self.codec.state(row)

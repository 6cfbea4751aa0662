"""Saving, deleting and describing definitions (computed traits, segments, moments): one place for the API,
the CLI and ``kairos.toml``."""

from __future__ import annotations

import time
from typing import Any

from kairos.definitions import (
    SegmentDef,
    check_key,
    checked_write,
    compile_definition,
    moment_body,
    segment_body,
    segment_order,
    trait_body,
)
from kairos.errors import ConfigError, KairosError, ValidationError
from kairos.moments import MOMENT_STATS
from kairos.runtime import Kairos
from kairos.segments.membership import SEGMENT_STATS
from kairos.store import Definition, Job

__all__ = ["definition_view", "job_of", "remove", "save", "sync_config"]

DAY = 86_400_000


def _iso_day(day: int) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(day * DAY / 1000))


def _job_view(job: Job | None, d: Definition) -> dict[str, Any]:
    if job is None or job.version != d.version:
        return {"status": "pending", "done": 0, "total": None}
    return {
        "status": job.status,
        "done": job.done,
        "total": job.total,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
    }


def definition_view(kairos: Kairos, d: Definition, job: Job | None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "key": d.key,
        **d.body,
        "version": d.version,
        "created_at": d.created_at,
        "updated_at": d.updated_at,
    }
    if d.kind != "moment":  # a moment applies from the next event on: nothing to backfill
        out["backfill"] = _job_view(job, d)
    if d.kind == "moment":
        stats = kairos.store.state.counts(MOMENT_STATS.name, "WHERE moment = {p}", (d.key,))
        out["counts"] = [{"date": _iso_day(day), "fired": fired} for _moment, day, fired in stats]
        out["total"] = sum(fired for _moment, _day, fired in stats)
    if d.kind == "segment":
        stats = kairos.store.state.counts(SEGMENT_STATS.name, "WHERE segment = {p}", (d.key,))
        size = 0
        history = []
        for _segment, day, entered, exited in stats:
            size += entered - exited
            history.append({"date": _iso_day(day), "size": size, "entered": entered, "exited": exited})
        out["size"] = size
        out["size_history"] = history
    return out


def job_of(kairos: Kairos, kind: str, key: str) -> Job | None:
    return next((j for j in kairos.store.state.jobs() if j.kind == kind and j.key == key), None)


def _warnings(kairos: Kairos, source_rule: SegmentDef) -> list[dict[str, str]]:
    """Traits a rule names that no definition or profile has (probably a typo)."""
    out = []
    catalog = kairos.definitions(0)
    state = kairos.store.state
    declared = {name for p in kairos.projections for name in p.trait_names()}
    for name in sorted(source_rule.rule.references.traits):
        if name in catalog.traits or name in declared:
            continue
        if state.profiles_in("traits", name, 1, None):
            continue
        out.append(
            {"code": "unknown_trait", "field": "rule", "message": f"no profile or definition has a trait {name!r}"}
        )
    return out


def _trait_warnings(kairos: Kairos, key: str) -> list[dict[str, str]]:
    """A computed trait named like a trait that sources or another projection give: its value takes that one's
    place in views, rules and deliveries (probably not meant; the other one is still stored)."""
    declared = {name for p in kairos.projections for name in p.trait_names()}
    if key in declared or kairos.store.state.profiles_in("traits", key, 1, None):
        return [
            {
                "code": "shadows_trait",
                "field": "key",
                "message": f"profiles already have a trait {key!r}: this computed trait's value will replace it",
            }
        ]
    return []


def _moment_warnings(kairos: Kairos, when: dict[str, Any]) -> list[dict[str, str]]:
    """A segment or trait the pattern names that nothing defines (probably a typo)."""
    segment = when.get("segment_entered") or when.get("segment_exited")
    if segment is not None and kairos.store.admin.definition("segment", segment) is None:
        return [{"code": "unknown_segment", "field": "when", "message": f"no segment is named {segment!r}"}]
    trait = when.get("trait")
    if trait is not None:
        declared = {name for p in kairos.projections for name in p.trait_names()}
        known = trait in declared or kairos.store.admin.definition("trait", trait) is not None
        if not known and not kairos.store.state.profiles_in("traits", trait, 1, None):
            return [
                {"code": "unknown_trait", "field": "when", "message": f"no profile or definition has a trait {trait!r}"}
            ]
    return []


def save(kairos: Kairos, kind: str, key: str, body: Any) -> tuple[dict[str, Any], int]:
    """Validate and store a definition; its view (``changed``, ``warnings``) and 201 (created) or 200."""
    check_key(key, kind)
    stored = {"trait": trait_body, "segment": segment_body, "moment": moment_body}[kind](body)
    return checked_write(lambda: _save(kairos, kind, key, stored))


def _save(kairos: Kairos, kind: str, key: str, stored: dict[str, Any]) -> tuple[dict[str, Any], int]:
    revision = kairos.store.admin.definitions_revision()
    old = kairos.store.admin.definition(kind, key)  # read at `revision`: the write fails if it moved
    warnings: list[dict[str, str]] = []
    if kind == "moment":
        warnings = _moment_warnings(kairos, stored["when"])
    if kind == "trait":
        warnings = _trait_warnings(kairos, key)
    if kind == "segment":
        existing = {d.key: d for d in kairos.store.admin.definitions("segment")}
        candidate = Definition("segment", key, (old.version + 1) if old else 1, 0, stored, False, 0, 0)
        compiled = compile_definition(candidate)
        assert isinstance(compiled, SegmentDef)
        for name in sorted(compiled.after):
            if name != key and name not in existing:
                raise ValidationError(
                    f"the rule refers to segment {name!r}, which does not exist", code="unknown_segment", field="rule"
                )
        defs = {k: compile_definition(d) for k, d in existing.items() if k != key}
        segment_order({**{k: v for k, v in defs.items() if isinstance(v, SegmentDef)}, key: compiled})
        warnings = _warnings(kairos, compiled)
    d, changed = kairos.store.admin.put_definition(kind, key, stored, kairos.clock.now(), expect_revision=revision)
    view = definition_view(kairos, d, job_of(kairos, kind, key))
    view["changed"] = changed
    if warnings:
        view["warnings"] = warnings
    return view, 201 if changed and old is None else 200


def remove(kairos: Kairos, kind: str, key: str) -> dict[str, Any]:
    """Delete a definition (its backfill takes it off every profile); a segment others read is refused."""
    check_key(key, kind)
    return checked_write(lambda: _remove(kairos, kind, key))


def _remove(kairos: Kairos, kind: str, key: str) -> dict[str, Any]:
    revision = kairos.store.admin.definitions_revision()
    dependents = []
    if kind == "segment":
        for d in kairos.store.admin.definitions("segment"):
            compiled = compile_definition(d)
            if isinstance(compiled, SegmentDef) and key in compiled.after and d.key != key:
                dependents.append(d.key)
    if dependents:
        raise ValidationError(
            f"segments {', '.join(dependents)} refer to {key!r}: change them first", code="in_use", field="key"
        )
    d = kairos.store.admin.delete_definition(kind, key, kairos.clock.now(), expect_revision=revision)
    return {"key": key, "deleted": True, "version": d.version}


def sync_config(kairos: Kairos) -> list[str]:
    """Store the computed traits and segments ``kairos.toml`` defines (``[traits.KEY]``, ``[segments.KEY]``);
    unchanged ones are left alone. Returns the keys that changed; a bad one is a :class:`ConfigError`."""
    settings = kairos.settings
    changed = []
    wanted = [("trait", k, b) for k, b in settings.traits.items()]
    pending = dict(settings.segments)
    while pending:  # segments that read other segments after those
        ready = [k for k, b in pending.items() if not _reads_pending(b, pending, k)]
        if not ready:
            raise ConfigError("[segments]: the rules refer to each other in a cycle", field="segments")
        for k in sorted(ready):
            wanted.append(("segment", k, pending.pop(k)))
    for kind, key, body in wanted:
        try:
            view, _status = save(kairos, kind, key, body)
        except KairosError as exc:
            field = f"{kind}s.{key}" + (f".{exc.field}" if exc.field and exc.field != "key" else "")
            raise ConfigError(f"kairos.toml [{kind}s.{key}]: {exc.message}", field=field) from exc
        if view["changed"]:
            changed.append(f"{kind}:{key}")
    return changed


def _reads_pending(body: Any, pending: dict[str, Any], key: str) -> bool:
    rule = body.get("rule") if isinstance(body, dict) else None
    if not isinstance(rule, str):
        return False
    others = [k for k in pending if k != key]
    return any(f'"{k}"' in rule or f"'{k}'" in rule for k in others)

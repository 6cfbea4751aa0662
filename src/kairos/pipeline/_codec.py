"""Profiles between the store's rows and the processor's states, through each projection's columns."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from typing import Any

from kairos.identity import profile_id_for
from kairos.pipeline.projection import ProfileState, Projection
from kairos.store import ProfileRow
from kairos.store.schema import Column, Index, Table

__all__ = ["ProfileCodec"]


class ProfileCodec:
    def __init__(self, projections: Sequence[Projection[Any]]) -> None:
        self.projections = list(projections)
        names = [p.name for p in self.projections]
        if len(set(names)) != len(names):
            raise ValueError(f"projection names must be unique: {names}")
        self.slices: list[tuple[Projection[Any], slice]] = []
        start = 0
        for p in self.projections:
            self.slices.append((p, slice(start, start + len(p.columns))))
            start += len(p.columns)
        self.columns: tuple[Column, ...] = tuple(c for p in self.projections for c in p.columns)
        self.indexes: tuple[Index, ...] = tuple(i for p in self.projections for i in p.indexes)
        self.tables: tuple[Table, ...] = tuple(t for p in self.projections for t in p.tables)
        self.by_name = {p.name: p for p in self.projections}
        self.tables_by_name = {t.name: t for t in self.tables}
        self.column_names = {p.name: tuple(c.name for c in p.columns) for p in self.projections}

    def new(self, pk: int) -> ProfileState:
        return ProfileState(pk, profile_id_for(pk), {p.name: p.initial() for p in self.projections}, new=True)

    def state(self, row: ProfileRow, names: Collection[str] | None = None) -> ProfileState:
        """The profile of a full row; with ``names``, only those projections' sections decoded (the others
        are absent: for a reader that needs a few, such as a delivery's consents and traits)."""
        slices = self.slices if names is None else [(p, s) for p, s in self.slices if p.name in names]
        sections = {p.name: p.decode(row.values[s]) for p, s in slices}
        return ProfileState(row.pk, row.id, sections, set(row.identities), row.merged_into)

    def columns_of(self, names: Iterable[str]) -> list[str]:
        """The ``profiles`` columns of the projections ``names``, in the codec's order."""
        wanted = set(names)
        return [c for p in self.projections if p.name in wanted for c in self.column_names[p.name]]

    def partial_state(self, row: ProfileRow, names: Iterable[str]) -> ProfileState:
        """A profile with only the sections ``names`` decoded, from a row read with their columns only
        (:meth:`columns_of`); every other section is its projection's initial state."""
        wanted = set(names)
        sections: dict[str, Any] = {}
        at = 0
        for p in self.projections:
            if p.name in wanted:
                width = len(p.columns)
                sections[p.name] = p.decode(row.values[at : at + width])
                at += width
            else:
                sections[p.name] = p.initial()
        return ProfileState(row.pk, row.id, sections, set(row.identities), row.merged_into)

    def row(self, profile: ProfileState) -> tuple[Any, ...]:
        """Every ``profiles`` column of ``profile``: core columns first, then each projection's."""
        values: list[Any] = [profile.pk, profile.id, profile.merged_into]
        for p in self.projections:
            values += p.encode(profile.sections[p.name])
        return tuple(values)

    def changed(self, profile: ProfileState) -> tuple[tuple[str, ...], tuple[Any, ...]]:
        """The columns of ``profile``'s dirty sections (and ``merged_into``) and their values."""
        columns: list[str] = []
        values: list[Any] = []
        if "merged_into" in profile.dirty:
            columns.append("merged_into")
            values.append(profile.merged_into)
        for p in self.projections:
            if p.name in profile.dirty and p.columns:
                columns += self.column_names[p.name]
                values += p.encode(profile.sections[p.name])
        return tuple(columns), tuple(values)

    def view(self, profile: ProfileState) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for p in self.projections:
            for key, value in p.view(profile.sections[p.name]).items():
                mine = out.get(key)
                if isinstance(mine, dict) and isinstance(value, dict):
                    out[key] = {**mine, **value}
                else:
                    out[key] = value
        return out

    def traits(self, profile: ProfileState) -> dict[str, Any]:
        """Every trait value of ``profile``, from every projection that contributes traits (of a partly decoded
        profile, :meth:`state` with ``names``, those of its sections)."""
        out: dict[str, Any] = {}
        sections = profile.sections
        for p in self.projections:
            if p.name in sections:
                out.update(p.traits(sections[p.name]))
        return out

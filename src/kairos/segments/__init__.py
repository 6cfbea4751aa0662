"""Segments: rules over profiles kept current by the processor (:mod:`kairos.segments.membership`), their
definitions' upkeep (:mod:`kairos.segments.admin`), and micro-segment discovery in the profiles' traits
(:mod:`kairos.segments.discover`)."""

from __future__ import annotations

__all__: list[str] = []

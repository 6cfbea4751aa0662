"""Segments: groups of profiles. :mod:`kairos.segments.discover` finds micro-segments in the profiles' traits."""

from __future__ import annotations

__all__: list[str] = []

"""HTTP API: collect (Segment-compatible), profiles, and operations endpoints."""

from __future__ import annotations

from kairos.api.app import create_app

__all__ = ["create_app"]

"""Moments: named patterns (an event, a sequence, an absence, a segment entered or left, a trait crossing a
threshold) that the processor detects as they happen, on time, and announces through the outbox."""

from __future__ import annotations

from kairos.moments.projection import MOMENT_STATS, Moments, MomentState

__all__ = ["MOMENT_STATS", "MomentState", "Moments"]

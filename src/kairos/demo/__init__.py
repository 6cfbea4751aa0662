"""Demo data: Jane Doe's five-channel story and a few thousand background customers, all deterministic.

``kairos demo`` feeds :func:`demo_events` through the same collect path as real traffic, so the demo shows
identity resolution stitching web, app, store, call-centre and CRM events into one profile.
"""

from __future__ import annotations

from kairos.demo._story import SHARED_ANONYMOUS_ID, SOURCES, STORY_USER_ID, demo_events

__all__ = ["SHARED_ANONYMOUS_ID", "SOURCES", "STORY_USER_ID", "demo_events"]

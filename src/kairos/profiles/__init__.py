"""Profiles: the first projections (counters, traits with provenance, RFM scores, consents, timeline).

:func:`default_projections` is the ordered list the processor runs: later projections see what earlier ones
made of each event (``ctx.profile``), so derived kinds (segments, moments) go after the ones they read.
"""

from __future__ import annotations

from typing import Any

from kairos.config import Settings
from kairos.pipeline.projection import Projection
from kairos.profiles.consents import Consents
from kairos.profiles.counters import Counters, Counts
from kairos.profiles.rfm import Rfm, RfmState
from kairos.profiles.timeline import TIMELINE, Timeline, record
from kairos.profiles.traits import TraitRules, Traits, TraitValue

__all__ = [
    "TIMELINE",
    "Consents",
    "Counters",
    "Counts",
    "Rfm",
    "RfmState",
    "Timeline",
    "TraitRules",
    "TraitValue",
    "Traits",
    "default_projections",
    "record",
]


def default_projections(settings: Settings) -> list[Projection[Any]]:
    rfm: list[Projection[Any]] = [Rfm(settings.rfm)] if settings.rfm.enabled else []
    return [Counters(), Traits(settings.profiles), *rfm, Consents(), Timeline()]

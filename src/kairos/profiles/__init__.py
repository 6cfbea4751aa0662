"""Profiles: the first projections (counters, traits with provenance, RFM scores, consents, timeline).

The last-known context (:class:`kairos.context.LastContext`) runs right after the counters.

:func:`default_projections` is the ordered list the processor runs: later projections see what earlier ones
made of each event (``ctx.profile``), so derived kinds (segments, moments) go after the ones they read.
"""

from __future__ import annotations

from typing import Any

from kairos.config import Settings
from kairos.context import LastContext
from kairos.definitions import Catalog
from kairos.pipeline.projection import Projection
from kairos.profiles.computed import ComputedTraits
from kairos.profiles.consents import Consents
from kairos.profiles.counters import Counters, Counts
from kairos.profiles.rfm import Rfm, RfmState
from kairos.profiles.timeline import TIMELINE, Timeline, record
from kairos.profiles.traits import TraitRules, Traits, TraitValue

__all__ = [
    "TIMELINE",
    "ComputedTraits",
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


def default_projections(settings: Settings, catalog: Catalog | None = None) -> list[Projection[Any]]:
    """The projections of a running Kairos, in order; ``catalog``: the computed traits and segments."""
    from kairos.consent import ConsentPolicy
    from kairos.decide.attribution import RewardAttribution
    from kairos.moments import Moments
    from kairos.segments.membership import Segments

    catalog = catalog if catalog is not None else Catalog()
    rfm: list[Projection[Any]] = [Rfm(settings.rfm)] if settings.rfm.enabled else []
    sources: list[Projection[Any]] = [
        Counters(),
        LastContext(settings.context),
        Traits(settings.profiles),
        ComputedTraits(catalog),
        *rfm,
        Consents(ConsentPolicy(settings.consent)),
    ]
    return [
        *sources,
        Segments(catalog, sources),
        Moments(catalog, sources, settings.context),
        RewardAttribution(settings.decide),
        Timeline(),
    ]

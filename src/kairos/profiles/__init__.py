"""Profiles: the processor that turns the log into profiles, and the trait precedence rules."""

from __future__ import annotations

from kairos.profiles.processor import Processor
from kairos.profiles.traits import TraitRules, set_consent

__all__ = ["Processor", "TraitRules", "set_consent"]

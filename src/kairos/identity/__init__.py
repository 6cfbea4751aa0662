"""Identity resolution: extracting and normalizing identifiers, and deciding which profile they belong to."""

from __future__ import annotations

from kairos.identity.normalize import Identifiers, normalize
from kairos.identity.resolver import Graph, Resolution, Resolver, profile_id_for

__all__ = ["Graph", "Identifiers", "Resolution", "Resolver", "normalize", "profile_id_for"]

"""Identity resolution: extracting and normalizing identifiers, and stitching them into profiles."""

from __future__ import annotations

from kairos.identity.normalize import Identifiers, normalize
from kairos.identity.resolver import Resolver, Workspace, profile_id_for

__all__ = ["Identifiers", "Resolver", "Workspace", "normalize", "profile_id_for"]

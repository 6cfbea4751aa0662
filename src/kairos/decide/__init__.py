"""Decide: the offer catalogue, the decision path, the learning policy, rewards and the reports that measure
them (``docs/decisions-api.md``)."""

from __future__ import annotations

__all__: list[str] = []

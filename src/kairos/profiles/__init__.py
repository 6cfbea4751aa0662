"""Profiles: the processor that turns the log into profiles, the trait precedence rules, and the workers
that run the processor beside the API (its own process, a thread, or none)."""

from __future__ import annotations

from kairos.profiles.processor import Processor
from kairos.profiles.traits import TraitRules, set_consent
from kairos.profiles.worker import ProcessWorker, ThreadWorker, Worker, create_worker

__all__ = ["ProcessWorker", "Processor", "ThreadWorker", "TraitRules", "Worker", "create_worker", "set_consent"]

"""The privacy tests' populated world: Jane (three sources, a merge, timers, moments, decisions, deliveries)
and Bob (see ``_world``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.privacy._world import World


@pytest.fixture
def world(store_settings: dict[str, Any], tmp_path: Path) -> Iterator[World]:
    w = World(store_settings)
    w.populate(tmp_path)
    yield w
    w.close()

"""Examples in docstrings are run: a module whose example no longer holds fails here."""

from __future__ import annotations

import doctest
import importlib
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src"
MODULES = sorted(
    ".".join(path.relative_to(SRC).with_suffix("").parts)
    for path in (SRC / "kairos").rglob("*.py")
    if ">>>" in path.read_text()
)


def test_modules_with_examples_are_found() -> None:
    assert "kairos.pipeline.projection" in MODULES and "kairos.profiles.traits" in MODULES


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0, result

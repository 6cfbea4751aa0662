"""The examples of docs/learning.md run, and the page names every registered policy."""

from __future__ import annotations

from pathlib import Path

import pytest

from kairos.decide.policy import POLICIES
from tests.test_docs_segments import blocks

DOC = (Path(__file__).resolve().parent.parent.parent / "docs" / "learning.md").read_text()


@pytest.mark.parametrize("code", blocks("python", DOC))
def test_learning_examples_run(code: str) -> None:
    exec(compile(code, "docs/learning.md", "exec"), {})


def test_every_policy_is_documented() -> None:
    assert blocks("python", DOC)
    for name in POLICIES:
        assert f"`{name}`" in DOC, name

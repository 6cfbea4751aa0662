"""docs/reports.md is checked like code: its example runs and it names every field the reports return."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from kairos.decide.evaluation import decisions_report, offer_stats
from kairos.decide.experience import INPUTS, experience_report
from tests.test_docs_segments import blocks

DOC = (Path(__file__).resolve().parent.parent / "docs" / "reports.md").read_text()


@pytest.mark.parametrize("code", blocks("python", DOC))
def test_the_examples_run(code: str) -> None:
    exec(compile(code, "docs/reports.md", "exec"), {})


def keys(value: Any) -> set[str]:
    if isinstance(value, dict):
        return set(value) | {k for v in value.values() for k in keys(v)}
    if isinstance(value, list):
        return {k for v in value for k in keys(v)}
    return set()


def test_every_field_of_the_reports_is_documented() -> None:
    found = keys(decisions_report([], None)) | keys(offer_stats([], "a"))
    found |= keys(experience_report([], 0, 86_400_000)) - set(INPUTS)  # input names are listed in the module
    found -= {"policy", "control", "not_personalized", "baseline"}  # group and target names, not fields
    missing = sorted(k for k in found if f"`{k}`" not in DOC and f'"{k}"' not in DOC)
    assert not missing, f"docs/reports.md does not name {missing}"

"""The examples of docs/moments.md are valid moment bodies and conditions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kairos.definitions import moment_body
from kairos.rules import Scope, compile_rule
from tests.test_docs_segments import blocks

DOC = (Path(__file__).resolve().parent.parent / "docs" / "moments.md").read_text()


@pytest.mark.parametrize("body", blocks("json", DOC))
def test_moment_examples_validate(body: str) -> None:
    moment_body(json.loads(body))


@pytest.mark.parametrize("rule", blocks("cel", DOC))
def test_condition_examples_compile(rule: str) -> None:
    compile_rule(rule.strip(), Scope.MOMENT)

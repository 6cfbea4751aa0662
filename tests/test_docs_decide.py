"""The examples of docs/decide.md are valid offers, eligibility rules, decide requests and rewards."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from kairos.decide.engine import decide_request
from kairos.decide.offers import offer_body
from kairos.rules import Scope, compile_rule

DOC = (Path(__file__).resolve().parent.parent / "docs" / "decide.md").read_text()


def tagged(tag: str) -> list[str]:
    return re.findall(rf"```json {tag}\n(.*?)```", DOC, re.S)


@pytest.mark.parametrize("body", tagged("offer"))
def test_offer_examples_validate(body: str) -> None:
    offer_body(json.loads(body))


@pytest.mark.parametrize("rule", re.findall(r"```cel\n(.*?)```", DOC, re.S))
def test_eligibility_examples_compile(rule: str) -> None:
    compile_rule(rule.strip(), Scope.OFFER)


@pytest.mark.parametrize("body", tagged("decide"))
def test_decide_examples_validate(body: str) -> None:
    decide_request(json.loads(body))


def test_every_example_kind_is_there() -> None:
    assert tagged("offer") and tagged("decide") and tagged("reward")
    for body in tagged("reward"):
        assert set(json.loads(body)) == {"decision_id", "offer_id", "reward"}

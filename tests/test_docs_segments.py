"""The examples of docs/segments.md and docs/configuration.md are valid: bodies validate, rules compile,
the configuration example is stored by a starting Kairos."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest

from kairos.definitions import trait_body
from kairos.rules import Scope, compile_rule
from kairos.runtime import Kairos
from tests.conftest import make_settings

ROOT = Path(__file__).resolve().parent.parent
DOC = (ROOT / "docs" / "segments.md").read_text()


def blocks(language: str, text: str = DOC) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", text, re.S)


@pytest.mark.parametrize("body", blocks("json"))
def test_trait_examples_validate(body: str) -> None:
    trait_body(json.loads(body))


@pytest.mark.parametrize("rule", blocks("cel"))
def test_rule_examples_compile(rule: str) -> None:
    compile_rule(rule.strip(), Scope.SEGMENT)


def test_the_configuration_example_is_stored(store_settings: dict[str, Any]) -> None:
    text = (ROOT / "docs" / "configuration.md").read_text()
    example = next(b for b in blocks("toml", text) if "[traits." in b)
    config = tomllib.loads(example)
    kairos = Kairos(make_settings(store_settings, traits=config["traits"], segments=config["segments"]))
    try:
        keys = {(d.kind, d.key) for d in kairos.store.admin.definitions()}
        assert keys == {("trait", k) for k in config["traits"]} | {("segment", k) for k in config["segments"]}
    finally:
        kairos.close()

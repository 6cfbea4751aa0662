"""Docs are checked like code: settings, CLI commands and examples must match what the code does."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import typer.main
from typer.core import TyperGroup

from kairos.cli import app
from kairos.config import Settings, load_settings

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
CONFIG_DOC = (ROOT / "docs" / "configuration.md").read_text()


def all_settings() -> list[str]:
    out = []
    for section, field in Settings.model_fields.items():
        model = field.annotation
        assert model is not None
        if not hasattr(model, "model_fields"):  # [traits.KEY] and [segments.KEY]: definitions, not settings
            assert f"[{section}." in CONFIG_DOC, f"[{section}.KEY] is not documented"
            continue
        for name, sub in model.model_fields.items():
            assert sub.description, f"{section}.{name} has no help text"
            out.append(f"KAIROS__{section.upper()}__{name.upper()}")
    return out


@pytest.mark.parametrize("variable", all_settings())
def test_every_setting_is_documented(variable: str) -> None:
    assert f"`{variable}`" in CONFIG_DOC


def commands() -> list[str]:
    root = typer.main.get_command(app)
    assert isinstance(root, TyperGroup)
    out = []
    for name, cmd in root.commands.items():
        if isinstance(cmd, TyperGroup):
            out += [f"kairos {name} {sub}" for sub in cmd.commands]
        else:
            out.append(f"kairos {name}")
    return out


@pytest.mark.parametrize("command", commands())
def test_every_cli_command_is_in_the_readme(command: str) -> None:
    words = command.split()
    pattern = r"\s+".join(re.escape(w) for w in words)
    # `kairos sources list` / `disable NAME` style rows count for the sub-commands they name.
    assert re.search(pattern, README) or (len(words) == 3 and f"`kairos {words[1]} " in README and words[2] in README)


def test_readme_opens_with_the_two_commands_and_ci_runs_the_same() -> None:
    first_block = README.split("```sh", 1)[1].split("```", 1)[0]
    assert "make run" in first_block and "make test" in first_block
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in ci and "KAIROS_TEST_REQUIRE_BACKENDS=1" in ci


def toml_blocks(text: str) -> list[str]:
    return re.findall(r"```toml\n(.*?)```", text, re.S)


@pytest.mark.parametrize("path", ["kairos.toml", "docs/configuration.md"])
def test_toml_examples_load(path: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = (ROOT / path).read_text()
    blocks = [text] if path.endswith(".toml") else toml_blocks(text)
    assert blocks
    for block in blocks:
        config = tmp_path / "kairos.toml"
        config.write_text(block)
        monkeypatch.setenv("KAIROS_CONFIG", str(config))
        settings = load_settings()
        assert settings.identity.types["user_id"].limit == 1
    monkeypatch.setenv("KAIROS_CONFIG", str(ROOT / "kairos.toml"))
    assert {"loyalty_card", "crm_id"} <= set(load_settings().identity.types)


def test_environment_beats_toml_beats_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "k.toml"
    config.write_text('[server]\nport = 9001\nhost = "0.0.0.0"\n')
    monkeypatch.setenv("KAIROS_CONFIG", str(config))
    monkeypatch.setenv("KAIROS__SERVER__PORT", "9002")
    settings = load_settings()
    assert (settings.server.host, settings.server.port, settings.store.url) == ("0.0.0.0", 9002, "sqlite:///kairos.db")

"""``kairos traits|segments`` and definitions in ``kairos.toml``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from kairos.cli import app
from kairos.errors import ConfigError
from kairos.runtime import Kairos
from tests.conftest import make_settings, point_cli_at

runner = CliRunner()


def run_json(*args: str) -> Any:
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_define_backfill_and_delete_from_the_cli(
    tmp_path: Path, store_settings: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    point_cli_at(store_settings, monkeypatch, tmp_path / "kairos.toml", "")
    orders = tmp_path / "orders.jsonl"
    lines = [
        {"type": "track", "userId": f"u{i % 4}", "event": "Order Completed", "properties": {"n": i}} for i in range(10)
    ]
    orders.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    assert runner.invoke(app, ["sources", "add", "shop"]).exit_code == 0
    assert runner.invoke(app, ["import", str(orders), "--source", "shop"]).exit_code == 0
    assert runner.invoke(app, ["process", "--no-follow"]).exit_code == 0

    body = json.dumps({"aggregate": "count", "event": "Order Completed"})
    trait = run_json("traits", "put", "orders", body, "--wait", "run")
    assert trait["backfill"] == {**trait["backfill"], "status": "done", "done": 4, "total": 4}
    shown = runner.invoke(app, ["segments", "put", "loyal", '{"rule": "traits.orders >= 3"}', "--wait", "run"])
    assert shown.exit_code == 0, shown.output
    assert "backfill" in shown.stdout  # a Rich table for people
    segment = run_json("segments", "show", "loyal")
    assert segment["size"] == 2  # u0 and u1 have 3 orders, u2 and u3 have 2
    assert [s["key"] for s in run_json("segments", "list")] == ["loyal"]
    table = runner.invoke(app, ["traits", "list"])
    assert table.exit_code == 0 and "orders" in table.stdout

    bad = runner.invoke(app, ["segments", "put", "bad", '{"rule": "traits.orders >"}', "--json"])
    assert bad.exit_code == 2 and json.loads(bad.stdout)["error"]["code"] == "invalid_rule"
    assert runner.invoke(app, ["segments", "put", "bad", "{nope", "--json"]).exit_code == 2
    assert runner.invoke(app, ["segments", "put", "x", "{}", "--wait", "later"]).exit_code == 2
    assert run_json("segments", "delete", "loyal")["deleted"] is True
    assert runner.invoke(app, ["segments", "show", "loyal"]).exit_code == 2


def test_definitions_in_kairos_toml(tmp_path: Path, store_settings: dict[str, Any]) -> None:
    traits = {"spent": {"aggregate": "sum", "event": "Order Completed", "property": "total", "window": "90d"}}
    segments = {
        "big_fan": {"rule": '"big" in segments && traits.spent < 10000.0'},  # reads a segment defined below
        "big": {"rule": "traits.spent >= 100.0", "description": "Spent 100 or more in 90 days"},
    }
    kairos = Kairos(make_settings(store_settings, traits=traits, segments=segments))
    try:
        stored = {(d.kind, d.key): d for d in kairos.store.admin.definitions()}
        assert set(stored) == {("trait", "spent"), ("segment", "big"), ("segment", "big_fan")}
        assert stored[("segment", "big")].body["description"] == "Spent 100 or more in 90 days"
    finally:
        kairos.close()
    again = Kairos(make_settings(store_settings, traits=traits, segments=segments))  # unchanged: no new version
    try:
        assert {d.version for d in again.store.admin.definitions()} == {1}
    finally:
        again.close()
    with pytest.raises(ConfigError) as bad:
        Kairos(make_settings(store_settings, segments={"oops": {"rule": "traits.spent >"}}))
    assert bad.value.field == "segments.oops.rule"


def test_names_and_messages_are_printed_as_text_never_as_markup(
    tmp_path: Path, store_settings: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rich reads ``[...]`` as markup: stored names dropped their brackets, and ``[/x]`` failed every listing."""
    from kairos.cli._common import console

    point_cli_at(store_settings, monkeypatch, tmp_path / "kairos.toml", "")
    monkeypatch.setattr(console, "width", 300)  # whole cells, on one line
    hostile = "[/x] Boom [bold]b[/bold] ends\\"  # a trailing backslash: Rich's escape() doubled it
    offer = json.dumps({"name": hostile, "attributes": {"note": "[/]"}})
    assert runner.invoke(app, ["offers", "put", "markup", offer]).exit_code == 0
    segment = json.dumps({"rule": "true", "description": hostile})
    assert runner.invoke(app, ["segments", "put", "marked", segment, "--wait", "run"]).exit_code == 0
    trait = json.dumps({"aggregate": "count", "event": "X", "description": hostile})
    assert runner.invoke(app, ["traits", "put", "marked", trait, "--wait", "run"]).exit_code == 0
    moment = json.dumps({"when": {"event": "X"}, "description": hostile})
    assert runner.invoke(app, ["moments", "put", "marked", moment, "--wait", "run"]).exit_code == 0
    for args in (["offers", "list"], ["offers", "show", "markup"], ["segments", "show", "marked"],
                 ["traits", "show", "marked"], ["moments", "list"], ["moments", "show", "marked"]):  # fmt: skip
        shown = runner.invoke(app, args)
        assert shown.exit_code == 0, (args, shown.output)
        if args[1] != "list" or args[0] == "offers":
            assert hostile in shown.stdout, (args, shown.stdout)
    # An API key's name, and its revocation date in red, not as literal markup.
    assert runner.invoke(app, ["keys", "add", "[ops] team", "--scope", "read"]).exit_code == 0
    keys = runner.invoke(app, ["keys", "list"])
    assert keys.exit_code == 0 and "[ops] team" in keys.stdout and "\\[ops]" not in keys.stdout, keys.stdout
    # A user's argument in an error message: kept whole (a trailing backslash too), and no MarkupError.
    for name in ("[/x]", "[bold]hi", "ends\\"):
        result = runner.invoke(app, ["sources", "disable", name])
        assert result.exit_code == 2, result.output
        assert repr(name) in result.output, result.output  # the message quotes it with repr()

"""Export: every section holds what Kairos has about Jane (and nothing of Bob's), over HTTP and the CLI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from kairos.cli import app as cli
from kairos.privacy.export import FORMAT
from kairos.store.schema import Table
from tests.conftest import point_cli_at
from tests.privacy._world import BOB_IDS, BOB_TRAITS, JANE_IDS, JANE_TRAITS, World

JANE = f"user_id:{JANE_IDS['user_id']}"


def exported(world: World, ref: str = JANE) -> dict[str, Any]:
    r = world.client.post("/v1/privacy/export", json={"profile": ref}, headers=world.keys["privacy"])
    assert r.status_code == 200, r.text
    out: dict[str, Any] = r.json()
    return out


def test_each_section_holds_what_is_known_about_her(world: World) -> None:
    doc = exported(world)
    profile = world.client.get(f"/v1/profiles/{JANE}", headers=world.keys["read"]).json()
    assert doc["format"] == FORMAT and doc["exported_at"].endswith("Z")
    assert doc["profile"] == profile
    assert doc["merged_ids"] == profile["merged_ids"] and len(doc["merged_ids"]) == 1
    assert {(i["type"], i["value"]) for i in doc["identities"]} == {
        ("anonymous_id", JANE_IDS["anonymous_id"]),
        ("user_id", JANE_IDS["user_id"]),
        ("email", JANE_IDS["email"].lower()),
        ("crm_id", JANE_IDS["crm_id"]),
        ("phone", "+33612987654"),
    }
    assert all(isinstance(i["seq"], int) for i in doc["identities"])
    # Her six events from three sources, oldest first, as stored; none of Bob's.
    events = doc["events"]
    assert [e["source"] for e in events] == ["web", "web", "app", "app", "crm", "web"]
    assert [e["seq"] for e in events] == sorted(e["seq"] for e in events)
    assert events[2]["event"]["traits"]["favourite_colour"] == JANE_TRAITS["favourite_colour"]
    assert events[-1]["event"]["properties"] == {"sku": "sku-jane-only-81"}
    assert BOB_IDS["user_id"] not in json.dumps(doc) and BOB_TRAITS["nickname"] not in json.dumps(doc)
    # Her decision, with what the policy saw, the offer shown and its reward.
    (decision,) = doc["decisions"]
    assert decision["decision_id"] == world.decisions[0] and decision["channel"] == "web"
    assert [i["offer_id"] for i in decision["items"]] == ["upgrade"]
    assert decision["rewards"] == [
        {"offer_id": "upgrade", "reward": 1.0, "at": decision["rewards"][0]["at"], "source": "api"}
    ]
    assert decision["features"]["stated"]["favourite_colour=vermilion-jq7"] == 1.0
    # Deliveries of her segment entry to the destination; her moment; her pending timer among the records.
    assert {d["destination"] for d in doc["deliveries"]} == {"crm_hook"}
    assert "segment_entered" in {d["type"] for d in doc["deliveries"]}
    assert all(d["profile_id"] in (profile["id"], *profile["merged_ids"]) for d in doc["deliveries"])
    assert [m["key"] for m in doc["moments"]] == ["pricing_viewed"]
    assert [t["key"] for t in doc["records"]["timers"]] and doc["records"]["timers"][0]["projection"] == "moments"
    # The data-use ledger: her decision, the deliveries about her; the export itself shows in the next one.
    uses = {(u["use"], u["ref"]) for u in doc["data_uses"]}
    assert ("decision", world.decisions[0]) in uses
    assert {"delivery"} <= {u["use"] for u in doc["data_uses"]}
    assert doc["export_id"].startswith("ex_") and ("export", doc["export_id"]) not in uses
    again = exported(world)
    (recorded,) = [u for u in again["data_uses"] if u["use"] == "export"]
    assert (recorded["ref"], recorded["purpose"], recorded["recipient"]) == (doc["export_id"], "access", "self")
    json.dumps(doc, allow_nan=False)  # JSON-safe as it is


def test_records_hold_every_table_a_projection_keeps_per_profile(world: World) -> None:
    """The consent ledger (or any table a projection owns) appears without the export naming it."""
    doc = exported(world)
    owned: list[Table] = [t for p in world.kairos.projections for t in p.tables if t.profile_column]
    expected = {t.name for t in owned} - {"timeline"}  # the timeline is in events and moments
    assert expected <= set(doc["records"])


def test_the_cli_writes_the_same_document(
    world: World, store_settings: dict[str, Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    point_cli_at(store_settings, monkeypatch, tmp_path / "kairos.toml", "")
    out = tmp_path / "jane.json"
    result = CliRunner().invoke(cli, ["privacy", "export", f"email:{JANE_IDS['email']}", "--output", str(out)])
    assert result.exit_code == 0, result.output
    doc = json.loads(out.read_text())
    api = exported(world)
    varying = {"exported_at", "export_id", "data_uses"}  # each export is a new use, with an id of its own
    assert {k: v for k, v in doc.items() if k not in varying} == {k: v for k, v in api.items() if k not in varying}
    result = CliRunner().invoke(cli, ["privacy", "export", "user_id:nobody-here"])
    assert result.exit_code == 2 and "nobody-here" not in result.output
    # A file that cannot be written: a clear error before anything is exported (an export joins the ledger).
    uses = len(exported(world)["data_uses"])
    for bad in (tmp_path / "no" / "such" / "dir.json", tmp_path):
        result = CliRunner().invoke(cli, ["privacy", "export", f"email:{JANE_IDS['email']}", "--output", str(bad)])
        assert result.exit_code == 2, result.output
        assert json.loads(result.stdout)["error"]["code"] == "bad_output", result.output
    assert len(exported(world)["data_uses"]) == uses + 1  # the one export made just now, no failed one
    # A person who is not found leaves an existing file as it was.
    result = CliRunner().invoke(cli, ["privacy", "export", "user_id:nobody-here", "--output", str(out)])
    assert result.exit_code == 2 and json.loads(out.read_text()) == doc
    # Nor does an export that fails once begun (the person erased meanwhile, the store down): no temporary left.
    from kairos.cli import privacy as command
    from kairos.errors import NotFoundError

    def gone(*args: Any) -> Any:
        raise NotFoundError("no such profile", field="ref")

    monkeypatch.setattr(command, "export", gone)
    result = CliRunner().invoke(cli, ["privacy", "export", f"email:{JANE_IDS['email']}", "--output", str(out)])
    assert result.exit_code == 2 and json.loads(out.read_text()) == doc
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []

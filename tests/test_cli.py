"""The ``kairos`` command line, in-process, against the store the settings select."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from kairos.cli import app
from kairos.runtime import Kairos
from tests.conftest import point_cli_at

runner = CliRunner()


@pytest.fixture
def env(tmp_path: Path, store_settings: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    toml = (
        '[identity.types.loyalty_card]\npaths = ["traits.loyalty_card", "context.traits.loyalty_card"]\nlimit = 1\n'
        '[identity.types.crm_id]\npaths = ["traits.crm_id"]\nlimit = 1\npriority = 90\n'
    )
    point_cli_at(store_settings, monkeypatch, tmp_path / "kairos.toml", toml)
    yield tmp_path


def run(*args: str) -> Any:
    result = runner.invoke(app, list(args))
    return result


def run_json(*args: str) -> Any:
    result = run(*args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_sources_and_keys(env: Path) -> None:
    created = run_json("sources", "add", "web")
    assert created["name"] == "web" and len(created["write_key"]) >= 24
    assert run("sources", "add", "web").exit_code == 2  # duplicate name: a clear error, not a traceback
    dup = run("sources", "add", "web", "--json")
    assert json.loads(dup.stdout)["error"]["code"] == "already_exists"
    assert run("sources", "add", "bad name!").exit_code == 2
    assert run_json("sources", "disable", "web")["enabled"] is False
    assert [s["enabled"] for s in run_json("sources", "list")] == [False]
    assert run("sources", "disable", "nope").exit_code == 2
    key = run_json("keys", "add", "dash", "--scope", "read")
    assert key["scopes"] == ["read"] and key["key"].startswith("kk_")
    assert run("keys", "add", "x", "--scope", "root").exit_code == 2
    assert run("keys", "add", "x").exit_code == 2  # a scope is required
    assert [k["name"] for k in run_json("keys", "list")] == ["dash"]
    listed = run("keys", "list")
    assert key["key"] not in listed.stdout  # secrets are never shown again


def test_import_jsonl_is_validated_and_safe_to_rerun(env: Path) -> None:
    path = env / "events.jsonl"
    lines = [
        {"type": "identify", "userId": "u1", "traits": {"email": "a@x.io"}},
        {"type": "track", "userId": "u1", "event": "Paid", "messageId": "m-1"},
        {"type": "track", "userId": "u1"},
        "not json",
        {"batch": [{"type": "page", "anonymousId": "a9"}]},
    ]
    path.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n")
    first = run("import", str(path), "--json")
    assert first.exit_code == 1  # some rows were rejected
    summary = json.loads(first.stdout)
    assert (summary["read"], summary["accepted"], summary["rejected"]) == (5, 3, 2)
    assert {(e["line"], e["code"]) for e in summary["errors"]} == {(3, "missing_field"), (4, "invalid_json")}
    again = json.loads(run("import", str(path), "--json").stdout)
    assert (again["accepted"], again["already_imported"]) == (0, 3)
    kairos = Kairos()
    try:
        pid = kairos.resolve("email:a@x.io")
        assert pid is not None
        profile = kairos.profile(pid)
        assert profile is not None and profile.sections["counters"].event_count == 2
        assert kairos.store.log.count() == 3
    finally:
        kairos.close()


def test_import_jsonl_line_that_is_not_utf8_is_reported_and_the_rest_imported(env: Path) -> None:
    path = env / "events.jsonl"
    good = [json.dumps({"type": "identify", "userId": f"u{i}"}).encode() for i in range(4)]
    path.write_bytes(b"\n".join([*good[:2], b'{"type": "identify", "userId": "ren\xe9"}', *good[2:]]) + b"\n")
    result = run("import", str(path), "--json")
    assert result.exit_code == 1, result.output
    summary = json.loads(result.stdout)
    assert (summary["read"], summary["accepted"], summary["rejected"]) == (5, 4, 1)
    assert summary["errors"] == [
        {"line": 3, "code": "invalid_encoding", "field": None, "message": "line 3: not UTF-8 text"}
    ]
    kairos = Kairos()
    try:
        assert all(kairos.resolve(f"user_id:u{i}") for i in range(4))
    finally:
        kairos.close()


def test_import_csv_unterminated_quote_is_reported_with_its_row(env: Path) -> None:
    path = env / "people.csv"
    rows = ["a@x.io,Ann", 'b@x.io,"Bob', *(f"{c}@x.io,{c}" for c in "cdefg")]
    path.write_text("email,first\n" + "\n".join(rows) + "\n")
    result = run("import", str(path), "--map", "email=identity:email", "--map", "first=trait:first_name")
    assert result.exit_code == 1
    out = " ".join(result.stdout.split())  # the console wraps long lines
    assert "2 read, 1 accepted, 0 already imported, 1 rejected" in out
    assert "unterminated_quote: row 3 (line 3): a quoted field is never closed, so lines 3 to 8" in out


def test_import_csv_with_mapping(env: Path) -> None:
    path = env / "people.csv"
    path.write_text(
        "\ufeffcustomer_no,email,first,orders,card\nC1,Jane@X.io,Jane,3,LC-1\nC2,bob@x.io,Bob,many,\nC3,,Carl,,LC-3\n",
        encoding="utf-8",
    )
    args = [
        "import",
        str(path),
        "--map",
        "customer_no=identity:crm_id",
        "--map",
        "email=identity:email",
        "--map",
        "first=trait:first_name",
        "--map",
        "orders=trait:orders:int",
        "--map",
        "card=identity:loyalty_card",
        "--id",
        "customer_no",
        "--kind",
        "stated",
        "--json",
    ]
    result = run(*args)
    summary = json.loads(result.stdout)
    assert (summary["accepted"], summary["rejected"]) == (2, 1), summary
    assert "not an integer" in summary["errors"][0]["message"]
    assert json.loads(run(*args).stdout)["accepted"] == 0
    kairos = Kairos()
    try:
        pid = kairos.resolve("loyalty_card:LC-1")
        assert pid is not None and pid == kairos.resolve("email:jane@x.io")
        profile = kairos.profile(pid)
        assert profile is not None
        assert profile.sections["traits"]["orders"].value == 3
        assert profile.sections["traits"]["first_name"].kind == "stated"
    finally:
        kairos.close()


def test_import_errors(env: Path) -> None:
    missing = run("import", str(env / "nope.jsonl"), "--json")
    assert missing.exit_code == 2 and json.loads(missing.stdout)["error"]["code"] == "not_found"
    directory = run("import", str(env), "--json")
    assert directory.exit_code == 2 and "is a directory" in json.loads(directory.stdout)["error"]["message"]
    path = env / "p.csv"
    path.write_text("a,b\n1,2\n")
    bad = run("import", str(path), "--map", "zzz=identity:email", "--json")
    assert bad.exit_code == 2 and json.loads(bad.stdout)["error"]["field"] == "zzz"
    path.write_text("a,b\n1,2\n")
    unknown = run("import", str(path), "--map", "a=identity:email", "--map", "b=identity:nosuchtype", "--json")
    assert unknown.exit_code == 2
    error = json.loads(unknown.stdout)["error"]
    assert (error["code"], error["field"]) == ("invalid_mapping", "b")
    assert "'nosuchtype' is not configured (configured: anonymous_id, crm_id, device_id, email," in error["message"]
    custom = run_json("import", str(path), "--map", "a=identity:crm_id", "--map", "b=identity:loyalty_card")
    assert custom["accepted"] == 1
    kairos = Kairos()
    try:
        assert kairos.resolve("loyalty_card:2") == kairos.resolve("crm_id:1") is not None
        assert kairos.store.log.count() == 1
    finally:
        kairos.close()


def test_demo_and_replay(env: Path) -> None:
    loaded = run_json("demo", "--profiles", "200")
    assert loaded["rejected"] == 0 and loaded["profiles"] > 150
    kairos = Kairos()
    try:
        pid = kairos.resolve("user_id:u-jane")
        assert pid is not None
        rows = kairos.store.state.timeline(pid, 100, None)
        sources = {e.source for e in kairos.store.log.get([r.seq for r in rows]).values()}
        assert sources == {"web", "app", "store", "callcentre", "crm"}
        before = kairos.profile(pid)
    finally:
        kairos.close()
    skipped = run("demo", "--if-empty")
    assert skipped.exit_code == 0 and "nothing loaded" in skipped.stdout
    replayed = run_json("replay")
    assert replayed["profiles"] == loaded["profiles"] and replayed["events"] == loaded["events"]
    kairos = Kairos()
    try:
        assert kairos.profile(pid) == before
    finally:
        kairos.close()


def test_bad_configuration_is_a_clear_error(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAIROS__STORE__URL", "mysql://nope")
    result = run("sources", "list", "--json")
    assert result.exit_code == 2 and json.loads(result.stdout)["error"]["code"] == "invalid_config"
    monkeypatch.setenv("KAIROS__SERVER__PORT", "not-a-port")
    assert run("sources", "list").exit_code == 2


def test_help_and_version() -> None:
    assert run("--version").stdout.strip() == "0.1.0"
    for command in (["serve"], ["replay"], ["demo"], ["import"], ["sources", "add"], ["keys", "add"]):
        assert run(*command, "--help").exit_code == 0


def test_process_applies_what_import_left(env: Path) -> None:
    path = env / "e.jsonl"
    path.write_text('{"type": "identify", "userId": "u1"}\n{"type": "track", "userId": "u1", "event": "E"}\n')
    assert run_json("import", str(path), "--no-process")["accepted"] == 2
    assert run_json("process", "--no-follow")["events"] == 2
    assert run_json("process", "--no-follow")["events"] == 0


def test_the_readme_import_example_runs_as_written(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import re
    import shlex

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    [command] = [b for b in re.findall(r"```sh\n(.*?)```", readme, re.S) if "kairos import" in b]
    args = shlex.split(command.replace("\\\n", " "))
    assert args[0] == ".venv/bin/kairos"
    monkeypatch.chdir(Path(__file__).resolve().parent.parent)  # the example's path is relative to the repo
    monkeypatch.setenv("KAIROS_CONFIG", "kairos.toml")
    summary = run_json(*args[1:])
    assert (summary["read"], summary["accepted"], summary["rejected"]) == (3, 3, 0)
    kairos = Kairos()
    try:
        pk = kairos.resolve("crm_id:C-1001")
        assert pk is not None and pk == kairos.resolve("email:maya.chen@example.com")
        profile = kairos.profile(pk)
        assert profile is not None
        traits = profile.sections["traits"]
        assert traits["lifetime_spend"].value == 812.4 and traits["first_name"].kind == "stated"
    finally:
        kairos.close()


@pytest.mark.parametrize("how", ["--config", "KAIROS_CONFIG"])
def test_a_settings_file_that_is_not_there_is_an_error_not_the_defaults(
    how: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A typo in the file's name ran on the defaults: an empty store created in the current directory."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("KAIROS__STORE__URL", raising=False)
    monkeypatch.setenv("KAIROS_CONFIG", "")  # undone after the test: --config sets it for the whole process
    for named in (tmp_path / "kairos.tom", tmp_path):
        if how == "--config":
            result = runner.invoke(app, ["--config", str(named), "sources", "list", "--json"])
        else:
            monkeypatch.setenv("KAIROS_CONFIG", str(named))
            result = runner.invoke(app, ["sources", "list", "--json"])
        assert result.exit_code == 2, result.output
        error = json.loads(result.stdout)["error"]
        assert error["code"] == "invalid_config" and str(named) in error["message"], error
    assert not list(tmp_path.glob("*.db")), list(tmp_path.iterdir())


def test_the_demo_s_curl_names_the_configured_address(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from kairos.cli._common import console

    monkeypatch.setattr(console, "width", 300)
    monkeypatch.setenv("KAIROS__SERVER__PORT", "18600")
    loaded = runner.invoke(app, ["demo", "--profiles", "10"])
    assert loaded.exit_code == 0, loaded.output
    assert "http://127.0.0.1:18600/v1/profiles/user_id:u-jane" in loaded.stdout, loaded.stdout


def test_an_invalid_setting_is_named_without_echoing_its_value(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """pydantic's message quoted every value given (input_value=...): a misplaced section may hold a password."""
    config = tmp_path / "kairos.toml"
    config.write_text(
        '[bogus]\npassword = "hunter2-s3cret"\n[server]\nport = "hunter2-port"\n'
        '[limits]\nstorage = "valkey://:hunter2@cache:6379"\n'
    )
    monkeypatch.setenv("KAIROS_CONFIG", str(config))
    result = runner.invoke(app, ["sources", "list", "--json"])
    assert result.exit_code == 2, result.output
    error = json.loads(result.stdout)["error"]
    assert error["code"] == "invalid_config" and "hunter2" not in result.output, result.output
    assert "bogus: Extra inputs are not permitted" in error["message"] and "server.port: " in error["message"]
    assert "limits.storage: " in error["message"]

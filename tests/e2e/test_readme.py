"""The README's examples run as written, against a real server (only the host and keys are swapped)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.conftest import Server, kairos_command

pytestmark = pytest.mark.e2e
README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def block(language: str, containing: str) -> str:
    blocks: list[str] = [b for b in re.findall(rf"```{language}\n(.*?)```", README, re.S) if containing in b]
    assert blocks, f"no {language} block with {containing!r} in the README"
    return blocks[0]


def test_python_client_example(server: Server) -> None:
    code = block("python", "from segment.analytics import Client")
    code = code.replace('"WRITE_KEY"', repr(server.write_key)).replace('"http://127.0.0.1:8000"', repr(server.base_url))
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    profile = server.wait_profile("email:ann@example.com", min_events=2)
    assert {"type": "user_id", "value": "u-42"} in profile["identities"]
    assert {"type": "anonymous_id", "value": "a-9"} in profile["identities"]
    assert profile["traits"]["plan"] == "pro"


def test_curl_example(server: Server) -> None:
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    command = block("sh", "curl -u").replace("\\\n", " ")
    command = command.replace("$WRITE_KEY", server.write_key).replace("http://127.0.0.1:8000", server.base_url)
    command = command.replace("u-42", "u-curl")
    run = subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0 and '"success":true' in run.stdout, run.stdout + run.stderr
    assert server.wait_profile("user_id:u-curl")["event_count"] == 1


def test_decide_example(server: Server) -> None:
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    server.cli("offers", "put", "readme_offer", '{"name": "Hello", "content": {"default": {"title": "Hi"}}}')
    command = block("sh", "/v1/decide").replace("\\\n", " ")
    command = command.replace(".venv/bin/kairos", " ".join(kairos_command()))
    command = command.replace("http://127.0.0.1:8000", server.base_url)
    run = subprocess.run(
        ["bash", "-c", command], capture_output=True, text=True, timeout=60, env=server.env, cwd=server.workdir
    )
    assert run.returncode == 0, run.stderr
    answer = json.loads(run.stdout)
    assert answer["decision_id"] and "readme_offer" in [i["offer_id"] for i in answer["items"]]

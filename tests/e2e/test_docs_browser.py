"""``/docs`` in a real headless Chromium with every other host unreachable: Swagger UI must render the API.

Chromium is Debian's ``chromium`` package (``make test`` installs it where apt-get can). Without it the test
skips with the reason, except under ``KAIROS_TEST_REQUIRE_BACKENDS=1`` (CI), where it fails.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REQUIRE as REQUIRE_BACKENDS
from tests.e2e.conftest import Server, running_server

pytestmark = pytest.mark.e2e

BROWSER_TIMEOUT = 90.0


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, pg_unreachable: str | None) -> Iterator[Server]:
    # The page does not touch the store: one backend is enough.
    with running_server("sqlite", tmp_path_factory.mktemp("docs"), pg_unreachable) as s:
        yield s


def render(url: str, profile: Path) -> str:
    """The DOM of ``url`` after its scripts ran, in a browser that can reach nothing but 127.0.0.1."""
    browser = chromium()
    if browser is None:
        reason = "chromium is not installed (Debian package chromium; make test installs it)"
        if REQUIRE_BACKENDS:
            pytest.fail(reason)
        pytest.skip(reason)
    done = subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            f"--user-data-dir={profile}",
            # Every host name fails to resolve, so a page that needs a CDN renders nothing.
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
            "--virtual-time-budget=10000",
            "--dump-dom",
            url,
        ],
        capture_output=True,
        timeout=BROWSER_TIMEOUT,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-2000:]
    return done.stdout.decode()


def test_docs_render_without_internet_under_a_strict_csp(server: Server, tmp_path: Path) -> None:
    page = server.get("/docs")
    assert page.status_code == 200
    assert "://" not in page.text  # no other origin is named, so nothing is fetched from one
    csp = page.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "://" not in csp and "*" not in csp
    dom = render(f"{server.base_url}/docs", tmp_path / "chromium")
    # Swagger UI drew one block per operation (it adds "opblock-post" etc. beside "opblock").
    paths = set(re.findall(r'class="opblock-summary-path" data-path="([^"]+)"', dom))
    assert {"/v1/track", "/v1/batch", "/v1/profiles/{ref}/events", "/healthz"} <= paths, dom[-3000:]
    documented = server.get("/openapi.json").json()["paths"].values()
    assert len(re.findall(r'class="opblock opblock-(?:get|post)', dom)) == sum(
        method in item for item in documented for method in ("get", "post")
    )

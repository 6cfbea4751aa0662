"""The preference centre in a real headless Chromium (Playwright driving Debian's ``/usr/bin/chromium``) against
a real ``kairos serve`` with a real webhook receiver.

A person known from three sources (web, the shop's till, a partner's CRM) opens their link; sees their data
with its sources; switches a consent off and the next decision and the next delivery change; states a
preference and it becomes a ``stated`` trait; downloads their data; deletes it. Expired and tampered links
are refused; the consent switch works with the keyboard alone. Screenshots at phone and desktop widths are
kept in ``test-artifacts/preference-centre/``.

Chromium is Debian's ``chromium`` package (``make test`` installs it). Without it the tests skip with the
reason, except under ``KAIROS_TEST_REQUIRE_BACKENDS=1`` (CI), where they fail. Playwright's own browsers are
never downloaded: the system's chromium is launched by path.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest

from kairos.privacy.links import make_token
from tests.conftest import REQUIRE as REQUIRE_BACKENDS
from tests.e2e.conftest import BACKENDS, Server, running_server
from tests.receivers import Receiver, receiver

pytestmark = pytest.mark.e2e

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "preference-centre"
SECRET = "e2e-privacy-secret-" + "x" * 20
HOOK_SECRET = "hook-secret-0123456789"
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 900}
WAIT = 15.0


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        reason = "chromium is not installed at /usr/bin/chromium (Debian package chromium; make test installs it)"
        if REQUIRE_BACKENDS:
            pytest.fail(reason)
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"],
        )
        yield b
        b.close()


class Shop:
    """The business's side: its server, keys, sources and the receiver of its e-mail tool."""

    def __init__(self, server: Server, hook: Receiver) -> None:
        self.server = server
        self.hook = hook
        self.keys = {
            name: server.cli("keys", "add", f"e2e-{name}", "--scope", scope)["key"]
            for name, scope in (("admin", "admin"), ("decide", "decide"), ("privacy", "privacy"))
        }
        self.write_keys = {"web": server.write_key}
        for name, kind in (("pos", "observed"), ("partner_crm", "third_party")):
            self.write_keys[name] = server.cli("sources", "add", name, "--kind", kind)["write_key"]

    def http(self, key: str) -> httpx2.Client:
        return self.server.client(headers={"Authorization": f"Bearer {self.keys[key]}"})

    def send(self, source: str, event: dict[str, Any]) -> None:
        with self.server.client(auth=(self.write_keys[source], "")) as c:
            r = c.post("/v1/batch", json={"batch": [event]})
            assert r.status_code == 200, r.text

    def link(self, profile: str, ttl: str = "1h") -> str:
        with self.http("privacy") as c:
            r = c.post("/v1/privacy/links", json={"profile": profile, "ttl": ttl})
        assert r.status_code == 201, r.text
        url: str = r.json()["url"]
        return url

    def decide(self, profile: str) -> list[str]:
        with self.http("decide") as c:
            r = c.post("/v1/decide", json={"profile": profile, "channel": "email"})
        assert r.status_code == 200, r.text
        return [i["offer_id"] for i in r.json()["items"]]

    def profile(self, ref: str) -> dict[str, Any]:
        r = self.server.get_profile(ref)
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        return body

    def deliveries(self, status: str) -> list[dict[str, Any]]:
        with self.http("admin") as c:
            r = c.get("/v1/destinations/email_tool/deliveries", params={"status": status})
        assert r.status_code == 200, r.text
        items: list[dict[str, Any]] = r.json()["items"]
        return items


def eventually(check: Any, what: str, timeout: float = WAIT) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout} s")
        time.sleep(0.1)


@pytest.fixture(scope="module", params=BACKENDS)
def shop(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, pg_unreachable: str | None
) -> Iterator[Shop]:
    backend: str = request.param
    settings = {
        "KAIROS__PRIVACY__SECRET": SECRET,
        "KAIROS__DELIVERY__POLL_INTERVAL_MS": "50",
        "KAIROS__DECIDE__CONTROL_SHARE": "0",
        "KAIROS__DECIDE__LEARNER_MODE": "off",
    }
    with (
        receiver(HOOK_SECRET) as hook,
        running_server(backend, tmp_path_factory.mktemp(f"centre-{backend}"), pg_unreachable, settings) as server,
    ):
        s = Shop(server, hook)
        with s.http("admin") as c:
            destination = {
                "url": hook.url,
                "secret": HOOK_SECRET,
                "subscribe": {"events": "event == 'Viewed Product'"},
                "purpose": "marketing_email",
            }
            assert c.put("/v1/destinations/email_tool", json=destination).status_code == 201
            offer = {"name": "Spring shoes -20%", "channels": ["email"], "purpose": "marketing_email"}
            assert c.put("/v1/offers/spring_shoes", json=offer).status_code == 201
        yield s


def known_from_three_sources(shop: Shop, user: str) -> str:
    """A person the web site, the till and a partner's CRM told Kairos about; their profile reference."""
    consent = {"consent": {"categoryPreferences": {"marketing_email": True}}}
    shop.send(
        "web", {"type": "identify", "userId": user, "traits": {"email": f"{user}@example.com"}, "context": consent}
    )
    shop.send("pos", {"type": "identify", "userId": user, "traits": {"favourite_store": "Lyon Part-Dieu"}})
    shop.send("partner_crm", {"type": "identify", "userId": user, "traits": {"household_size": 3}})
    ref = f"user_id:{user}"
    shop.server.wait_profile(ref, min_events=3)
    return ref


def shoot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for label, size in (("phone", PHONE), ("desktop", DESKTOP)):
        page.set_viewport_size(size)
        path = ARTIFACTS / f"{name}-{label}.png"
        page.screenshot(path=str(path), full_page=True)
        print(f"screenshot: {path}")


def tab_to(page: Any, element_id: str, limit: int = 80) -> None:
    """Press Tab until the element with ``element_id`` has the focus (keyboard only, as a person would)."""
    for _ in range(limit):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement && document.activeElement.id") == element_id:
            return
    pytest.fail(f"Tab never reached #{element_id}")


def test_a_person_sees_changes_downloads_and_deletes_their_data(
    shop: Shop, browser: Any, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    backend = request.node.callspec.params["shop"]
    ref = known_from_three_sources(shop, f"jane-{backend}")
    assert shop.decide(ref) == ["spring_shoes"]
    shop.send("web", {"type": "track", "userId": f"jane-{backend}", "event": "Viewed Product"})
    eventually(lambda: len(shop.deliveries("delivered")) == 1, "the first delivery")

    context = browser.new_context(viewport=DESKTOP, accept_downloads=True)
    page = context.new_page()
    console_errors: list[str] = []
    page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
    response = page.goto(shop.link(ref))
    assert response is not None and response.status == 200
    assert response.headers["content-security-policy"].startswith("default-src 'none'")

    # What Kairos holds, by kind, with each detail's source.
    held = page.locator("section[aria-labelledby=held]")
    assert "favourite store" in held.inner_text() and "pos" in held.inner_text()
    crm_row = page.locator("#kind-third_party + p + table tr", has_text="household size")
    assert "partner_crm" in crm_row.inner_text()
    web_row = page.locator("#kind-observed + p + table tr", has_text="email")
    assert "web" in web_row.inner_text()
    assert f"jane-{backend}@example.com" not in held.inner_text()  # identities are masked on screen
    assert "email_tool" in page.locator("section[aria-labelledby=shared]").inner_text()
    offers = page.locator("section[aria-labelledby=offers]")
    assert "Spring shoes -20%" in offers.inner_text()
    offers.get_by_text("Why you saw this").click()
    assert "When and where you were: on email" in offers.inner_text()
    uses = page.locator("section[aria-labelledby=uses]").inner_text()
    assert "Sent to another system" in uses and "email_tool" in uses and "Choosing what to show you" in uses
    shoot(page, f"centre-{backend}")
    page.set_viewport_size(DESKTOP)

    # Keyboard only: Tab to the e-mail switch, Space turns it off, Tab to its form's button, Enter saves.
    switch = page.locator("#consent-marketing_email")
    assert switch.is_checked()
    page.locator("h1").click()  # a start point for Tab that is not a control
    tab_to(page, "consent-marketing_email")
    outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline not in ("", "none"), "the focused switch shows no focus outline"
    page.keyboard.press("Space")
    assert not switch.is_checked()
    while page.evaluate("document.activeElement.tagName") != "BUTTON":
        page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Save my choices"
    page.keyboard.press("Enter")
    page.wait_for_url("**done=consents*")
    assert page.locator("#notice").inner_text() == "Your choices are saved."
    assert not page.locator("#consent-marketing_email").is_checked()
    assert "Off: your choice" in page.locator("#consent-marketing_email-state").inner_text()
    shoot(page, f"saved-{backend}")
    page.set_viewport_size(DESKTOP)

    # The next decision and the next delivery respect it.
    eventually(lambda: shop.decide(ref) == [], "a decision without the e-mail offer")
    shop.send("web", {"type": "track", "userId": f"jane-{backend}", "event": "Viewed Product"})
    eventually(lambda: len(shop.deliveries("suppressed")) == 1, "the second delivery suppressed")
    assert len(shop.deliveries("delivered")) == 1 and len(shop.hook.got) == 1

    # A stated preference becomes a stated trait.
    page.get_by_role("radio", name="Text message").check()
    page.get_by_role("button", name="Save my preferences").click()
    page.wait_for_url("**done=preferences*")
    assert page.get_by_role("radio", name="Text message").is_checked()
    profile = shop.profile(ref)
    assert profile["traits"]["preferred_channel"] == "sms"
    assert profile["trait_meta"]["preferred_channel"]["kind"] == "stated"
    assert "sms" in page.locator("#kind-stated + p + table").inner_text()

    # Download everything.
    with page.expect_download() as info:
        page.get_by_role("button", name="Download my data").click()
    saved = tmp_path / "my-data.json"
    info.value.save_as(saved)
    assert f"jane-{backend}@example.com" in saved.read_text()
    json.loads(saved.read_text())

    assert console_errors == [], console_errors  # nothing broke the CSP or failed to load

    # Delete everything, after a confirmation.
    page.get_by_role("link", name="Delete my data").click()
    assert page.locator("h1").inner_text() == "Delete all your data?"
    shoot(page, f"confirm-delete-{backend}")
    page.get_by_role("button", name="Yes, delete all my data").click()
    page.wait_for_url("**done=erasure*")
    heading = page.locator("h1").inner_text()  # under way, or already done if the processor was that quick
    if heading == "Your data and your choices":
        assert "under way" in page.locator("#notice").inner_text()
    else:
        assert heading == "Your data has been deleted"
    # Once the processor has carried the erasure out, the link opens nothing.
    eventually(lambda: shop.server.get_profile(ref).status_code == 404, "the erasure")
    done = page.reload()
    assert done is not None and done.status == 410
    assert page.locator("h1").inner_text() == "Your data has been deleted"
    assert f"jane-{backend}" not in page.content()
    shoot(page, f"deleted-{backend}")
    gone = page.goto(page.url.split("?", 1)[0])
    assert gone is not None and gone.status == 410
    assert page.locator("h1").inner_text() == "There is no data behind this link"
    # Nothing broke the CSP or failed to load, but for the refused pages' own 410s.
    assert all("status of 410" in e for e in console_errors), console_errors
    context.close()


def test_expired_and_tampered_links_are_refused(shop: Shop, browser: Any, request: pytest.FixtureRequest) -> None:
    backend = request.node.callspec.params["shop"]
    ref = known_from_three_sources(shop, f"sam-{backend}")
    url = shop.link(ref, ttl="5m")
    page = browser.new_page(viewport=PHONE)
    tampered = url[:-6] + ("A" if url[-6] != "A" else "B") + url[-5:]
    response = page.goto(tampered)
    assert response is not None and response.status == 403
    assert page.locator("h1").inner_text() == "This link does not work"
    assert "sam" not in page.content() and "Lyon" not in page.content()
    profile_id = shop.profile(ref)["id"]
    expired = make_token(SECRET.encode(), profile_id, int(time.time() * 1000) - 1000)
    response = page.goto(url.rsplit("/", 1)[0] + "/" + expired)
    assert response is not None and response.status == 410
    assert page.locator("h1").inner_text() == "This link has expired"
    shoot(page, f"expired-{backend}")
    genuine = page.goto(url)
    assert genuine is not None and genuine.status == 200
    page.close()

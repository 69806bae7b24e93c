"""The playground page in a real headless browser (Debian's chromium driven by Playwright): enter a key,
upload a face, start a preview session, watch frames arrive, end it. A screenshot is saved to
test-artifacts/playground.png."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from matplotlib import cbook


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
pytestmark = pytest.mark.timeout(600)


@pytest.fixture
def browser():
    if CHROMIUM is None:
        if os.environ.get("AVATAR_REQUIRE_BROWSER") == "1":
            pytest.fail("chromium required (AVATAR_REQUIRE_BROWSER=1) but not installed")
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        yield b
        b.close()


def test_playground_starts_a_session_and_shows_the_avatar(media_api, browser, tmp_path):
    api = media_api
    tenant = api.tenant("growth")
    photo = tmp_path / "grace.jpg"
    photo.write_bytes(cbook.get_sample_data("grace_hopper.jpg").read())

    page = browser.new_page(viewport={"width": 1280, "height": 820})

    def wait(js: str, timeout_ms: int) -> None:
        try:
            page.wait_for_function(js, timeout=timeout_ms)
        except Exception as exc:
            raise AssertionError(f"{js} never held; page log:\n{page.inner_text('#log')}") from exc

    page.goto(f"{api.base_url}/playground")
    page.fill("#apiKey", tenant.api_key)
    page.dispatch_event("#apiKey", "change")
    page.set_input_files("#faceFile", str(photo))
    page.click("#upload")
    wait("document.getElementById('avatar').value.startsWith('avat_')", 60_000)
    page.click("#start")
    wait("document.getElementById('video').naturalWidth > 0", 120_000)
    assert page.evaluate("document.getElementById('video').naturalWidth") == 512
    wait("document.getElementById('log').textContent.includes('connection.established')",
                           30_000)
    page.wait_for_timeout(1500)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "playground.png"))

    sid = api.http.get("/v1/sessions", params={"status": "active"}, headers=tenant.headers).json()["sessions"][0]
    assert sid["room"] == {"platform": "preview"} and sid["status"] == "started"
    page.click("#end")
    wait("document.getElementById('log').textContent.includes('ended: user_requested')",
                           30_000)
    got = api.http.get(f"/v1/sessions/{sid['session_id']}", headers=tenant.headers).json()["session"]
    assert got["status"] == "ended" and got["end_reason"] == "user_requested"

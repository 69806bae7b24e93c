"""The playground page in a real headless browser (Debian's chromium driven by Playwright): enter a key,
upload a face, start a session, watch frames arrive, end it — a preview session (MJPEG), and a proxy
session whose LiveKit room the page joins over WebRTC (a real LiveKit server). Screenshots are saved to
test-artifacts/playground.png and test-artifacts/playground-livekit.png."""
from __future__ import annotations

import os
import shutil
import wave
from pathlib import Path

import pytest
from matplotlib import cbook

from media.renderer.speech import synth_speech
from tests.test_livekit_rooms import livekit_deployment


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
            "--disable-component-update", "--disable-sync", "--autoplay-policy=no-user-gesture-required"])
        yield b
        b.close()


def open_playground(browser, api, tenant, tmp_path):
    """The page with the tenant's key entered and a freshly uploaded face selected; returns (page, wait)."""
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
    return page, wait


def test_playground_starts_a_session_and_shows_the_avatar(media_api, browser, tmp_path):
    api = media_api
    tenant = api.tenant("growth")
    page, wait = open_playground(browser, api, tenant, tmp_path)
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

    # The LiveKit-room mode on a deployment without a LiveKit server: the bundled client loads (served by
    # the API, no key), the API's clear error shows in the page, no session starts.
    if not api.settings.livekit_configured:
        page.select_option("#mode", "livekit")
        page.click("#start")
        wait("document.getElementById('log').textContent.includes('room platform proxy is not available')", 30_000)
        assert page.evaluate("typeof LiveKitViewer.Viewer") == "function"
        active = api.http.get("/v1/sessions", params={"status": "active"}, headers=tenant.headers).json()
        assert active["sessions"] == []
        assert not page.is_disabled("#start")


@pytest.fixture(scope="module")
def livekit_api(ray_cluster, livekit_server, tmp_path_factory):
    """The API with real workers on a deployment that has a LiveKit server (proxy rooms on it). The room
    waits for the caller as long as by default: the browser joins after the session has started, and on a
    loaded machine its join (signalling + ICE) can take longer than the short grace of the room tests."""
    with livekit_deployment(ray_cluster, tmp_path_factory.mktemp("api-play-lk"), "api-play-lk", livekit_server, room_empty_grace_s=30.0) \
            as app:
        yield app


def test_playground_joins_a_livekit_room_and_plays_the_avatar(livekit_api, browser, tmp_path):
    """A proxy session from the page: the page joins the room as the caller with the returned token, the
    avatar's camera frames arrive over WebRTC and are decoded and presented, speech sent from the page as
    a byte stream is played (lk.playback_finished comes back), the page's interrupt cuts the next one
    short, and ending the session leaves the room."""
    api = livekit_api
    tenant = api.tenant("growth")
    page, wait = open_playground(browser, api, tenant, tmp_path)
    page.select_option("#mode", "livekit")
    page.select_option("#aspect", "4:3")
    page.click("#start")
    wait("document.getElementById('log').textContent.includes('video from agenthuman-avatar-agent')", 120_000)
    # Frames of the avatar decoded by the browser's WebRTC stack and presented by the <video> element.
    wait("document.getElementById('lkVideo').videoWidth > 0 && state.frames >= 50", 120_000)
    assert page.evaluate("[$('lkVideo').videoWidth, $('lkVideo').videoHeight]") == [640, 480]
    first = page.evaluate("state.viewer.videoStats()")
    wait(f"state.frames >= {page.evaluate('state.frames') + 25}", 60_000)
    later = page.evaluate("state.viewer.videoStats()")
    assert later["framesDecoded"] > first["framesDecoded"] > 0, (first, later)
    assert (later["width"], later["height"]) == (640, 480)
    # Its microphone track is subscribed too.
    wait("document.getElementById('log').textContent.includes('audio from agenthuman-avatar-agent')", 30_000)

    sid = api.http.get("/v1/sessions", params={"status": "active"}, headers=tenant.headers).json()["sessions"][0]
    assert sid["room"]["platform"] == "proxy" and sid["status"] == "started"

    # Speech from the page into the room (a PCM byte stream to the avatar), played to the end.
    speech = synth_speech(2.0, 16000, seed=3).audio
    clip = tmp_path / "hello.wav"
    with wave.open(str(clip), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(speech.tobytes())
    page.set_input_files("#wavFile", str(clip))
    page.click("#sendWav")
    wait("document.getElementById('log').textContent.includes('\"type\":\"playback_finished\"')", 60_000)
    assert '"interrupted":false' in page.inner_text("#log")
    # A longer clip, interrupted from the page (the lk.clear_buffer RPC): playback ends interrupted.
    clip.unlink()
    with wave.open(str(clip), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(synth_speech(8.0, 16000, seed=4).audio.tobytes())
    page.set_input_files("#wavFile", str(clip))
    page.click("#sendWav")
    wait("(document.getElementById('log').textContent.match(/playback_started/g) || []).length >= 2", 60_000)
    page.click("#interrupt")
    wait("document.getElementById('log').textContent.includes('\"interrupted\":true')", 30_000)

    ARTIFACTS.mkdir(exist_ok=True)
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=str(ARTIFACTS / "playground-livekit.png"), full_page=True)
    page.click("#end")
    wait("document.getElementById('log').textContent.includes('ended: user_requested')", 30_000)
    wait("document.getElementById('log').textContent.includes('left the room')", 30_000)
    got = api.http.get(f"/v1/sessions/{sid['session_id']}", headers=tenant.headers).json()["session"]
    assert got["status"] == "ended" and got["end_reason"] == "user_requested"

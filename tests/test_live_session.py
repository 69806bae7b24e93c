"""End to end over HTTP with a real Ray cluster: upload a face, start a `preview` session, stream speech
through the session WebSocket, read the MJPEG preview and see the mouth move; interrupt; end."""
from __future__ import annotations

import base64
import json
import threading
import time

import cv2
import numpy as np
import pytest
from websockets.sync.client import connect

from media.renderer.speech import synth_speech
from core.rig import inner_lip_gap, inter_ocular_distance
from tests.support.sessions import start_preview_session, wait_session_over
from tests.support.waiting import wait_for

pytestmark = pytest.mark.timeout(600)


def read_mjpeg(url: str, seconds: float, frames: list, stop: threading.Event) -> None:
    """Collect decoded frames from a multipart/x-mixed-replace stream for ``seconds``."""
    import httpx

    buf = b""
    deadline = time.monotonic() + seconds
    with httpx.stream("GET", url, timeout=30) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("multipart/x-mixed-replace")
        for chunk in r.iter_bytes():
            buf += chunk
            while True:
                start = buf.find(b"\xff\xd8")
                end = buf.find(b"\xff\xd9", start + 2)
                if start < 0 or end < 0:
                    break
                jpeg, buf = buf[start:end + 2], buf[end + 2:]
                frames.append((time.monotonic(), cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)))
            if time.monotonic() > deadline or stop.is_set():
                return


def mouth_gaps(frames) -> list[float]:
    from pipelines.faces.analyze import analyze_single_face

    gaps = []
    for _, bgr in frames:
        _, landmarks = analyze_single_face(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        gaps.append(inner_lip_gap(landmarks) / inter_ocular_distance(landmarks))
    return gaps


def test_preview_session_speaks_over_websocket_and_mjpeg(media_api):
    api = media_api
    tenant = api.tenant("growth")
    session = start_preview_session(api, tenant, aspect_ratio="1:1")
    sid, token = session["session_id"], session["session_token"]

    # A preview token for an <img> tag; the API key never goes into a URL.
    pt = api.http.post(f"/v1/sessions/{sid}/preview-token", headers=tenant.headers).json()
    assert pt["success"] and "ah_" not in pt["preview_url"]
    bad = api.http.get(f"/v1/sessions/{sid}/preview", params={"token": pt["token"] + "x"})
    assert bad.status_code == 403
    preview_url = api.base_url + pt["preview_url"]

    # Idle first: frames flow without any audio.
    idle: list = []
    read_mjpeg(preview_url, 2.0, idle, threading.Event())
    assert len(idle) >= 5 and idle[0][1].shape[:2] == (512, 512)

    speech = synth_speech(3.0, sample_rate=24000, seed=3)
    ws_url = api.base_url.replace("http://", "ws://") + "/v1/ws"
    frames: list = []
    stop = threading.Event()
    reader = threading.Thread(target=read_mjpeg, args=(preview_url, 12.0, frames, stop))
    with connect(ws_url, open_timeout=30) as ws:
        ws.send(json.dumps({"type": "session.init", "session_id": sid, "session_token": token}))
        assert json.loads(ws.recv(timeout=30)) == {"type": "connection.established", "session_id": sid}
        reader.start()
        wait_for(lambda: frames, 30, 0.05, "the preview reader's first frame")  # it sees the speech from its start
        pcm = speech.audio.astype("<i2").tobytes()
        ws.send(json.dumps({"type": "audio", "audio": base64.b64encode(pcm).decode(), "sample_rate": 24000}))
        queued = json.loads(ws.recv(timeout=30))
        assert queued == {"type": "audio.queued", "audio_samples": len(speech.audio) * 16000 // 24000}
        ws.send(json.dumps({"type": "audio.end"}))
        got = [json.loads(ws.recv(timeout=30)) for _ in range(2)]
        assert got[0] == {"type": "playback.started"}
        assert got[1]["type"] == "playback.finished" and got[1]["interrupted"] is False
        assert abs(got[1]["playback_position"] - 3.0) <= 0.04 + 1e-6
        n = len(frames)  # the last speech frames, still on their way to the reader, arrive before these
        wait_for(lambda: len(frames) >= n + 5 or not reader.is_alive(), 30, 0.05,
                 "five preview frames after playback.finished (or the reader's window over)")
        stop.set()
        reader.join(timeout=30)

        # Interrupt a long utterance: "interrupted", then one finished event with interrupted=true.
        long = synth_speech(8.0, sample_rate=16000, seed=4).audio.astype("<i2").tobytes()
        ws.send(json.dumps({"type": "audio", "audio": base64.b64encode(long).decode(), "sample_rate": 16000}))
        assert json.loads(ws.recv(timeout=30))["type"] == "audio.queued"
        assert json.loads(ws.recv(timeout=30)) == {"type": "playback.started"}
        time.sleep(0.5)  # a user interrupting half a second in, as a real client does
        ws.send(json.dumps({"type": "interrupt"}))
        replies = [json.loads(ws.recv(timeout=30)) for _ in range(2)]
        assert {"type": "interrupted"} in replies
        finished = next(m for m in replies if m["type"] == "playback.finished")
        assert finished["interrupted"] is True and 0.0 < finished["playback_position"] < 8.0

        # Bad messages get an error and keep the socket open.
        ws.send(json.dumps({"type": "audio", "audio": "%%%", "sample_rate": 16000}))
        assert json.loads(ws.recv(timeout=30))["type"] == "error"

        # Ending the session closes the socket with an error message.
        assert api.http.post(f"/v1/sessions/{sid}/end", headers=tenant.headers).status_code == 200
        closing = json.loads(ws.recv(timeout=30))
        assert closing == {"type": "error", "error": "Session ended"}

    gaps = mouth_gaps(frames)
    idle_gaps = mouth_gaps(idle)
    assert max(gaps) - min(gaps) >= 0.08, gaps  # the mouth really moves during speech
    assert max(idle_gaps) - min(idle_gaps) < 0.05, idle_gaps  # and rests when idle

    ended = api.http.get(f"/v1/sessions/{sid}", headers=tenant.headers).json()["session"]
    assert ended["status"] == "ended" and ended["end_reason"] == "user_requested"
    metrics = wait_for(lambda: ended.get("metrics") or api.http.get(
        f"/v1/sessions/{sid}", headers=tenant.headers).json()["session"].get("metrics"), timeout=5, what="metrics")
    assert metrics["frames"] > 0 and metrics["first_frame_ms"] is not None


def test_websocket_requires_session_init_first(media_api):
    ws_url = media_api.base_url.replace("http://", "ws://") + "/v1/ws"
    with connect(ws_url, open_timeout=30) as ws:
        ws.send(json.dumps({"type": "audio", "audio": "", "sample_rate": 16000}))
        assert json.loads(ws.recv(timeout=30)) == {"type": "error", "error": "First message must be session.init"}
    with connect(ws_url, open_timeout=30) as ws:
        ws.send(json.dumps({"type": "session.init", "session_id": "sess_x", "session_token": "nope"}))
        assert json.loads(ws.recv(timeout=30))["type"] == "error"


def test_closing_the_websocket_ends_the_session_when_asked(media_api):
    api = media_api
    tenant = api.tenant("growth")
    ws_url = api.base_url.replace("http://", "ws://") + "/v1/ws"
    kept = start_preview_session(api, tenant)
    with connect(ws_url, open_timeout=30) as ws:  # not asked: closing leaves the session running
        ws.send(json.dumps({"type": "session.init", "session_id": kept["session_id"],
                            "session_token": kept["session_token"]}))
        assert json.loads(ws.recv(timeout=30))["type"] == "connection.established"
    asked = start_preview_session(api, tenant)
    with connect(ws_url, open_timeout=30) as ws:
        ws.send(json.dumps({"type": "session.init", "session_id": asked["session_id"],
                            "session_token": asked["session_token"], "end_session_on_close": True}))
        assert json.loads(ws.recv(timeout=30))["type"] == "connection.established"

    def ended():
        s = api.http.get(f"/v1/sessions/{asked['session_id']}", headers=tenant.headers).json()["session"]
        return s if s["status"] == "ended" else None

    assert wait_for(ended, timeout=30, what="ws_closed")["end_reason"] == "ws_closed"
    still = api.http.get(f"/v1/sessions/{kept['session_id']}", headers=tenant.headers).json()["session"]
    assert still["status"] == "started"
    api.http.post(f"/v1/sessions/{kept['session_id']}/end", headers=tenant.headers)


def test_idle_timeout_ends_a_session_without_speech(special_api):
    api = special_api("api-idle", worker_media="rooms", enable_preview_platform=True, warm_pool_size=0,
                      placement_timeout_s=10.0, worker_start_timeout_s=120.0, idle_timeout_s=2.0)
    tenant = api.tenant("growth")
    session = start_preview_session(api, tenant)
    got = wait_session_over(api, tenant, session["session_id"], timeout=60, what="idle timeout")
    assert got["status"] == "ended" and got["end_reason"] == "idle_timeout"
    assert got["duration"] >= 1.5  # not at once (the worker starts its clock a moment before started_at)


def test_preview_session_on_a_green_background_at_the_asked_size(media_api):
    """The create body's ``background`` and ``video`` reach the worker: the stored avatar's mask keys
    the photo, and the frames have the asked size."""
    api = media_api
    tenant = api.tenant("growth")
    sid = start_preview_session(api, tenant, aspect_ratio="1:1", background="#00ff00",
                                video={"width": 320, "height": 384})["session_id"]
    pt = api.http.post(f"/v1/sessions/{sid}/preview-token", headers=tenant.headers).json()
    frames: list = []
    read_mjpeg(api.base_url + pt["preview_url"], 1.5, frames, threading.Event())
    assert frames and all(f.shape[:2] == (384, 320) for _, f in frames)
    bgr = frames[-1][1].astype(int)
    for y, x in ((8, 8), (8, 311), (150, 8), (150, 311)):  # the flag and the sky of the photo: now green
        assert np.abs(bgr[y - 4 : y + 4, x - 4 : x + 4] - (0, 255, 0)).max() < 40, (y, x, bgr[y, x])
    face = bgr[172:212, 140:180]
    assert np.abs(face - (0, 255, 0)).max(-1).min() > 60  # the face is not keyed out
    assert api.http.post(f"/v1/sessions/{sid}/end", headers=tenant.headers).status_code == 200

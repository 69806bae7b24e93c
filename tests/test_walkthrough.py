"""The README's walk-through, run as written (bash, curl, `avatarctl`) against a real deployment: real
Ray and Serve over HTTP, SQLite, the face pipeline, a rendering `preview` session. Also `avatarctl say`,
the README's WebSocket client, on its own."""
from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from matplotlib import cbook
from scipy.io import wavfile

from media.renderer.speech import synth_speech
from tests.support.waiting import wait_for
from tests.test_live_session import start_preview_session

pytestmark = pytest.mark.timeout(900)

README = Path(__file__).resolve().parents[1] / "README.md"
VENV_BIN = Path(sys.executable).parent
DEFAULT_BASE = "BASE=http://127.0.0.1:8000"


def walkthrough_blocks() -> list[str]:
    """Every ```bash block of the README's walk-through section (up to the next level-2 heading)."""
    text = README.read_text()
    start = text.index("\n## Walk-through with curl")
    end = text.index("\n## ", start + 1)
    return re.findall(r"```bash\n(.*?)```", text[start:end], re.S)


def json_objects(text: str) -> list[dict]:
    """The JSON objects printed one after another (curl prints no newline after a body)."""
    decoder, out, i = json.JSONDecoder(), [], 0
    while (i := text.find("{", i)) >= 0:
        try:
            obj, i = decoder.raw_decode(text, i)
            out.append(obj)
        except json.JSONDecodeError:
            i += 1
    return out


def avatarctl(cwd, *argv) -> subprocess.CompletedProcess:
    return subprocess.run([str(VENV_BIN / "avatarctl"), *argv], cwd=cwd, capture_output=True, text=True,
                          timeout=300)


def test_readme_walkthrough_runs_as_written(media_api, tmp_path):
    from pipelines.faces.seed import seed_public_avatars

    if shutil.which("curl") is None:
        pytest.fail("the README's walk-through needs curl on PATH", pytrace=False)
    api = media_api
    seed_public_avatars(api.settings)  # what `make run` does before it prints the key
    tenant = api.tenant("growth")
    blocks = walkthrough_blocks()
    script = "\n".join(blocks)
    # The one command the test replaces by its own deployment, and the one value it substitutes.
    assert [line for line in script.splitlines() if line.startswith("make ")] == [blocks[0].splitlines()[0]]
    assert blocks[0].startswith("make run") and len(blocks[0].splitlines()) == 1
    assert script.count(DEFAULT_BASE) == 1
    script = "set -euo pipefail\n" + "\n".join(blocks[1:]).replace(DEFAULT_BASE, f"BASE={api.base_url}")

    # The repository folder a user runs it in: the key file `make run` writes, the venv, a portrait.
    (tmp_path / ".data").mkdir()
    (tmp_path / ".data" / "dev_api_key").write_text(tenant.api_key)
    (tmp_path / ".venv").symlink_to(VENV_BIN.parent)
    (tmp_path / "portrait.jpg").write_bytes(cbook.get_sample_data("grace_hopper.jpg").read())
    run = subprocess.run(["bash", "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, f"{run.stdout}\n{run.stderr}"

    printed = json_objects(run.stdout)
    failures = [o for o in printed if o.get("success") is False or set(o) == {"error"} or o.get("type") == "error"]
    # Exactly the two errors the README shows: the envelope, and the bare 401 body of a bad key.
    assert failures == [
        {"success": False, "error": failures[0]["error"]}, {"error": "Invalid API key"}], failures
    assert failures[0]["error"]["code"] == "INVALID_QUERY"
    listing = printed[0]
    assert {a["name"] for a in listing["public_avatars"]} >= {"grace_hopper", "astronaut"}
    created = next(o for o in printed if o.get("message") == "Session created successfully")
    sid = created["session"]["session_id"]
    assert created["session"]["metadata"] == {"conversation": "42"}
    # `avatarctl say` spoke and the speech played to its end.
    finished = [o for o in printed if o.get("type") == "playback.finished"]
    assert len(finished) == 1 and finished[0]["interrupted"] is False and finished[0]["playback_position"] > 1.0
    listed = next(o for o in printed if "sessions" in o)
    assert [s["session_id"] for s in listed["sessions"]] == [sid]  # status=started, before the end
    ended = next(o for o in printed if o.get("message") == "Session ended")["session"]
    assert ended["status"] == "ended" and ended["end_reason"] == "user_requested" and ended["billing"]["minutes"] >= 1
    assert any("usage" in o and "included_minutes" in o["usage"] for o in printed)
    # The upload was made, listed as mine and deleted.
    upload = next(o for o in printed if o.get("message") == "Avatar created")
    assert upload["name"] is None and upload["orientation"] == "3:4"
    assert api.store.avatars.get_avatar(upload["avatar_id"]) is None


def test_avatarctl_say_speaks_a_wav_over_the_websocket(media_api, tmp_path):
    api = media_api
    tenant = api.tenant("growth")
    session = start_preview_session(api, tenant)
    sid, token = session["session_id"], session["session_token"]

    # A stereo 48 kHz WAV: mixed down, sent as 100 ms chunks at its own rate.
    speech = synth_speech(2.0, sample_rate=48000, seed=5).audio.astype(np.int16)
    wavfile.write(tmp_path / "speech.wav", 48000, np.stack([speech, speech], axis=1))
    r = avatarctl(tmp_path, "say", sid, "speech.wav", "--token", token, "--base-url", api.base_url,
                  "--chunk-ms", "100")
    assert r.returncode == 0, r.stderr
    events = [json.loads(line) for line in r.stdout.splitlines()]
    assert events[0] == {"type": "connection.established", "session_id": sid}
    queued = [e["audio_samples"] for e in events if e["type"] == "audio.queued"]
    assert len(queued) == math.ceil(len(speech) / 4800) and queued[0] == 1600  # 100 ms counted at 16 kHz
    assert sum(queued) == pytest.approx(len(speech) / 3, abs=len(queued))
    assert {"type": "playback.started"} in events
    assert events[-1]["type"] == "playback.finished" and events[-1]["interrupted"] is False
    assert abs(events[-1]["playback_position"] - 2.0) <= 0.04 + 1e-6

    # A wrong token: the server's error, exit code 2; a file that is no WAV: a clear error.
    bad = avatarctl(tmp_path, "say", sid, "speech.wav", "--token", "st_wrong", "--base-url", api.base_url)
    assert bad.returncode == 2 and json.loads(bad.stdout.splitlines()[0])["type"] == "error"
    (tmp_path / "notes.txt").write_text("not audio")
    bad = avatarctl(tmp_path, "say", sid, "notes.txt", "--token", token, "--base-url", api.base_url)
    assert bad.returncode != 0 and "notes.txt" in bad.stderr and "Traceback" not in bad.stderr

    # --end: the session ends as the socket closes.
    r = avatarctl(tmp_path, "say", sid, "synth", "--token", token, "--base-url", api.base_url, "--end")
    assert r.returncode == 0, r.stderr

    def ended():
        s = api.http.get(f"/v1/sessions/{sid}", headers=tenant.headers).json()["session"]
        return s if s["status"] == "ended" else None

    assert wait_for(ended, timeout=60, what="the session ended by the closing socket")["end_reason"] == "ws_closed"


def test_make_run_banner_names_the_avatars_and_its_curl_lines_work(media_api, tmp_path):
    from ctl.main import run_banner
    from pipelines.faces.seed import seed_public_avatars

    api = media_api
    tenant = api.tenant("growth")
    ids = seed_public_avatars(api.settings)
    seeded = [(api.store.avatars.get_avatar(a).name, a) for a in ids]
    assert [name for name, _ in seeded] == ["grace_hopper", "astronaut"]
    banner = run_banner(api.settings.model_copy(update={"public_base_url": api.base_url}), tenant.api_key, seeded)
    assert all(f"{name}" in banner and aid in banner for name, aid in seeded)
    assert "cluster_restart" in banner
    commands = "\n".join(line for line in banner.splitlines() if line.startswith("  curl") or line.startswith("    -d"))
    run = subprocess.run(["bash", "-c", "set -euo pipefail\n" + commands], cwd=tmp_path, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    created, usage = json_objects(run.stdout)
    assert created["success"] and created["session"]["avatar_id"] == seeded[0][1], created
    assert created["session"]["room"] == {"platform": "preview"}
    assert usage["usage"]["concurrency"]["current"] == 1
    sid = created["session"]["session_id"]
    assert api.http.post(f"/v1/sessions/{sid}/end", headers=tenant.headers).status_code == 200

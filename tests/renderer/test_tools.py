"""The CLI (MP4 with audio, contact sheet) and the benchmark entry point."""
from __future__ import annotations

import itertools
import json

import av
import cv2
import numpy as np
from scipy.io import wavfile

from media.renderer import cli
from media.renderer.speech import synth_speech


def test_cli_renders_mp4_with_audio_and_contact_sheet(tmp_path, face_models):
    sp = synth_speech(2.0, 16000, seed=1)
    wav = tmp_path / "speech.wav"
    wavfile.write(wav, sp.sample_rate, sp.audio)
    out, sheet = tmp_path / "talk.mp4", tmp_path / "sheet.png"
    rc = cli.main(["render", "--image", "astronaut", "--wav", str(wav), "--out", str(out), "--sheet", str(sheet),
                   "--width", "256", "--height", "256", "--tail", "0.4", "--device", "cpu"])
    assert rc == 0
    with av.open(str(out)) as c:
        v = next(s for s in c.streams if s.type == "video")
        assert any(s.type == "audio" and s.codec_context.name == "aac" for s in c.streams)
        assert (v.codec_context.width, v.codec_context.height) == (256, 256)
        n_video = sum(1 for _ in c.decode(video=0))
    assert n_video == 50 + 10  # 2 s at 25 fps + 0.4 s idle tail
    with av.open(str(out)) as c:
        samples = sum(f.samples for f in c.decode(audio=0))
    assert abs(samples / 48000 - 2.4) < 0.1
    img = cv2.imread(str(sheet))
    assert img is not None and img.shape[0] >= 256 and img.shape[1] >= 6 * 256


def test_cli_contact_sheet_for_both_photos(tmp_path, face_models):
    out = tmp_path / "sheet.png"
    assert cli.main(["sheet", "--image", "grace_hopper", "--image", "astronaut", "--out", str(out),
                     "--width", "256", "--height", "256", "--device", "cpu"]) == 0
    img = cv2.imread(str(out))
    assert img.shape[0] == 2 * (256 + 192)  # per photo: full frames + mouth close-ups
    # closed → open: the mouth close-ups change more and more along the row
    for row in (256, 2 * 256 + 192):
        zoom = img[row : row + 192].astype(float)
        diffs = [np.abs(zoom[:, i * 256 : (i + 1) * 256] - zoom[:, :256]).mean() for i in range(6)]
        assert diffs[0] == 0 and all(b > a for a, b in itertools.pairwise(diffs)) and diffs[5] > 8, diffs


def test_cli_reports_missing_files(capsys):
    assert cli.main(["render", "--image", "/nonexistent.jpg", "--wav", "synth", "--out", "/tmp/x.mp4"]) == 1
    assert "error" in capsys.readouterr().err


def test_bench_prints_json_last(capsys, face_models):
    from bench import render

    assert render.main(["--frames", "5", "--warmup", "1", "--width", "128", "--height", "128", "--sessions", "2"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    data = json.loads(last)
    for key in ("device", "width", "height", "sessions", "fps_per_session", "total_fps", "step_p50_ms", "step_p99_ms"):
        assert key in data
    assert data["sessions"] == 2 and data["device"] == "cpu" and data["total_fps"] > 0
    assert np.isclose(data["total_fps"], 2 * data["fps_per_session"], rtol=0.01)

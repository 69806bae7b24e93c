"""The acceptance criteria of the renderer, measured with the landmark model on every rendered frame.

Speech-like audio (voiced syllables through formant filters, consonant noise, short and long pauses)
is generated here; idle head motion, blinks, breathing and brows are switched off so the mouth is the
only thing that moves. Gap = inner-lip gap / inter-ocular distance (IOD).
"""
from __future__ import annotations

import numpy as np
import pytest

from media.renderer import DisplacementRenderer, MotionOptions, OutputOptions
from media.renderer.speech import synth_speech
from core.rig import NOSE_TIP, eye_centers, inner_lip_gap, inter_ocular_distance

from .conftest import landmarks

FPS = 25
DURATION = 10.0
RATE = 16000
MOUTH_ONLY = MotionOptions(head_motion=False, blinks=False, breathing=False, brows=False, seed=0)


def _gap(L):
    return inner_lip_gap(L) / inter_ocular_distance(L)


def _pearson(a, b):
    return float(np.corrcoef(a, b)[0, 1])


@pytest.fixture(scope="module")
def speech():
    return synth_speech(DURATION, RATE, seed=11)


@pytest.fixture(scope="module", params=["grace_hopper", "astronaut"])
def measured(request, avatars, speech):
    """Render the speech on one photo and measure every frame."""
    from pipelines.faces.analyze import landmarks_in_roi, roi_from_landmarks

    image, rig = avatars[request.param]
    r = DisplacementRenderer("cpu")
    s = r.open_session(image, rig, OutputOptions(width=512, height=512, fps=FPS), motion=MOUTH_ONLY)
    rest_frame = r.render_weights(s, {}).numpy()
    rest_L = landmarks(rest_frame)
    roi = roi_from_landmarks(rest_L)  # a tracker's view: the rest pose ROI for eye/nose stability
    rest_track = landmarks_in_roi(np.ascontiguousarray(rest_frame[..., :3]), roi)[0]
    s.push_audio(speech.audio.tobytes(), RATE)
    s.end_utterance()
    n = int(DURATION * FPS)
    gaps, cmd, detected, track = [], [], 0, []
    for _ in range(n):
        res = r.step()[0]
        fr = res.frame.numpy()
        L = landmarks(fr)
        cmd.append(res.mouth_open)
        if L is None:
            gaps.append(np.nan)
            continue
        detected += 1
        gaps.append(_gap(L))
        Lt = landmarks_in_roi(np.ascontiguousarray(fr[..., :3]), roi)[0]
        er, el = eye_centers(Lt)
        track.append(np.stack([er, el, Lt[NOSE_TIP]]))
    er0, el0 = eye_centers(rest_track)
    return dict(
        name=request.param, renderer=r, session=s, rest_frame=rest_frame, rest_gap=_gap(rest_L),
        iod=inter_ocular_distance(rest_L), gaps=np.array(gaps), cmd=np.array(cmd), detected=detected, n=n,
        track=np.array(track), track0=np.stack([er0, el0, rest_track[NOSE_TIP]]),
    )


def test_face_detected_on_every_frame(measured):
    assert measured["detected"] == measured["n"]


def test_gap_follows_commanded_opening(measured):
    r = _pearson(measured["gaps"], measured["cmd"])
    assert r >= 0.9, r


def test_gap_follows_audio_envelope_and_not_shifted_audio(measured, speech):
    x = speech.audio.astype(np.float64) / 32768
    spf = RATE // FPS
    n = measured["n"]
    env = np.sqrt([np.mean(x[i * spf : (i + 1) * spf] ** 2) for i in range(n)])
    g = measured["gaps"]
    best = max(_pearson(g[max(0, lag) : n + min(0, lag)], env[max(0, -lag) : n - max(0, lag)]) for lag in (-1, 0, 1))
    assert best >= 0.75, best
    shift = FPS  # 1 s
    shifted = max(abs(_pearson(g[shift:], env[:-shift])), abs(_pearson(g[:-shift], env[shift:])))
    assert shifted < 0.3, shifted


def test_real_range_of_motion(measured):
    g = measured["gaps"]
    assert np.percentile(g, 95) - np.percentile(g, 5) >= 0.08


def test_mouth_returns_to_rest_in_every_pause(measured, speech):
    g, rest = measured["gaps"], measured["rest_gap"]
    checked = 0
    for start, end in speech.pauses:
        if end - start < 0.2:
            continue
        # consonant noise may precede the next syllable by up to 0.1 s: judge the silence before it
        f0, f1 = int(np.ceil((start + 0.12) * FPS)), int(np.floor((end - 0.12) * FPS))
        f1 = min(f1, measured["n"] - 1)
        if f1 < f0:
            continue
        dev = np.abs(g[f0 : f1 + 1] - rest)
        assert dev.max() <= 0.03, (start, end, dev)
        checked += 1
    assert checked >= 3


def test_eyes_and_nose_hold_still_while_the_mouth_moves(measured):
    moving = measured["cmd"] > 0.2
    assert moving.sum() > 20
    disp = np.linalg.norm(measured["track"] - measured["track0"], axis=2) / measured["iod"]  # (frames, 3)
    assert np.percentile(disp[moving], 95, axis=0).max() < 0.03, np.percentile(disp[moving], 95, axis=0)
    # and in pixels: the sampling field is zero at the eyes and the nose
    s, r = measured["session"], measured["renderer"]
    L = s.rest_landmarks
    for weights in ({"jaw": 1.0}, {"jaw": 1.0, "spread": 1.0}, {"jaw": 0.7, "round": 1.0, "press": 1.0}):
        fr = r.render_weights(s, weights).numpy().astype(np.int16)
        rest = measured["rest_frame"].astype(np.int16)
        for idx in (33, 133, 159, 145, 263, 362, 386, 374, NOSE_TIP):
            x, y = np.round(L[idx]).astype(int)
            assert np.abs(fr[y - 2 : y + 3, x - 2 : x + 3, :3] - rest[y - 2 : y + 3, x - 2 : x + 3, :3]).max() <= 1


def test_clear_brings_mouth_to_rest_within_one_frame(avatars, speech, measured):
    image, rig = avatars[measured["name"]]
    r = DisplacementRenderer("cpu")
    s = r.open_session(image, rig, OutputOptions(), motion=MOUTH_ONLY)
    s.push_audio(speech.audio, RATE)
    opened = None
    for _ in range(200):
        res = r.step()[0]
        if res.mouth_open > 0.5:
            opened = res.frame.numpy()
            break
    assert opened is not None and _gap(landmarks(opened)) > measured["rest_gap"] + 0.06
    s.clear()
    after = r.step()[0]
    assert after.mouth_open == 0.0
    assert abs(_gap(landmarks(after.frame.numpy())) - measured["rest_gap"]) <= 0.03

"""Steady frames with exact audio slices, utterance events, clear(), underruns."""
from __future__ import annotations

import numpy as np
import pytest

from media.renderer import DisplacementRenderer, MotionOptions, OutputOptions, resample
from media.renderer.speech import synth_speech

SMALL = dict(width=128, height=128)


@pytest.fixture()
def make_session(grace_avatar):
    def make(**opts):
        image, rig = grace_avatar
        r = DisplacementRenderer("cpu")
        s = r.open_session(image, rig, OutputOptions(**{**SMALL, **opts}), motion=MotionOptions(seed=1))
        return r, s

    return make


def _run_utterance(r, s, uid, max_frames):
    frames, events = [], []
    for _ in range(max_frames):
        res = r.step()[0]
        frames.append(res)
        events += [(res.frame_index, e) for e in res.events]
        if any(e.kind == "finished" and e.utterance_id == uid for e in res.events):
            break
    return frames, events


def test_sixty_seconds_exact_frame_count_and_audio(make_session):
    r, s = make_session(fps=25, sample_rate=48000)
    speech = synth_speech(60.0, 16000, seed=2)
    rng = np.random.default_rng(0)
    x, i, uid = speech.audio, 0, None
    while i < x.size:  # chunks of random size, far faster than real time
        n = int(rng.integers(100, 20000))
        uid = s.push_audio(x[i : i + n].tobytes(), 16000)
        i += n
    s.end_utterance()
    frames, events = _run_utterance(r, s, uid, 2000)
    speaking = [f for f in frames if f.speaking]
    assert len(speaking) == len(frames) == 60 * 25  # duration × fps, no drift
    assert all(f.audio.size == 1920 for f in frames)
    assert all(f.frame.shape == (128, 128, 4) for f in frames)
    assert [f.frame_index for f in frames] == list(range(1500))
    assert events[0][0] == 0 and events[0][1].kind == "started"
    last_idx, fin = events[-1]
    assert last_idx == 1499 and fin.kind == "finished" and not fin.interrupted
    assert fin.position == pytest.approx(60.0)
    out = np.concatenate([f.audio for f in speaking])
    assert np.array_equal(out, resample(x, 16000, 48000))  # the slices are exactly the audio resampled
    nxt = r.step()[0]
    assert not nxt.speaking and nxt.utterance_id is None and nxt.audio.size == 1920  # idle goes on


def test_fractional_samples_per_frame_and_pts(make_session):
    r, s = make_session(fps=30, sample_rate=16000)  # 533.33 samples per frame
    x = synth_speech(2.0, 24000, seed=3).audio
    uid = s.push_audio(x, 24000)
    s.end_utterance()
    frames, _ = _run_utterance(r, s, uid, 200)
    assert len(frames) == 60
    assert sum(f.audio.size for f in frames) == 32000
    assert np.array_equal(np.concatenate([f.audio for f in frames]), resample(x, 24000, 16000))
    assert frames[-1].pts == pytest.approx(59 / 30)


def test_slower_than_real_time_never_stops_video(make_session):
    r, s = make_session(fps=25, sample_rate=48000)
    x = synth_speech(3.0, 16000, seed=4).audio
    chunk = 16000 // 25 // 2  # half a frame of audio per tick: arrives at half real time
    frames, i, uid = [], 0, None
    for _ in range(75 * 4):  # bounded: at half real time the utterance finishes after about 150 ticks
        if i < x.size:
            uid = s.push_audio(x[i : i + chunk], 16000)
            i += chunk
            if i >= x.size:
                s.end_utterance()
        res = r.step()[0]
        frames.append(res)
        if any(e.kind == "finished" for e in res.events):
            break
    else:
        pytest.fail(f"no finished event in {len(frames)} frames")
    assert len(frames) > 75 * 1.8  # it took about twice as long, a frame on every tick
    stalled = [f for f in frames if not f.speaking]
    assert stalled and all(f.utterance_id == uid and not f.audio.any() for f in stalled)
    played = np.concatenate([f.audio for f in frames if f.speaking])
    ref = resample(x, 16000, 48000)
    assert np.array_equal(played[: ref.size], ref) and not played[ref.size :].any()


def test_clear_stops_speech_within_one_frame(make_session):
    r, s = make_session()
    x = synth_speech(6.0, 16000, seed=5).audio
    u1 = s.push_audio(x[: x.size // 2], 16000)
    s.end_utterance()
    u2 = s.push_audio(x[x.size // 2 :], 16000)  # queued behind the first
    opened = False
    for _ in range(100):
        res = r.step()[0]
        if res.mouth_open > 0.3 and res.frame_index > 20:
            opened = True
            break
    assert opened
    played_frames = res.frame_index + 1
    events = s.clear()
    assert [(e.utterance_id, e.kind, e.interrupted) for e in events] == [(u1, "finished", True), (u2, "finished", True)]
    assert events[0].position == pytest.approx(played_frames * 1920 / 48000)
    assert events[1].position == 0.0
    nxt = r.step()[0]
    assert nxt.mouth_open == 0.0 and not nxt.speaking and not nxt.audio.any() and nxt.events == ()
    assert not s.speaking and s.buffered_seconds == 0.0
    # a new utterance after the clear plays normally
    u3 = s.push_audio(x[:16000], 16000)
    s.end_utterance()
    res = r.step()[0]
    assert res.speaking and res.utterance_id == u3 and res.events[0].kind == "started"


def test_back_to_back_utterances_start_on_frame_boundaries(make_session):
    r, s = make_session()
    a = synth_speech(1.0, 16000, seed=6).audio[:15000]  # 0.9375 s: last frame padded
    b = synth_speech(1.0, 16000, seed=7).audio
    ua = s.push_audio(a, 16000)
    s.end_utterance()
    ub = s.push_audio(b, 16000)
    s.end_utterance()
    frames = [r.step()[0] for _ in range(60)]
    ev = [(f.frame_index, e.kind, e.utterance_id) for f in frames for e in f.events]
    assert ev == [(0, "started", ua), (23, "finished", ua), (24, "started", ub), (48, "finished", ub)]
    fa = [f for f in frames if f.utterance_id == ua]
    out = np.concatenate([f.audio for f in fa])
    ref = resample(a, 16000, 48000)
    assert np.array_equal(out[: ref.size], ref) and not out[ref.size :].any()
    assert [f.utterance_id for f in frames[49:]] == [None] * 11

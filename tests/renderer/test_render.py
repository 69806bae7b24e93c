"""Batching, stillness outside the head, idle blinks, output formats, framing, devices."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from media.renderer import DisplacementRenderer, MotionOptions, OutputOptions
from media.renderer.colors import i420_to_rgb
from media.renderer.motion import IDX
from media.renderer.speech import synth_speech
from core.rig import CHIN, FACE_OVAL, inter_ocular_distance

from .conftest import landmarks


@pytest.fixture(scope="module")
def speech():
    return synth_speech(3.0, 24000, seed=21)


def _open(r, avatar, opts, seed, sid):
    image, rig = avatar
    return r.open_session(image, rig, opts, motion=MotionOptions(seed=seed), session_id=sid)


def test_batched_sessions_render_the_same_frames_as_alone(avatars, speech):
    g, a = avatars["grace_hopper"], avatars["astronaut"]
    specs = {  # id → (avatar, options, seed, joins at tick, leaves at tick)
        "A": (g, OutputOptions(), 1, 0, 10),
        "B": (a, OutputOptions(), 2, 0, None),
        "C": (g, OutputOptions(), 3, 5, None),  # joins the running batch
        "D": (a, OutputOptions(width=320, height=240, format="i420"), 4, 3, None),  # another group
    }
    ticks = 14
    batch = DisplacementRenderer("cpu")
    got: dict[str, list] = {k: [] for k in specs}
    for t in range(ticks):
        for sid, (av, opts, seed, join, leave) in specs.items():
            if t == join:
                s = _open(batch, av, opts, seed, sid)
                s.push_audio(speech.audio, speech.sample_rate)
            if t == leave:
                batch.close_session(sid)
        for res in batch.step():
            got[res.session_id].append(res.frame.clone())
    assert [s.id for s in batch.sessions] == ["B", "D", "C"]
    for sid, (av, opts, seed, join, leave) in specs.items():
        alone = DisplacementRenderer("cpu")
        s = _open(alone, av, opts, seed, sid)
        s.push_audio(speech.audio, speech.sample_rate)
        n = (leave or ticks) - join
        frames = [alone.step()[0].frame for _ in range(n)]
        assert len(got[sid]) == n
        for i, (x, y) in enumerate(zip(got[sid], frames)):
            assert torch.equal(x, y), (sid, i)
    # the speech moved the mouth in these frames (the comparison is not of idle frames only)
    assert any(r.mouth_open > 0.3 for r in [batch.step()[0] for _ in range(30)])


def test_background_and_shoulders_stay_still(avatars, speech):
    for name, (image, rig) in avatars.items():
        r = DisplacementRenderer("cpu")
        s = r.open_session(image, rig, OutputOptions(), motion=MotionOptions(seed=5, head_amplitude_deg=2.5))
        s.push_audio(speech.audio, speech.sample_rate)
        rest = r.render_weights(s, {}).numpy().astype(np.int16)
        L = s.rest_landmarks.astype(np.float64)
        oval = L[list(FACE_OVAL)]
        (x0, y0), (x1, y1) = oval.min(0), oval.max(0)
        cx, cy, ow, oh = (x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0
        iod = inter_ocular_distance(L)
        ys, xs = np.mgrid[0 : rest.shape[0], 0 : rest.shape[1]]
        down = L[CHIN][1] + 0.6 * iod - cy
        ry = np.where(ys < cy, (ys - cy) / (0.95 * oh), (ys - cy) / down)
        outside = ((xs - cx) / (0.75 * ow)) ** 2 + ry**2 > 1.0  # the head with its hair, and the neck
        assert outside.mean() > 0.4
        worst = 0
        for _ in range(60):
            res = r.step()[0]
            fr = res.frame.numpy().astype(np.int16)
            worst = max(worst, int(np.abs(fr[outside, :3] - rest[outside, :3]).max()))
        assert worst <= 2, (name, worst)
        assert np.abs(fr[~outside, :3] - rest[~outside, :3]).max() > 10  # while the head does move


def test_blinks_during_ten_seconds_of_idle(avatars):
    image, rig = avatars["astronaut"]
    r = DisplacementRenderer("cpu")
    r.open_session(image, rig, OutputOptions(), motion=MotionOptions(seed=9))
    res = [r.step()[0] for _ in range(250)]
    closure = np.array([x.weights[IDX["blink_r"]] for x in res])
    peaks = np.flatnonzero((closure >= 0.8) & (np.r_[0, closure[:-1]] < 0.8))
    assert len(peaks) >= 2, closure.round(2)
    assert not any(x.speaking for x in res) and all(x.mouth_open == 0 for x in res)

    def aperture(fr):
        L = landmarks(fr)
        iod = inter_ocular_distance(L)
        return (np.linalg.norm(L[159] - L[145]) + np.linalg.norm(L[386] - L[374])) / (2 * iod)

    # The mesh model (no eyelid refinement stage) never reports a fully shut eye, but it does see each
    # blink: its lid aperture drops well outside its frame-to-frame noise on every blink peak.
    open_frames = [i for i in range(0, 250, 12) if closure[max(0, i - 3) : i + 4].max() == 0][:12]
    open_ap = np.array([aperture(res[i].frame.numpy()) for i in open_frames])
    ref = float(np.median(open_ap))
    assert np.abs(open_ap - ref).max() < 0.06 * ref
    for p in peaks:
        shut = p + int(np.argmax(closure[p : p + 3]))
        assert aperture(res[shut].frame.numpy()) < 0.85 * ref, (shut, ref)


def test_i420_matches_rgba(grace_avatar, speech):
    r = DisplacementRenderer("cpu")
    a = _open(r, grace_avatar, OutputOptions(width=320, height=240), 7, "rgba")
    b = _open(r, grace_avatar, OutputOptions(width=320, height=240, format="i420"), 7, "i420")
    for s in (a, b):
        s.push_audio(speech.audio, speech.sample_rate)
    for _ in range(12):
        ra, rb = r.step()
    assert ra.frame.shape == (240, 320, 4) and ra.frame.dtype == torch.uint8 and bool((ra.frame[..., 3] == 255).all())
    assert rb.frame.shape == (320 * 240 * 3 // 2,) and rb.frame.dtype == torch.uint8
    rgb = ra.frame.numpy()[..., :3].astype(np.float64)
    y = 0.256788 * rgb[..., 0] + 0.504129 * rgb[..., 1] + 0.097906 * rgb[..., 2] + 16
    assert np.abs(rb.frame.numpy()[: 320 * 240].reshape(240, 320) - y).max() <= 1.01
    back = i420_to_rgb(rb.frame.numpy(), 320, 240).astype(np.int16)
    assert np.abs(back - rgb).mean() < 4


@pytest.mark.parametrize("aspect,size", [("4:3", (640, 480)), ("3:4", (480, 640))])
def test_framing_for_session_aspect(avatars, aspect, size):
    for name, (image, rig) in avatars.items():
        r = DisplacementRenderer("cpu")
        s = r.open_session(image, rig, OutputOptions.for_aspect(aspect), motion=MotionOptions(seed=1))
        fr = r.step()[0].frame.numpy()
        assert fr.shape == (size[1], size[0], 4)
        L = landmarks(fr)
        assert L is not None, (name, aspect)
        oval = L[list(FACE_OVAL)]
        assert (oval >= 0).all() and (oval[:, 0] < size[0]).all() and (oval[:, 1] < size[1]).all()
        assert 0.25 < np.ptp(oval[:, 1]) / size[1] < 0.8  # the face neither tiny nor cropped
        assert np.abs(L - s.rest_landmarks).mean() < 0.03 * inter_ocular_distance(L)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")
def test_cuda_matches_cpu(grace_avatar, speech):
    out = {}
    for dev in ("cpu", "cuda"):
        r = DisplacementRenderer(dev)
        s = _open(r, grace_avatar, OutputOptions(), 3, "x")
        s.push_audio(speech.audio, speech.sample_rate)
        out[dev] = [r.step()[0].frame.cpu().numpy().astype(np.int16) for _ in range(20)]
    for a, b in zip(out["cpu"], out["cuda"]):
        assert np.abs(a - b).max() <= 3 and np.abs(a - b).mean() < 0.05


@pytest.mark.parametrize("fmt", ["i420", "rgba"])
def test_frames_rendered_in_the_moving_window_equal_whole_frame_renders(avatars, speech, monkeypatch, fmt):
    """Only the window where the bases move pixels is rendered each frame; the rest is the rest frame. The
    bytes must be those of rendering every pixel (the moving box forced to the whole frame), while
    speaking, blinking and moving the head."""
    from media.renderer import default

    def frames(whole: bool) -> list[torch.Tensor]:
        if whole:
            monkeypatch.setattr(default, "_moving_box", lambda basis: (0, basis.bases.shape[1], 0, basis.bases.shape[2]))
        r = DisplacementRenderer("cpu")
        for sid, name in (("g", "grace_hopper"), ("a", "astronaut")):
            s = _open(r, avatars[name], OutputOptions(format=fmt), 7, sid)
            s.push_audio(speech.audio, speech.sample_rate)
        window = next(iter(r._groups.values())).window
        H, W = 512, 512
        area = (window[1] - window[0]) * (window[3] - window[2]) / (H * W)
        assert (area == 1.0) if whole else (area < 0.8), window
        got = []
        for _ in range(40):
            got.extend(res.frame.clone() for res in r.step())
        monkeypatch.undo()
        return got

    windowed, whole = frames(False), frames(True)
    assert len(windowed) == len(whole) == 80
    assert all(torch.equal(x, y) for x, y in zip(windowed, whole))
    assert not all(torch.equal(windowed[0], x) for x in windowed[::2])  # the frames moved

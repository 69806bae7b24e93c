"""Exact resampling and per-frame slicing (no models needed)."""
from __future__ import annotations

import numpy as np
import pytest

from media.renderer.audio import (
    StreamingResampler,
    frame_samples,
    pcm16_to_array,
    resample,
)
from media.renderer.speech import synth_speech


@pytest.mark.parametrize("rin,rout", [(16000, 48000), (24000, 48000), (44100, 48000), (48000, 16000), (22050, 24000), (48000, 48000)])
def test_streaming_resampler_equals_offline_for_any_chunking(rin, rout):
    rng = np.random.default_rng(rin + rout)
    x = synth_speech(1.3, rin, seed=1).audio
    ref = resample(x, rin, rout)
    assert ref.size == -(-x.size * rout // rin)
    r = StreamingResampler(rin, rout)
    parts, i = [], 0
    while i < x.size:
        n = int(rng.integers(1, 3000))
        parts.append(r.push(x[i : i + n]))
        i += n
    parts.append(r.flush())
    assert np.array_equal(np.concatenate(parts), ref)
    if rin == rout:
        assert np.array_equal(ref, x)


def test_resampler_quality():
    t = np.arange(16000) / 16000
    x = np.round(10000 * np.sin(2 * np.pi * 440 * t)).astype(np.int16)
    y = resample(x, 16000, 48000).astype(np.float64)
    t2 = np.arange(y.size) / 48000
    ref = 10000 * np.sin(2 * np.pi * 440 * t2)
    err = (y - ref)[500:-500]
    snr = 10 * np.log10(np.mean(ref[500:-500] ** 2) / np.mean(err**2))
    assert snr > 40
    # downsampling removes what the new rate cannot carry
    x = np.round(8000 * np.sin(2 * np.pi * 10000 * np.arange(48000) / 48000)).astype(np.int16)
    assert np.abs(resample(x, 48000, 16000)[200:-200]).max() < 400


def test_frame_samples_never_drift():
    for rate, fps in ((48000, 25), (48000, 30), (16000, 30), (44100, 30), (24000, 25)):
        k = np.arange(100 * fps)
        sizes = np.array([frame_samples(int(i), rate, fps) for i in k])
        assert sizes.sum() == 100 * rate
        assert sizes.max() - sizes.min() <= 1


def test_pcm16_decoding():
    x = np.array([1, -2, 300, -32768, 32767, 5], dtype=np.int16)
    assert np.array_equal(pcm16_to_array(x.astype("<i2").tobytes()), x)
    stereo = np.array([[100, 300], [-100, -300]], dtype=np.int16)
    assert np.array_equal(pcm16_to_array(stereo.tobytes(), num_channels=2), np.array([200, -200], np.int16))
    assert np.array_equal(pcm16_to_array(np.array([0.5, -1.0])), np.array([16384, -32767], np.int16))

"""Speech-like test audio without a TTS: voiced syllables through vowel formant filters, consonant
noise, words and phrases separated by short and long pauses. Used by the tests, the CLI (``--wav
synth``) and the benchmark."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.signal import lfilter

VOWELS = {  # F1, F2, F3 (Hz), adult averages
    "a": (730, 1090, 2440),
    "e": (530, 1840, 2480),
    "i": (270, 2290, 3010),
    "o": (570, 840, 2410),
    "u": (300, 870, 2240),
}


@dataclass
class SynthSpeech:
    audio: np.ndarray  # int16 mono
    sample_rate: int
    syllables: list[tuple[float, float, str]]  # (start s, end s, vowel)
    pauses: list[tuple[float, float]]  # silent stretches between syllables (start s, end s)
    bilabials: Sequence[tuple[float, float, str]] = ()  # lip closures before a syllable (start s, end s, "m"|"b")


def _resonator(x: np.ndarray, f: float, bw: float, sr: int) -> np.ndarray:
    r = np.exp(-np.pi * bw / sr)
    theta = 2 * np.pi * f / sr
    a = [1.0, -2 * r * np.cos(theta), r * r]
    b = [1.0 - r]  # roughly unity peak gain
    return lfilter(b, a, x)


def _voiced(n: int, f0: np.ndarray, sr: int, rng) -> np.ndarray:
    phase = 2 * np.pi * np.cumsum(f0) / sr
    out = np.zeros(n)
    for h in range(1, 40):
        if h * f0.max() >= min(5000, sr / 2 - 200):
            break
        out += np.sin(h * phase) / h
    return out + 0.02 * rng.standard_normal(n)


def synth_speech(duration_s: float = 10.0, sample_rate: int = 16000, seed: int = 0, *, level_db: float = -18.0,
                 long_pause: tuple[float, float] = (0.25, 0.7), bilabials: float = 0.0) -> SynthSpeech:
    """``duration_s`` seconds exactly (samples = duration·rate, rounded) of speech-like audio.

    ``bilabials``: the share of syllables that start with a lip closure, /m/ (a nasal murmur: voicing
    through one low resonance, no higher formants) or /b/ (a weak low voice bar, then a release burst).
    Drawn from a separate random stream, so ``bilabials=0`` gives the same audio as before."""
    rng = np.random.default_rng(seed)
    brng = np.random.default_rng([seed, 1])
    closures: list[tuple[float, float, str]] = []
    sr = sample_rate
    n_total = int(round(duration_s * sr))
    out = np.zeros(n_total)
    syllables: list[tuple[float, float, str]] = []
    t = 0.3 + rng.uniform(0, 0.2)  # leading silence
    f0_base = rng.uniform(110, 190)
    words_left = rng.integers(3, 7)
    while True:
        n_syl = int(rng.integers(1, 4))
        for si in range(n_syl):
            dur = float(rng.uniform(0.12, 0.28))
            if t + dur > duration_s - 0.25:
                break
            vowel = str(rng.choice(list(VOWELS)))
            lips = str(brng.choice(["m", "b"])) if bilabials > 0 and brng.random() < bilabials else ""
            if lips:
                c_dur = float(brng.uniform(0.09, 0.13))
                if t + c_dur + dur > duration_s - 0.25:
                    break
                c0, m = int(t * sr), int(c_dur * sr)
                kc = np.arange(m) / sr
                bar = _resonator(_voiced(m, np.full(m, f0_base), sr, rng), 250, 60, sr)
                bar = _resonator(bar, 250, 60, sr)  # twice: nothing of the higher harmonics is left
                ramp = np.minimum(1.0, np.minimum(kc / 0.01, (c_dur - kc) / 0.01)).clip(0, 1)
                bar *= ramp / (np.sqrt(np.mean(bar**2)) + 1e-9) * (0.3 if lips == "m" else 0.1)
                out[c0 : c0 + m] += bar
                if lips == "b":
                    mb = int(0.01 * sr)
                    out[c0 + m - mb : c0 + m] += rng.standard_normal(mb) * np.hanning(mb) * 0.3
                closures.append((t, t + c_dur, lips))
                t += c_dur
            i0, n = int(t * sr), int(dur * sr)
            k = np.arange(n) / sr
            f0 = f0_base * (1 + 0.08 * np.sin(2 * np.pi * rng.uniform(1, 3) * k + rng.uniform(0, 6))) * rng.uniform(0.9, 1.15)
            src = _voiced(n, f0, sr, rng)
            y = src
            for f, bw in zip(VOWELS[vowel], (80, 110, 160)):
                if f < sr / 2 - 300:
                    y = _resonator(y, f * rng.uniform(0.93, 1.07), bw, sr)
            att, rel = rng.uniform(0.015, 0.03), rng.uniform(0.03, 0.06)
            env = np.minimum(1.0, np.minimum(k / att, (dur - k) / rel)).clip(0, 1)
            y = y * env / (np.sqrt(np.mean(y**2)) + 1e-9) * rng.uniform(0.45, 1.0)
            # consonant onset: fricative noise, plosive burst or nothing
            kind = rng.choice(["fric", "burst", "none", "none"])
            if lips:
                pass  # the closure is the onset
            elif kind == "fric" and i0 > 0.1 * sr:
                m = int(rng.uniform(0.05, 0.1) * sr)
                noise = rng.standard_normal(m)
                noise = lfilter([1, -0.95], [1], noise)  # tilt to the highs
                noise *= np.hanning(m) * 0.3 / (np.sqrt(np.mean(noise**2)) + 1e-9)
                out[i0 - m : i0] += noise
            elif kind == "burst" and i0 > 0.02 * sr:
                m = int(0.012 * sr)
                out[i0 - m : i0] += rng.standard_normal(m) * np.hanning(m) * 0.5
            out[i0 : i0 + n] += y
            syllables.append((t, t + dur, vowel))
            t += dur + (rng.uniform(0.02, 0.09) if si < n_syl - 1 else 0.0)
        words_left -= 1
        if words_left <= 0:
            t += rng.uniform(*long_pause)  # phrase break
            words_left = rng.integers(3, 7)
            f0_base = rng.uniform(110, 190)
        else:
            t += rng.uniform(0.06, 0.16)
        if t > duration_s - 0.45:
            break
    gain = 10 ** (level_db / 20) / (np.sqrt(np.mean(out[np.abs(out) > 1e-3] ** 2)) + 1e-9)
    audio = np.clip(np.round(out * gain * 32767), -32768, 32767).astype(np.int16)
    pauses = []
    prev_end = 0.0
    for s, e, _ in syllables:
        if s - prev_end > 0:
            pauses.append((prev_end, s))
        prev_end = e
    pauses.append((prev_end, duration_s))
    return SynthSpeech(audio, sr, syllables, pauses, closures)

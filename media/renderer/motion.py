"""Per-frame animation controls: the speech-driven mouth and the idle life of the head.

The output of one frame is a :class:`Controls` vector whose entries are the weights of the displacement
bases (see :mod:`media.renderer.bases`). Everything is deterministic given the session's seed and the
audio, so a session renders the same frames alone or in a batch.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .audio import AudioFeatures

# Basis order (the K axis of the bases tensor).
BASIS_NAMES: tuple[str, ...] = (
    "jaw",  # 0..1: lower lip / jaw drop, 1 = MotionOptions.jaw_max_iod
    "spread",  # 0..1: corners outward ("ee")
    "round",  # 0..1: corners inward, lips pushed out ("oo")
    "press",  # 0..1: lips rolled in / pressed (bilabials), inner lip line unchanged
    "close",  # 0..1: the inner lips meet (bilabials on a photo whose mouth is open at rest)
    "jaw_spread",  # = jaw·spread (set by derive_weights): the opening wider and flatter
    "jaw_round",  # = jaw·round: the opening narrower, taller and rounder
    "blink_r",  # 0..1: subject's right upper lid down to the lower lid
    "blink_l",
    "brow",  # 0..1: both brows raised
    "yaw",  # degrees (approximate), + = towards image right
    "pitch",  # degrees (approximate), + = nod down
    "roll",  # degrees, + = clockwise in the image
    "lift",  # 1 = head up by 1% of the IOD (breathing)
)
K = len(BASIS_NAMES)
IDX = {n: i for i, n in enumerate(BASIS_NAMES)}


@dataclass(frozen=True)
class MotionOptions:
    """What moves. Tests switch idle motion off to measure the mouth alone."""

    head_motion: bool = True  # band-limited yaw/pitch/roll + speech nods
    blinks: bool = True
    breathing: bool = True
    brows: bool = True  # brow raises on emphasis
    seed: int | None = None  # None: derived from the session id
    jaw_max_iod: float = 0.30  # lower-lip drop at opening 1.0, in inter-ocular distances
    head_amplitude_deg: float = 1.6
    blink_interval_s: float = 3.6  # mean time between blinks


def derive_weights(w: np.ndarray) -> np.ndarray:
    """Set the cross terms (the shape of the opening follows the lips' shape) from jaw, spread, round."""
    w[IDX["jaw_spread"]] = w[IDX["jaw"]] * w[IDX["spread"]]
    w[IDX["jaw_round"]] = w[IDX["jaw"]] * w[IDX["round"]]
    return w


@dataclass
class Controls:
    weights: np.ndarray = field(default_factory=lambda: np.zeros(K, dtype=np.float32))

    @property
    def mouth_open(self) -> float:
        return float(self.weights[IDX["jaw"]])


def _coef(dt: float, tau: float) -> float:
    return 1.0 - math.exp(-dt / max(tau, 1e-6))


def _step(e0: float, e1: float, x: float) -> float:
    t = min(1.0, max(0.0, (x - e0) / (e1 - e0)))
    return t * t * (3.0 - 2.0 * t)


class MouthDriver:
    """Audio features of a frame → mouth weights (jaw, spread, round, press, close) and emphasis (brow,
    nod).

    RMS envelope with a fast attack (τ 12 ms) and a slower release (τ 55 ms) over an automatic gain
    reference, a noise gate, fricatives narrowing the jaw, a look-ahead half frame (speech is buffered
    ahead of playback) opening the mouth a little early. The mouth *shape* follows the formants (LPC):
    F2 high → spread (/i/, /e/), F2 low with F1 not high → rounded (/u/, /o/), F1 high → wider open
    (/a/); a nasal murmur or voice bar (voicing with one low resonance and no F2: /m/, /b/) or a silence
    right before a burst (/p/) closes the lips.
    """

    GATE = 0.006  # ≈ -44 dBFS
    REF_INIT = 0.09
    REF_FLOOR = 0.035

    def __init__(self, fps: int):
        self.dt = 1.0 / fps
        self.a_attack = _coef(self.dt, 0.012)
        self.a_release = _coef(self.dt, 0.055)
        self.a_shape = _coef(self.dt, 0.06)
        self.a_close_release = _coef(self.dt, 0.03)
        self.a_ref_down = _coef(self.dt, 6.0)
        self.a_brow = _coef(self.dt, 0.35)
        self.a_nod = _coef(self.dt, 0.22)
        self.reset()

    def reset(self) -> None:
        self.env = 0.0
        self.spread = 0.0
        self.round = 0.0
        self.open = 0.0
        self.close = 0.0
        self.brow = 0.0
        self.nod = 0.0
        self.ref = self.REF_INIT
        self.silent_s = 10.0

    def stop(self) -> None:
        """Mouth to rest now (clear): speech state dropped, gain reference kept."""
        ref = self.ref
        self.reset()
        self.ref = ref

    def _norm(self, level: float) -> float:
        if level <= self.GATE:
            return 0.0
        x = (level - self.GATE) / max(self.ref - self.GATE, 1e-6)
        return float(min(1.0, x) ** 0.8)

    def update(self, feat: AudioFeatures | None) -> dict[str, float]:
        if feat is None:  # no speech audio this frame
            level = ahead = high = f1 = f2 = 0.0
        else:
            level, ahead, high, f1, f2 = feat.rms, feat.rms_ahead, feat.high_ratio, feat.f1, feat.f2
        # automatic gain: jump up to loud speech, drift down slowly to the floor
        if level > self.ref:
            self.ref += 0.5 * (level - self.ref)
        else:
            self.ref += self.a_ref_down * (max(self.REF_FLOOR, level) - self.ref) * (level > self.GATE)
        voiced = level > self.GATE and high < 0.3 and f1 > 0.0
        # lips closed: a murmur with one low resonance and no F2 (/m/, a voiced /b/'s voice bar), or
        # silence right before a burst (/p/, /b/ released out of silence)
        murmur = voiced and f2 == 0.0 and 150.0 < f1 < 380.0 and high < 0.05
        burst_next = level <= 2 * self.GATE and ahead > 4 * max(level, self.GATE)
        closed = murmur or burst_next
        target = 0.0 if closed else max(self._norm(level), 0.5 * self._norm(ahead))
        fric = min(1.0, max(0.0, (high - 0.3) / 0.4))
        # vowel shape from the formants, held through consonants
        if voiced and not murmur and f2 > 0.0:
            spread_t = 0.9 * _step(1300.0, 1850.0, f2)
            round_t = _step(1250.0, 900.0, f2) * (1.0 - _step(650.0, 800.0, f1))
            self.open += self.a_shape * (_step(420.0, 720.0, f1) - self.open)
        else:
            spread_t = round_t = 0.0
        target *= (1.0 - 0.5 * fric) * min(1.0, 0.8 + 0.3 * self.open)  # /i/, /u/ narrower than /a/
        if closed:
            a = self.a_attack
        else:
            a = self.a_attack if target > self.env else self.a_release
        self.env += a * (target - self.env)
        if target == 0.0 and self.env < 0.03:
            self.env = 0.0
        shape_gain = min(1.0, 0.35 + self.env)  # the lips take the shape even when only a little open
        self.spread += self.a_shape * (min(1.0, spread_t + 0.4 * fric) * shape_gain * (self.env > 0) - self.spread)
        self.round += self.a_shape * (round_t * shape_gain * (self.env > 0) - self.round)
        if self.env == 0.0:
            self.spread = self.spread if self.spread > 0.02 else 0.0
            self.round = self.round if self.round > 0.02 else 0.0
        self.close += (self.a_attack if closed else self.a_close_release) * (float(closed) - self.close)
        if self.close < 0.02:
            self.close = 0.0
        press = 0.6 * self.close
        # emphasis: loud onset after a pause → brows and a small nod
        if level > self.GATE:
            if self.silent_s > 0.25 and level > 0.6 * self.ref:
                self.brow = max(self.brow, 0.8)
                self.nod = max(self.nod, 1.0)
            self.silent_s = 0.0
        else:
            self.silent_s += self.dt
        self.brow -= self.a_brow * self.brow
        self.nod -= self.a_nod * self.nod
        return {
            "jaw": self.env,
            "spread": self.spread,
            "round": self.round,
            "press": press,
            "close": self.close,
            "brow": self.brow,
            "nod": self.nod,
        }


class IdleMotion:
    """Procedural life: Poisson blinks, band-limited head motion (sums of slow sinusoids with random
    frequencies and phases), breathing. Deterministic from the seed and the frame index."""

    def __init__(self, fps: int, options: MotionOptions, seed: int):
        self.fps = fps
        self.opt = options
        self.rng = np.random.default_rng(seed)
        r = self.rng
        # 3 sinusoids per axis, 0.05–0.4 Hz, amplitudes normalised to the requested peak
        self.head = {}
        for axis, scale in (("yaw", 1.0), ("pitch", 0.6), ("roll", 0.5)):
            f = r.uniform(0.05, 0.4, 3)
            ph = r.uniform(0, 2 * math.pi, 3)
            amp = r.uniform(0.4, 1.0, 3)
            amp = amp / amp.sum() * scale * options.head_amplitude_deg
            self.head[axis] = (f, ph, amp)
        self.breath_f = r.uniform(0.2, 0.27)
        self.breath_ph = r.uniform(0, 2 * math.pi)
        self.next_blink = r.uniform(0.6, 2.0)
        self.blinks: list[tuple[float, float]] = []  # (start time, asymmetry)

    @staticmethod
    def blink_profile(t: float) -> float:
        """Lid closure 0..1 at ``t`` seconds after a blink starts: 70 ms down, 40 ms shut, 110 ms up."""
        if t < 0:
            return 0.0
        if t < 0.07:
            return 0.5 - 0.5 * math.cos(math.pi * t / 0.07)
        if t < 0.11:
            return 1.0
        if t < 0.22:
            return 0.5 + 0.5 * math.cos(math.pi * (t - 0.11) / 0.11)
        return 0.0

    def update(self, frame_index: int, weights: np.ndarray) -> None:
        t = frame_index / self.fps
        if self.opt.head_motion:
            for axis, (f, ph, amp) in self.head.items():
                weights[IDX[axis]] += float((amp * np.sin(2 * math.pi * f * t + ph)).sum())
        if self.opt.breathing:
            weights[IDX["lift"]] += 0.9 * math.sin(2 * math.pi * self.breath_f * t + self.breath_ph)
        if self.opt.blinks:
            while t >= self.next_blink:
                self.blinks.append((self.next_blink, float(self.rng.uniform(0.9, 1.0))))
                gap = self.opt.blink_interval_s
                # refractory 1 s, exponential tail, occasional double blink
                if self.rng.random() < 0.12:
                    self.next_blink += 0.35
                else:
                    self.next_blink += 1.0 + self.rng.exponential(max(gap - 1.0, 0.1))
            self.blinks = [(s, a) for s, a in self.blinks if t - s < 0.3]
            c = max((self.blink_profile(t - s) for s, _ in self.blinks), default=0.0)
            asym = max((a for s, a in self.blinks), default=1.0)
            weights[IDX["blink_r"]] = max(weights[IDX["blink_r"]], c)
            weights[IDX["blink_l"]] = max(weights[IDX["blink_l"]], c * asym)

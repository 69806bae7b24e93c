"""Audio in: PCM16 decoding, exact streaming resampling, per-frame slicing and the audio features
that drive the mouth.

Everything here is plain numpy on the CPU (a frame's worth of audio is a few thousand samples).

Exactness contract
------------------
- :class:`StreamingResampler` gives the same samples whatever the chunking of its input: every output
  sample is one fixed-length dot product over a window of input that is complete when it is computed.
  :func:`resample` (all at once) is the reference the streaming path is tested against.
- An utterance of ``n_in`` samples at ``in_rate`` becomes ``ceil(n_in * out_rate / in_rate)`` samples at
  the output rate (identical samples when the rates match).
- Frame ``k`` of a session carries ``frame_samples(k, rate, fps)`` samples: ``floor((k+1)·rate/fps) -
  floor(k·rate/fps)``, so ``rate/fps`` exactly when it is an integer and no drift when it is not.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = [
    "AudioFeatures",
    "StreamingResampler",
    "analyze_frame",
    "frame_samples",
    "pcm16_to_array",
    "resample",
]


def pcm16_to_array(pcm: bytes | bytearray | memoryview | np.ndarray, num_channels: int = 1) -> np.ndarray:
    """Interleaved 16-bit little-endian PCM (bytes) or an array → mono int16 (channels averaged).

    Float arrays are taken as [-1, 1] full scale.
    """
    if isinstance(pcm, (bytes, bytearray, memoryview)):
        buf = bytes(pcm)
        if len(buf) % 2:
            buf = buf[:-1]  # a dangling odd byte cannot be a sample
        arr = np.frombuffer(buf, dtype="<i2")
    else:
        arr = np.asarray(pcm)
        if arr.dtype.kind == "f":
            arr = np.clip(np.round(arr.astype(np.float64) * 32767.0), -32768, 32767).astype(np.int16)
        elif arr.dtype != np.int16:
            arr = np.clip(arr, -32768, 32767).astype(np.int16)
        if arr.ndim == 2:  # (n, channels)
            num_channels = arr.shape[1]
            arr = arr.reshape(-1)
    arr = arr.reshape(-1)
    if num_channels > 1:
        n = (arr.size // num_channels) * num_channels
        arr = np.round(arr[:n].reshape(-1, num_channels).astype(np.float64).mean(axis=1)).astype(np.int16)
    return arr.astype(np.int16, copy=False)


def frame_samples(frame_index: int, rate: int, fps: int) -> int:
    """Samples carried by frame ``frame_index`` (integer arithmetic: no drift)."""
    return ((frame_index + 1) * rate) // fps - (frame_index * rate) // fps


def frame_start_sample(frame_index: int, rate: int, fps: int) -> int:
    return (frame_index * rate) // fps


# ------------------------------------------------------------------------------------------ resampling
def _kaiser_sinc_table(up: int, down: int, half_taps: int, beta: float) -> tuple[np.ndarray, int]:
    """Polyphase table (up, 2·W) of a Kaiser-windowed sinc low-pass; W is the half width in input samples."""
    cutoff = min(1.0, up / down) * 0.97  # relative to the input Nyquist, a little margin for the transition
    width = int(math.ceil(half_taps / min(1.0, up / down)))
    j = np.arange(-width + 1, width + 1, dtype=np.float64)  # tap offsets from floor(t)
    phases = np.arange(up, dtype=np.float64) / up  # fractional position of t in [0, 1)
    x = j[None, :] - phases[:, None]  # distance from t, in input samples
    h = cutoff * np.sinc(cutoff * x)
    arg = np.clip(1.0 - (x / width) ** 2, 0.0, None)
    h *= np.i0(beta * np.sqrt(arg)) / np.i0(beta)
    h /= h.sum(axis=1, keepdims=True)  # unity DC gain for every phase
    return h, width


class StreamingResampler:
    """Resamples mono int16 audio from ``in_rate`` to ``out_rate`` in chunks, exactly like all at once.

    ``push(x)`` returns the output samples that are now fully determined; ``flush()`` returns the rest
    (the input is taken as zero after its end) so the total is ``ceil(n_in·out_rate/in_rate)``.
    """

    def __init__(self, in_rate: int, out_rate: int, *, half_taps: int = 16, beta: float = 8.0):
        if in_rate <= 0 or out_rate <= 0:
            raise ValueError("sample rates must be positive")
        g = math.gcd(int(in_rate), int(out_rate))
        self.in_rate, self.out_rate = int(in_rate), int(out_rate)
        self.up, self.down = self.out_rate // g, self.in_rate // g
        self.identity = self.up == self.down
        if not self.identity:
            self._table, self._width = _kaiser_sinc_table(self.up, self.down, half_taps, beta)
        self._buf = np.zeros(0, dtype=np.float64)  # input samples [self._offset, self._offset + len)
        self._offset = 0
        self._n_in = 0
        self._k = 0  # next output sample index
        self._flushed = False

    @property
    def samples_in(self) -> int:
        return self._n_in

    def total_out(self) -> int:
        """Output length for the input pushed so far once flushed."""
        return -(-self._n_in * self.up // self.down)

    def push(self, x: np.ndarray) -> np.ndarray:
        if self._flushed:
            raise RuntimeError("resampler already flushed")
        x = np.asarray(x, dtype=np.int16).reshape(-1)
        self._n_in += x.size
        if self.identity:
            self._k += x.size
            return x.copy()
        self._buf = np.concatenate([self._buf, x.astype(np.float64)])
        # output k needs input up to floor(k·down/up) + width
        last_needed_ok = self._n_in - 1 - self._width
        if last_needed_ok < 0:
            return np.zeros(0, dtype=np.int16)
        k_end = (last_needed_ok * self.up) // self.down + 1  # all k with floor(k·down/up) <= last_needed_ok
        k_end = min(k_end, self.total_out())
        return self._produce(k_end)

    def flush(self) -> np.ndarray:
        if self._flushed:
            return np.zeros(0, dtype=np.int16)
        self._flushed = True
        if self.identity:
            return np.zeros(0, dtype=np.int16)
        return self._produce(self.total_out())

    def _produce(self, k_end: int) -> np.ndarray:
        k0 = self._k
        if k_end <= k0:
            return np.zeros(0, dtype=np.int16)
        out = np.empty(k_end - k0, dtype=np.float64)
        taps = np.arange(-self._width + 1, self._width + 1)
        step = 8192
        for s in range(k0, k_end, step):
            ks = np.arange(s, min(s + step, k_end), dtype=np.int64)
            base = (ks * self.down) // self.up
            phase = (ks * self.down) % self.up
            idx = base[:, None] + taps[None, :] - self._offset
            valid = (idx >= 0) & (idx < self._buf.size)
            vals = np.where(valid, self._buf[np.clip(idx, 0, max(self._buf.size - 1, 0))], 0.0) if self._buf.size else np.zeros(idx.shape)
            # Samples before the stream start are zero; samples that were trimmed are never needed.
            out[s - k0 : s - k0 + ks.size] = (vals * self._table[phase]).sum(axis=1)
        self._k = k_end
        # Trim input no later output can need.
        first_needed = (self._k * self.down) // self.up - self._width + 1
        drop = first_needed - self._offset
        if drop > 0:
            self._buf = self._buf[drop:]
            self._offset += drop
        return np.clip(np.round(out), -32768, 32767).astype(np.int16)


def resample(x: np.ndarray, in_rate: int, out_rate: int) -> np.ndarray:
    """Offline reference: the whole signal through :class:`StreamingResampler` in one push."""
    r = StreamingResampler(in_rate, out_rate)
    return np.concatenate([r.push(np.asarray(x, dtype=np.int16)), r.flush()])


# ------------------------------------------------------------------------------------------- features
@dataclass
class AudioFeatures:
    """What one frame's audio says about the mouth (all scale-free)."""

    rms: float  # full scale = 1.0
    rms_ahead: float  # rms of the look-ahead samples (0 when none are buffered yet)
    high_ratio: float  # energy above 3.5 kHz / total: fricatives ("s", "f", "sh")
    centroid: float  # spectral centroid (Hz) of the 200-3000 Hz band: low = rounded, high = spread vowels
    voiced_ratio: float  # energy 150-1000 Hz / total
    f1: float = 0.0  # first two formants (Hz, LPC), 0 when not found: F1 high = open (/a/),
    f2: float = 0.0  # F2 high = spread (/i/, /e/), F2 low = rounded (/u/, /o/); nasals show no F2


_window_cache: dict[int, np.ndarray] = {}


def analyze_frame(samples: np.ndarray, ahead: np.ndarray, rate: int) -> AudioFeatures:
    """Features of one frame's slice (int16) plus the look-ahead samples that follow it."""
    x = samples.astype(np.float32) / 32768.0
    a = ahead.astype(np.float32) / 32768.0 if ahead.size else None
    rms = float(np.sqrt(np.mean(x * x))) if x.size else 0.0
    rms_ahead = float(np.sqrt(np.mean(a * a))) if a is not None else 0.0
    if x.size < 32 or rms < 1e-5:
        return AudioFeatures(rms, rms_ahead, 0.0, 0.0, 0.0)
    n = x.size
    win = _window_cache.get(n)
    if win is None:
        win = np.hanning(n).astype(np.float32)
        _window_cache[n] = win
    spec = np.abs(np.fft.rfft(x * win)) ** 2
    freqs = np.fft.rfftfreq(n, 1.0 / rate)
    total = float(spec[freqs >= 80].sum()) + 1e-12
    high = float(spec[freqs >= 3500].sum())
    band = (freqs >= 200) & (freqs <= 3000)
    eb = spec[band]
    centroid = float((eb * freqs[band]).sum() / (eb.sum() + 1e-12))
    voiced = float(spec[(freqs >= 150) & (freqs <= 1000)].sum())
    f1, f2 = formants(x, rate)
    return AudioFeatures(rms, rms_ahead, high / total, centroid, voiced / total, f1, f2)


_LPC_RATE = 11025  # formants of interest are below 3.5 kHz
_LPC_ORDER = 10


def formants(x: np.ndarray, rate: int) -> tuple[float, float]:
    """F1, F2 (Hz) of a float frame by LPC (autocorrelation, Levinson-Durbin, polynomial roots); 0.0 for
    a formant not found (poles wider than 400 Hz are not formants). ~50 µs per 40 ms frame."""
    step = max(1, int(round(rate / _LPC_RATE)))
    n = x.size // step * step
    if n < 64 * step:
        return 0.0, 0.0
    y = x[:n].reshape(-1, step).mean(axis=1).astype(np.float64)  # box decimation: enough below 3.5 kHz
    fs = rate / step
    y = np.append(y[0], y[1:] - 0.9 * y[:-1]) * np.hamming(y.size)  # pre-emphasis lifts F2 over F1
    r = np.correlate(y, y, "full")[y.size - 1 : y.size + _LPC_ORDER]
    if r[0] <= 1e-12:
        return 0.0, 0.0
    r[0] *= 1.0001  # white-noise floor: a stable filter even on pure tones
    a = np.zeros(_LPC_ORDER + 1)
    a[0], err = 1.0, r[0]
    for i in range(1, _LPC_ORDER + 1):  # Levinson-Durbin
        k = -(r[i] + a[1:i] @ r[i - 1 : 0 : -1]) / err
        a[1 : i + 1] = a[1 : i + 1] + k * np.append(a[i - 1 : 0 : -1], 1.0)
        err *= 1.0 - k * k
    roots = np.roots(a)
    roots = roots[roots.imag > 0]
    freq = np.angle(roots) * fs / (2 * np.pi)
    bw = -np.log(np.abs(roots)) * fs / np.pi
    f = np.sort(freq[(freq > 150) & (freq < 3500) & (bw < 400)])
    return (float(f[0]) if f.size else 0.0), (float(f[1]) if f.size > 1 else 0.0)

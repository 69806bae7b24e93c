"""A session's speech timeline: utterance queue, resampling, exact per-frame audio slices, events.

Frame ``k`` carries ``frame_samples(k, rate, fps)`` samples. A frame belongs to at most one utterance:
an utterance starts on a frame boundary and its last frame is padded with zeros, so the frames of an
utterance of ``n`` output samples number ``ceil(n / samples_per_frame)`` (``duration × fps`` exactly when
the duration is a whole number of frames) and their slices concatenated, padding cut, are exactly the
utterance resampled. When speech arrives slower than real time the frame is silent and the utterance
waits (``speaking`` False, ``utterance_id`` set): video never stops.
"""
from __future__ import annotations

import itertools
import threading
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from .audio import StreamingResampler, frame_samples, pcm16_to_array
from .interface import UtteranceEvent

_ids = itertools.count(1)


@dataclass
class _Utterance:
    id: int
    out_rate: int
    chunks: deque = field(default_factory=deque)  # int16 arrays at the output rate
    head: int = 0  # read offset into chunks[0]
    available: int = 0
    played: int = 0  # samples handed out in frames
    ended: bool = False
    started: bool = False
    resampler: StreamingResampler | None = None

    def add(self, x: np.ndarray) -> None:
        if x.size:
            self.chunks.append(x)
            self.available += x.size

    def read(self, n: int) -> np.ndarray:
        n = min(n, self.available)
        out = np.empty(n, dtype=np.int16)
        filled = 0
        while filled < n:
            c = self.chunks[0]
            take = min(n - filled, c.size - self.head)
            out[filled : filled + take] = c[self.head : self.head + take]
            filled += take
            self.head += take
            if self.head >= c.size:
                self.chunks.popleft()
                self.head = 0
        self.available -= n
        self.played += n
        return out

    def peek(self, n: int) -> np.ndarray:
        n = min(n, self.available)
        parts, got, head = [], 0, self.head
        for c in self.chunks:
            if got >= n:
                break
            seg = c[head : head + (n - got)]
            parts.append(seg)
            got += seg.size
            head = 0
        return np.concatenate(parts) if parts else np.zeros(0, np.int16)


@dataclass
class FrameAudio:
    samples: np.ndarray  # int16, exactly frame_samples(k) long
    ahead: np.ndarray  # int16 look-ahead (what follows, if already buffered)
    speaking: bool
    utterance_id: int | None
    position: float
    events: tuple[UtteranceEvent, ...]
    cleared: bool  # clear() happened since the last frame


class Timeline:
    def __init__(self, rate: int, fps: int, lookahead_frames: float = 0.5):
        self.rate, self.fps = int(rate), int(fps)
        self.lookahead_frames = lookahead_frames
        self.frame_index = 0
        self._queue: deque[_Utterance] = deque()
        self._open: _Utterance | None = None
        self._lock = threading.Lock()
        self._cleared = False

    # ------------------------------------------------------------------ producer side (any thread)
    def push(self, pcm, sample_rate: int, num_channels: int = 1) -> int:
        x = pcm16_to_array(pcm, num_channels)
        with self._lock:
            u = self._open
            if u is None:
                u = _Utterance(id=next(_ids), out_rate=self.rate)
                self._open = u
                self._queue.append(u)
            if u.resampler is None or u.resampler.in_rate != int(sample_rate):
                if u.resampler is not None:  # rate changed mid-utterance: finish the old segment
                    u.add(u.resampler.flush())
                u.resampler = StreamingResampler(int(sample_rate), self.rate)
            u.add(u.resampler.push(x))
            return u.id

    def end(self) -> int | None:
        with self._lock:
            u = self._open
            if u is None:
                return None
            if u.resampler is not None:
                u.add(u.resampler.flush())
            u.ended = True
            self._open = None
            return u.id

    def clear(self) -> list[UtteranceEvent]:
        with self._lock:
            events = [
                UtteranceEvent("finished", u.id, u.played / self.rate, interrupted=True) for u in self._queue
            ]
            self._queue.clear()
            self._open = None
            self._cleared = True
            return events

    @property
    def speaking(self) -> bool:
        with self._lock:
            return bool(self._queue)

    @property
    def buffered_seconds(self) -> float:
        with self._lock:
            return sum(u.available for u in self._queue) / self.rate

    # ------------------------------------------------------------------ consumer side (render thread)
    def next_frame(self) -> FrameAudio:
        k = self.frame_index
        n = frame_samples(k, self.rate, self.fps)
        events: list[UtteranceEvent] = []
        with self._lock:
            cleared, self._cleared = self._cleared, False
            while True:
                u = self._queue[0] if self._queue else None
                if u is None:
                    out = FrameAudio(np.zeros(n, np.int16), np.zeros(0, np.int16), False, None, 0.0, (), cleared)
                    break
                if u.available >= n or (u.ended and u.available > 0):
                    got = u.read(n)
                    if not u.started:
                        u.started = True
                        events.append(UtteranceEvent("started", u.id, 0.0))
                    if got.size < n:
                        got = np.concatenate([got, np.zeros(n - got.size, np.int16)])
                    ahead = u.peek(int(self.lookahead_frames * n))
                    pos = u.played / self.rate
                    if u.ended and u.available == 0:
                        events.append(UtteranceEvent("finished", u.id, pos))
                        self._queue.popleft()
                    out = FrameAudio(got, ahead, True, u.id, pos, tuple(events), cleared)
                    break
                if u.ended:  # empty utterance: nothing to play, report it finished and look further
                    events.append(UtteranceEvent("finished", u.id, u.played / self.rate))
                    self._queue.popleft()
                    continue
                # underrun: speech is coming slower than real time; keep the video going silently
                out = FrameAudio(np.zeros(n, np.int16), np.zeros(0, np.int16), False, u.id,
                                 u.played / self.rate, tuple(events), cleared)
                break
        self.frame_index += 1
        return out

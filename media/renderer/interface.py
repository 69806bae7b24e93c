"""The contract between the session worker and a renderer (see the package docstring for the flow)."""
from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch

from core.rig import FaceRig

from .framing import size_for_aspect
from .motion import MotionOptions

FrameFormat = Literal["rgba", "i420"]


@dataclass(frozen=True)
class OutputOptions:
    """What a session publishes: frame size, frame rate, audio rate, pixel format."""

    width: int = 512
    height: int = 512
    fps: int = 25
    sample_rate: int = 48000
    format: FrameFormat = "rgba"

    def __post_init__(self) -> None:
        if self.width <= 0 or self.height <= 0 or self.width % 2 or self.height % 2:
            raise ValueError("width and height must be positive and even (I420 needs 2x2 chroma blocks)")
        if self.fps <= 0 or self.sample_rate <= 0:
            raise ValueError("fps and sample_rate must be positive")
        if self.format not in ("rgba", "i420"):
            raise ValueError("format must be 'rgba' or 'i420'")

    @classmethod
    def for_aspect(cls, aspect: str, **kw) -> OutputOptions:
        """Default size for a session aspect ratio: 4:3 → 640×480, 3:4 → 480×640, 1:1 → 512×512."""
        w, h = size_for_aspect(aspect)
        return cls(width=kw.pop("width", w), height=kw.pop("height", h), **kw)

    @property
    def samples_per_frame(self) -> float:
        return self.sample_rate / self.fps


@dataclass(frozen=True)
class UtteranceEvent:
    """``started``: this frame carries the utterance's first samples (send ``lk.playback_started`` once
    it is published). ``finished``: the utterance is over — its last samples are in this frame
    (``interrupted=False``) or it was dropped by ``clear()`` (``interrupted=True``, returned by
    ``clear()`` itself). ``position`` is the seconds of its audio played (published) so far."""

    kind: Literal["started", "finished"]
    utterance_id: int
    position: float = 0.0
    interrupted: bool = False


@dataclass
class FrameResult:
    """One session's output for one tick."""

    session_id: str
    frame_index: int  # 0, 1, 2, ... per session; pts = frame_index / fps
    pts: float
    frame: torch.Tensor  # on the renderer's device: (H, W, 4) uint8 RGBA, or (H·W·3/2,) uint8 I420 planes
    audio: np.ndarray  # int16 mono, exactly this frame's slice at the output sample rate
    sample_rate: int
    speaking: bool  # the slice carries utterance audio
    mouth_open: float  # commanded opening 0..1 (jaw weight)
    utterance_id: int | None = None  # utterance whose audio is in this frame (or that is waiting for data)
    utterance_position: float = 0.0  # seconds of that utterance played after this frame
    events: tuple[UtteranceEvent, ...] = ()
    width: int = 0
    height: int = 0
    format: FrameFormat = "rgba"
    weights: np.ndarray | None = field(default=None, repr=False)  # all basis weights (debugging, tests)

    def frame_numpy(self) -> np.ndarray:
        return self.frame.detach().cpu().numpy()

    def audio_bytes(self) -> bytes:
        return self.audio.astype("<i2").tobytes()


class RenderSession(abc.ABC):
    """Per-session handle. ``push_audio``/``end_utterance``/``clear`` may be called from any thread."""

    id: str
    options: OutputOptions

    @abc.abstractmethod
    def push_audio(self, pcm: bytes | np.ndarray, sample_rate: int, num_channels: int = 1) -> int:
        """Append speech to the open utterance (one is opened if needed); returns its id."""

    @abc.abstractmethod
    def end_utterance(self) -> int | None:
        """Close the open utterance (its stream ended); returns its id, None if none was open."""

    @abc.abstractmethod
    def clear(self) -> list[UtteranceEvent]:
        """Drop the current and queued utterances; the next frame has the mouth at rest. Returns one
        ``finished`` event (interrupted=True, position = seconds already played) per dropped utterance;
        these are not repeated in later frames."""

    @property
    @abc.abstractmethod
    def speaking(self) -> bool:
        """Whether speech audio is queued or playing."""

    @property
    @abc.abstractmethod
    def buffered_seconds(self) -> float:
        """Speech audio received but not yet played (output rate)."""


class Renderer(abc.ABC):
    """Renders all its sessions, one frame each per ``step()``, batched where it can."""

    device: torch.device

    @abc.abstractmethod
    def open_session(
        self,
        image: np.ndarray,
        rig: FaceRig,
        options: OutputOptions | None = None,
        *,
        motion: MotionOptions | None = None,
        session_id: str | None = None,
    ) -> RenderSession:
        """Prepare an avatar (aligned RGB uint8 image + its rig) for a session; it joins the next step."""

    @abc.abstractmethod
    def close_session(self, session: RenderSession | str) -> None:
        """Remove a session; it leaves the batch before the next step."""

    @abc.abstractmethod
    def step(self) -> list[FrameResult]:
        """Advance every open session by one frame; results in session-open order."""

    @property
    @abc.abstractmethod
    def sessions(self) -> Sequence[RenderSession]: ...

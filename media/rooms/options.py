"""One typed options object per room adapter; ``media.rooms.factory.adapter_options`` builds them from
``Settings`` (the defaults here are the settings' own, for adapters built directly, e.g. by tests)."""
from __future__ import annotations

from dataclasses import dataclass, field

from core.settings import setting_default
from media.session import MediaLimits


@dataclass(frozen=True)
class AdapterOptions:
    """What every adapter renders with: the frame rate and audio sample rate of a session that does not
    ask for its own ``video``, and the media session's bounds."""

    fps: int = setting_default("render_fps")
    sample_rate: int = setting_default("render_sample_rate")
    limits: MediaLimits = field(default_factory=MediaLimits)


@dataclass(frozen=True)
class PreviewOptions(AdapterOptions):
    """Room platform ``preview``: no room, so nothing to time out."""


@dataclass(frozen=True)
class RoomTimeouts:
    """A room joined over the network: how long the first join may take, how long a lost connection may
    stay lost, how long the room may stay empty."""

    connect_s: float = setting_default("room_connect_timeout_s")
    reconnect_s: float = setting_default("room_reconnect_timeout_s")
    empty_grace_s: float = setting_default("room_empty_grace_s")


@dataclass(frozen=True)
class RoomOptions(AdapterOptions):
    timeouts: RoomTimeouts = field(default_factory=RoomTimeouts)


@dataclass(frozen=True)
class LiveKitOptions(RoomOptions):
    av_queue_ms: int = setting_default("livekit_av_queue_ms")


@dataclass(frozen=True)
class DailyOptions(RoomOptions):
    speech_sample_rate: int = setting_default("daily_speech_sample_rate")
    silence_end_s: float = setting_default("daily_silence_end_s")

"""Which room connection a session gets (by platform, or none at all when the deployment says so), and
the one place each adapter's typed options are built from ``Settings``."""
from __future__ import annotations

from core.settings import Settings
from media.rooms.base import NoMediaRoom, RoomConnection, WorkerSpec
from media.rooms.options import AdapterOptions, DailyOptions, LiveKitOptions, PreviewOptions, RoomTimeouts
from media.session import MediaLimits


def adapter_options(settings: Settings, platform: str) -> AdapterOptions:
    """The options of the adapter of room platform ``platform`` (``proxy`` is a LiveKit room)."""
    limits = MediaLimits(max_buffered_s=settings.max_buffered_speech_s, av_queue_frames=settings.media_av_queue_frames,
                         av_stall_limit_s=settings.media_av_stall_limit_s)
    fps, rate = settings.render_fps, settings.render_sample_rate
    if platform == "preview":
        return PreviewOptions(fps=fps, sample_rate=rate, limits=limits)
    timeouts = RoomTimeouts(connect_s=settings.room_connect_timeout_s, reconnect_s=settings.room_reconnect_timeout_s,
                            empty_grace_s=settings.room_empty_grace_s)
    if platform in ("livekit", "proxy"):
        return LiveKitOptions(fps=fps, sample_rate=rate, limits=limits, timeouts=timeouts,
                              av_queue_ms=settings.livekit_av_queue_ms)
    if platform == "daily":
        return DailyOptions(fps=fps, sample_rate=rate, limits=limits, timeouts=timeouts,
                            speech_sample_rate=settings.daily_speech_sample_rate,
                            silence_end_s=settings.daily_silence_end_s)
    raise ValueError(f"unknown room platform {platform!r}")


def open_room(spec: WorkerSpec, settings: Settings) -> RoomConnection:
    if settings.worker_media == "none":
        return NoMediaRoom(spec)
    from media.assets import load_avatar, process_renderer

    options = adapter_options(settings, spec.room_platform)
    if not spec.avatar_image_key or not spec.avatar_rig_key:
        raise ValueError(f"avatar {spec.avatar_id} has no stored image/rig to render")
    avatar = load_avatar(settings, spec.avatar_image_key, spec.avatar_rig_key).with_background(spec.background)
    # one renderer (and render loop) per frame rate: the session's own video.fps, else the options'
    renderer = process_renderer(settings, (spec.video or {}).get("fps") or options.fps)
    if isinstance(options, PreviewOptions):
        from media.rooms.preview_room import PreviewRoom

        return PreviewRoom(spec, avatar, renderer, options)
    if isinstance(options, LiveKitOptions):
        from media.rooms.livekit_room import LiveKitRoom

        return LiveKitRoom(spec, avatar.image, avatar.rig, renderer, options)
    from media.rooms.daily_room import DailyRoom

    assert isinstance(options, DailyOptions)
    return DailyRoom(spec, avatar.image, avatar.rig, renderer, options)

"""Which room connection a session gets: by platform, or none at all when the deployment says so."""
from __future__ import annotations

from media.rooms.base import NoMediaRoom, RoomConnection, WorkerSpec
from core.settings import Settings


def open_room(spec: WorkerSpec, settings: Settings) -> RoomConnection:
    if settings.worker_media == "none":
        return NoMediaRoom(spec)
    from media.assets import load_avatar, process_renderer

    if not spec.avatar_image_key or not spec.avatar_rig_key:
        raise ValueError(f"avatar {spec.avatar_id} has no stored image/rig to render")
    avatar = load_avatar(settings, spec.avatar_image_key, spec.avatar_rig_key).with_background(spec.background)
    # LiveKit and Daily publish 25 fps unless the session asks otherwise; the preview runs at render_fps
    fps = (spec.video or {}).get("fps") or (settings.render_fps if spec.room_platform == "preview" else 25)
    renderer = process_renderer(settings, fps)
    if spec.room_platform == "preview":
        from media.rooms.preview_room import PreviewRoom

        return PreviewRoom(spec, avatar, renderer, fps=settings.render_fps, sample_rate=settings.render_sample_rate,
                           max_buffered_s=settings.max_buffered_speech_s)
    if spec.room_platform in ("livekit", "proxy"):  # proxy: a LiveKit room the platform provided
        from media.rooms.livekit_room import LiveKitRoom

        return LiveKitRoom(spec, avatar.image, avatar.rig, renderer, room_empty_grace_s=settings.room_empty_grace_s)
    if spec.room_platform == "daily":
        from media.rooms.daily_room import DailyRoom

        return DailyRoom(spec, avatar.image, avatar.rig, renderer, room_empty_grace_s=settings.room_empty_grace_s)
    raise ValueError(f"unknown room platform {spec.room_platform!r}")

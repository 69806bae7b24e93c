"""Settings reach the room adapters through one factory (no Ray): frame rate, sample rate, media bounds
and room timeouts are the deployment's, not constants of the adapters."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from core.settings import Settings
from media.assets import AvatarAssets
from media.renderer import DisplacementRenderer
from media.rooms.base import WorkerSpec
from media.rooms.factory import adapter_options
from media.rooms.options import DailyOptions, LiveKitOptions, PreviewOptions, RoomOptions, RoomTimeouts
from media.session import AudioBufferFull, MediaLimits

from .conftest import run
from .fake_livekit import FakeServer
from .harness import avatar_spec

TUNED = dict(render_fps=12, render_sample_rate=24000, max_buffered_speech_s=1.5, media_av_queue_frames=5,
             media_av_stall_limit_s=4.0, room_connect_timeout_s=3.0, room_reconnect_timeout_s=7.0,
             room_empty_grace_s=11.0, livekit_av_queue_ms=80, daily_speech_sample_rate=24000,
             daily_silence_end_s=0.25)


def test_one_factory_builds_each_adapters_options_from_settings(tmp_path):
    s = Settings(data_dir=tmp_path, **TUNED)
    limits = MediaLimits(max_buffered_s=1.5, av_queue_frames=5, av_stall_limit_s=4.0)
    assert adapter_options(s, "preview") == PreviewOptions(fps=12, sample_rate=24000, limits=limits)
    timeouts = RoomTimeouts(connect_s=3.0, reconnect_s=7.0, empty_grace_s=11.0)
    assert adapter_options(s, "livekit") == adapter_options(s, "proxy") == LiveKitOptions(
        fps=12, sample_rate=24000, limits=limits, timeouts=timeouts, av_queue_ms=80)
    assert adapter_options(s, "daily") == DailyOptions(fps=12, sample_rate=24000, limits=limits, timeouts=timeouts,
                                                       speech_sample_rate=24000, silence_end_s=0.25)
    with pytest.raises(ValueError, match="unknown room platform 'zoom'"):
        adapter_options(s, "zoom")


def test_the_options_defaults_are_the_settings_defaults(tmp_path):
    s = Settings(data_dir=tmp_path)
    assert adapter_options(s, "preview") == PreviewOptions()
    assert adapter_options(s, "livekit") == LiveKitOptions()
    assert adapter_options(s, "daily") == DailyOptions()
    assert isinstance(DailyOptions(), RoomOptions) and dataclasses.is_dataclass(LiveKitOptions)


def test_settings_values_reach_the_preview_livekit_and_daily_adapters(avatar, tmp_path):
    from media.rooms.daily_room import DailyRoom
    from media.rooms.livekit_room import LiveKitRoom
    from media.rooms.preview_room import PreviewRoom

    s = Settings(data_dir=tmp_path, **TUNED)
    image, rig = avatar

    async def main():
        # preview: renders at the settings' rate and refuses speech beyond their buffer bound
        spec = WorkerSpec(session_id="opt-preview", account_id="acct_1", avatar_id="av_1", aspect_ratio="4:3",
                          room_platform="preview", expiration=None, video={"width": 160, "height": 120})
        preview = PreviewRoom(spec, AvatarAssets(image, rig), DisplacementRenderer("cpu"), adapter_options(s, "preview"))
        await preview.connect()
        media = preview.media
        assert (media.fps, media.sample_rate, media.render_loop.fps) == (12, 24000, 12)
        assert media.limits == MediaLimits(max_buffered_s=1.5, av_queue_frames=5, av_stall_limit_s=4.0)
        media.push_pcm(np.zeros(16000 * 2, np.int16), 16000)
        with pytest.raises(AudioBufferFull, match="1.5 s"):
            media.push_pcm(np.zeros(160, np.int16), 16000)
        await preview.close()

        # LiveKit: output, room timers and the media session it opens on joining
        server = FakeServer()
        lk = LiveKitRoom(avatar_spec("opt-lk"), image, rig, DisplacementRenderer("cpu"), adapter_options(s, "livekit"),
                         room_factory=server.room_factory)
        assert (lk.output.fps, lk.output.sample_rate, lk.output.format) == (12, 24000, "i420")
        assert (lk.endings.empty_grace_s, lk.endings.reconnect_timeout_s) == (11.0, 7.0)
        await lk.connect()
        assert lk.media.fps == 12 and lk.media.limits.max_buffered_s == 1.5
        await lk.close()

        # Daily: output, room timers and the speech gate
        daily = DailyRoom(WorkerSpec(session_id="opt-daily", account_id="acct_1", avatar_id="av_1", aspect_ratio="4:3",
                                     room_platform="daily", expiration=None), image, rig, DisplacementRenderer("cpu"),
                          adapter_options(s, "daily"))
        assert (daily.output.fps, daily.output.sample_rate) == (12, 24000)
        assert (daily.endings.empty_grace_s, daily.endings.reconnect_timeout_s) == (11.0, 7.0)
        assert daily._gate.silence_end_s == 0.25 and daily.options.speech_sample_rate == 24000

    run(main())

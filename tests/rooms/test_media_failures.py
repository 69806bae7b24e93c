"""Room media paths that fail end the session as media_failed with a detail, and the ``ending``
session.state packet a planned end announces (fake LiveKit room, daily-python's real virtual devices)."""
from __future__ import annotations

import asyncio

from media.renderer import DisplacementRenderer
from media.rooms.base import WorkerSpec
from media.rooms.daily_room import DailyRoom
from media.rooms.livekit_room import LiveKitRoom
from core.status import EndReason

from .conftest import run, wait_until
from .fake_livekit import FakeServer
from .harness import AVATAR, SMALL, Agent, avatar_spec, started_room


def _failing_step():
    raise RuntimeError("CUDA error: an illegal memory access was encountered")


def test_livekit_render_failure_ends_as_media_failed_and_ending_is_announced(avatar):
    async def main():
        server = FakeServer()
        await Agent(server).join()
        image, rig = avatar
        renderer = DisplacementRenderer("cpu")
        lk = LiveKitRoom(avatar_spec("sess-media"), image, rig, renderer, room_factory=server.room_factory,
                         output=SMALL)
        await lk.connect()
        await started_room(lk)
        await lk.send_state("ending", "minutes_exhausted", in_s=60)
        await wait_until(lambda: any(s["state"] == "ending" for s in server.states(AVATAR)), 5, "ending packet")
        assert {"state": "ending", "reason": "minutes_exhausted", "in_s": 60} in server.states(AVATAR)
        renderer.step = _failing_step  # the GPU goes away under the render loop
        reason = await asyncio.wait_for(lk.wait_closed(), 15)
        assert reason == EndReason.MEDIA_FAILED
        assert "illegal memory access" in lk.endings.detail or "renderer keeps failing" in lk.endings.detail
        await lk.close()

    run(main())


class _BrokenCamera:
    name = "broken-camera"

    def write_frame(self, data):
        raise OSError("virtual camera device gone")


def test_daily_virtual_device_failure_ends_as_media_failed(avatar):
    async def main():
        image, rig = avatar
        spec = WorkerSpec(session_id="daily-broken", account_id="acct_1", avatar_id="av_1", aspect_ratio="4:3",
                          room_platform="daily", expiration=None, room_url="https://example.daily.co/room",
                          room_token="meeting-token")
        room = DailyRoom(spec, image, rig, DisplacementRenderer("cpu"), output=SMALL)
        await room.open_media()
        await wait_until(lambda: room.frames_written > 0, 10, "frames written")
        room.camera = _BrokenCamera()
        reason = await asyncio.wait_for(room.wait_closed(), 15)
        assert reason == EndReason.MEDIA_FAILED and "virtual camera device gone" in room.endings.detail
        await room.close()

    run(main())

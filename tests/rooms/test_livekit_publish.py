"""How the avatar's pictures reach LiveKit's video source: published with a still of the photo right after
the join (never a black frame, even while the renderer session is prepared), then every rendered picture
captured when it is pushed (the render loop paces them; a second frame clock would queue them)."""
from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest
import torch
from livekit import rtc

from media.renderer import DisplacementRenderer
from media.renderer.colors import to_i420
from media.renderer.framing import fit_face
from media.rooms.livekit_room import CaptureOnPush, LiveKitRoom

from .conftest import run, wait_until
from .fake_livekit import FakeServer
from .harness import SMALL, Agent, avatar_spec


def test_pictures_are_captured_when_pushed():
    async def main():
        audio = rtc.AudioSource(48000, 1, queue_size_ms=60)
        video = rtc.VideoSource(16, 16)
        sync = CaptureOnPush(audio_source=audio, video_source=video, video_fps=25, video_queue_size_ms=60)
        captured: list[rtc.VideoFrame] = []
        video.capture_frame = lambda frame, *a, **kw: captured.append(frame)  # type: ignore[method-assign]
        frames = [rtc.VideoFrame(16, 16, rtc.VideoBufferType.I420, bytes([k]) * (16 * 16 * 3 // 2)) for k in range(5)]
        try:
            for k, frame in enumerate(frames):
                await sync.push(frame, k / 25)
                # out before the push returns (the stock synchronizer queues it for its own frame clock)
                assert captured == frames[: k + 1]
            assert sync.last_video_time == pytest.approx(4 / 25)
        finally:
            await sync.aclose()
            await audio.aclose()
            await video.aclose()

    run(main(), 20)


class _SlowPrepare(DisplacementRenderer):
    """The real renderer whose session preparation waits for ``release`` (set from the test)."""

    def __init__(self) -> None:
        super().__init__("cpu")
        self.release = threading.Event()

    def prepare(self, *args, **kwargs):
        assert self.release.wait(30), "the test never released the preparation"
        return super().prepare(*args, **kwargs)


def test_tracks_go_out_with_the_photo_before_the_first_rendered_frame(avatar, monkeypatch):
    image, rig = avatar
    expected = to_i420(torch.from_numpy(fit_face(image, rig, SMALL.width, SMALL.height).image)
                       .permute(2, 0, 1)[None].float())[0].numpy().tobytes()
    captures: list[rtc.VideoFrame] = []
    real_capture = rtc.VideoSource.capture_frame

    def capture(self, frame, *args, **kwargs):
        captures.append(frame)
        return real_capture(self, frame, *args, **kwargs)

    monkeypatch.setattr(rtc.VideoSource, "capture_frame", capture)

    async def main():
        server = FakeServer()
        agent = await Agent(server).join()
        renderer = _SlowPrepare()
        lk = LiveKitRoom(avatar_spec(), image, rig, renderer, room_factory=server.room_factory, output=SMALL)
        connecting = asyncio.create_task(lk.connect())
        try:
            # joined, preparation held: both tracks are out and the video shows the photo, repeated
            await wait_until(lambda: lk.room is not None and len(lk.room.local_participant.published) == 2
                             and len(captures) >= 3, 20, "tracks published with the still")
            assert not connecting.done() and lk.media is None
            sources = {p.options.source for p in lk.room.local_participant.published}
            assert sources == {rtc.TrackSource.SOURCE_CAMERA, rtc.TrackSource.SOURCE_MICROPHONE}
            still = captures[0]
            assert all(c is still for c in captures), "a picture other than the still went out"
            assert bytes(still.data) == expected  # the photo framed as the renderer frames it, in its colours
            assert np.frombuffer(expected, np.uint8)[: SMALL.width * SMALL.height].mean() > 40  # (not black)

            renderer.release.set()
            await asyncio.wait_for(connecting, 30)
            await wait_until(lambda: any(c is not still for c in captures), 20, "the first rendered frame")
            first_rendered = next(i for i, c in enumerate(captures) if c is not still)
            n = len(captures)
            await wait_until(lambda: len(captures) >= n + 10, 20, "ten more rendered frames")
            # the still stopped at the first rendered frame: from then on only rendered pictures
            assert all(c is not still for c in captures[first_rendered:])
            assert lk.runner is not None and lk.runner._still is None
        finally:
            renderer.release.set()
            await lk.close()
            await agent.room.disconnect()

    run(main(), 90)

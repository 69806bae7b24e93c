"""The media session without any room: the path the session WebSocket and the MJPEG preview use."""
from __future__ import annotations

import asyncio

import numpy as np
import pytest

from media.renderer import DisplacementRenderer, OutputOptions
from media.renderer.speech import synth_speech
from media.session import AudioBufferFull, MediaLimits, MediaSession, RenderLoop

from .conftest import run, wait_until

SMALL = OutputOptions(width=160, height=120, fps=25, sample_rate=48000, format="rgba")


async def _drain(q):
    out = []
    while not q.empty():
        out.append(q.get_nowait())
    return out


def test_push_pcm_events_frames_and_interrupt(avatar):
    async def main():
        image, rig = avatar
        r = DisplacementRenderer("cpu")
        gen = MediaSession(r, r.open_session(image, rig, SMALL), MediaLimits(max_buffered_s=5.0))
        mouth: list[tuple[int, float]] = []
        gen.add_frame_listener(lambda f: mouth.append((f.result.frame_index, f.result.mouth_open)))
        async with gen.frames(maxsize=2) as frames:
            first = await asyncio.wait_for(frames.__anext__(), 2)
            assert first.rgb().shape == (120, 160, 3) and first.rgb().dtype == np.uint8
            assert first.rgba().shape == (120, 160, 4)

            sp = synth_speech(1.0, 16000, seed=31).audio
            uid = gen.push_pcm(sp.tobytes(), 16000)
            gen.end_utterance()
            ev = await asyncio.wait_for(gen.events.get(), 2)
            assert ev.kind == "started" and ev.utterance_id == uid and ev.as_message() == {"type": "playback.started"}
            ev = await asyncio.wait_for(gen.events.get(), 3)
            assert ev.kind == "finished" and not ev.interrupted and abs(ev.position - 1.0) <= 0.04 + 1e-6
            assert ev.as_message() == {"type": "playback.finished", "playback_position": 1.0, "interrupted": False}

            # interrupt mid-utterance: one finished(interrupted) per dropped utterance, mouth at rest next frame
            gen.push_pcm(synth_speech(3.0, 24000, seed=32).audio.tobytes(), 24000)
            await asyncio.wait_for(gen.events.get(), 2)  # started
            await wait_until(lambda: mouth[-1][1] > 0.2, 3, "mouth open")
            gen.push_pcm(np.zeros(100, np.int16), 24000)  # same open utterance
            k = mouth[-1][0]
            dropped = gen.interrupt()
            assert len(dropped) == 1 and dropped[0].interrupted and 0 < dropped[0].position < 3.0
            assert (await gen.events.get()) == dropped[0]  # also on the event stream
            await wait_until(lambda: mouth[-1][0] > k, 2, "next frame")
            assert [m for i, m in mouth if i > k][0] == 0.0
            await wait_until(lambda: mouth[-1][0] > k + 5, 2, "five more frames")  # a stray event would be out by now
            assert gen.events.empty()  # nothing else for the dropped utterance

            # bounded input: more than max_buffered_s of unplayed speech is refused
            gen.push_pcm(np.zeros(16000 * 6, np.int16), 16000)
            with pytest.raises(AudioBufferFull):
                gen.push_pcm(np.zeros(160, np.int16), 16000)
            gen.interrupt()
        await gen.aclose()
        assert r.sessions == ()

    run(main())


def test_sessions_of_one_renderer_share_one_render_loop(avatar):
    async def main():
        image, rig = avatar
        r = DisplacementRenderer("cpu")
        a = MediaSession(r, r.open_session(image, rig, SMALL, session_id="a"))
        b = MediaSession(r, r.open_session(image, rig, SMALL, session_id="b"))
        assert a.render_loop is b.render_loop is RenderLoop.shared(r, 25)
        got = {"a": [], "b": []}
        a.add_frame_listener(lambda f: got["a"].append(f.result.frame_index))
        b.add_frame_listener(lambda f: got["b"].append(f.result.frame_index))
        await wait_until(lambda: len(got["a"]) >= 8, 10, "eight frames of a")
        assert len(got["a"]) >= 8 and abs(len(got["a"]) - len(got["b"])) <= 1  # one step serves both
        await a.aclose()
        n = len(got["b"])
        await wait_until(lambda: len(got["b"]) > n, 10, "a frame of b after a closed")
        assert len(got["b"]) > n and a.render_loop.running  # b goes on alone
        await b.aclose()
        assert not b.render_loop.running and r.sessions == ()

    run(main())

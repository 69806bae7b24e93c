"""The protocol test against a real LiveKit server (the ``livekit_server`` fixture: CI's, or one started
from the cached build of ``python -m cluster.livekit_local build``).

Both sides are real ``livekit.rtc.Room`` connections: livekit-agents' ``DataStreamAudioOutput`` as the
agent (it mints the avatar's token the way avatar plugins do: kind ``agent``,
``lk.publish_on_behalf=<agent identity>``), our ``LiveKitRoom`` as the avatar worker. Asserted on the
agent side (what a real agent sees): one ``playback_started`` and one ``playback_finished`` for a 3 s
utterance at 24 kHz with the position within a frame of 3.0 s; ``lk.clear_buffer`` mid-utterance gets
one interrupted ``playback_finished`` well within the agent's 2 s fallback; the avatar publishes a
microphone-source audio track and a camera-source video track; the agent leaving ends the session
as ``agent_left``.
"""
from __future__ import annotations

import asyncio
import time

from livekit import rtc
from livekit.agents.voice.avatar import DataStreamAudioOutput

from media.renderer import DisplacementRenderer
from media.renderer.speech import synth_speech
from media.rooms.base import WorkerSpec
from media.rooms.livekit_room import LiveKitRoom
from media.rooms.options import LiveKitOptions, RoomTimeouts
from core.status import EndReason

from tests.support.livekit import new_room_name, token

from .conftest import run, wait_until
from .harness import SMALL


def test_protocol_against_a_real_livekit_server(avatar, livekit_server):
    server = livekit_server
    URL = server.url

    async def main():
        room_name = new_room_name()
        agent_id, avatar_id = "test-agent", "ours-avatar-agent"
        agent_room = rtc.Room()
        await agent_room.connect(URL, token(server, agent_id, room_name, kind="agent"))
        out = DataStreamAudioOutput(agent_room, destination_identity=avatar_id, wait_playback_start=True)
        started, finished = [], []
        out.on("playback_started", started.append)
        out.on("playback_finished", finished.append)

        spec = WorkerSpec(session_id="real-1", account_id="acct", avatar_id="av", aspect_ratio="4:3",
                          room_platform="livekit", expiration=None, room_url=URL,
                          room_token=token(server, avatar_id, room_name, kind="agent",
                                                attributes={"lk.publish_on_behalf": agent_id}))
        image, rig = avatar
        lk = LiveKitRoom(spec, image, rig, DisplacementRenderer("cpu"),
                         LiveKitOptions(timeouts=RoomTimeouts(empty_grace_s=30)), output=SMALL)
        await lk.connect()
        frames = _frame_clock(lk)

        async def say(seconds: float, rate: int = 24000) -> None:
            audio = synth_speech(seconds, rate, seed=1).audio
            n = rate // 10
            for i in range(0, audio.size, n):
                chunk = audio[i : i + n]
                await out.capture_frame(rtc.AudioFrame(chunk.tobytes(), rate, 1, chunk.size))
            out.flush()

        await say(3.0)
        await wait_until(lambda: finished, 20, "playback_finished")
        n = len(frames)  # a duplicate would reach the agent within half a second
        await wait_until(lambda: len(frames) >= n + 12, 10, "half a second of video after the end")
        assert len(started) == 1 and len(finished) == 1
        assert finished[0].interrupted is False and abs(finished[0].playback_position - 3.0) <= 0.04 + 1e-6

        pubs = agent_room.remote_participants[avatar_id].track_publications.values()
        sources = {p.source for p in pubs}
        assert rtc.TrackSource.SOURCE_MICROPHONE in sources and rtc.TrackSource.SOURCE_CAMERA in sources

        n = len(frames)
        task = asyncio.create_task(say(3.0))
        await wait_until(lambda: len(started) == 2, 20, "second playback_started")
        await wait_until(lambda: sum(frames[n:]) >= 25, 20, "a second of the utterance played")  # mid-utterance
        t = time.monotonic()
        out.clear_buffer()
        await wait_until(lambda: len(finished) == 2, 5, "interrupted playback_finished")
        print(f"clear → playback_finished on a real server: {(time.monotonic() - t) * 1000:.0f} ms")
        assert finished[1].interrupted is True and time.monotonic() - t < 1.0
        await task

        await agent_room.disconnect()
        assert await asyncio.wait_for(lk.wait_closed(), 10) == EndReason.AGENT_LEFT
        await lk.close()

    run(main(), timeout=120)


def _frame_clock(lk) -> list[bool]:
    """The session's own frame clock: one entry (speaking or not) per rendered frame, 25 per second of media."""
    frames: list[bool] = []
    lk.media.add_frame_listener(lambda f: frames.append(bool(f.result.speaking)))
    return frames


async def _real_session(server, avatar, room_name: str, *, publish_on_behalf: str | None = "test-agent"):
    spec = WorkerSpec(session_id=f"real-{room_name}", account_id="acct", avatar_id="av", aspect_ratio="4:3",
                      room_platform="livekit", expiration=None, room_url=server.url,
                      room_token=token(server, "ours-avatar-agent", room_name, kind="agent",
                                       attributes={"lk.publish_on_behalf": publish_on_behalf}
                                       if publish_on_behalf else None))
    image, rig = avatar
    lk = LiveKitRoom(spec, image, rig, DisplacementRenderer("cpu"), LiveKitOptions(timeouts=RoomTimeouts(empty_grace_s=30)),
                     output=SMALL)
    await lk.connect()
    return lk


async def _agent(server, room_name: str, identity: str = "test-agent", kind: str = "agent"):
    room = rtc.Room()
    await room.connect(server.url, token(server, identity, room_name, kind=kind))
    out = DataStreamAudioOutput(room, destination_identity="ours-avatar-agent", wait_playback_start=True)
    started, finished = [], []
    out.on("playback_started", started.append)
    out.on("playback_finished", finished.append)
    return room, out, started, finished


async def _say(out, seconds: float, rate: int, seed: int) -> None:
    audio = synth_speech(seconds, rate, seed=seed).audio
    n = rate // 10
    for i in range(0, audio.size, n):
        chunk = audio[i: i + n]
        await out.capture_frame(rtc.AudioFrame(chunk.tobytes(), rate, 1, chunk.size))
    out.flush()


def test_16_24_48_khz_all_play_to_their_length_on_a_real_server(avatar, livekit_server):
    async def main():
        room_name = new_room_name()
        room, out, started, finished = await _agent(livekit_server, room_name)
        lk = await _real_session(livekit_server, avatar, room_name)
        for i, rate in enumerate((16000, 24000, 48000)):
            await _say(out, 1.0, rate, seed=10 + i)
            await wait_until(lambda n=i + 1: len(finished) == n, 20, f"{rate} Hz utterance")
        assert len(started) == 3
        for rate, ev in zip((16000, 24000, 48000), finished):
            assert ev.interrupted is False and abs(ev.playback_position - 1.0) <= 0.04 + 1e-6, (rate, ev)
        await room.disconnect()
        await lk.close()

    run(main(), timeout=120)


def test_streams_and_rpcs_from_non_agent_participants_are_ignored_on_a_real_server(avatar, livekit_server):
    async def main():
        room_name = new_room_name()
        room, out, started, finished = await _agent(livekit_server, room_name)
        lk = await _real_session(livekit_server, avatar, room_name)
        # The intruder writes raw streams (a second DataStreamAudioOutput in this process would take over the
        # agent's playback RPC handlers: livekit-agents keeps them per avatar identity, class-wide).
        intruder = rtc.Room()
        await intruder.connect(livekit_server.url, token(livekit_server, "user-1", room_name))
        await wait_until(lambda: "ours-avatar-agent" in intruder.remote_participants, 10, "avatar visible")
        for topic in ("lk.audio_stream", "lk.transcription"):
            writer = await intruder.local_participant.stream_bytes(
                "speech", topic=topic, destination_identities=["ours-avatar-agent"],
                attributes={"sample_rate": "24000", "num_channels": "1"})
            await writer.write(synth_speech(1.0, 24000, seed=7).audio.tobytes())
            await writer.aclose()
        answer = await intruder.local_participant.perform_rpc(destination_identity="ours-avatar-agent",
                                                              method="lk.clear_buffer", payload="")
        assert answer == "reject"
        frames = _frame_clock(lk)  # the intruder's speech would have started within 2 s of media
        await wait_until(lambda: len(frames) >= 50, 20, "2 s of video after the intruder spoke")
        assert not started and not finished and not lk.media.utterance_active
        await _say(out, 0.6, 16000, seed=8)  # the agent itself is still heard
        await wait_until(lambda: finished, 20, "agent utterance")
        assert len(started) == 1 and finished[0].interrupted is False
        await intruder.disconnect()
        await room.disconnect()
        await lk.close()

    run(main(), timeout=120)


def test_first_agent_participant_drives_when_token_names_no_agent_on_a_real_server(avatar, livekit_server):
    async def main():
        room_name = new_room_name()
        human = rtc.Room()
        await human.connect(livekit_server.url, token(livekit_server, "user-1", room_name))
        room, out, started, finished = await _agent(livekit_server, room_name, "agent-xyz")
        lk = await _real_session(livekit_server, avatar, room_name, publish_on_behalf=None)
        await wait_until(lambda: lk.agent_identity, 10, "agent chosen")
        assert lk.agent_identity == "agent-xyz"
        await _say(out, 0.5, 24000, seed=9)
        await wait_until(lambda: finished, 20, "playback_finished")
        writer = await human.local_participant.stream_bytes(
            "speech", topic="lk.audio_stream", destination_identities=["ours-avatar-agent"],
            attributes={"sample_rate": "24000", "num_channels": "1"})
        await writer.write(synth_speech(0.5, 24000, seed=9).audio.tobytes())
        await writer.aclose()
        frames = _frame_clock(lk)  # the human's speech would have started within 1.5 s of media
        await wait_until(lambda: len(frames) >= 38, 20, "1.5 s of video after the human spoke")
        assert len(started) == 1 and len(finished) == 1 and not lk.media.utterance_active
        for r in (human, room):
            await r.disconnect()
        await lk.close()

    run(main(), timeout=120)

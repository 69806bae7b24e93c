"""The Daily adapter offline: daily-python's real virtual camera and microphone take every rendered
frame and its exact audio slice; speech from the named participant's audio renderer callback; the end
conditions from participant / network events; join failures. Nothing here touches the network (a real
join to an unreachable URL takes ~19 s)."""
from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass

import numpy as np
import pytest

from media.renderer import DisplacementRenderer, OutputOptions
from media.renderer.audio import frame_samples
from media.renderer.speech import synth_speech
from media.rooms.base import WorkerSpec
from media.rooms.daily_room import DailyRoom
from media.rooms.options import DailyOptions, RoomTimeouts
from core.errors import RoomConnectFailed
from core.status import EndReason

from .conftest import run, wait_until

SMALL = OutputOptions(width=160, height=120, fps=25, sample_rate=48000, format="i420")


def _spec(sid: str) -> WorkerSpec:
    return WorkerSpec(session_id=sid, account_id="acct_1", avatar_id="av_1", aspect_ratio="4:3",
                      room_platform="daily", expiration=None, room_url="https://example.daily.co/room",
                      room_token="meeting-token")


def _room(avatar, sid, **kw) -> DailyRoom:
    image, rig = avatar
    kw.setdefault("output", SMALL)
    return DailyRoom(_spec(sid), image, rig, DisplacementRenderer("cpu"), **kw)


@pytest.mark.parametrize("fmt", ["i420", "rgba"])
def test_every_frame_and_its_audio_slice_go_to_the_virtual_devices(avatar, fmt):
    async def main():
        out = OutputOptions(width=160, height=120, fps=25, sample_rate=48000, format=fmt)
        room = _room(avatar, f"daily-media-{fmt}", output=out)
        written = []
        room.on_media_written = lambda f: written.append((f.result.frame_index, f.pixels.nbytes, f.result.audio.size,
                                                          f.result.speaking, f.result.mouth_open))
        gen = await room.open_media()
        assert room.camera.width == 160 and room.camera.height == 120
        assert room.camera.color_format == ("I420" if fmt == "i420" else "RGBA")
        assert room.microphone.sample_rate == 48000 and room.microphone.channels == 1
        await wait_until(lambda: len(written) >= 5, 5, "idle frames written")
        gen.push_pcm(synth_speech(1.0, 24000, seed=21).audio.tobytes(), 24000)  # the WebSocket path
        gen.end_utterance()
        await wait_until(lambda: any(e for e in list(gen.events._queue) if e.kind == "finished"), 5, "finished")
        # every speaking frame is on the devices once an idle frame follows the last of them
        await wait_until(lambda: any(w[3] for w in written) and not written[-1][3], 5, "an idle frame after the speech")
        await room.close()
        frame_bytes = 160 * 120 * 3 // 2 if fmt == "i420" else 160 * 120 * 4
        assert room.write_errors == 0 and room.frames_written == len(written)
        assert all(nb == frame_bytes for _, nb, _, _, _ in written)
        idx = [k for k, *_ in written]
        assert idx == list(range(idx[0], idx[0] + len(idx)))  # every frame, in order, none skipped
        assert all(n == frame_samples(k, 48000, 25) for k, _, n, _, _ in written)  # its exact audio slice
        assert room.audio_samples_written == sum(n for _, _, n, _, _ in written)
        speaking = [w for w in written if w[3]]
        assert len(speaking) == 25 and max(w[4] for w in speaking) > 0.3  # the mouth moved with the speech
        events = [e for e in list(gen.events._queue)]
        assert [e.kind for e in events] == ["started", "finished"]
        assert events[1].interrupted is False and abs(events[1].position - 1.0) <= 0.04 + 1e-6

    run(main())


@dataclass
class FakeAudioData:  # the fields of daily.AudioData the adapter reads
    audio_frames: bytes
    sample_rate: int
    num_channels: int = 1


def test_speech_from_the_named_participant_through_the_audio_renderer(avatar):
    async def main():
        room = _room(avatar, "daily-audio-in", room_options={"audio_participant": "tts-bot"},
                     options=DailyOptions(silence_end_s=0.4))
        gen = await room.open_media()
        room._participant_joined({"id": "p-human", "info": {"userName": "alice"}})
        room._participant_joined({"id": "p-bot", "info": {"userName": "tts-bot"}})
        assert room.audio_participant_id == "p-bot"
        sp = synth_speech(2.0, 16000, seed=22)
        speech = sp.audio
        voiced = sum(b - a for a, b, _ in sp.syllables)
        stream = np.concatenate([np.zeros(3200, np.int16), speech, np.zeros(16000, np.int16)])

        def daily_thread():  # what daily-python does: 20 ms callbacks, real time, from its own thread
            for i in range(0, stream.size, 320):
                room.on_audio_data("p-bot", FakeAudioData(stream[i : i + 320].tobytes(), 16000))
                room.on_audio_data("p-human", FakeAudioData((stream[i : i + 320] // 2).tobytes(), 16000))
                time.sleep(0.02)  # real-time pacing, as daily-python delivers it

        t = threading.Thread(target=daily_thread)
        t.start()
        await asyncio.to_thread(t.join)
        await wait_until(lambda: not gen.utterance_active and not room._gate.active, 3, "last utterance end")
        events = list(gen.events._queue)
        # the speech has word pauses, so the gate may cut it into several utterances: each one started
        # once and finished once, uninterrupted, and together they carried every voiced syllable (plus
        # ≤ 0.1 s pre-roll and the 0.4 s of silence that ends each; never more than the stream)
        kinds = [e.kind for e in events]
        assert kinds and kinds == ["started", "finished"] * (len(kinds) // 2), kinds
        finished = [e for e in events if e.kind == "finished"]
        assert not any(e.interrupted for e in finished)
        total = sum(e.position for e in finished)
        assert voiced <= total <= stream.size / 16000, (voiced, [e.position for e in finished])
        assert room.audio_samples_written > 0 and room.write_errors == 0
        room._participant_left({"id": "p-bot"}, "leftCall")
        assert await asyncio.wait_for(room.wait_closed(), 1) == EndReason.AGENT_LEFT
        await room.close()

    run(main())


def test_room_empty_after_grace_and_connection_lost(avatar):
    async def main():
        room = _room(avatar, "daily-empty", options=DailyOptions(timeouts=RoomTimeouts(empty_grace_s=0.3)))
        await room.open_media()
        room._participant_joined({"id": "p1", "info": {"userName": "alice"}})
        room._participant_left({"id": "p1"}, "leftCall")
        assert room.endings._empty_task is not None  # the grace runs
        await asyncio.sleep(0.1)  # away for a third of the grace
        room._participant_joined({"id": "p1", "info": {"userName": "alice"}})  # back within the grace
        await asyncio.sleep(0.4)  # past the 0.3 s grace: proves the cancelled grace does not end it
        assert not room.endings.closed.is_set()
        t = time.monotonic()
        room._participant_left({"id": "p1"}, "leftCall")
        assert await asyncio.wait_for(room.wait_closed(), 2) == EndReason.ROOM_EMPTY
        assert time.monotonic() - t >= 0.28
        await room.close()

        room = _room(avatar, "daily-lost", options=DailyOptions(timeouts=RoomTimeouts(reconnect_s=0.3)))
        await room.open_media()
        room._participant_joined({"id": "p1", "info": {"userName": "alice"}})
        room._network_status("interrupted")
        assert room.endings._lost_task is not None  # the reconnect timer runs
        await asyncio.sleep(0.1)  # disconnected for a third of the reconnect timeout
        room._network_status("connected")
        await asyncio.sleep(0.4)  # past the 0.3 s timeout: proves the cancelled timer does not end it
        assert not room.endings.closed.is_set()
        room._network_status("interrupted")
        assert await asyncio.wait_for(room.wait_closed(), 2) == EndReason.CONNECTION_LOST
        await room.close()

    run(main())


class FakeCallClient:
    """Stands in for daily.CallClient's join only (a real join needs the network)."""

    def __init__(self, handler, outcome):
        self.handler, self.outcome, self.left, self.released = handler, outcome, False, False

    def set_user_name(self, name):
        self.name = name

    def join(self, url, token, client_settings=None, completion=None):
        self.settings = client_settings
        if self.outcome == "error":
            threading.Timer(0.01, completion, args=(None, "auth-error: invalid meeting token")).start()
        # "hang": never completes

    def participants(self):
        return {}

    def leave(self, completion=None):
        self.left = True
        if completion:
            completion(None)

    def release(self):
        self.released = True

    def send_app_message(self, message, participant_id=None, completion=None):
        pass


@pytest.mark.parametrize("outcome", ["error", "hang"])
def test_join_failure_raises_room_connect_failed_fast(avatar, outcome):
    async def main():
        clients = []
        image, rig = avatar
        renderer = DisplacementRenderer("cpu")
        room = DailyRoom(_spec(f"daily-join-{outcome}"), image, rig, renderer, output=SMALL,
                         options=DailyOptions(timeouts=RoomTimeouts(connect_s=0.5)),
                         client_factory=lambda h: clients.append(FakeCallClient(h, outcome)) or clients[-1])
        t = time.monotonic()
        with pytest.raises(RoomConnectFailed):
            await room.connect()
        assert time.monotonic() - t < 1.5
        c = clients[0]
        cam = c.settings["inputs"]["camera"]["settings"]["deviceId"]
        mic = c.settings["inputs"]["microphone"]["settings"]["deviceId"]
        assert cam == room.camera.name and mic == room.microphone.name  # our virtual devices are the inputs
        assert c.released and renderer.sessions == ()

    run(main())

"""The agent side (livekit-agents' own ``DataStreamAudioOutput``) and recorders of what was published."""
from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field

import numpy as np
from livekit import rtc
from livekit.agents.voice.avatar import DataStreamAudioOutput

from media.renderer import OutputOptions
from media.rooms.base import WorkerSpec

from .fake_livekit import URL, FakeRoom, FakeServer, mint_token

ROOM = "room-1"
AGENT = "agent-1"
AVATAR = "ours-avatar-agent"
SMALL = OutputOptions(width=160, height=120, fps=25, sample_rate=48000, format="i420")


def avatar_spec(session_id: str = "sess-1", *, publish_on_behalf: str | None = AGENT, url: str = URL,
                room: str = ROOM) -> WorkerSpec:
    attrs = {"lk.publish_on_behalf": publish_on_behalf} if publish_on_behalf else None
    return WorkerSpec(session_id=session_id, account_id="acct_1", avatar_id="av_1", aspect_ratio="4:3",
                      room_platform="livekit", expiration=None, room_url=url,
                      room_token=mint_token(AVATAR, room, kind="agent", attributes=attrs))


class Agent:
    """A LiveKit agent that drives the avatar exactly as livekit-agents does (DataStreamAudioOutput)."""

    def __init__(self, server: FakeServer, identity: str = AGENT, *, kind: str = "agent", room: str = ROOM,
                 avatar_identity: str = AVATAR) -> None:
        self.server = server
        self.identity = identity
        self.room = FakeRoom(server)
        self._kind = kind
        self._room_name = room
        self.avatar_identity = avatar_identity
        self.output: DataStreamAudioOutput | None = None
        self.finished: list = []
        self.started: list = []

    async def join(self) -> Agent:
        await self.room.connect(URL, mint_token(self.identity, self._room_name, kind=self._kind))
        self.output = DataStreamAudioOutput(self.room, destination_identity=self.avatar_identity,
                                            wait_playback_start=True)
        self.output.on("playback_finished", self.finished.append)
        self.output.on("playback_started", self.started.append)
        return self

    async def say(self, audio: np.ndarray, sample_rate: int, *, chunk_ms: int = 100, flush: bool = True) -> None:
        """Stream an utterance faster than real time (as TTS does), then close it."""
        n = int(sample_rate * chunk_ms / 1000)
        for i in range(0, len(audio), n):
            chunk = np.ascontiguousarray(audio[i : i + n], dtype=np.int16)
            await self.output.capture_frame(rtc.AudioFrame(chunk.tobytes(), sample_rate, 1, chunk.size))
        if flush:
            self.output.flush()

    async def leave(self) -> None:
        await self.room.disconnect()


@dataclass
class Published:
    at: float
    kind: str  # "video" | "audio"
    frame: object
    info: tuple | None = None  # (frame_index, mouth_open, speaking, utterance_id) of a video frame


@dataclass
class PublishedLog:
    """Everything pushed into the avatar's ``AVSynchronizer`` (i.e. published), in order, with the
    renderer's own record of each video frame (matched by content)."""

    items: list[Published] = field(default_factory=list)
    rendered: dict[bytes, tuple] = field(default_factory=dict)

    @classmethod
    def attach(cls, lk) -> PublishedLog:
        log = cls()
        sync = lk.runner.av_sync
        orig = sync.push

        async def push(frame, timestamp=None):
            if isinstance(frame, rtc.VideoFrame):
                key = hashlib.blake2b(bytes(frame.data), digest_size=16).digest()
                log.items.append(Published(time.monotonic(), "video", frame, log.rendered.get(key)))
            else:
                log.items.append(Published(time.monotonic(), "audio", frame))
            await orig(frame, timestamp)

        sync.push = push

        def on_frame(f):
            r = f.result
            key = hashlib.blake2b(f.pixels.tobytes(), digest_size=16).digest()
            log.rendered[key] = (r.frame_index, r.mouth_open, r.speaking, r.utterance_id)

        lk.media.add_frame_listener(on_frame)
        return log

    def video(self) -> list[Published]:
        return [p for p in self.items if p.kind == "video"]

    def audio(self) -> list[Published]:
        return [p for p in self.items if p.kind == "audio"]


async def started_room(lk, timeout: float = 10.0):
    """Wait until the avatar's runner is up (the agent was found)."""
    from .conftest import wait_until

    await wait_until(lambda: lk.runner is not None and lk._remove_listener is not None, timeout, "avatar runner")
    return lk

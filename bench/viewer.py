"""A viewer in a real LiveKit room, as a frontend is: what a user sees, measured where a user sees it.

It finds the avatar the way frontends do (the agent-kind participant whose ``lk.publish_on_behalf`` names
the agent), subscribes to its camera-source video and microphone-source audio, decodes them, and keeps:
every video frame's arrival time and size, a per-frame mouth measure (mean brightness of the mouth box,
which darkens as the mouth opens), the arrival of audio with sound in it, and the ``session.state``
packets. Full frames are kept only while ``recording`` (they are large).

Used by the real-LiveKit tests and by ``python -m bench.livekit``.
"""
from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field

import numpy as np
from livekit import rtc

PUBLISH_ON_BEHALF = "lk.publish_on_behalf"
STATE_TOPIC = "session.state"
SOUND_RMS = 200.0  # PCM16 RMS above which an audio frame counts as sound (the worker's idle audio is silence)


@dataclass
class VideoSample:
    t: float  # arrival (time.monotonic) of the decoded frame
    width: int
    height: int
    mouth: float | None  # mean brightness of the mouth box (None until the box is known)


@dataclass
class Viewer:
    url: str
    token: str
    agent_identity: str
    room: rtc.Room = field(default_factory=rtc.Room)
    video: list[VideoSample] = field(default_factory=list)
    sound_times: list[float] = field(default_factory=list)  # arrival of audio frames with sound in them
    audio_frames: int = 0
    audio_sample_rate: int | None = None
    states: list[dict] = field(default_factory=list)
    recording: bool = False
    recorded: list[tuple[float, np.ndarray]] = field(default_factory=list)  # (t, RGB) while recording
    mouth_box: tuple[float, float, float, float] | None = None  # (see locate_mouth_box)
    video_source: int | None = None
    audio_source: int | None = None
    last_frame: np.ndarray | None = None
    subscribed_at: dict[str, float] = field(default_factory=dict)  # "video"/"audio" → time.monotonic()
    _tasks: list[asyncio.Task] = field(default_factory=list)
    _reading: set[str] = field(default_factory=set)  # sids of the tracks being read

    async def join(self, timeout: float = 20.0) -> None:
        self.room.on("track_subscribed", self._on_track)
        self.room.on("data_received", self._on_data)
        await asyncio.wait_for(self.room.connect(self.url, self.token), timeout)

    def avatar(self) -> rtc.RemoteParticipant | None:
        """The avatar as frontends find it: an agent publishing on behalf of the agent we talk to."""
        for p in self.room.remote_participants.values():
            if p.kind == rtc.ParticipantKind.PARTICIPANT_KIND_AGENT and \
                    p.attributes.get(PUBLISH_ON_BEHALF) == self.agent_identity:
                return p
        return None

    def follow(self, agent_identity: str) -> None:
        """Watch the avatar of ``agent_identity`` (known only after joining), also if its tracks were
        subscribed already (the avatar publishes as soon as it and the agent are in the room)."""
        self.agent_identity = agent_identity
        for p in self.room.remote_participants.values():
            for pub in p.track_publications.values():
                if pub.track is not None and pub.subscribed:
                    self._on_track(pub.track, pub, p)

    def _on_track(self, track: rtc.Track, pub: rtc.RemoteTrackPublication, participant: rtc.RemoteParticipant) -> None:
        if participant.attributes.get(PUBLISH_ON_BEHALF) != self.agent_identity or track.sid in self._reading:
            return
        self._reading.add(track.sid)
        loop = asyncio.get_running_loop()
        self.subscribed_at.setdefault("video" if track.kind == rtc.TrackKind.KIND_VIDEO else "audio", time.monotonic())
        if track.kind == rtc.TrackKind.KIND_VIDEO:
            self.video_source = pub.source
            self._tasks.append(loop.create_task(self._read_video(track)))
        elif track.kind == rtc.TrackKind.KIND_AUDIO:
            self.audio_source = pub.source
            self._tasks.append(loop.create_task(self._read_audio(track)))

    def _on_data(self, packet: rtc.DataPacket) -> None:
        if packet.topic == STATE_TOPIC:
            try:
                self.states.append(json.loads(packet.data))
            except ValueError:
                pass

    async def _read_video(self, track: rtc.Track) -> None:
        stream = rtc.VideoStream(track, format=rtc.VideoBufferType.RGB24)
        try:
            async for event in stream:
                now = time.monotonic()
                frame = event.frame
                rgb = np.frombuffer(frame.data, dtype=np.uint8).reshape(frame.height, frame.width, 3)
                self.last_frame = rgb
                mouth = None if self.mouth_box is None else mouth_brightness(rgb, self.mouth_box)
                self.video.append(VideoSample(now, frame.width, frame.height, mouth))
                if self.recording:
                    self.recorded.append((now, rgb.copy()))
        finally:
            await stream.aclose()

    async def _read_audio(self, track: rtc.Track) -> None:
        stream = rtc.AudioStream(track, sample_rate=48000, num_channels=1)
        try:
            async for event in stream:
                now = time.monotonic()
                self.audio_frames += 1
                self.audio_sample_rate = event.frame.sample_rate
                pcm = np.frombuffer(event.frame.data, dtype=np.int16)
                if pcm.size and float(np.sqrt(np.mean(pcm.astype(np.float32) ** 2))) > SOUND_RMS:
                    self.sound_times.append(now)
        finally:
            await stream.aclose()

    def locate_mouth(self) -> tuple[float, float, float, float]:
        """Find the mouth once, on the latest frame (the avatar at rest)."""
        if self.last_frame is None:
            raise RuntimeError("no video frame yet")
        box = self.mouth_box = locate_mouth_box(self.last_frame)
        return box

    def mouth_series(self, since: float, until: float | None = None) -> list[tuple[float, float]]:
        return [(s.t, s.mouth) for s in self.video
                if s.mouth is not None and s.t >= since and (until is None or s.t <= until)]

    async def leave(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.room.disconnect()


def locate_mouth_box(rgb: np.ndarray) -> tuple[float, float, float, float]:
    """The mouth box found with the face landmark model on one RGB frame (the avatar at rest), as fractions of
    the frame (x0, y0, x1, y1), so that every size the frame comes in (simulcast layers) maps onto it."""
    from core.rig import inter_ocular_distance
    from pipelines.faces.analyze import analyze_single_face

    _, lm = analyze_single_face(rgb)
    iod = inter_ocular_distance(lm)
    lips = lm[[13, 14, 78, 308]]  # inner lip centre (upper, lower) and corners of the 468-point mesh
    cx, cy = lips[:, 0].mean(), lips[:, 1].mean()
    half_w, half_h = 0.28 * iod, 0.16 * iod
    h, w = rgb.shape[:2]
    return (max(0.0, (cx - half_w) / w), max(0.0, (cy - half_h) / h),
            min(1.0, (cx + half_w) / w), min(1.0, (cy + half_h) / h))


def mouth_brightness(rgb: np.ndarray, box: tuple[float, float, float, float]) -> float:
    """Mean brightness of the (relative) mouth box: it darkens as the mouth opens."""
    fx0, fy0, fx1, fy1 = box
    h, w = rgb.shape[:2]
    x0, y0 = int(fx0 * w), int(fy0 * h)
    x1, y1 = max(x0 + 1, int(fx1 * w)), max(y0 + 1, int(fy1 * h))
    return float(rgb[y0:y1, x0:x1].mean())


def first_mouth_motion(series: list[tuple[float, float]], baseline: list[float], k: float = 6.0,
                       min_drop: float = 4.0) -> float | None:
    """Arrival time of the first frame whose mouth box is clearly darker than at rest (the mouth opened)."""
    if not baseline:
        return None
    mean, std = float(np.mean(baseline)), float(np.std(baseline))
    threshold = mean - max(k * std, min_drop)
    for t, value in series:
        if value < threshold:
            return t
    return None

"""The session worker inside a LiveKit room, speaking the LiveKit Agents avatar protocol.

``LiveKitRoom`` joins with the session's url + token (``livekit.rtc.Room``), and reuses livekit-agents'
worker side unchanged — ``DataStreamAudioReceiver`` (speech byte streams on ``lk.audio_stream``,
``lk.clear_buffer`` RPC, ``lk.playback_started`` / ``lk.playback_finished`` RPCs with retries) and
``AvatarRunner`` (a microphone-source audio track and a camera-source video track through
``AVSynchronizer``) — with the session's media (:class:`media.session.MediaSession`) as its
``VideoGenerator`` (:class:`media.rooms.livekit_generator.LiveKitVideoGenerator`).

Start-up, for the first frame a viewer sees: the renderer session is prepared in a thread while the room
is joined; once joined and the agent is there, the receiver listens and both tracks go out showing a still
of the framed photo (:meth:`AvatarTrackRunner.publish_with_still`), so a viewer negotiates its subscription
during the preparation; the first rendered frame replaces the still. Pictures are captured when pushed
(:class:`CaptureOnPush`): the render loop is the only frame clock.

Who may drive the avatar: the identity in our own participant attribute ``lk.publish_on_behalf`` (the
agent minted our token), else the first agent-kind participant; streams and RPCs from anyone else are
ignored / rejected by the receiver.

How the room ends the session (:meth:`LiveKitRoom.wait_closed`):

- the agent disconnects, or the server removes us (what livekit-agents' ``AvatarSession.aclose`` does
  when the agent's job ends) → ``agent_left``;
- no other participant (egress excluded) for ``timeouts.empty_grace_s`` → ``room_empty`` (also when nobody
  ever joins); the room deleted/closed by the server → ``room_empty``;
- the connection is lost and not regained within ``timeouts.reconnect_s`` (the SDK retries by itself),
  or the server drops us for any other reason → ``connection_lost``;
- the media pipeline fails → ``media_failed`` (with the error as detail).

A watchdog checks the room twice a second as well, because a server restart may leave the SDK's view
without the events above (no ``reconnecting``; the agent gone without ``participant_disconnected``): not
connected → the ``timeouts.reconnect_s`` timer runs; the agent, once seen, absent for
``timeouts.empty_grace_s`` → ``agent_left``; our published tracks gone after a reconnect for as long →
``connection_lost``.

The first join is bounded by ``timeouts.connect_s`` and raises ``core.errors.RoomConnectFailed``.
``session.state`` data packets: ``connected`` after the join, ``speaking`` / ``idle`` on transitions,
``ending`` (with ``in_s``) a minute before a planned end, ``disconnected`` (with the end reason) when leaving.
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from livekit import rtc
from livekit.agents import utils as lk_utils
from livekit.agents.voice.avatar import (
    AvatarOptions,
    AvatarRunner,
    DataStreamAudioReceiver,
)

from media.assets import output_options
from media.renderer import MotionOptions, OutputOptions, Renderer
from media.renderer.colors import to_i420, to_rgba
from media.renderer.framing import fit_face
from media.rooms.base import CONNECTION_LOST, EndedByRoomEndings, RoomEndings, WorkerSpec
from media.rooms.livekit_generator import LiveKitVideoGenerator, to_livekit
from media.rooms.options import LiveKitOptions
from media.session import MediaSession, Picture, RenderedFrame
from core.errors import RoomConnectFailed
from core.logs import redact
from core.rig import FaceRig
from core.status import EndReason

log = logging.getLogger("avatars.rooms.livekit")

PUBLISH_ON_BEHALF = "lk.publish_on_behalf"
STATE_TOPIC = "session.state"

_ROOM_GONE = {rtc.DisconnectReason.ROOM_DELETED, rtc.DisconnectReason.ROOM_CLOSED}
_REMOVED = {rtc.DisconnectReason.PARTICIPANT_REMOVED}


def state_packet(state: str, reason: str = "", **extra: Any) -> bytes:
    """The ``session.state`` payload: ``{"state": ..., "reason": ...}`` (``ending`` adds ``in_s``)."""
    return json.dumps({"state": state, "reason": reason, **extra}).encode()


class PictureClock:
    """When each published picture really went out, and the A/V offset of every speech frame.

    The stock ``AVSynchronizer`` holds a picture in its queue until its own frame clock's next slot, but
    starts a frame's audio as soon as it is pushed, so a picture can trail its sound by up to a frame plus
    a full queue (``CaptureOnPush`` captures pictures when pushed; the gate still orders a frame's audio
    after its picture, whichever synchronizer runs). The clock watches the synchronizer's video source (a private attribute of
    ``AVSynchronizer``; without it the gate and the measurement are no-ops) and the media session's audio
    gate waits until a frame's picture is captured before its audio is yielded: the sound then starts
    with its picture (plus whatever audio is still queued ahead of it, never more than the audio
    queue).

    Offset of speech frame n, in ms: ``t_video − t_audio`` where ``t_video`` is the capture of its picture
    and ``t_audio`` when its audio starts playing out (push time + audio still queued ahead, from the
    synchronizer's own ``last_audio_time``). Positive: sound before picture (tolerance +40/−100 ms).
    The last ``history`` samples are kept.
    """

    def __init__(self, av_sync: rtc.AVSynchronizer, fps: float, *, history: int = 1500) -> None:
        self.av_sync = av_sync
        self.fps = float(fps)
        self.samples_ms: deque[float] = deque(maxlen=history)
        self._pushed = 0  # pictures pushed
        self._captured = -1  # index of the last picture captured
        self._frame_index: dict[int, int] = {}
        self._t_video: dict[int, float] = {}
        self._t_audio: dict[int, float] = {}
        self._last_end: float | None = None
        self._captured_event = asyncio.Event()
        self._orig_push = av_sync.push
        av_sync.push = self._push  # type: ignore[method-assign]
        self._video_source: Any = getattr(av_sync, "_video_source", None)  # the SDK's, found by name
        self._orig_capture: Any = None
        if self._video_source is not None and hasattr(self._video_source, "capture_frame"):
            self._orig_capture = self._video_source.capture_frame
            self._video_source.capture_frame = self._capture

    @property
    def active(self) -> bool:
        return self._orig_capture is not None

    async def _push(self, frame: rtc.VideoFrame | rtc.AudioFrame, timestamp: float | None = None) -> None:
        if isinstance(frame, rtc.AudioFrame):
            n = self._pushed - 1  # the picture pushed just before it
            queued = 0.0
            if self._last_end is not None:
                queued = max(0.0, self._last_end - self.av_sync.last_audio_time)
            self._t_audio[n] = time.monotonic() + queued
            self._last_end = (n + 1) / self.fps
            self._match(n)
            await self._orig_push(frame, self._last_end)
        else:
            n = self._pushed
            self._pushed += 1
            if self.active:
                self._frame_index[id(frame)] = n
            await self._orig_push(frame, n / self.fps)

    def _capture(self, frame: rtc.VideoFrame, *args: Any, **kw: Any) -> None:
        self._orig_capture(frame, *args, **kw)
        n = self._frame_index.pop(id(frame), None)
        if n is not None:
            self._captured = max(self._captured, n)
            self._t_video[n] = time.monotonic()
            self._match(n)
            self._captured_event.set()
        if len(self._frame_index) > 64:  # pictures dropped by a clear_queue() never come back
            for k in list(self._frame_index)[:-8]:
                del self._frame_index[k]

    def _match(self, n: int) -> None:
        if n in self._t_video and n in self._t_audio:
            self.samples_ms.append((self._t_video.pop(n) - self._t_audio.pop(n)) * 1000.0)
        for d in (self._t_video, self._t_audio):  # bounded: forget unmatched old entries
            if len(d) > 256:
                for k in sorted(d)[:128]:
                    del d[k]

    async def wait_picture_out(self, max_wait_s: float | None = None) -> None:
        """Return once the last pushed picture has been captured (at most ``max_wait_s``, default two
        frames: a picture dropped by a clear is never captured)."""
        if not self.active:
            return
        target = self._pushed - 1
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (2.0 / self.fps if max_wait_s is None else max_wait_s)
        while self._captured < target:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            self._captured_event.clear()
            try:
                await asyncio.wait_for(self._captured_event.wait(), remaining)
            except TimeoutError:
                return

    def summary(self) -> dict[str, float]:
        s = np.asarray(self.samples_ms)
        if not s.size:
            return {"n": 0}
        return {"n": int(s.size), "mean_ms": float(s.mean()), "min_ms": float(s.min()), "max_ms": float(s.max()),
                "p50_ms": float(np.median(s))}

    def close(self) -> None:
        self.av_sync.push = self._orig_push  # type: ignore[method-assign]
        if self._orig_capture is not None:
            self._video_source.capture_frame = self._orig_capture


class CaptureOnPush(rtc.AVSynchronizer):
    """``AVSynchronizer`` that captures a picture as soon as it is pushed; audio goes through the audio
    source's queue as before.

    The render loop already paces the pictures (``media.session.RenderLoop``, drift-free deadlines). The
    stock synchronizer paces them a second time with its own frame clock behind a queue; two clocks of the
    same rate never drain what sits between them, so after the start-up (frames rendered while the tracks
    were negotiated) the AV queue and the synchronizer's stayed full: a speech frame reached the encoder
    about five frames (200 ms) after it was rendered. With one clock a picture waits for nothing but its
    predecessor's audio (at most the audio queue, ``av_queue_ms``). After a late render tick the render
    loop catches up with pictures back to back, which the encoder's frame-rate limit drops (a viewer got
    98.8 % of the frames): two captures are at least ``MIN_GAP`` of a frame interval apart, a delay that
    drains by a quarter frame per frame."""

    MIN_GAP = 0.75
    _next_capture = 0.0

    async def push(self, frame: rtc.VideoFrame | rtc.AudioFrame, timestamp: float | None = None) -> None:
        if isinstance(frame, rtc.VideoFrame):
            wait = self._next_capture - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            self._next_capture = time.monotonic() + self.MIN_GAP / self._video_fps
            self._video_source.capture_frame(frame)
            if timestamp is not None:
                self._last_video_time = timestamp
            return
        await super().push(frame, timestamp)


class EarlyStartReceiver(DataStreamAudioReceiver):
    """livekit-agents' receiver, started before the runner (``LiveKitRoom._go_live``): the agent's speech is
    received (and buffered until the runner reads it) from the moment the avatar can be seen. ``start``
    runs once; the runner's own call then returns at once."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._starting: asyncio.Future[None] | None = None

    async def start(self) -> None:
        if self._starting is None:
            self._starting = asyncio.ensure_future(super().start())
        await asyncio.shield(self._starting)

    async def aclose(self) -> None:
        if self._starting is not None and not self._starting.done():  # still waiting for the agent
            self._starting.cancel()
        await super().aclose()


class AvatarTrackRunner(AvatarRunner):
    """livekit-agents' ``AvatarRunner`` publishing the avatar's video at the session's size and rate.

    With the SDK's defaults the camera is simulcast (every frame encoded two or three times; the SFU
    switches a viewer between layers, 480x360 ↔ 640x480 seen at the viewer) and encoded with the preset
    for its size, which caps 512x512 and 640x480 at 20 fps: a viewer got 20.0 of 25 frames a second,
    measured with a bare 25 fps source as well. An avatar has one viewer-facing size and a CPU budget
    per session, so: one layer, the session's frame rate, a bitrate for a talking head of that size,
    and under CPU pressure the encoder keeps the frame rate (lip-sync) before the resolution.
    Audio and video are published together, right after the join, with a still of the photo until the
    first rendered frame (:meth:`publish_with_still`); rendered frames flow once the audio is subscribed."""

    BITS_PER_PIXEL = 0.08  # per frame: a mostly still head and shoulders compresses well
    MIN_BITRATE = 300_000
    #: LiveKit's native audio capture can stall under CPU starvation, around a clear (seen: the video
    #: stopped ~10 s after lk.clear_buffer in 1 of 3-4 runs at load 30; livekit/rust-sdks#1289 bounds the
    #: same wait natively). A capture normally waits at most for the audio queue (av_queue_ms) to drain.
    AUDIO_PUSH_TIMEOUT_S = 0.5

    _video_gen: LiveKitVideoGenerator  # attach() sets it before start()

    def __init__(self, *args: Any, mark: Callable[[str], None] = lambda _: None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        paced = self._av_sync  # the stock one (its capture task is stopped below)
        self._av_sync = CaptureOnPush(audio_source=self._audio_source, video_source=self._video_source,
                                      video_fps=self._options.video_fps, video_queue_size_ms=self._queue_size_ms)
        self._tasks.add(stop := asyncio.ensure_future(paced.aclose()))
        stop.add_done_callback(self._tasks.discard)
        self._mark = mark  # startup milestones (LiveKitRoom.startup_ms)
        self._still: asyncio.Task[None] | None = None  # shows the photo until the first rendered frame
        self.audio_push_timeouts = 0
        # the SDK's aclose reads _read_audio_atask, which only start() sets (its __init__ names it
        # _read_audio_task): a runner built for the early publish may be closed before it started
        self._read_audio_atask: asyncio.Task[None] | None = None  # type: ignore[assignment]  # (see above)
        self._push_unguarded = self._av_sync.push
        self._av_sync.push = self._push_guarded  # type: ignore[method-assign]

    async def _push_guarded(self, frame: rtc.VideoFrame | rtc.AudioFrame, timestamp: float | None = None) -> None:
        """A speech frame yielded before a clear and still being captured when the clear came: the runner
        has already reset its playback position for the next utterance, and after this push would count
        the frame as that utterance's start (a stray ``lk.playback_started``, the next one's missing, its
        position a frame off). Offset it so the runner's own ``+= duration`` lands back on zero."""
        epoch = self._video_gen.epoch
        if isinstance(frame, rtc.VideoFrame):
            if self._still is not None:  # (cancelled before it can capture once more)
                self._still.cancel()
                self._still = None
            self._mark("first_frame_pushed")
            await self._push_unguarded(frame, timestamp)
        else:
            try:  # bounded: the pictures wait behind this push
                await asyncio.wait_for(self._push_unguarded(frame, timestamp), self.AUDIO_PUSH_TIMEOUT_S)
            except asyncio.TimeoutError:
                self.audio_push_timeouts += 1
                if self.audio_push_timeouts == 1:
                    log.warning("LiveKit's audio capture stalled; speech frames are no longer awaited past %.1f s",
                                self.AUDIO_PUSH_TIMEOUT_S)
        if isinstance(frame, rtc.AudioFrame) and self._video_gen.epoch != epoch:
            self._playback_position -= frame.duration

    @property
    def published(self) -> bool:
        """The avatar's tracks were published (they go out once the audio is subscribed)."""
        return self._video_publication is not None

    def video_publish_options(self) -> rtc.TrackPublishOptions:
        o = self._options
        bitrate = max(self.MIN_BITRATE, int(o.video_width * o.video_height * o.video_fps * self.BITS_PER_PIXEL))
        return rtc.TrackPublishOptions(
            source=rtc.TrackSource.SOURCE_CAMERA, simulcast=False,
            video_encoding=rtc.VideoEncoding(max_framerate=o.video_fps, max_bitrate=bitrate),
            # (the SDK's stub types this field as the protobuf enum's ValueType, not the enum it exports)
            degradation_preference=rtc.DegradationPreference.MAINTAIN_FRAMERATE)  # type: ignore[arg-type]

    def attach(self, video_gen: LiveKitVideoGenerator) -> None:
        """The session's frames, once its renderer session is prepared (before start)."""
        self._video_gen = video_gen

    async def publish_with_still(self, still: rtc.VideoFrame) -> None:
        """Publish both tracks now, showing ``still`` (the framed photo) until the first rendered frame.

        Called right after the join: a viewer negotiates its subscription while the renderer session is
        prepared, and the first frame it decodes is the avatar at rest instead of one that waits for the
        preparation. The still is captured before the tracks go out and repeated at the frame rate (an
        encoder answers a new viewer's keyframe request only with a new frame): a video source that has
        captured nothing sends black, which viewers behind Pipecat's and livekit-agents' transports kept
        showing when the video was published early without it. Rendered frames still flow only once the
        audio is subscribed (``_publish_track``), so a viewer never misses the start of the sound."""
        if self._still is None and self._video_publication is None:
            self._video_source.capture_frame(still)
            self._still = asyncio.create_task(self._show_still(still), name="avatar-still")
            self._tasks.add(self._still)  # (cancelled by aclose with the runner's other tasks)
            self._still.add_done_callback(self._tasks.discard)
        await self._publish_track()

    async def _show_still(self, still: rtc.VideoFrame) -> None:
        interval = 1.0 / self._options.video_fps
        while True:
            await asyncio.sleep(interval)
            self._video_source.capture_frame(still)

    async def _publish_track(self) -> None:
        async with self._lock:
            if not self._room.isconnected():
                await self._room_connected_fut
            if self._video_publication is not None:
                return
            # both at once (one signalling round trip less before the first frame); frames still start
            # only once the audio is subscribed, so a viewer never misses the start of the sound
            lp = self._room.local_participant
            audio_track = rtc.LocalAudioTrack.create_audio_track("avatar_audio", self._audio_source)
            video_track = rtc.LocalVideoTrack.create_video_track("avatar_video", self._video_source)
            audio_publication, video_publication = await asyncio.gather(
                lp.publish_track(audio_track, rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)),
                lp.publish_track(video_track, self.video_publish_options()))
            self._audio_publication = audio_publication
            self._mark("published")
            await audio_publication.wait_for_subscription()
            self._mark("audio_subscribed")
            self._video_publication = video_publication


class LiveKitRoom(EndedByRoomEndings):
    """``RoomConnection`` for LiveKit (see the module docstring).

    ``avatar_image``/``rig``: the aligned RGB image and its face rig; ``renderer``: the process's
    renderer (sessions of one renderer are stepped together). ``options``: frame rate, sample rate,
    media bounds and room timeouts (``media.rooms.factory.adapter_options`` builds them from
    ``Settings``). ``room_factory``: builds the ``rtc.Room``-compatible object (tests pass a fake).
    ``output``: frame size/rate/format (default: the spec's aspect ratio and ``video`` at the options'
    frame rate and sample rate, I420).
    """

    RECEIVE_FRAME_MS = 20

    def __init__(
        self,
        spec: WorkerSpec,
        avatar_image: np.ndarray,
        rig: FaceRig,
        renderer: Renderer,
        options: LiveKitOptions | None = None,
        *,
        room_factory: Callable[[], Any] | None = None,
        output: OutputOptions | None = None,
        motion: MotionOptions | None = None,
    ) -> None:
        self.spec = spec
        self._image = avatar_image
        self._rig = rig
        self._renderer = renderer
        self.options = o = options or LiveKitOptions()
        self._room_factory = room_factory or rtc.Room
        self.output = output or output_options(spec, fps=o.fps, sample_rate=o.sample_rate, format="i420")
        self._motion = motion

        self.room: Any = None
        self.media: MediaSession | None = None
        self.runner: AvatarTrackRunner | None = None
        self.receiver: DataStreamAudioReceiver | None = None
        self.picture_clock: PictureClock | None = None  # A/V offset per speech frame: .summary()
        self.agent_identity: str | None = None
        self.state: str | None = None
        self.connected_at: float | None = None
        self._connect_started: float | None = None
        self.startup_ms: dict[str, float] = {}  # first time each start-up milestone was reached, from connect()

        self.endings = RoomEndings(spec.session_id, empty_grace_s=o.timeouts.empty_grace_s,
                                   reconnect_timeout_s=o.timeouts.reconnect_s)
        self._main_task: asyncio.Task | None = None
        self._tasks: set[asyncio.Task] = set()
        self._state_lock = asyncio.Lock()
        self._remove_listener: Callable[[], None] | None = None
        self._agent_seen = False
        self._agent_missing_since: float | None = None
        self._tracks_missing_since: float | None = None

    # ------------------------------------------------------------------ RoomConnection
    async def connect(self) -> None:
        if not self.spec.room_url or not self.spec.room_token:
            raise RoomConnectFailed("A LiveKit room needs a url and a token")
        self._connect_started = time.monotonic()
        room = self._room_factory()
        self.room = room
        self._install_handlers(room)
        prepare = asyncio.ensure_future(asyncio.to_thread(
            self._renderer.open_session, self._image, self._rig, self.output, motion=self._motion,
            session_id=self.spec.session_id))
        prepare.add_done_callback(lambda _: self._mark("prepared"))
        timeout = self.options.timeouts.connect_s
        # (single_peer_connection=True measured: first frame p99 680 vs 1423 ms, but the agent's speech reached
        # the mouth ~120 ms later, 5 sessions each, loaded machine; not used)
        options = rtc.RoomOptions(auto_subscribe=False, connect_timeout=min(timeout, 5.0))
        try:
            await asyncio.wait_for(room.connect(self.spec.room_url, self.spec.room_token, options), timeout=timeout)
        except BaseException as exc:
            await self._abandon_join(room, prepare)
            if isinstance(exc, asyncio.CancelledError):
                raise
            what = "timed out" if isinstance(exc, asyncio.TimeoutError) else redact(f"{type(exc).__name__}: {exc}")
            log.warning("LiveKit join failed: %s", what, extra={"session_id": self.spec.session_id})
            # from None: the cause quotes the token (its text is in the message, redacted)
            raise RoomConnectFailed(f"Could not join the LiveKit room ({what})",
                                    suggestion="Check the room url and that the token is valid and unexpired",
                                    ) from None
        self._mark("joined")
        self._build_runner(room)
        assert self.runner is not None  # (just built)
        self._spawn(self._go_live(self._still_frame()))
        try:
            session = await prepare
        except BaseException:
            await self._disconnect_quietly()
            raise
        self.connected_at = time.monotonic()
        self.media = MediaSession(self._renderer, session, self.options.limits)
        self._spawn(self._send_state("connected"))
        self._check_empty()
        self._main_task = asyncio.create_task(self._run_avatar(), name=f"livekit-avatar-{self.spec.session_id}")
        self._spawn(self._watchdog())
        log.info("joined LiveKit room", extra={"session_id": self.spec.session_id})

    async def close(self, reason: str | EndReason | None = None) -> None:
        """Leave the room (idempotent): ``session.state`` disconnected, stop the media, disconnect."""
        if not await self.endings.begin_close():
            return
        reason_text = self.endings.describe(reason)
        if self._remove_listener is not None:
            self._remove_listener()
        try:
            if self.room is not None and self.room.isconnected():
                await asyncio.wait_for(self._send_state("disconnected", reason_text), timeout=1.0)
        except Exception:
            pass
        if self.picture_clock is not None:
            self.picture_clock.close()
        if self.runner is not None:
            try:
                await asyncio.wait_for(self.runner.aclose(), timeout=2.0)
            except Exception:
                log.warning("avatar runner did not close cleanly", exc_info=True)
        elif self.receiver is not None:
            await self.receiver.aclose()
        if self._main_task is not None:
            self._main_task.cancel()
            await asyncio.gather(self._main_task, return_exceptions=True)
        if self.media is not None:
            await self.media.aclose()
        for t in list(self._tasks):
            t.cancel()
        await self._disconnect_quietly()
        self.endings.closed_with(reason)

    # ------------------------------------------------------------------ avatar protocol
    async def _run_avatar(self) -> None:
        try:
            identity = await self._resolve_agent()
            self._mark("agent_found")
            media, runner = self.media, self.runner
            assert media is not None and runner is not None  # (made by connect, before this task)
            runner.attach(LiveKitVideoGenerator(media))
            self.picture_clock = PictureClock(runner.av_sync, self.output.fps)
            media.av_audio_gate = self.picture_clock.wait_picture_out
            await runner.start()
            self._remove_listener = media.add_frame_listener(self._on_frame)
            log.info("avatar running", extra={"session_id": self.spec.session_id, "agent": identity})
            await runner.wait_for_complete()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if not self.endings.closing:
                log.exception("avatar media failed", extra={"session_id": self.spec.session_id})
                self._finish(EndReason.MEDIA_FAILED, redact(f"media failed: {type(exc).__name__}: {exc}")[:300])

    async def _go_live(self, still: rtc.VideoFrame) -> None:
        """Once the agent is in the room (vendors' plugins: already), listen to it and publish the tracks with
        the still, while the renderer session is prepared. Listening comes first: an agent may start talking
        as soon as it sees the avatar, and a byte stream that arrives before its handler is registered is
        dropped by the SDK (the proxy flow's caller lost its first utterance so)."""
        assert self.receiver is not None and self.runner is not None  # (built at the join)
        await self._resolve_agent()
        self._mark("agent_found")
        await self.receiver.start()
        await self.runner.publish_with_still(still)

    def _still_frame(self) -> rtc.VideoFrame:
        """The photo framed as the renderer frames it (``fit_face``, a resize: milliseconds), in the
        output's size and format: what the first rendered frame shows, less the idle motion."""
        o = self.output
        framed = fit_face(self._image, self._rig, o.width, o.height).image
        rgb = torch.from_numpy(framed).permute(2, 0, 1)[None].float()
        pixels = (to_rgba(rgb) if o.format == "rgba" else to_i420(rgb))[0].numpy()  # the renderer's colours
        frame = to_livekit(Picture(o.width, o.height, o.format, pixels.tobytes()))
        assert isinstance(frame, rtc.VideoFrame)  # (a Picture becomes one)
        return frame

    def _build_runner(self, room: Any) -> None:
        """The runner, built as soon as the room is joined; ``connect`` publishes its tracks with the still
        right away (``AvatarTrackRunner.publish_with_still``)."""
        # the agent named by the token (vendors' plugins), else the first agent participant, as _resolve_agent
        attrs = dict(getattr(room.local_participant, "attributes", None) or {})
        # frames of 20 ms (the SDK's default is 100 ms): a TTS stream's first word is not held back until
        # 100 ms of it have arrived; the renderer starts an utterance with one frame's audio (40 ms at 25 fps)
        self.receiver = EarlyStartReceiver(room, sender_identity=attrs.get(PUBLISH_ON_BEHALF),
                                           frame_size_ms=self.RECEIVE_FRAME_MS)
        self.receiver.on("clear_buffer", self._on_clear_buffer)  # before the runner's own handler
        o = self.output
        # the AVSynchronizer's queue depth (options.av_queue_ms; AvatarRunner's default is 100 ms): after a
        # stall the audio queue stays full while the pictures catch up, so it bounds how far sound can
        # trail the picture
        self.runner = AvatarTrackRunner(
            room, audio_recv=self.receiver, video_gen=None,  # attached once prepared
            options=AvatarOptions(video_width=o.width, video_height=o.height, video_fps=o.fps,
                                  audio_sample_rate=o.sample_rate, audio_channels=1),
            _queue_size_ms=self.options.av_queue_ms, mark=self._mark,
        )

    async def _resolve_agent(self) -> str:
        room = self.room
        identity = room.local_participant.attributes.get(PUBLISH_ON_BEHALF)
        if identity:
            self.agent_identity = identity
            await lk_utils.wait_for_participant(room=room, identity=identity)
        else:
            p = await lk_utils.wait_for_participant(room=room, kind=rtc.ParticipantKind.PARTICIPANT_KIND_AGENT)
            self.agent_identity = p.identity
        return self.agent_identity

    def _mark(self, milestone: str) -> None:
        if self._connect_started is not None and milestone not in self.startup_ms:
            self.startup_ms[milestone] = round((time.monotonic() - self._connect_started) * 1000, 1)
            if milestone == "first_frame_pushed":
                log.info("start-up milestones (ms): %s", self.startup_ms, extra={"session_id": self.spec.session_id})

    def _on_clear_buffer(self) -> None:
        # act now, before the runner's handler task runs: no stale speech frame may be yielded in
        # between, and the ≤100 ms of audio already queued in the audio source is dropped
        if self.media is not None:
            self.media.interrupt()
        if self.runner is not None:
            self._spawn(self.runner.av_sync.clear_queue())

    def _on_frame(self, frame: RenderedFrame) -> None:
        state = "speaking" if self.media is not None and self.media.utterance_active else "idle"
        if state != self.state:
            self.state = state
            self._spawn(self._send_state(state))

    async def send_state(self, state: str, reason: str = "", **extra: Any) -> None:
        """A ``session.state`` packet to the room (the worker sends ``ending`` through this)."""
        await self._send_state(state, reason, **extra)

    async def _send_state(self, state: str, reason: str = "", **extra: Any) -> None:
        async with self._state_lock:
            if self.room is None or not self.room.isconnected():
                return
            try:
                await self.room.local_participant.publish_data(state_packet(state, reason, **extra), reliable=True,
                                                               topic=STATE_TOPIC)
            except Exception as exc:
                log.debug("session.state not sent: %s", exc)

    # ------------------------------------------------------------------ room events → end reasons
    def _install_handlers(self, room: Any) -> None:
        room.on("participant_connected", self._on_participant_connected)
        room.on("participant_disconnected", self._on_participant_disconnected)
        room.on("reconnecting", self._on_reconnecting)
        room.on("reconnected", self._on_reconnected)
        room.on("disconnected", self._on_disconnected)

    def _others(self) -> list[Any]:
        return [p for p in self.room.remote_participants.values()
                if p.kind != rtc.ParticipantKind.PARTICIPANT_KIND_EGRESS]

    def _on_participant_connected(self, p: Any) -> None:
        self._check_empty()

    def _on_participant_disconnected(self, p: Any) -> None:
        if self.agent_identity is not None and p.identity == self.agent_identity:
            self._finish(EndReason.AGENT_LEFT, "agent_left")
            return
        self._check_empty()

    def _check_empty(self) -> None:
        if self.endings.closing or self.room is None or not self.room.isconnected():
            return
        self.endings.check_empty(not self._others(), lambda: not self._others(), asyncio.get_running_loop())

    def _on_reconnecting(self, *args: Any) -> None:
        log.warning("LiveKit connection lost, reconnecting", extra={"session_id": self.spec.session_id})
        self.endings.connection_lost(asyncio.get_running_loop())

    def _on_reconnected(self, *args: Any) -> None:
        log.info("LiveKit connection regained", extra={"session_id": self.spec.session_id})
        self.endings.connection_regained()
        self._check_empty()

    def _on_disconnected(self, reason: Any = None) -> None:
        if self.endings.closing:
            return
        if reason in _REMOVED:
            self._finish(EndReason.AGENT_LEFT, "removed")
        elif reason in _ROOM_GONE:
            self._finish(EndReason.ROOM_EMPTY, "room_closed")
        else:
            self._finish(CONNECTION_LOST, "connection_lost")

    def _finish(self, reason: EndReason, detail: str = "") -> None:
        self.endings.finish(reason, detail)

    async def _watchdog(self, interval_s: float = 0.5) -> None:
        while not self.endings.closing and not self.endings.closed.is_set():
            await asyncio.sleep(interval_s)
            self.check_health(time.monotonic())

    def check_health(self, now: float) -> None:
        """One watchdog pass (see the module docstring); ``now`` is ``time.monotonic()``."""
        if self.endings.closing or self.room is None:
            return
        if not self.room.isconnected():
            self.endings.connection_lost(asyncio.get_running_loop())  # no-op while its timer runs
            return
        grace = self.options.timeouts.empty_grace_s
        agent = self.agent_identity
        if agent is not None:
            if agent in self.room.remote_participants:
                self._agent_seen, self._agent_missing_since = True, None
            elif self._agent_seen:
                self._agent_missing_since = self._agent_missing_since or now
                if now - self._agent_missing_since >= grace:
                    self._finish(EndReason.AGENT_LEFT, "agent_left")
                    return
        published = self.runner is not None and self.runner.published
        if published and not self.room.local_participant.track_publications:
            self._tracks_missing_since = self._tracks_missing_since or now
            if now - self._tracks_missing_since >= grace:
                self._finish(CONNECTION_LOST, "tracks lost after a reconnect")
        else:
            self._tracks_missing_since = None

    # ------------------------------------------------------------------ helpers
    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _abandon_join(self, room: Any, prepare: asyncio.Future) -> None:
        """A failed or timed-out first join: release the render session, and make sure a join that
        completes late in the SDK does not leave a ghost participant behind."""
        def late_join(state: Any) -> None:
            if room.isconnected():
                asyncio.ensure_future(room.disconnect())

        try:
            room.on("connection_state_changed", late_join)
        except Exception:
            pass
        try:
            session = await prepare
            self._renderer.close_session(session)
        except Exception:
            pass
        await self._disconnect_quietly()

    async def _disconnect_quietly(self) -> None:
        if self.room is None:
            return
        try:
            if self.room.isconnected():
                await asyncio.wait_for(self.room.disconnect(), timeout=3.0)
        except Exception:
            log.debug("disconnect failed", exc_info=True)

    def metrics(self) -> dict[str, Any]:
        out: dict[str, Any] = {"state": self.state, "agent_identity": self.agent_identity}
        if self.media is not None:
            out.update(self.media.stats())
        if self.picture_clock is not None:
            out["av_offset"] = self.picture_clock.summary()
        if self.startup_ms:
            out["startup_ms"] = dict(self.startup_ms)
        if self.runner is not None and self.runner.audio_push_timeouts:
            out["audio_push_timeouts"] = self.runner.audio_push_timeouts
        return out

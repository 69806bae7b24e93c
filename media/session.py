"""One render loop per renderer, one :class:`MediaSession` per session, any number of sinks.

The media session turns a renderer session into media for whoever is attached, and imports no
provider SDK (no LiveKit, no Daily):

- **speech in**: :meth:`push_pcm` (refused beyond the buffer bound) or :meth:`push_pcm_waiting` (waits
  for room), :meth:`end_utterance`, :meth:`interrupt`;
- **playback events**: the :attr:`events` queue of :class:`PlaybackEvent`;
- **frames out**: :meth:`frames` (a subscription of RGB/RGBA numpy frames, e.g. for MJPEG),
  :meth:`add_frame_listener` (a synchronous hook called with every :class:`RenderedFrame`: pixels + the
  exact audio slice; Daily writes its virtual devices from it), and :meth:`av_stream` (the bounded AV
  queue: each tick's :class:`Picture`, its :class:`SpeechAudio` while speaking and an
  :class:`UtteranceEnd` after an utterance's last frame). The LiveKit adapter
  (``media.rooms.livekit_generator``) turns the AV stream into livekit-agents' ``VideoGenerator`` items.

Everything is driven by one :class:`RenderLoop` per renderer: deadlines ``t0 + k/fps`` (``FramePacer``),
``renderer.step()`` and the device→host copy in a dedicated thread (the event loop never blocks on the
renderer), then each session's frame is handed to its media session on the event loop thread. A frame is
rendered every tick whether or not speech is queued (idle motion between utterances, a silent frame when
speech arrives late), so the video never stops. A render loop that gives up fails every attached
session: :meth:`MediaSession.wait_failed` returns why.

Bounded everywhere (:class:`MediaLimits`): the AV queue holds at most ``av_queue_frames`` ticks; while it
is full the render loop waits (backpressure: the session does not advance, so its speech waits instead of
being lost) for at most ``av_stall_limit_s``, after which the oldest ticks are dropped and counted
(utterance ends are never dropped). Frame subscriptions keep the newest ``maxsize`` frames, the event
queue drops its oldest event when nobody reads it, and speech input is refused (:class:`AudioBufferFull`)
or awaited (:meth:`wait_for_space`, :meth:`push_pcm_waiting`) beyond ``max_buffered_s`` seconds of
unplayed audio.

Threading: call the media session from the event loop thread that started it (the renderer session's own
``push_audio``/``clear`` are thread-safe, the media session's queues are not).
"""
from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar, cast

import numpy as np

from core.settings import setting_default
from media.renderer import FramePacer, FrameResult, Renderer, RenderSession
from media.renderer.colors import i420_to_rgb

log = logging.getLogger("avatars.media")

T = TypeVar("T")


class AudioBufferFull(RuntimeError):
    """More than ``max_buffered_s`` seconds of speech are waiting to be played; slow the sender down."""


@dataclass(frozen=True)
class PlaybackEvent:
    """``started``: the utterance's first frame was rendered and handed to the sinks. ``finished``: its
    last frame was (``interrupted=False``) or it was dropped by an interrupt (``interrupted=True``).
    ``position``: seconds of its audio played. ``frame_index``: the session frame that carried it
    (``None`` for interrupts)."""

    kind: Literal["started", "finished"]
    utterance_id: int
    position: float = 0.0
    interrupted: bool = False
    frame_index: int | None = None
    at: float = field(default_factory=time.monotonic)

    def as_message(self) -> dict[str, Any]:
        """The session WebSocket's server message (``playback.started`` / ``playback.finished``)."""
        if self.kind == "started":
            return {"type": "playback.started"}
        return {"type": "playback.finished", "playback_position": round(self.position, 3),
                "interrupted": self.interrupted}


@dataclass
class RenderedFrame:
    """One session's frame as delivered to the sinks. ``pixels`` is a host copy of ``result.frame``:
    (H, W, 4) RGBA or flat I420 planes, per ``result.format``; ``result.audio`` is this frame's exact
    audio slice (int16 mono at ``result.sample_rate``)."""

    result: FrameResult
    pixels: np.ndarray
    delivered_at: float
    _rgb: np.ndarray | None = field(default=None, repr=False)

    @property
    def width(self) -> int:
        return self.result.width

    @property
    def height(self) -> int:
        return self.result.height

    def rgb(self) -> np.ndarray:
        """(H, W, 3) uint8 RGB (converted once, on first use)."""
        if self._rgb is None:
            if self.result.format == "rgba":
                self._rgb = np.ascontiguousarray(self.pixels[..., :3])
            else:
                self._rgb = _i420_to_rgb(self.pixels, self.width, self.height)
        return self._rgb

    def rgba(self) -> np.ndarray:
        if self.result.format == "rgba":
            return self.pixels
        rgb = self.rgb()
        return np.concatenate([rgb, np.full(rgb.shape[:2] + (1,), 255, np.uint8)], axis=-1)


def _i420_to_rgb(planes: np.ndarray, width: int, height: int) -> np.ndarray:
    try:
        import cv2

        return cv2.cvtColor(planes.reshape(height * 3 // 2, width), cv2.COLOR_YUV2RGB_I420)
    except ImportError:  # pragma: no cover - OpenCV is a dependency; keep a numpy path anyway
        return i420_to_rgb(planes, width, height)


class DropOldestQueue(asyncio.Queue, Generic[T]):
    """An ``asyncio.Queue`` whose ``put_nowait`` never raises: when full, the oldest item is dropped
    (counted in ``dropped``) so a reader that went away cannot make the producer block or grow."""

    def __init__(self, maxsize: int) -> None:
        super().__init__(maxsize=maxsize)
        self.dropped = 0

    def put_nowait(self, item: T) -> None:
        if self.maxsize > 0 and self.full():
            try:
                self.get_nowait()
                self.dropped += 1
            except asyncio.QueueEmpty:  # pragma: no cover
                pass
        super().put_nowait(item)


class FrameSubscription:
    """Async iterator of :class:`RenderedFrame` (newest ``maxsize`` kept; a slow reader skips frames).
    ``close()`` (or leaving an ``async with``) detaches it."""

    def __init__(self, media: MediaSession, maxsize: int) -> None:
        self._media = media
        self.queue: DropOldestQueue[RenderedFrame | None] = DropOldestQueue(maxsize)
        self.closed = False

    def _offer(self, frame: RenderedFrame) -> None:
        if not self.closed:
            self.queue.put_nowait(frame)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._media._subscriptions.discard(self)
            self.queue.put_nowait(None)

    @property
    def dropped(self) -> int:
        return self.queue.dropped

    def __aiter__(self) -> FrameSubscription:
        return self

    async def __anext__(self) -> RenderedFrame:
        if self.closed and self.queue.empty():
            raise StopAsyncIteration
        item = await self.queue.get()
        if item is None:
            raise StopAsyncIteration
        return item

    async def __aenter__(self) -> FrameSubscription:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()


class RenderLoop:
    """Steps one renderer at a fixed frame rate and hands every session's frame to its media session.

    One per renderer (:meth:`shared`), so N sessions batched on one GPU renderer share one step per
    tick. It runs while at least one media session is attached. ``step()`` runs in a private thread.
    """

    _shared: weakref.WeakKeyDictionary[Renderer, RenderLoop] = weakref.WeakKeyDictionary()

    def __init__(self, renderer: Renderer, fps: int) -> None:
        self.renderer = renderer
        self.fps = int(fps)
        self._sessions: dict[str, MediaSession] = {}
        self._task: asyncio.Task | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._space = asyncio.Event()
        self.ticks = 0
        self.step_ms = 0.0  # EWMA of the render step (thread time)
        self.late_ticks = 0  # ticks that started more than a frame late
        self.errors = 0

    @classmethod
    def shared(cls, renderer: Renderer, fps: int) -> RenderLoop:
        loop = cls._shared.get(renderer)
        if loop is None:
            loop = cls._shared[renderer] = cls(renderer, fps)
        elif loop.fps != int(fps):
            raise ValueError(f"renderer already runs at {loop.fps} fps; a session at {fps} fps needs its own renderer")
        return loop

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def attach(self, media: MediaSession) -> None:
        if media.options.fps != self.fps:
            raise ValueError(f"session fps {media.options.fps} != render loop fps {self.fps}")
        self._sessions[media.session.id] = media
        if not self.running:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(1, thread_name_prefix="render-step")
            self._task = asyncio.get_running_loop().create_task(self._run(), name="render-loop")
            self._task.add_done_callback(self._on_done)

    def _on_done(self, task: asyncio.Task) -> None:
        """The loop died of something outside a render step: every attached session's media failed."""
        exc = None if task.cancelled() else task.exception()
        if exc is None:
            return
        log.error("render loop crashed", exc_info=exc)
        for g in list(self._sessions.values()):
            g._fail(exc)
        self._sessions.clear()
        if self._task is task:
            self._task = None

    def detach(self, media: MediaSession) -> None:
        if self._sessions.get(media.session.id) is media:
            del self._sessions[media.session.id]
        if not self._sessions and self._task is not None:
            self._task.cancel()
            self._task = None
            if self._executor is not None:
                self._executor.shutdown(wait=False)
                self._executor = None

    def _notify_space(self) -> None:
        self._space.set()

    async def _wait_for_av_space(self) -> None:
        """Backpressure: while an AV consumer has a full AV queue (e.g. AvatarRunner publishing its
        tracks and waiting for a subscriber), do not advance its session — its speech waits instead of
        being dropped. A consumer stalled longer than its ``av_stall_limit_s`` stops holding the loop
        back (its oldest ticks are dropped from then on), so one stuck room cannot freeze a batch."""
        while True:
            now = time.monotonic()
            blocked = [g for g in self._sessions.values() if g._av_blocking(now)]
            if not blocked:
                return
            until = min(cast(float, g._av_full_since) + g.limits.av_stall_limit_s for g in blocked)  # (blocking: set)
            self._space.clear()
            try:
                await asyncio.wait_for(self._space.wait(), timeout=max(0.0, until - now) + 1e-3)
            except TimeoutError:
                pass

    def _step(self) -> tuple[list[tuple[FrameResult, np.ndarray]], float]:
        t = time.perf_counter()
        results = self.renderer.step()
        out = [(r, r.frame_numpy()) for r in results]
        return out, (time.perf_counter() - t) * 1000.0

    async def _run(self) -> None:
        pacer = FramePacer(self.fps)
        loop = asyncio.get_running_loop()
        executor = self._executor
        consecutive_errors = 0
        while self._sessions:
            await pacer.wait_async()
            await self._wait_for_av_space()
            started = time.monotonic()
            epochs = {sid: g._epoch for sid, g in self._sessions.items()}
            try:
                out, ms = await loop.run_in_executor(executor, self._step)
                consecutive_errors = 0
            except asyncio.CancelledError:
                raise
            except Exception:
                self.errors += 1
                consecutive_errors += 1
                log.exception("render step failed")
                if consecutive_errors >= 3 * self.fps:  # a second of failures: give up
                    failing = list(self._sessions.values())
                    self._sessions.clear()
                    for g in failing:
                        g._fail(RuntimeError(f"renderer keeps failing ({consecutive_errors} steps in a row)"))
                    self._task = None
                    return
                continue
            self.ticks += 1
            self.step_ms = ms if self.ticks == 1 else 0.9 * self.step_ms + 0.1 * ms
            if pacer.t0 is not None and started - (pacer.t0 + (pacer.k - 1) / self.fps) > 1.0 / self.fps:
                self.late_ticks += 1
            for res, pixels in out:
                media = self._sessions.get(res.session_id)
                if media is not None:
                    try:
                        media._deliver(res, pixels, epochs.get(res.session_id))
                    except Exception:  # one session's sink must not stop the others
                        log.exception("delivering a frame failed", extra={"session_id": res.session_id})


@dataclass(frozen=True)
class MediaLimits:
    """The bounds of one media session (``media.rooms.factory`` builds them from ``Settings``).
    ``max_buffered_s``: unplayed speech accepted before input is refused or awaited; ``av_queue_frames``:
    AV ticks queued for a consumer before the render loop waits for it; ``av_stall_limit_s``: how long a
    stalled consumer may hold the render loop back; ``event_queue_size``: playback events kept unread."""

    max_buffered_s: float = setting_default("max_buffered_speech_s")
    av_queue_frames: int = setting_default("media_av_queue_frames")
    av_stall_limit_s: float = setting_default("media_av_stall_limit_s")
    event_queue_size: int = 256


# The AV stream's items (media.rooms.livekit_generator turns them into rtc.VideoFrame / rtc.AudioFrame /
# AudioSegmentEnd); the bytes are copied when the tick is queued, so the renderer may reuse its buffers.
@dataclass(frozen=True)
class Picture:
    width: int
    height: int
    format: str  # "rgba" | "i420"
    data: bytes = field(repr=False)


@dataclass(frozen=True)
class SpeechAudio:
    """A speaking frame's exact audio slice: int16 mono PCM."""

    data: bytes = field(repr=False)
    sample_rate: int
    samples: int


@dataclass(frozen=True)
class UtteranceEnd:
    """After an utterance's last frame."""


AVItem = Picture | SpeechAudio | UtteranceEnd


class MediaSession:
    """A renderer session as a stream of media (see the module docstring).

    ``renderer`` and ``session`` come from ``renderer.open_session(...)``; the media session closes the
    renderer session on :meth:`aclose` unless ``close_session=False``. ``loop``: the render loop to join
    (default: the renderer's shared one).
    """

    def __init__(
        self,
        renderer: Renderer,
        session: RenderSession,
        limits: MediaLimits | None = None,
        *,
        loop: RenderLoop | None = None,
        close_session: bool = True,
    ) -> None:
        self.renderer = renderer
        self.session = session
        self.options = session.options
        self.limits = limits or MediaLimits()
        self.max_buffered_s = float(self.limits.max_buffered_s)
        self._loop = loop or RenderLoop.shared(renderer, self.options.fps)
        self._close_session = close_session
        self._started = False
        self._closed = False
        self._error: BaseException | None = None
        self._failed = asyncio.Event()  # set by _fail: the session's media cannot go on
        self._epoch = 0  # bumped by every clear/interrupt: frames rendered before it are stale
        # AV sink: ticks of [Picture, SpeechAudio?, UtteranceEnd*]
        self._av_enabled = False
        self._av_queue_frames = max(1, int(self.limits.av_queue_frames))
        self._av_ticks: deque[list[AVItem]] = deque()
        self._av_pending: deque[AVItem] = deque()
        # awaited before each audio item is yielded (its picture was yielded just before): LiveKitRoom
        # waits there until that picture is really captured, so sound never runs ahead of the picture
        self.av_audio_gate: Callable[[], Awaitable[None]] | None = None
        self._av_wakeup = asyncio.Event()
        self._av_full_since: float | None = None
        # other sinks
        self.events: DropOldestQueue[PlaybackEvent] = DropOldestQueue(self.limits.event_queue_size)
        self._subscriptions: set[FrameSubscription] = set()
        self._listeners: list[Callable[[RenderedFrame], None]] = []
        # state and metrics
        self.frames_delivered = 0
        self.frames_dropped = 0  # stale (rendered before a clear) or AV-queue overflow
        self.first_frame_at: float | None = None
        self.last_frame: RenderedFrame | None = None
        self.utterance_active = False  # the last frame belonged to an utterance
        self.speaking = False  # the last frame carried speech audio

    # ------------------------------------------------------------------ lifecycle
    @property
    def fps(self) -> int:
        return self.options.fps

    @property
    def sample_rate(self) -> int:
        return self.options.sample_rate

    @property
    def width(self) -> int:
        return self.options.width

    @property
    def height(self) -> int:
        return self.options.height

    @property
    def render_loop(self) -> RenderLoop:
        return self._loop

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def epoch(self) -> int:
        """Bumped by every clear/interrupt."""
        return self._epoch

    def start(self) -> None:
        """Join the render loop (idempotent; needs a running event loop). :meth:`av_stream`,
        :meth:`frames` and :meth:`add_frame_listener` start it too."""
        if self._closed:
            raise RuntimeError("media session is closed")
        if not self._started:
            self._started = True
            self._loop.attach(self)

    async def aclose(self) -> None:
        """Leave the render loop, end every iterator, close the renderer session (idempotent)."""
        if self._closed:
            return
        self._closed = True
        if self._started:
            self._loop.detach(self)
            self._loop._notify_space()
        self._av_wakeup.set()
        for sub in list(self._subscriptions):
            sub.close()
        if self._close_session:
            self.renderer.close_session(self.session)

    def _fail(self, exc: BaseException) -> None:
        self._error = exc
        self._failed.set()
        self._closed = True
        self._av_wakeup.set()
        for sub in list(self._subscriptions):
            sub.close()

    @property
    def error(self) -> BaseException | None:
        return self._error

    async def wait_failed(self) -> BaseException:
        """Return the error once the media failed for good (the render loop gave up or crashed)."""
        await self._failed.wait()
        assert self._error is not None  # _fail sets it before the event
        return self._error

    # ------------------------------------------------------------------ speech in
    @property
    def buffered_seconds(self) -> float:
        return self.session.buffered_seconds

    def push_pcm(self, pcm16: bytes | np.ndarray, sample_rate: int, num_channels: int = 1) -> int:
        """Append 16-bit PCM (any rate, resampled) to the open utterance; returns its id. Raises
        :class:`AudioBufferFull` when more than ``max_buffered_s`` seconds are already waiting."""
        if self._closed:
            raise RuntimeError("media session is closed")
        if self.session.buffered_seconds > self.max_buffered_s:
            raise AudioBufferFull(f"more than {self.max_buffered_s:g} s of speech queued")
        self.start()
        return self.session.push_audio(pcm16, int(sample_rate), int(num_channels))

    async def push_pcm_waiting(self, pcm16: bytes | np.ndarray, sample_rate: int, num_channels: int = 1) -> None:
        """Like :meth:`push_pcm`, but waits while more than ``max_buffered_s`` seconds are waiting; audio
        cleared by an interrupt meanwhile (or after the close) is dropped."""
        if self._closed:
            return
        epoch = self._epoch
        if self.session.buffered_seconds > self.max_buffered_s:
            await self.wait_for_space()
            if self._epoch != epoch or self._closed:  # cleared while waiting: this audio is stale
                return
        self.start()
        self.session.push_audio(pcm16, int(sample_rate), int(num_channels))

    async def wait_for_space(self, timeout: float | None = None) -> None:
        """Return once at most ``max_buffered_s`` seconds of speech wait (polled once a frame)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._closed and self.session.buffered_seconds > self.max_buffered_s:
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError
            await asyncio.sleep(1.0 / self.fps)

    def end_utterance(self) -> int | None:
        """The utterance's input ended (byte stream closed / ``audio.end``); returns its id or None."""
        return self.session.end_utterance()

    def interrupt(self) -> list[PlaybackEvent]:
        """Drop the current and queued speech; the next frame has the mouth at rest. Returns one
        ``finished`` event (``interrupted=True``) per dropped utterance; they also go to :attr:`events`."""
        now = time.monotonic()
        events = [PlaybackEvent("finished", ev.utterance_id, ev.position, True, None, now)
                  for ev in self.session.clear()]
        self._epoch += 1
        self._purge_speech_ticks()
        for ev in events:
            self.events.put_nowait(ev)
        return events

    def _purge_speech_ticks(self) -> None:
        """Drop queued AV ticks that carry speech (rendered before the clear); idle ticks stay."""
        def is_speech(item: AVItem) -> bool:
            return isinstance(item, (SpeechAudio, UtteranceEnd))

        kept = deque(t for t in self._av_ticks if not any(is_speech(x) for x in t))
        self.frames_dropped += len(self._av_ticks) - len(kept)
        self._av_ticks = kept
        # the half-consumed tick: its picture is already out; its audio must not follow it
        self._av_pending = deque(x for x in self._av_pending if not is_speech(x))

    # ------------------------------------------------------------------ AV stream
    def av_stream(self) -> AsyncIterator[AVItem]:
        """The AV queue as an async iterator (one consumer): every tick's :class:`Picture`, then its
        :class:`SpeechAudio` (speech only, after :attr:`av_audio_gate`), then an :class:`UtteranceEnd` for
        an utterance that ended in it. Ends when the session closes; raises the error when it failed."""
        self._av_enabled = True
        self.start()
        return self._iterate_av()

    async def _iterate_av(self) -> AsyncIterator[AVItem]:
        while True:
            if self._av_pending:
                item = self._av_pending[0]
                if isinstance(item, SpeechAudio) and self.av_audio_gate is not None:
                    await self.av_audio_gate()
                    if not self._av_pending or self._av_pending[0] is not item:  # purged by a clear meanwhile
                        continue
                yield self._av_pending.popleft()
                continue
            if self._av_ticks:
                self._av_pending.extend(self._av_ticks.popleft())
                if len(self._av_ticks) < self._av_queue_frames:
                    self._av_full_since = None
                    self._loop._notify_space()
                continue
            if self._closed:
                if self._error is not None:
                    raise self._error
                return
            self._av_wakeup.clear()
            await self._av_wakeup.wait()

    def _av_blocking(self, now: float) -> bool:
        """The AV consumer has a full queue and has not been stalled past its limit."""
        if not self._av_enabled or self._closed or len(self._av_ticks) < self._av_queue_frames:
            self._av_full_since = None
            return False
        if self._av_full_since is None:
            self._av_full_since = now
        return now - self._av_full_since < self.limits.av_stall_limit_s

    # ------------------------------------------------------------------ frame taps
    def frames(self, maxsize: int = 2) -> FrameSubscription:
        """Subscribe to rendered frames (newest ``maxsize`` kept). Use ``.rgb()`` for MJPEG."""
        sub = FrameSubscription(self, maxsize)
        self._subscriptions.add(sub)
        self.start()
        return sub

    def add_frame_listener(self, callback: Callable[[RenderedFrame], None]) -> Callable[[], None]:
        """Call ``callback(frame)`` on the event loop for every delivered frame (keep it short).
        Returns a function that removes it."""
        self._listeners.append(callback)
        self.start()

        def remove() -> None:
            if callback in self._listeners:
                self._listeners.remove(callback)

        return remove

    # ------------------------------------------------------------------ delivery (render loop)
    def _deliver(self, res: FrameResult, pixels: np.ndarray, epoch_at_step: int | None) -> None:
        if self._closed:
            return
        now = time.monotonic()
        if epoch_at_step is not None and epoch_at_step != self._epoch and (res.speaking or res.events):
            # rendered while a clear happened: may show the dropped speech, so it is never published;
            # an utterance that ended in it is reported as interrupted at what it had played
            self.frames_dropped += 1
            for ev in res.events:
                if ev.kind == "finished" and not ev.interrupted:
                    self.events.put_nowait(PlaybackEvent("finished", ev.utterance_id, ev.position, True,
                                                         res.frame_index, now))
            return
        frame = RenderedFrame(res, pixels, now)
        self.frames_delivered += 1
        if self.first_frame_at is None:
            self.first_frame_at = now
        self.last_frame = frame
        self.speaking = bool(res.speaking)
        self.utterance_active = res.utterance_id is not None
        for ev in res.events:
            self.events.put_nowait(PlaybackEvent(ev.kind, ev.utterance_id, ev.position, ev.interrupted,
                                                 res.frame_index, now))
        if self._av_enabled:
            self._enqueue_av(res, pixels)
        for cb in list(self._listeners):
            try:
                cb(frame)
            except Exception:
                log.exception("frame listener failed")
        for sub in list(self._subscriptions):
            sub._offer(frame)

    def _enqueue_av(self, res: FrameResult, pixels: np.ndarray) -> None:
        # one tick: the picture, then its exact audio slice (speech only), then the end of an utterance
        tick: list[AVItem] = [Picture(res.width, res.height, res.format, pixels.tobytes())]
        if res.speaking:
            audio = np.ascontiguousarray(res.audio, dtype=np.int16)
            tick.append(SpeechAudio(audio.tobytes(), res.sample_rate, audio.size))
        for ev in res.events:
            if ev.kind == "finished" and not ev.interrupted:
                tick.append(UtteranceEnd())
        while len(self._av_ticks) >= self._av_queue_frames:  # consumer stalled: drop the oldest tick
            old = self._av_ticks.popleft()
            self.frames_dropped += 1
            ends = [x for x in old if isinstance(x, UtteranceEnd)]
            if ends:  # an utterance's end is never lost
                if self._av_ticks:
                    self._av_ticks[0][0:0] = ends
                else:
                    tick[0:0] = ends
        self._av_ticks.append(tick)
        self._av_wakeup.set()

    # ------------------------------------------------------------------ metrics
    def stats(self) -> dict[str, Any]:
        return {
            "frames_delivered": self.frames_delivered,
            "frames_dropped": self.frames_dropped,
            "late_ticks": self._loop.late_ticks,
            "step_ms": round(self._loop.step_ms, 3),
            "events_dropped": self.events.dropped,
            "buffered_s": round(self.session.buffered_seconds, 3),
        }

"""The session worker actor: one per session, detached, named ``worker-<session id>``, inside the
session's placement group. It joins the room, drives the media (room adapters and the renderer plug in
through ``RoomConnection``), heartbeats to the scheduler and reports how the session ended.

Lifecycle: created warm (``ready`` also loads the renderer) → ``start(spec)`` joins the room → runs
until the room ends the session (``wait_ended`` returns the reason) or the scheduler calls ``stop`` →
the scheduler kills the actor and removes its placement group.

Speech from the session WebSocket and the MJPEG preview reach the media through ``push_audio``,
``end_audio``, ``interrupt``, ``events`` and ``preview_frame`` (all bounded: speech beyond
``max_buffered_speech_s`` waits, event and frame waits time out).
"""
from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import deque
from typing import TYPE_CHECKING, Any

import ray

from actors import names
from actors.clients import SchedulerClient
from media.assets import warm_up
from media.rooms.base import RoomConnection, WorkerSpec
from media.rooms.factory import open_room
from core import errors, logs
from core.logs import redact
from core.settings import Settings
from core.status import EndReason

if TYPE_CHECKING:
    from actors.metrics import SessionMetrics
    from media.session import MediaSession

log = logging.getLogger("avatars.worker")


def run_at_live_priority() -> bool:
    """Give every thread of this process the default niceness (0). Ray starts its workers at niceness 15,
    so a session's render loop, encoder and room threads waited behind anything at 0 on the node and
    shared the CPU evenly with warming pool workers and face tasks; a live session goes first. Threads
    made later inherit it. False where the process may not raise its priority (no CAP_SYS_NICE)."""
    try:
        threads = os.listdir("/proc/self/task")
    except OSError:  # not Linux
        threads = [str(os.getpid())]
    for tid in threads:
        try:
            os.setpriority(os.PRIO_PROCESS, int(tid), 0)
        except ProcessLookupError:
            continue  # the thread ended meanwhile
        except OSError as exc:
            log.info("session worker keeps its niceness: %s", exc)
            return False
    return True

MOUTH_MOVING = 0.05  # commanded opening above which the mouth visibly moves


@ray.remote(max_restarts=0, max_task_retries=0)
class SessionWorker:
    def __init__(self, settings: Settings) -> None:
        logs.configure()
        self._settings = settings
        self._session_metrics: SessionMetrics | None = None  # made on the first export
        self._spec: WorkerSpec | None = None
        self._room: RoomConnection | None = None
        self._ended = asyncio.Event()
        self._end_reason: EndReason | None = None
        self._end_detail: str | None = None
        self._notices: list[dict[str, Any]] = []  # session.state notices sent (ending)
        self._tasks: list[asyncio.Task] = []
        self._started_monotonic: float | None = None
        self._warm = settings.worker_media == "none"
        # media plumbing (set when the room has a generator)
        self._events: deque[tuple[int, dict]] = deque(maxlen=256)
        self._event_seq = 0
        self._event_signal = asyncio.Event()
        self._preview: tuple[int, bytes] | None = None
        self._preview_signal = asyncio.Event()
        self._preview_wanted_until = 0.0
        self._first_frame_s: float | None = None
        self._audio_in_at: float | None = None
        self._audio_to_mouth_ms: deque[float] = deque(maxlen=50)
        self._unexported_audio_to_mouth: list[float] = []
        self._last_speech = time.monotonic()
        self._first_frame_wall: float | None = None
        self._av_anchor: tuple[int, float] | None = None  # (utterance id, delivery time - audio time)
        self._av_offsets_ms: deque[float] = deque(maxlen=500)

    # ------------------------------------------------------------------ control surface
    async def ready(self) -> dict[str, Any]:
        """Answered once the process is up and (with media) the renderer is loaded: the warm pool
        waits on this, so a create never pays the torch import."""
        if not self._warm:
            await asyncio.to_thread(warm_up, self._settings)
            self._warm = True
        return {"pid": os.getpid(), "node_id": ray.get_runtime_context().get_node_id()}

    async def start(self, spec: WorkerSpec) -> dict[str, Any]:
        """Join the session's room. Raises core.errors.RoomConnectFailed when the join fails."""
        if self._spec is not None:
            raise RuntimeError(f"worker already runs session {self._spec.session_id}")
        self._spec = spec
        t0 = time.monotonic()
        run_at_live_priority()
        self._room = await asyncio.to_thread(open_room, spec, self._settings)
        opened = time.monotonic()
        await self._room.connect()
        self._started_monotonic = time.monotonic()
        self._tasks = [
            asyncio.create_task(self._watch_room(), name="watch-room"),
            asyncio.create_task(self._heartbeat_loop(), name="heartbeat"),
        ]
        gen = self._media()
        if gen is not None:
            gen.add_frame_listener(lambda frame: self._on_frame(frame, t0))
            self._tasks.append(asyncio.create_task(self._forward_events(gen), name="events"))
            self._tasks.append(asyncio.create_task(self._watch_media(gen), name="media"))
            self._tasks.append(asyncio.create_task(self._preview_loop(gen), name="preview"))
            if self._settings.idle_timeout_s > 0:
                self._last_speech = time.monotonic()
                self._tasks.append(asyncio.create_task(self._idle_watch(), name="idle"))
        log.info("session started (room opened in %.0f ms, connected in %.0f ms)", (opened - t0) * 1000,
                 (self._started_monotonic - opened) * 1000,
                 extra={"session_id": spec.session_id, "account_id": spec.account_id})
        return await self.ready()

    async def wait_ended(self) -> dict[str, str | None]:
        """``{"reason", "detail"}`` once the session ended by itself (the scheduler watches this)."""
        await self._ended.wait()
        assert self._end_reason is not None  # (set before _ended)
        return {"reason": self._end_reason.value, "detail": self._end_detail}

    async def notify_ending(self, reason: str, in_s: int) -> None:
        """The session ends in ``in_s`` seconds (``expired`` / ``minutes_exhausted``): tell the room
        (``session.state`` ``ending``) and the session WebSocket."""
        notice = {"state": "ending", "reason": reason, "in_s": int(in_s)}
        self._notices.append(notice)
        self._push_event({"type": "session.state", **notice})
        if self._room is not None:
            await self._room.send_state("ending", reason, in_s=int(in_s))

    async def stop(self, reason: str) -> None:
        """Leave the room and stop the session's tasks (the scheduler kills the actor afterwards)."""
        self._finish(EndReason(reason))
        if self._room is not None:
            await self._room.close(reason)
        for task in self._tasks:
            task.cancel()

    async def info(self) -> dict[str, Any]:
        return {
            "session_id": self._spec.session_id if self._spec else None,
            "ended": self._ended.is_set(),
            "end_reason": self._end_reason.value if self._end_reason else None,
            "uptime_s": time.monotonic() - self._started_monotonic if self._started_monotonic else 0.0,
            "metrics": self._metrics() if self._started_monotonic else {},
            "first_frame_at": self._first_frame_wall,
            "audio_to_mouth_ms": list(self._audio_to_mouth_ms),
            "av_offsets_ms": list(self._av_offsets_ms),
            "notices": list(self._notices),
            **(await self.ready()),
        }

    # ------------------------------------------------------------------ speech in, events and frames out
    async def push_audio(self, pcm16: bytes, sample_rate: int) -> int:
        """Queue PCM16 mono speech (any rate). Waits (bounded) while too much speech is unplayed.
        Returns the number of samples at 16 kHz, as the WebSocket reports them."""
        gen = self._require_media()
        try:
            await gen.wait_for_space(timeout=self._settings.max_buffered_speech_s)
        except asyncio.TimeoutError:
            raise errors.RateLimited("Too much speech is queued; wait for playback") from None
        if not gen.utterance_active and self._audio_in_at is None:
            self._audio_in_at = time.monotonic()
        gen.push_pcm(pcm16, int(sample_rate))
        return int(round(len(pcm16) // 2 * 16000 / int(sample_rate)))

    async def end_audio(self) -> None:
        self._require_media().end_utterance()

    async def interrupt(self) -> int:
        """Stop speech now (the next frame has the mouth at rest); returns the utterances dropped."""
        self._audio_in_at = None
        return len(self._require_media().interrupt())

    async def events(self, after: int, timeout: float = 10.0) -> tuple[int, list[dict], bool]:
        """Playback events with a sequence number above ``after`` (long poll, at most ``timeout``),
        and whether the session has ended."""
        deadline = time.monotonic() + timeout
        while True:
            fresh = [msg for seq, msg in self._events if seq > after]
            if fresh or self._ended.is_set() or time.monotonic() >= deadline:
                return self._event_seq, fresh, self._ended.is_set()
            self._event_signal.clear()
            try:
                await asyncio.wait_for(self._event_signal.wait(), timeout=max(0.0, deadline - time.monotonic()))
            except asyncio.TimeoutError:
                pass

    async def preview_frame(self, after: int, timeout: float = 5.0) -> tuple[int, bytes | None]:
        """The newest JPEG frame newer than ``after`` (long poll). Frames are encoded only while
        somebody asks for them."""
        self._require_media()
        self._preview_wanted_until = time.monotonic() + 5.0
        deadline = time.monotonic() + timeout
        while True:
            if self._preview is not None and self._preview[0] > after:
                return self._preview
            if self._ended.is_set() or time.monotonic() >= deadline:
                return after, None
            self._preview_signal.clear()
            try:
                await asyncio.wait_for(self._preview_signal.wait(), timeout=max(0.0, deadline - time.monotonic()))
            except asyncio.TimeoutError:
                pass

    # ------------------------------------------------------------------ internals
    def _media(self) -> MediaSession | None:
        return self._room.media if self._room is not None else None

    def _require_media(self) -> MediaSession:
        gen = self._media()
        if gen is None or self._ended.is_set():
            raise errors.SessionNotActive("This session renders no media here")
        return gen

    def _finish(self, reason: EndReason, detail: str | None = None) -> None:
        if self._end_reason is None:
            self._end_reason = reason
            self._end_detail = detail
            self._ended.set()
            self._event_signal.set()
            self._preview_signal.set()

    async def _watch_room(self) -> None:
        assert self._room is not None  # (a task of a started session, like the ones below)
        reason = await self._room.wait_closed()
        detail = self._room.end_detail
        self._finish(reason, detail if detail and detail != reason.value else None)

    async def _watch_media(self, gen) -> None:
        """Any platform: a render loop that gave up ends the session as media_failed, with why."""
        exc = await gen.wait_failed()
        self._finish(EndReason.MEDIA_FAILED, redact(f"render loop failed: {type(exc).__name__}: {exc}")[:300])

    def _on_frame(self, frame, t0: float) -> None:
        if self._first_frame_s is None:
            self._first_frame_s = frame.delivered_at - t0
            self._first_frame_wall = time.time()
        res = frame.result
        if res.speaking:
            self._last_speech = frame.delivered_at
        if res.speaking and res.utterance_id is not None:
            # A/V offset: when this frame was delivered versus where its audio slice sits on the
            # utterance's timeline (anchored at the utterance's first frame): drift and jitter.
            audio_at = res.utterance_position - len(res.audio) / res.sample_rate
            if self._av_anchor is None or self._av_anchor[0] != res.utterance_id:
                self._av_anchor = (res.utterance_id, frame.delivered_at - audio_at)
            self._av_offsets_ms.append((frame.delivered_at - self._av_anchor[1] - audio_at) * 1000)
        if self._audio_in_at is not None and frame.result.mouth_open > MOUTH_MOVING:
            latency_ms = (frame.delivered_at - self._audio_in_at) * 1000
            self._audio_to_mouth_ms.append(latency_ms)
            self._unexported_audio_to_mouth.append(latency_ms)
            self._audio_in_at = None

    async def _idle_watch(self) -> None:
        """End the session (idle_timeout) once no speech was played for ``idle_timeout_s``."""
        limit = self._settings.idle_timeout_s
        while not self._ended.is_set():
            idle = time.monotonic() - self._last_speech
            if idle >= limit:
                self._finish(EndReason.IDLE_TIMEOUT)
                return
            await asyncio.sleep(min(1.0, limit - idle))

    async def _forward_events(self, gen) -> None:
        while True:
            event = await gen.events.get()
            self._push_event(event.as_message())

    def _push_event(self, message: dict[str, Any]) -> None:
        self._event_seq += 1
        self._events.append((self._event_seq, message))
        self._event_signal.set()

    async def _preview_loop(self, gen) -> None:
        import cv2

        period = 1.0 / self._settings.preview_fps
        seq = 0
        async with gen.frames(maxsize=1) as frames:
            async for frame in frames:
                if time.monotonic() > self._preview_wanted_until:
                    continue
                rgb = frame.rgb()
                ok, jpeg = await asyncio.to_thread(cv2.imencode, ".jpg", rgb[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 80])
                if ok:
                    seq += 1
                    self._preview = (seq, jpeg.tobytes())
                    self._preview_signal.set()
                await asyncio.sleep(period)

    def _metrics(self) -> dict[str, Any]:
        assert self._started_monotonic is not None and self._room is not None  # (once started)
        metrics: dict[str, Any] = {"uptime_s": round(time.monotonic() - self._started_monotonic, 3)}
        gen = self._media()
        if gen is not None:
            uptime = max(1e-6, time.monotonic() - self._started_monotonic)
            metrics.update(
                frames=gen.frames_delivered, dropped_frames=gen.frames_dropped,
                fps=round(gen.frames_delivered / uptime, 2),
                first_frame_ms=round(self._first_frame_s * 1000, 1) if self._first_frame_s is not None else None,
            )
            if self._audio_to_mouth_ms:
                ordered = sorted(self._audio_to_mouth_ms)
                metrics["audio_to_mouth_ms_p50"] = round(ordered[len(ordered) // 2], 1)
            room_metrics = self._room.metrics()
            if room_metrics:  # e.g. LiveKit: the A/V offset as published through AVSynchronizer
                metrics["room"] = room_metrics
            if self._av_offsets_ms:
                ordered = sorted(self._av_offsets_ms)
                metrics["av_offset_ms_p50"] = round(ordered[len(ordered) // 2], 1)
        return metrics

    def _export_metrics(self, metrics: dict[str, Any]) -> None:
        """Per-session Prometheus metrics (Ray's metrics agent exports them)."""
        if "frames" not in metrics:
            return
        assert self._spec is not None  # (once started)
        if self._session_metrics is None:
            from actors.metrics import SessionMetrics

            self._session_metrics = SessionMetrics(self._spec.session_id)
        fresh, self._unexported_audio_to_mouth = self._unexported_audio_to_mouth, []
        self._session_metrics.update(metrics, fresh)

    async def _heartbeat_loop(self) -> None:
        assert self._spec is not None  # (once started)
        scheduler: SchedulerClient | None = None
        while not self._ended.is_set():
            await asyncio.sleep(self._settings.heartbeat_interval_s)
            metrics = self._metrics()
            self._export_metrics(metrics)
            try:
                if scheduler is None:  # a blocking GCS lookup: keep it off the event loop
                    scheduler = SchedulerClient(await asyncio.to_thread(
                        ray.get_actor, names.SCHEDULER, namespace=self._settings.ray_namespace))
                await scheduler.heartbeat(self._spec.session_id, metrics, timeout=self._settings.heartbeat_interval_s)
            except Exception as exc:  # the scheduler may be restarting: look it up again next time
                log.warning("heartbeat failed: %s", type(exc).__name__, extra={"session_id": self._spec.session_id})
                scheduler = None

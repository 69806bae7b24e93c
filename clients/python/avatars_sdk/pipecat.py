"""``AvatarVideoService``: this platform's avatar as a Pipecat video service, in the shape of Pipecat's own
(``HeyGenVideoService``, ``TavusVideoService``, ``SimliVideoService``): put it after the TTS service.

On ``StartFrame`` it creates a ``proxy`` session through the SDK (the deployment provides a LiveKit room)
and joins the room with the returned participant token. The pipeline's ``TTSAudioRawFrame``s go to the
avatar as ``lk.audio_stream`` byte streams (one per utterance, closed on ``TTSStoppedFrame``); the avatar's
camera video and microphone audio come back downstream as ``OutputImageRawFrame`` and
``SpeechOutputAudioRawFrame``; an ``InterruptionFrame`` drops what was queued and calls ``lk.clear_buffer``.
``EndFrame`` lets the last utterance play out (bounded) and ends the session (``POST /end``) before leaving
the room; ``CancelFrame``, an error or ``cleanup()`` end it at once. Every wait is bounded.

Events (``@service.event_handler(name)``): ``on_session_started(service, session)``,
``on_playback_started(service)``, ``on_playback_finished(service, {"playback_position", "interrupted"})``,
``on_session_ended(service, session)``.

Needs the ``pipecat`` extra: ``pip install 'avatars-sdk[pipecat]'``.
"""
from __future__ import annotations

import asyncio
import json
import os
import uuid
from dataclasses import dataclass
from typing import Any

try:
    from livekit import rtc
    from loguru import logger
    from pipecat.frames.frames import (CancelFrame, EndFrame, Frame, InterruptionFrame, OutputImageRawFrame,
                                       SpeechOutputAudioRawFrame, StartFrame, TTSAudioRawFrame, TTSStoppedFrame)
    from pipecat.processors.frame_processor import FrameDirection
    from pipecat.services.ai_service import AIService
    from pipecat.services.settings import ServiceSettings
except ModuleNotFoundError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError(f"avatars_sdk.pipecat needs the 'pipecat' extra (pipecat-ai with LiveKit): "
                      f"pip install 'avatars-sdk[pipecat]' (missing module: {exc.name})") from exc

from . import models
from ._retry import RetryPolicy
from .client import AsyncAvatarsClient
from .errors import AvatarsError

AVATAR_IDENTITY = "agenthuman-avatar-agent"  # the avatar's identity in a proxy room (SPEC)
AUDIO_STREAM_TOPIC = "lk.audio_stream"
RPC_CLEAR_BUFFER = "lk.clear_buffer"
RPC_PLAYBACK_STARTED = "lk.playback_started"
RPC_PLAYBACK_FINISHED = "lk.playback_finished"
# With no TTS audio for this long, the utterance is over even without a TTSStoppedFrame (as HeyGen's service).
UTTERANCE_GAP_S = 1.0


@dataclass
class AvatarVideoSettings(ServiceSettings):
    """Settings of the avatar video service (no runtime-updatable ones: the avatar is fixed per session)."""


class _Flush:
    """Queue marker: close the open utterance; ``done`` is set once it is closed."""

    def __init__(self) -> None:
        self.done = asyncio.Event()


class AvatarVideoService(AIService):
    """An avatar of this platform in a Pipecat pipeline, pointed at any deployment by ``base_url``.

    Args:
        api_key / base_url / avatar: or ``AVATARS_API_KEY`` / ``AVATARS_BASE_URL`` / ``AVATARS_AVATAR_ID``.
        aspect_ratio: ``auto`` (the avatar's own orientation), ``4:3``, ``3:4`` or ``1:1``.
        metadata: stored with the session.
        audio_out_sample_rate: rate of the avatar audio pushed downstream (default: the pipeline's).
        connect_timeout_s: bound on joining the room; avatar_join_timeout_s: on the avatar's video appearing
            before speech is sent; rpc_timeout_s: on ``lk.clear_buffer``; drain_timeout_s: on the last
            utterance playing out at ``EndFrame``; end_timeout_s: on ``POST /end``; open_timeout_s: on a
            session start still in progress when the pipeline stops (its session is ended, not left behind).
    """

    Settings = AvatarVideoSettings
    _settings: Settings

    def __init__(self, *, api_key: str | None = None, avatar: str | None = None, base_url: str | None = None,
                 aspect_ratio: str = "auto", metadata: dict[str, Any] | None = None,
                 avatar_identity: str = AVATAR_IDENTITY, audio_out_sample_rate: int | None = None,
                 retry: RetryPolicy | None = None, connect_timeout_s: float = 30.0,
                 avatar_join_timeout_s: float = 60.0, rpc_timeout_s: float = 5.0, drain_timeout_s: float = 30.0,
                 end_timeout_s: float = 30.0, open_timeout_s: float = 180.0, settings: Settings | None = None,
                 **kwargs) -> None:
        default_settings = AvatarVideoSettings(model=None)
        if settings is not None:
            default_settings.apply_update(settings)
        super().__init__(settings=default_settings, **kwargs)
        self._avatar = avatar or os.environ.get("AVATARS_AVATAR_ID")
        if not self._avatar:
            raise AvatarsError("an avatar is required: pass avatar= or set AVATARS_AVATAR_ID")
        # Validates the key and base URL now (a clear error at construction, not mid-pipeline).
        self._client: AsyncAvatarsClient | None = AsyncAvatarsClient(base_url=base_url, api_key=api_key,
                                                                     retry=retry)
        self._aspect_ratio, self._metadata = aspect_ratio, metadata or {}
        self._avatar_identity = avatar_identity
        self._audio_out_sample_rate = audio_out_sample_rate
        self._connect_timeout_s, self._avatar_join_timeout_s = connect_timeout_s, avatar_join_timeout_s
        self._rpc_timeout_s, self._drain_timeout_s, self._end_timeout_s = rpc_timeout_s, drain_timeout_s, end_timeout_s
        self._open_timeout_s = open_timeout_s

        self.session_id: str | None = None
        self.session: models.CreatedSession | None = None
        self._room: rtc.Room | None = None
        self._avatar_ready = asyncio.Event()  # the avatar's video track is subscribed
        self._queue: asyncio.Queue = asyncio.Queue()
        self._send_task: asyncio.Task | None = None
        self._media_tasks: dict[int, asyncio.Task] = {}  # TrackKind -> reader
        self._writer: rtc.ByteStreamWriter | None = None
        self._writer_format: dict[str, str] = {}
        self._unfinished = 0  # utterances sent whose lk.playback_finished has not come back
        self._played_out = asyncio.Event()
        self._played_out.set()
        self._open_task: asyncio.Task | None = None
        self._closing: asyncio.Future | None = None

        for event in ("on_session_started", "on_playback_started", "on_playback_finished", "on_session_ended"):
            self._register_event_handler(event)

    def can_generate_metrics(self) -> bool:
        return True

    # Lifecycle

    async def start(self, frame: StartFrame) -> None:
        await super().start(frame)
        if self._audio_out_sample_rate is None:
            self._audio_out_sample_rate = self._setup.audio_out_sample_rate if self._setup else 24000
        # In the background: the StartFrame must cross the pipeline within the worker's start timeout, and a
        # session start (placement, a worker joining) may take longer. Speech queues until the avatar is up.
        self._open_task = self.create_task(self._start_session(), "avatar_open")

    async def _start_session(self) -> None:
        try:
            await self._open()
        except Exception as exc:
            asyncio.ensure_future(self._teardown())  # not awaited here: the teardown waits for this task
            # The processor is unusable: the worker's ProcessorUnusablePolicy decides (CANCEL/END stop the pipeline).
            await self.push_error(error_msg=f"avatar session failed to start: {exc}", exception=exc,
                                  force_treat_as_permanent=True)

    async def stop(self, frame: EndFrame) -> None:
        await super().stop(frame)
        await self._drain()
        await self._teardown()

    async def cancel(self, frame: CancelFrame) -> None:
        await super().cancel(frame)
        await self._teardown()

    async def cleanup(self) -> None:
        await super().cleanup()
        await self._teardown()

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, TTSAudioRawFrame):
            self._queue.put_nowait(frame)  # the avatar speaks it; its own audio comes back downstream
        elif isinstance(frame, TTSStoppedFrame):
            self._queue.put_nowait(_Flush())
            await self.push_frame(frame, direction)
        elif isinstance(frame, InterruptionFrame):
            await self._interrupt()
            await self.push_frame(frame, direction)
        else:
            await self.push_frame(frame, direction)

    async def _open(self) -> None:
        assert self._client is not None
        created = await self._client.create_session(self._avatar, platform="proxy", aspect_ratio=self._aspect_ratio,
                                                    metadata=self._metadata)
        self.session, self.session_id = created.session, created.session.session_id
        room_info = created.session.room.model_extra or {}
        url, token = room_info.get("roomURL"), room_info.get("participantToken")
        if not url or not token:
            raise AvatarsError("the create response carries no proxy room (roomURL, participantToken)")
        logger.info(f"{self}: avatar session {self.session_id} created")
        self._room = rtc.Room()
        self._room.on("track_subscribed", self._on_track_subscribed)
        self._room.on("participant_disconnected", self._on_participant_disconnected)
        await asyncio.wait_for(self._room.connect(url, token), self._connect_timeout_s)
        local = self._room.local_participant
        local.register_rpc_method(RPC_PLAYBACK_STARTED, self._on_playback_started)
        local.register_rpc_method(RPC_PLAYBACK_FINISHED, self._on_playback_finished)
        for participant in self._room.remote_participants.values():  # tracks subscribed before the handler
            for publication in participant.track_publications.values():
                if publication.track is not None:
                    self._on_track_subscribed(publication.track, publication, participant)
        self._send_task = self.create_task(self._send_loop(self._queue), "avatar_send")
        await self._call_event_handler("on_session_started", created.session)

    def _teardown(self) -> asyncio.Future:
        """End the session and leave the room, once (stop, cancel, cleanup and errors all land here)."""
        if self._closing is None:
            self._closing = asyncio.ensure_future(self._close())
        return asyncio.shield(self._closing)

    async def _opened(self) -> None:
        """Wait (bounded) for a session start in progress: its session is ours to end."""
        task = self._open_task
        if task is not None and not task.done() and task is not asyncio.current_task():
            await asyncio.wait({task}, timeout=self._open_timeout_s)

    async def _close(self) -> None:
        await self._opened()
        if self._open_task is not None and not self._open_task.done():
            await self.cancel_task(self._open_task)
        if self._send_task is not None:
            await self.cancel_task(self._send_task)
            self._send_task = None
        await self._close_writer()
        client, self._client = self._client, None
        try:
            if client is not None and self.session_id is not None:
                # Ended before leaving: the end is ours (user_requested), not the avatar noticing we left.
                try:
                    ended = await asyncio.wait_for(client.end_session(self.session_id), self._end_timeout_s)
                    logger.info(f"{self}: avatar session {self.session_id} ended ({ended.end_reason})")
                    await self._call_event_handler("on_session_ended", ended)
                except Exception as exc:  # the session expires on its own; the pipeline must still stop
                    logger.warning(f"{self}: could not end avatar session {self.session_id}: {exc!r}")
        finally:
            for task in list(self._media_tasks.values()):
                await self.cancel_task(task)
            self._media_tasks.clear()
            if self._room is not None:
                try:
                    await asyncio.wait_for(self._room.disconnect(), 10.0)
                except Exception as exc:
                    logger.warning(f"{self}: leaving the avatar room failed: {exc!r}")
            if client is not None:
                await client.aclose()

    # Speech to the avatar

    async def _send_loop(self, queue: asyncio.Queue) -> None:
        try:
            await asyncio.wait_for(self._avatar_ready.wait(), self._avatar_join_timeout_s)
        except asyncio.TimeoutError as exc:
            await self.push_error(error_msg=f"the avatar did not publish video within {self._avatar_join_timeout_s}s",
                                  exception=exc, force_treat_as_permanent=True)
            return
        while True:
            try:
                item = await asyncio.wait_for(queue.get(), UTTERANCE_GAP_S if self._writer else None)
            except asyncio.TimeoutError:
                item = _Flush()
            if isinstance(item, _Flush):
                await self._close_writer()
                item.done.set()
                continue
            fmt = {"sample_rate": str(item.sample_rate), "num_channels": str(item.num_channels)}
            if self._writer is not None and self._writer_format != fmt:
                await self._close_writer()
            try:
                if self._writer is None:
                    assert self._room is not None
                    self._writer = await asyncio.wait_for(self._room.local_participant.stream_bytes(
                        f"AUDIO_{uuid.uuid4().hex[:12]}", topic=AUDIO_STREAM_TOPIC,
                        destination_identities=[self._avatar_identity], attributes=fmt), self._rpc_timeout_s)
                    self._writer_format = fmt
                    self._unfinished += 1
                    self._played_out.clear()
                await asyncio.wait_for(self._writer.write(item.audio), self._rpc_timeout_s)
            except Exception as exc:  # e.g. the avatar left: this utterance is lost, the next one tries again
                await self._close_writer()
                await self.push_error(error_msg=f"sending speech to the avatar failed: {exc!r}", exception=exc)

    async def _close_writer(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            try:  # closing the stream ends the utterance
                await asyncio.wait_for(writer.aclose(), self._rpc_timeout_s)
            except Exception as exc:
                logger.warning(f"{self}: closing the audio stream failed: {exc!r}")

    async def _interrupt(self) -> None:
        """Drop what was queued (a new queue and sender) and have the avatar drop what it holds."""
        if self._room is None or self._send_task is None:
            self._queue = asyncio.Queue()  # not started yet: drop what waits for it
            return
        speaking = self._writer is not None or self._unfinished > 0 or not self._queue.empty()
        await self.cancel_task(self._send_task)
        self._queue = asyncio.Queue()
        try:
            if speaking:
                # Cleared while its stream is still open (as livekit-agents' DataStreamAudioOutput does): the
                # avatar discards the rest of that stream. Closed first, its end would count as a whole utterance.
                await self._room.local_participant.perform_rpc(destination_identity=self._avatar_identity,
                                                               method=RPC_CLEAR_BUFFER, payload="",
                                                               response_timeout=self._rpc_timeout_s)
        except Exception as exc:  # the avatar's playback_finished (or its absence) settles the rest
            logger.warning(f"{self}: {RPC_CLEAR_BUFFER} failed: {exc!r}")
        finally:
            await self._close_writer()
            self._send_task = self.create_task(self._send_loop(self._queue), "avatar_send")

    async def _drain(self) -> None:
        """At a graceful end: send what is queued and let the avatar finish saying it (bounded)."""
        await self._opened()
        if self._send_task is None or self._send_task.done():
            return
        flush = _Flush()
        self._queue.put_nowait(flush)
        try:
            await asyncio.wait_for(flush.done.wait(), self._drain_timeout_s)
            await asyncio.wait_for(self._played_out.wait(), self._drain_timeout_s)
        except asyncio.TimeoutError:
            logger.warning(f"{self}: the avatar's last utterance did not finish within {self._drain_timeout_s}s")

    # From the avatar

    async def _on_playback_started(self, data: rtc.RpcInvocationData) -> str:
        if data.caller_identity != self._avatar_identity:
            return "reject"
        await self._call_event_handler("on_playback_started")
        return "ok"

    async def _on_playback_finished(self, data: rtc.RpcInvocationData) -> str:
        if data.caller_identity != self._avatar_identity:
            return "reject"
        try:
            event = json.loads(data.payload)
        except ValueError:
            return "reject"
        # A clear drops the current utterance and all queued ones with a single answer.
        self._unfinished = 0 if event.get("interrupted") else max(0, self._unfinished - 1)
        if self._unfinished == 0:
            self._played_out.set()
        await self._call_event_handler("on_playback_finished", event)
        return "ok"

    def _on_track_subscribed(self, track: rtc.Track, publication: rtc.RemoteTrackPublication,
                             participant: rtc.RemoteParticipant) -> None:
        if participant.identity != self._avatar_identity or track.kind in self._media_tasks:
            return
        if track.kind == rtc.TrackKind.KIND_VIDEO:
            self._media_tasks[track.kind] = self.create_task(self._read_video(track), "avatar_video")
            self._avatar_ready.set()
        elif track.kind == rtc.TrackKind.KIND_AUDIO:
            self._media_tasks[track.kind] = self.create_task(self._read_audio(track), "avatar_audio")

    def _on_participant_disconnected(self, participant: rtc.RemoteParticipant) -> None:
        if participant.identity != self._avatar_identity:
            return
        # Its tracks are gone: read them again if it rejoins (a worker reconnecting).
        self._avatar_ready.clear()
        for task in self._media_tasks.values():
            task.cancel()
        self._media_tasks.clear()
        if self._closing is None:
            logger.warning(f"{self}: the avatar left the room (session {self.session_id})")

    async def _read_video(self, track: rtc.Track) -> None:
        stream = rtc.VideoStream(track, format=rtc.VideoBufferType.RGB24)
        try:
            async for event in stream:
                frame = event.frame
                await self.push_frame(OutputImageRawFrame(image=bytes(frame.data), size=(frame.width, frame.height),
                                                          format="RGB"))
        finally:
            await stream.aclose()

    async def _read_audio(self, track: rtc.Track) -> None:
        stream = rtc.AudioStream(track, sample_rate=self._audio_out_sample_rate or 24000, num_channels=1)
        try:
            async for event in stream:
                frame = event.frame
                await self.push_frame(SpeechOutputAudioRawFrame(audio=bytes(frame.data), sample_rate=frame.sample_rate,
                                                                num_channels=frame.num_channels))
        finally:
            await stream.aclose()

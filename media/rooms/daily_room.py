"""The session worker inside a Daily room (``daily-python``).

``DailyRoom`` joins with the session's url + meeting token, publishes a virtual camera and a virtual
microphone (``Daily.create_camera_device`` / ``create_microphone_device``, selected as the call's
inputs), and writes every rendered frame to the camera and the frame's exact audio slice to the
microphone from the shared render loop (:mod:`media.session`): picture and sound leave
together, idle motion between utterances, silence written while idle so the microphone never starves.

Speech comes from either
- the participant named in ``room_options["audio_participant"]`` (matched against the Daily user name,
  then the participant id): its microphone is read with a custom audio renderer
  (``CallClient.set_audio_renderer``, at ``speech_sample_rate``, 20 ms callbacks) and split into
  utterances by an energy gate (an utterance ends after ``silence_end_s`` of silence); or
- the session WebSocket: the caller drives :attr:`DailyRoom.media` (``push_pcm``/``end_utterance``/
  ``interrupt``/``events``), which exists after :meth:`connect`.

The avatar publishes the speech it lip-syncs, so viewers should hear the driving participant through
the avatar only (e.g. that participant does not publish to them, or they unsubscribe it).

End conditions (:meth:`DailyRoom.wait_closed`): the audio participant leaves → ``agent_left``; no other
participant for ``timeouts.empty_grace_s`` → ``room_empty``; the network connection interrupted and not back
within ``timeouts.reconnect_s``, or the call leaves/ejects us → ``connection_lost``. A first join
that fails or exceeds ``timeouts.connect_s`` raises ``core.errors.RoomConnectFailed`` (an unreachable
URL takes daily-python ~19 s to fail by itself).

Daily allows one active virtual microphone per process: one ``DailyRoom`` per worker process.
``session.state`` is sent as an app message ``{"topic": "session.state", "state": ..., "reason": ...}``.
"""
from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from media.assets import output_options
from media.renderer import MotionOptions, OutputOptions, Renderer
from media.rooms.base import CONNECTION_LOST, EndedByRoomEndings, RoomEndings, WorkerSpec
from media.rooms.options import DailyOptions
from media.session import MediaSession, RenderedFrame
from core.errors import RoomConnectFailed
from core.logs import redact
from core.rig import FaceRig
from core.status import EndReason

log = logging.getLogger("avatars.rooms.daily")

STATE_TOPIC = "session.state"

_init_lock = threading.Lock()
_initialized = False


def ensure_daily() -> Any:
    """``Daily.init()`` once per process; returns the ``daily`` module."""
    global _initialized
    import daily

    with _init_lock:
        if not _initialized:
            daily.Daily.init()
            _initialized = True
    return daily


class SpeechGate:
    """Splits a continuous microphone stream into utterances by energy: silence before speech is
    dropped (except a short pre-roll), an utterance ends after ``silence_end_s`` of silence."""

    def __init__(self, *, threshold_dbfs: float = -45.0, silence_end_s: float = 0.6, preroll_s: float = 0.1):
        self.threshold = 32768.0 * 10 ** (threshold_dbfs / 20.0)
        self.silence_end_s = silence_end_s
        self.preroll_s = preroll_s
        self.active = False
        self._silent_s = 0.0
        self._preroll: deque[tuple[np.ndarray, int]] = deque()

    def feed(self, pcm: np.ndarray, rate: int) -> tuple[list[tuple[np.ndarray, int]], bool]:
        """→ (chunks to push, end the utterance after pushing them)."""
        dur = pcm.size / rate if rate else 0.0
        loud = pcm.size > 0 and float(np.sqrt(np.mean(pcm.astype(np.float64) ** 2))) > self.threshold
        if not self.active:
            if not loud:
                self._preroll.append((pcm, rate))
                while sum(c.size / r for c, r in self._preroll) > self.preroll_s:
                    self._preroll.popleft()
                return [], False
            self.active, self._silent_s = True, 0.0
            out = list(self._preroll) + [(pcm, rate)]
            self._preroll.clear()
            return out, False
        self._silent_s = 0.0 if loud else self._silent_s + dur
        if self._silent_s >= self.silence_end_s:
            self.active = False
            self._silent_s = 0.0
            return [(pcm, rate)], True
        return [(pcm, rate)], False


class DailyRoom(EndedByRoomEndings):
    """``RoomConnection`` for Daily (see the module docstring).

    ``room_options`` (default: ``spec.room_options``): ``{"audio_participant": <user name or participant
    id>}`` (optional), ``"bot_name"`` (our user name, default "Avatar"). ``options``: frame rate, sample
    rates, media bounds, room timeouts and the speech gate (``media.rooms.factory.adapter_options`` builds
    them from ``Settings``). ``client_factory(event_handler)`` builds the ``CallClient`` (tests may pass a
    fake); devices are always daily-python's own.
    """

    def __init__(
        self,
        spec: WorkerSpec,
        avatar_image: np.ndarray,
        rig: FaceRig,
        renderer: Renderer,
        options: DailyOptions | None = None,
        *,
        room_options: dict[str, Any] | None = None,
        output: OutputOptions | None = None,
        motion: MotionOptions | None = None,
        client_factory: Callable[[Any], Any] | None = None,
    ) -> None:
        self.spec = spec
        self._image = avatar_image
        self._rig = rig
        self._renderer = renderer
        self.options = o = options or DailyOptions()
        extras = dict(room_options if room_options is not None else spec.room_options)
        self.audio_participant: str | None = extras.get("audio_participant") or None
        self.bot_name: str = extras.get("bot_name") or "Avatar"
        self.output = output or output_options(spec, fps=o.fps, sample_rate=o.sample_rate, format="i420")
        self._motion = motion
        self._client_factory = client_factory
        self._gate = SpeechGate(silence_end_s=o.silence_end_s)

        self.client: Any = None
        self.camera: Any = None
        self.microphone: Any = None
        self.media: MediaSession | None = None
        self.state: str | None = None
        self.audio_participant_id: str | None = None
        self.frames_written = 0
        self.audio_samples_written = 0
        self.write_errors = 0
        self._failed_writes = 0  # in a row
        self.on_media_written: Callable[[RenderedFrame], None] | None = None  # tests, metrics

        self._loop: asyncio.AbstractEventLoop | None = None
        self._participants: dict[str, Mapping[str, Any]] = {}  # remote participants by id
        self.endings = RoomEndings(spec.session_id, empty_grace_s=o.timeouts.empty_grace_s,
                                   reconnect_timeout_s=o.timeouts.reconnect_s)
        self._joined = False
        self._remove_listener: Callable[[], None] | None = None

    # ------------------------------------------------------------------ media (no network needed)
    async def open_media(self) -> MediaSession:
        """Create the render session, the virtual camera + microphone, and start writing frames to them.
        ``connect`` calls it; tests call it alone (no join)."""
        if self.media is not None:
            return self.media
        self._loop = asyncio.get_running_loop()
        daily = ensure_daily()
        o = self.output
        session = await asyncio.to_thread(self._renderer.open_session, self._image, self._rig, o,
                                          motion=self._motion, session_id=self.spec.session_id)
        tag = self.spec.session_id
        self.camera = daily.Daily.create_camera_device(f"avatar-camera-{tag}", width=o.width, height=o.height,
                                                       color_format="I420" if o.format == "i420" else "RGBA")
        self.microphone = daily.Daily.create_microphone_device(f"avatar-mic-{tag}", sample_rate=o.sample_rate,
                                                               channels=1, non_blocking=True)
        self.media = MediaSession(self._renderer, session, self.options.limits)
        self._remove_listener = self.media.add_frame_listener(self._write_media)
        return self.media

    def _write_media(self, frame: RenderedFrame) -> None:
        try:
            self.camera.write_frame(frame.pixels.tobytes())
            audio = np.ascontiguousarray(frame.result.audio, dtype=np.int16)  # silence while idle
            self.microphone.write_frames(audio.tobytes())
        except Exception as exc:
            self.write_errors += 1
            self._failed_writes += 1
            if self.write_errors <= 3:
                log.exception("writing to the virtual devices failed")
            if self._failed_writes >= 2 * self.output.fps:  # two seconds of nothing published
                self._finish(EndReason.MEDIA_FAILED, redact(f"virtual devices failed: {type(exc).__name__}: {exc}")[:300])
            return
        self._failed_writes = 0
        self.frames_written += 1
        self.audio_samples_written += audio.size
        if self.on_media_written is not None:
            self.on_media_written(frame)
        state = "speaking" if self.media is not None and self.media.utterance_active else "idle"
        if state != self.state:
            self.state = state
            self._send_state(state)

    # ------------------------------------------------------------------ RoomConnection
    async def connect(self) -> None:
        if not self.spec.room_url:
            raise RoomConnectFailed("A Daily room needs a url")
        await self.open_media()
        daily = ensure_daily()
        handler = _Handler(self)
        self.client = self._client_factory(handler) if self._client_factory else daily.CallClient(event_handler=handler)
        try:
            self.client.set_user_name(self.bot_name)
        except Exception:
            pass
        settings = {
            "inputs": {
                "camera": {"isEnabled": True, "settings": {"deviceId": self.camera.name}},
                "microphone": {"isEnabled": True, "settings": {"deviceId": self.microphone.name}},
            },
        }
        loop = asyncio.get_running_loop()  # (self._loop, set by open_media)
        joined: asyncio.Future = loop.create_future()

        def on_joined(data: Any, error: Any) -> None:
            def settle() -> None:
                if not joined.done():
                    joined.set_exception(RuntimeError(str(error))) if error else joined.set_result(data)
            loop.call_soon_threadsafe(settle)

        try:
            self.client.join(self.spec.room_url, self.spec.room_token, client_settings=settings, completion=on_joined)
            await asyncio.wait_for(joined, self.options.timeouts.connect_s)
        except BaseException as exc:
            await self._teardown()
            if isinstance(exc, asyncio.CancelledError):
                raise
            what = "timed out" if isinstance(exc, asyncio.TimeoutError) else redact(f"{type(exc).__name__}: {exc}")
            log.warning("Daily join failed: %s", what, extra={"session_id": self.spec.session_id})
            # from None: the cause may quote the token (its text is in the message, redacted)
            raise RoomConnectFailed(f"Could not join the Daily room ({what})",
                                    suggestion="Check the room url and that the meeting token is valid") from None
        self._joined = True
        for pid, p in (self.client.participants() or {}).items():
            if pid != "local":
                self._participant_joined(p)
        self._send_state("connected")
        self._check_empty()
        log.info("joined Daily room", extra={"session_id": self.spec.session_id})

    async def close(self, reason: str | EndReason | None = None) -> None:
        if not await self.endings.begin_close():
            return
        reason_text = self.endings.describe(reason)
        if self._joined:
            self._send_state("disconnected", reason_text)
        await self._teardown()
        self.endings.closed_with(reason)

    async def _teardown(self) -> None:
        self.endings.cancel_timers()
        if self._remove_listener is not None:
            self._remove_listener()
            self._remove_listener = None
        if self.media is not None:
            await self.media.aclose()
        client, self.client = self.client, None
        if client is not None:
            if self._joined:
                loop = asyncio.get_running_loop()  # (self._loop)
                left: asyncio.Future = loop.create_future()

                def on_left(error: Any = None) -> None:
                    def settle() -> None:
                        if not left.done():
                            left.set_result(error)
                    loop.call_soon_threadsafe(settle)

                try:
                    client.leave(completion=on_left)
                    await asyncio.wait_for(left, 3.0)
                except Exception:
                    log.debug("Daily leave did not complete", exc_info=True)
            try:
                client.release()
            except Exception:
                pass
        self._joined = False

    # ------------------------------------------------------------------ speech in
    def _attach_audio(self, participant: Mapping[str, Any]) -> None:
        pid = participant.get("id")
        if not pid or pid == self.audio_participant_id:
            return
        self.audio_participant_id = pid
        log.info("taking speech from participant %s", pid, extra={"session_id": self.spec.session_id})
        if self.client is not None:
            self.client.set_audio_renderer(pid, self.on_audio_data, audio_source="microphone",
                                           sample_rate=self.options.speech_sample_rate, callback_interval_ms=20)

    def on_audio_data(self, participant_id: str, audio: Any, audio_source: str = "microphone") -> None:
        """daily-python's audio renderer callback (its own thread): hand the PCM to the event loop."""
        if participant_id != self.audio_participant_id or self._loop is None:
            return
        pcm = bytes(audio.audio_frames)
        rate, channels = int(audio.sample_rate), int(audio.num_channels)
        self._loop.call_soon_threadsafe(self._push_speech, pcm, rate, channels)

    def _push_speech(self, pcm: bytes, rate: int, channels: int) -> None:
        media = self.media
        if media is None or media.closed:
            return
        from media.renderer import pcm16_to_array

        chunks, end = self._gate.feed(pcm16_to_array(pcm, channels), rate)
        for chunk, r in chunks:
            try:
                media.push_pcm(chunk, r)
            except Exception as exc:  # buffer full: drop rather than grow
                log.warning("speech dropped: %s", exc)
        if end:
            media.end_utterance()

    # ------------------------------------------------------------------ participants → end reasons
    def _matches_audio_participant(self, p: Mapping[str, Any]) -> bool:
        if not self.audio_participant:
            return False
        name = (p.get("info") or {}).get("userName")
        return self.audio_participant in (name, p.get("id"))

    def _participant_joined(self, p: Mapping[str, Any]) -> None:
        pid = p.get("id")
        if not pid or (p.get("info") or {}).get("isLocal"):
            return
        self._participants[pid] = p
        if self._matches_audio_participant(p):
            self._attach_audio(p)
        self._check_empty()

    def _participant_left(self, p: Mapping[str, Any], reason: str = "") -> None:
        pid = p.get("id")
        self._participants.pop(pid or "", None)
        if pid is not None and pid == self.audio_participant_id:
            self._finish(EndReason.AGENT_LEFT, "agent_left")
            return
        self._check_empty()

    def _check_empty(self) -> None:
        if self.endings.closing or self._loop is None:
            return
        self.endings.check_empty(not self._participants, lambda: not self._participants, self._loop)

    def _network_status(self, status: str) -> None:
        if status == "interrupted":
            if self._loop is not None:  # (connected: it is)
                self.endings.connection_lost(self._loop)
        elif status == "connected":
            self.endings.connection_regained()

    def _call_state(self, state: str) -> None:
        if state == "left" and self._joined and not self.endings.closing:
            self._finish(CONNECTION_LOST, "connection_lost")

    def _finish(self, reason: EndReason, detail: str = "") -> None:
        self.endings.finish(reason, detail)

    async def send_state(self, state: str, reason: str = "", **extra: Any) -> None:
        """A ``session.state`` app message (the worker sends ``ending`` through this)."""
        self._send_state(state, reason, **extra)

    def _send_state(self, state: str, reason: str = "", **extra: Any) -> None:
        if self.client is None or not self._joined:
            return
        try:
            self.client.send_app_message({"topic": STATE_TOPIC, "state": state, "reason": reason, **extra})
        except Exception:
            log.debug("session.state not sent", exc_info=True)

    def metrics(self) -> dict[str, Any]:
        out: dict[str, Any] = {"state": self.state, "frames_written": self.frames_written,
                               "audio_samples_written": self.audio_samples_written, "write_errors": self.write_errors}
        if self.media is not None:
            out.update(self.media.stats())
        return out


from daily import EventHandler as _DailyEventHandler


class _Handler(_DailyEventHandler):
    """daily-python events (its threads) → the room's event loop."""

    def __init__(self, room: DailyRoom) -> None:
        super().__init__()
        self._room = room

    def _post(self, fn: Callable, *args: Any) -> None:
        loop = self._room._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(fn, *args)

    def on_participant_joined(self, participant: Mapping[str, Any]) -> None:
        self._post(self._room._participant_joined, participant)

    def on_participant_updated(self, participant: Mapping[str, Any]) -> None:
        self._post(self._room._participant_joined, participant)

    def on_participant_left(self, participant: Mapping[str, Any], reason: str) -> None:
        self._post(self._room._participant_left, participant, reason)

    def on_call_state_updated(self, state: str) -> None:
        self._post(self._room._call_state, state)

    # (daily-python calls this with the topic and the status; its stub names the status only)
    def on_network_connection_status_updated(self, topic: str, status: str) -> None:  # type: ignore[override]
        self._post(self._room._network_status, status)

    def on_error(self, message: str) -> None:
        log.warning("Daily error: %s", message)

"""The session WebSocket (``/v1/ws``): send speech as PCM16 from bytes, a numpy array or a WAV file, and
iterate the server's events (``audio.queued``, ``playback.started``, ``playback.finished``,
``interrupted``, ``error``)."""
from __future__ import annotations

import base64
import json
import os
import wave
from typing import Any, AsyncIterator, Iterator

from .errors import AvatarsError

CHUNK_SECONDS = 0.5  # speech is streamed in half-second messages, far below the 10 MB message cap
AudioSource = bytes | os.PathLike | str | Any  # bytes (PCM16 mono), a WAV path, or a numpy array


class SessionSocketError(AvatarsError):
    """The server refused the socket (``First message must be session.init``, bad token, session ended)."""


def pcm16(audio: AudioSource, sample_rate: int | None = None) -> tuple[bytes, int]:
    """(PCM16 mono little-endian bytes, sample rate) from bytes, a numpy array (int16, or float in
    [-1, 1]; 2-D is averaged to mono) or a WAV file path (16-bit; stereo averaged)."""
    if isinstance(audio, (bytes, bytearray, memoryview)):
        if not sample_rate:
            raise ValueError("sample_rate is required for raw PCM bytes")
        return bytes(audio), sample_rate
    if isinstance(audio, (str, os.PathLike)):
        with wave.open(os.fspath(audio), "rb") as wav:
            if wav.getsampwidth() != 2:
                raise ValueError("WAV files must be 16-bit PCM")
            frames, channels, rate = wav.readframes(wav.getnframes()), wav.getnchannels(), wav.getframerate()
        if channels == 1:
            return frames, rate
        import numpy as np

        audio, sample_rate = np.frombuffer(frames, dtype="<i2").reshape(-1, channels), rate
    import numpy as np

    array = np.asarray(audio)
    if not sample_rate:
        raise ValueError("sample_rate is required for numpy audio")
    is_float = array.dtype.kind == "f"
    if array.ndim == 2:
        array = array.astype(np.float64).mean(axis=1)
    if is_float:
        array = np.clip(array, -1.0, 1.0) * 32767.0
    return np.asarray(array).round().astype("<i2").tobytes(), sample_rate


def audio_messages(audio: AudioSource, sample_rate: int | None = None) -> list[str]:
    """The ``audio`` messages for one utterance, in half-second chunks."""
    data, rate = pcm16(audio, sample_rate)
    step = max(2, int(rate * CHUNK_SECONDS) * 2)
    return [json.dumps({"type": "audio", "audio": base64.b64encode(data[i:i + step]).decode(), "sample_rate": rate})
            for i in range(0, len(data), step)]


def _init(session_id: str, session_token: str, end_session_on_close: bool) -> str:
    return json.dumps({"type": "session.init", "session_id": session_id, "session_token": session_token,
                       "end_session_on_close": end_session_on_close})


def _established(text: str | bytes) -> dict[str, Any]:
    event = json.loads(text)
    if event.get("type") != "connection.established":
        raise SessionSocketError(event.get("error") or f"unexpected first event {event!r}")
    return event


class SessionSocket:
    """Sync: ``with client.connect(sid, token) as ws: ws.send_audio("hello.wav"); ws.end_audio();
    for event in ws.events(): ...``. Every receive is bounded by ``timeout``."""

    def __init__(self, url: str, session_id: str, session_token: str, *, timeout: float = 30.0,
                 end_session_on_close: bool = False) -> None:
        self.url, self.session_id, self._token = url, session_id, session_token
        self.timeout, self.end_session_on_close = timeout, end_session_on_close
        self._ws = None

    def __enter__(self) -> "SessionSocket":
        from websockets.sync.client import connect

        self._ws = connect(self.url, open_timeout=self.timeout, max_size=None)
        try:
            self._ws.send(_init(self.session_id, self._token, self.end_session_on_close))
            _established(self._ws.recv(timeout=self.timeout))
        except Exception as exc:
            self._ws.close()
            if isinstance(exc, AvatarsError):
                raise
            raise SessionSocketError(str(exc)) from exc
        return self

    def __exit__(self, *exc) -> None:
        self._ws.close()

    def send_audio(self, audio: AudioSource, sample_rate: int | None = None, *, end: bool = True) -> None:
        """Send one utterance; ``end`` marks its end (``audio.end``)."""
        for message in audio_messages(audio, sample_rate):
            self._ws.send(message)
        if end:
            self.end_audio()

    def end_audio(self) -> None:
        self._ws.send(json.dumps({"type": "audio.end"}))

    def interrupt(self) -> None:
        self._ws.send(json.dumps({"type": "interrupt"}))

    def recv(self, timeout: float | None = None) -> dict[str, Any]:
        return json.loads(self._ws.recv(timeout=timeout or self.timeout))

    def events(self, timeout: float | None = None) -> Iterator[dict[str, Any]]:
        """The server's events until the socket closes (each wait bounded by ``timeout``)."""
        from websockets.exceptions import ConnectionClosed

        while True:
            try:
                yield self.recv(timeout)
            except ConnectionClosed:
                return


class AsyncSessionSocket:
    """Async: ``async with client.connect(sid, token) as ws: await ws.send_audio(pcm, 24000);
    async for event in ws.events(): ...``."""

    def __init__(self, url: str, session_id: str, session_token: str, *, timeout: float = 30.0,
                 end_session_on_close: bool = False) -> None:
        self.url, self.session_id, self._token = url, session_id, session_token
        self.timeout, self.end_session_on_close = timeout, end_session_on_close
        self._ws = None

    async def __aenter__(self) -> "AsyncSessionSocket":
        import asyncio

        from websockets.asyncio.client import connect

        self._ws = await connect(self.url, open_timeout=self.timeout, max_size=None)
        try:
            await self._ws.send(_init(self.session_id, self._token, self.end_session_on_close))
            _established(await asyncio.wait_for(self._ws.recv(), self.timeout))
        except Exception as exc:
            await self._ws.close()
            if isinstance(exc, AvatarsError):
                raise
            raise SessionSocketError(str(exc)) from exc
        return self

    async def __aexit__(self, *exc) -> None:
        await self._ws.close()

    async def send_audio(self, audio: AudioSource, sample_rate: int | None = None, *, end: bool = True) -> None:
        for message in audio_messages(audio, sample_rate):
            await self._ws.send(message)
        if end:
            await self.end_audio()

    async def end_audio(self) -> None:
        await self._ws.send(json.dumps({"type": "audio.end"}))

    async def interrupt(self) -> None:
        await self._ws.send(json.dumps({"type": "interrupt"}))

    async def recv(self, timeout: float | None = None) -> dict[str, Any]:
        import asyncio

        return json.loads(await asyncio.wait_for(self._ws.recv(), timeout or self.timeout))

    async def events(self, timeout: float | None = None) -> AsyncIterator[dict[str, Any]]:
        from websockets.exceptions import ConnectionClosed

        while True:
            try:
                yield await self.recv(timeout)
            except ConnectionClosed:
                return

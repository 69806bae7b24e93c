"""``avatarctl say <session_id> speech.wav --token <session_token>``: speak a WAV file through the session
WebSocket and print every server event as a JSON line, until the speech has played.

The WebSocket (``/v1/ws``) takes PCM16 little-endian mono as base64 in ``audio`` messages, any integer
``sample_rate`` from 8000 to 192000 (resampled to 16 kHz by the worker; ``audio.queued`` reports 16 kHz
samples) and at most 10 MB of PCM per message. Speech is sent in chunks (``--chunk-ms``, default 200 ms)
so the avatar starts speaking before the whole file is sent; past ``max_buffered_speech_s`` of unplayed
speech the server answers more slowly (backpressure). This command is also the README's WebSocket client.
"""
from __future__ import annotations

import asyncio
import base64
import json
import sys
import time
from typing import Any

#: Bounds of the server's ``sample_rate`` check (serve_app/live.py).
MIN_RATE, MAX_RATE = 8000, 192000


def read_speech(path: str) -> tuple[bytes, int]:
    """PCM16 mono bytes and the sample rate of a WAV file (any PCM or float WAV; channels mixed down),
    or of ``synth``: speech-like synthetic audio (the renderer CLI's reader, shared)."""
    from media.renderer.cli import read_wav

    try:
        audio, rate = read_wav(path)
    except (OSError, ValueError) as exc:
        raise SystemExit(f"error: cannot read {path} as a WAV file ({exc}); convert it, e.g. "
                         f"ffmpeg -i {path} -ac 1 -ar 16000 speech.wav") from None
    if not MIN_RATE <= rate <= MAX_RATE:
        raise SystemExit(f"error: {path} is sampled at {rate} Hz; the WebSocket takes {MIN_RATE}-{MAX_RATE} Hz")
    return audio.astype("<i2").tobytes(), rate


def chunks(pcm: bytes, rate: int, chunk_ms: int) -> list[bytes]:
    step = max(2, rate * chunk_ms // 1000 * 2)
    return [pcm[i:i + step] for i in range(0, len(pcm), step)]


async def say(ws_url: str, session_id: str, token: str, pcm: bytes, rate: int, *, chunk_ms: int = 200,
              end_session: bool = False, timeout_s: float | None = None, out=None) -> int:
    """Send the speech, print events; 0 once ``playback.finished`` arrived, 2 on an error event."""
    from websockets.asyncio.client import connect

    out = out or sys.stdout
    timeout_s = timeout_s if timeout_s is not None else len(pcm) / 2 / rate + 60.0

    def show(event: dict) -> None:
        print(json.dumps(event), file=out, flush=True)

    async with connect(ws_url, open_timeout=30, max_size=None) as ws:
        init: dict[str, Any] = {"type": "session.init", "session_id": session_id, "session_token": token}
        if end_session:
            init["end_session_on_close"] = True
        await ws.send(json.dumps(init))
        first = json.loads(await asyncio.wait_for(ws.recv(), timeout=30))
        show(first)
        if first.get("type") != "connection.established":
            return 2

        async def send() -> None:
            for chunk in chunks(pcm, rate, chunk_ms):
                await ws.send(json.dumps({"type": "audio", "audio": base64.b64encode(chunk).decode(),
                                          "sample_rate": rate}))
            await ws.send(json.dumps({"type": "audio.end"}))

        sender = asyncio.create_task(send())
        deadline = time.monotonic() + timeout_s
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    print(f"error: no playback.finished within {timeout_s:.0f} s", file=sys.stderr)
                    return 2
                event = json.loads(await asyncio.wait_for(ws.recv(), timeout=left))
                show(event)
                if event.get("type") == "playback.finished":
                    return 0
                if event.get("type") == "error":
                    return 2
        finally:
            sender.cancel()


def cmd_say(args, settings) -> None:
    import os

    token = args.token or os.environ.get("AVATAR_SESSION_TOKEN")
    if not token:
        raise SystemExit("error: the session token is needed: --token st_... (the create response's "
                         "session_token) or AVATAR_SESSION_TOKEN")
    if args.chunk_ms < 10:
        raise SystemExit("error: --chunk-ms must be at least 10")
    pcm, rate = read_speech(args.wav)
    base = (args.base_url or settings.base_url).rstrip("/")
    ws_url = base.replace("https://", "wss://", 1).replace("http://", "ws://", 1) + "/v1/ws"
    from websockets.exceptions import ConnectionClosed, InvalidHandshake

    try:
        code = asyncio.run(say(ws_url, args.session_id, token, pcm, rate, chunk_ms=args.chunk_ms,
                               end_session=args.end))
    except (OSError, asyncio.TimeoutError, InvalidHandshake) as exc:
        raise SystemExit(f"error: cannot talk to {ws_url} ({type(exc).__name__}: {exc}); is the platform "
                         "running there (--base-url)?") from None
    except ConnectionClosed as exc:
        raise SystemExit(f"error: the server closed the WebSocket ({exc})") from None
    if code:
        raise SystemExit(code)


def add_parser(sub) -> None:
    p = sub.add_parser("say", help="speak a WAV file through a session's WebSocket, printing its events")
    p.add_argument("session_id")
    p.add_argument("wav", help="a WAV file (8-192 kHz; stereo is mixed down), or 'synth' for synthetic speech")
    p.add_argument("--token", help="the session_token of the create response (default: $AVATAR_SESSION_TOKEN)")
    p.add_argument("--base-url", help="the API's base URL (default: http://AVATAR_HTTP_HOST:AVATAR_HTTP_PORT)")
    p.add_argument("--chunk-ms", type=int, default=200, help="milliseconds of speech per audio message")
    p.add_argument("--end", action="store_true", help="end the session when the socket closes (ws_closed)")
    p.set_defaults(func=cmd_say)

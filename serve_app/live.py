"""Live media over HTTP: the session WebSocket (speech in, playback events out) and the MJPEG preview.

Both talk to the session's worker actor (``worker-<session id>``) with bounded calls: speech waits while
the worker holds too much unplayed audio (backpressure instead of unbounded memory), event and frame
reads are long polls with timeouts.
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import time
from typing import Any

import ray
from fastapi import APIRouter, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import StreamingResponse
from ray.exceptions import RayActorError, RayTaskError

from core import errors, ids
from core.security import hash_secret, secrets_equal, sign
from core.status import EndReason, SessionStatus
from serve_app import contract
from serve_app.contract import KEYED, errors_for, ok
from serve_app.deps import services

log = logging.getLogger("avatars.live")
router = APIRouter()

MAX_AUDIO_BYTES = 10 * 1024 * 1024
MAX_MESSAGE_CHARS = MAX_AUDIO_BYTES * 4 // 3 + 4096  # base64 of 10 MB plus the JSON around it
BOUNDARY = "frame"


# ====================================================================== helpers
async def _worker(session_id: str):
    settings = services().settings
    try:
        return await asyncio.to_thread(ray.get_actor, ids.worker_name(session_id), namespace=settings.ray_namespace)
    except ValueError:
        raise errors.SessionNotActive("The session has no running worker") from None


async def _call(ref, timeout: float) -> Any:
    try:
        return await asyncio.wait_for(ref, timeout=timeout)
    except RayTaskError as exc:
        if isinstance(exc.cause, errors.ApiError):
            raise exc.cause from None
        raise
    except RayActorError:
        raise errors.SessionNotActive("The session's worker is gone") from None


def preview_token(session_id: str, expires: int) -> str:
    secret = services().settings.resolved_secret_key()
    return f"{expires}.{sign(secret, f'preview:{session_id}:{expires}')}"


def check_preview_token(session_id: str, token: str) -> None:
    try:
        expires_s, sig = token.split(".", 1)
        expires = int(expires_s)
    except ValueError:
        raise errors.Forbidden("Invalid preview token") from None
    if not secrets_equal(preview_token(session_id, expires).split(".", 1)[1], sig):
        raise errors.Forbidden("Invalid preview token")
    if expires < time.time():
        raise errors.Forbidden("Preview token expired")


# ====================================================================== preview
@router.post("/v1/sessions/{session_id}/preview-token", tags=["preview"],
             summary="A short-lived token for the MJPEG preview (an <img> tag cannot send headers)",
             response_model=None, responses={**ok(contract.PreviewTokenResponse, "The token and the preview URL"),
                                             **errors_for(*KEYED, 404, codes={404: "SESSION_NOT_FOUND"})})
async def issue_preview_token(session_id: str, request: Request) -> dict[str, Any]:
    svc = services()
    await asyncio.to_thread(svc.store.sessions.get_session, session_id, request.state.auth.account_id)
    expires = int(time.time()) + svc.settings.preview_token_ttl_s
    token = preview_token(session_id, expires)
    return {"success": True, "token": token, "expires_at": expires,
            "preview_url": f"/v1/sessions/{session_id}/preview?token={token}"}


@router.get("/v1/sessions/{session_id}/preview", tags=["preview"],
            summary="The session's video as MJPEG (multipart/x-mixed-replace)", response_model=None,
            openapi_extra=contract.KEY_OR_PREVIEW_TOKEN,
            responses={200: {"description": "MJPEG stream", "content": {
                           f"multipart/x-mixed-replace; boundary={BOUNDARY}": {"schema": {"type": "string",
                                                                                          "format": "binary"}}}},
                       **errors_for(*KEYED, 403, 404, 409, codes={
                           403: "FORBIDDEN (invalid or expired preview token)", 404: "SESSION_NOT_FOUND",
                           409: "SESSION_NOT_ACTIVE"})})
async def preview(session_id: str, request: Request, token: str | None = None) -> StreamingResponse:
    svc = services()
    auth = getattr(request.state, "auth", None)
    if auth is not None:
        row = await asyncio.to_thread(svc.store.sessions.get_session, session_id, auth.account_id)
    else:
        check_preview_token(session_id, token or "")
        row = await asyncio.to_thread(svc.store.sessions.get_session, session_id)
    if row.status != SessionStatus.STARTED.value:
        raise errors.SessionNotActive()
    worker = await _worker(session_id)
    first = await _call(worker.preview_frame.remote(0, 10.0), timeout=15.0)  # errors before streaming

    async def stream():
        seq, jpeg = first
        idle_since = time.monotonic()
        while True:
            if jpeg is not None:
                idle_since = time.monotonic()
                yield (f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n\r\n"
                       .encode() + jpeg + b"\r\n")
            elif time.monotonic() - idle_since > 10.0:
                return  # the worker stopped producing frames (session ended)
            try:
                seq, jpeg = await _call(worker.preview_frame.remote(seq, 5.0), timeout=10.0)
            except (errors.ApiError, asyncio.TimeoutError):
                return

    return StreamingResponse(stream(), media_type=f"multipart/x-mixed-replace; boundary={BOUNDARY}",
                             headers={"Cache-Control": "no-store"})


# ====================================================================== the session WebSocket
@router.websocket("/v1/ws")
async def session_socket(ws: WebSocket) -> None:
    await ws.accept()
    svc = services()
    try:
        init = await asyncio.wait_for(ws.receive_text(), timeout=30.0)
        message = json.loads(init)
    except (asyncio.TimeoutError, json.JSONDecodeError, WebSocketDisconnect, RuntimeError):
        message = None
    if not isinstance(message, dict) or message.get("type") != "session.init":
        await _close_with_error(ws, "First message must be session.init", 4400)
        return
    session_id, token = message.get("session_id"), message.get("session_token")
    try:
        row = await asyncio.to_thread(svc.store.sessions.get_session, str(session_id))
    except errors.SessionNotFound:
        row = None
    if row is None or not isinstance(token, str) or not secrets_equal(hash_secret(token), row.session_token_hash):
        await _close_with_error(ws, "Invalid session_id or session_token", 4401)
        return
    if row.status != SessionStatus.STARTED.value:
        await _close_with_error(ws, "Session is not running", 4409)
        return
    try:
        worker = await _worker(row.id)
    except errors.ApiError as exc:
        await _close_with_error(ws, exc.message, 4409)
        return
    end_on_close = bool(message.get("end_session_on_close", False))
    await ws.send_json({"type": "connection.established", "session_id": row.id})
    log.info("session websocket open", extra={"session_id": row.id, "account_id": row.account_id})

    pump = asyncio.create_task(_pump_events(ws, worker, row.id))
    try:
        await _receive_loop(ws, worker)
    finally:
        pump.cancel()
        if end_on_close:
            try:
                await svc.scheduler.end_session(row.id, EndReason.WS_CLOSED, timeout=30.0)
            except errors.ApiError:
                pass


async def _receive_loop(ws: WebSocket, worker) -> None:
    while True:
        try:
            text = await ws.receive_text()
        except (WebSocketDisconnect, RuntimeError):
            return
        if len(text) > MAX_MESSAGE_CHARS:
            await _send_error(ws, "Message too large (audio is limited to 10 MB)")
            continue
        try:
            msg = json.loads(text)
            kind = msg.get("type") if isinstance(msg, dict) else None
        except json.JSONDecodeError:
            await _send_error(ws, "Messages must be JSON objects")
            continue
        try:
            if kind == "audio":
                pcm, rate = _decode_audio(msg)
                samples = await _call(worker.push_audio.remote(pcm, rate), timeout=60.0)
                await ws.send_json({"type": "audio.queued", "audio_samples": samples})
            elif kind == "audio.end":
                await _call(worker.end_audio.remote(), timeout=10.0)
            elif kind == "interrupt":
                await _call(worker.interrupt.remote(), timeout=10.0)
                await ws.send_json({"type": "interrupted"})
            else:
                await _send_error(ws, f"Unknown message type {kind!r}")
        except errors.SessionNotActive:
            await _close_with_error(ws, "Session ended", 4410)
            return
        except errors.ApiError as exc:
            await _send_error(ws, exc.message)
        except (WebSocketDisconnect, RuntimeError):
            return


def _decode_audio(msg: dict) -> tuple[bytes, int]:
    rate = msg.get("sample_rate")
    if not isinstance(rate, int) or not 8000 <= rate <= 192000:
        raise errors.ValidationFailed("sample_rate must be an integer from 8000 to 192000")
    data = msg.get("audio")
    if not isinstance(data, str):
        raise errors.ValidationFailed("audio must be base64 PCM16 mono")
    try:
        pcm = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise errors.ValidationFailed("audio is not valid base64") from None
    if len(pcm) > MAX_AUDIO_BYTES:
        raise errors.ValidationFailed("audio is larger than 10 MB")
    if len(pcm) % 2:
        raise errors.ValidationFailed("PCM16 audio must have an even number of bytes")
    return pcm, rate


async def _pump_events(ws: WebSocket, worker, session_id: str) -> None:
    """Forward playback events until the socket or the session closes."""
    after = 0
    try:
        while True:
            after, messages, ended = await _call(worker.events.remote(after, 10.0), timeout=20.0)
            for message in messages:
                await ws.send_json(message)
            if ended:
                break
    except (errors.ApiError, asyncio.TimeoutError):
        pass
    except (WebSocketDisconnect, RuntimeError, asyncio.CancelledError):
        return
    await _close_with_error(ws, "Session ended", 4410)


async def _send_error(ws: WebSocket, text: str) -> None:
    await ws.send_json({"type": "error", "error": text})


async def _close_with_error(ws: WebSocket, text: str, code: int) -> None:
    try:
        await ws.send_json({"type": "error", "error": text})
        await ws.close(code=code)
    except (WebSocketDisconnect, RuntimeError):
        pass

"""SDK pieces without a server: error envelopes → typed errors, Retry-After parsing, audio encoding for the
session WebSocket, webhook verification (signed with the standardwebhooks package the server uses)."""
from __future__ import annotations

import base64
import json
import time
import wave

import numpy as np
import pytest
from standardwebhooks.webhooks import Webhook

from avatars_sdk import (AuthenticationError, ConflictError, InternalServerError, WebhookVerificationError,
                         verify_webhook)
from avatars_sdk.errors import error_from_response, parse_retry_after
from avatars_sdk.ws import audio_messages, pcm16


def test_error_envelopes_become_typed_errors():
    err = error_from_response(409, {"retry-after": "2"}, {"success": False, "error": {
        "code": "IDEMPOTENCY_IN_PROGRESS", "message": "still running", "suggestion": "wait",
        "details": {"key": "k"}}})
    assert isinstance(err, ConflictError)
    assert (err.code, err.message, err.details, err.suggestion, err.retry_after) == (
        "IDEMPOTENCY_IN_PROGRESS", "still running", {"key": "k"}, "wait", 2.0)
    auth = error_from_response(401, {}, {"error": "API key required"})
    assert isinstance(auth, AuthenticationError) and auth.code == "UNAUTHORIZED" and auth.message == "API key required"
    bad_gateway = error_from_response(502, {}, "<html>bad gateway</html>")
    assert isinstance(bad_gateway, InternalServerError) and bad_gateway.code == "HTTP_502"


def test_retry_after_seconds_and_http_date():
    assert parse_retry_after("7") == 7.0 and parse_retry_after(None) is None and parse_retry_after("soon") is None
    from email.utils import formatdate

    assert 5 <= parse_retry_after(formatdate(time.time() + 10, usegmt=True)) <= 10


def test_audio_from_bytes_numpy_and_wav_is_the_same_pcm(tmp_path):
    tone = np.sin(np.linspace(0, 200 * np.pi, 24000)).astype(np.float32) * 0.5
    as_int16 = (tone * 32767).round().astype("<i2")
    from_float, rate = pcm16(tone, 24000)
    assert rate == 24000 and from_float == as_int16.tobytes()
    assert pcm16(as_int16.tobytes(), 24000)[0] == from_float
    stereo = np.stack([as_int16, as_int16], axis=1)
    path = tmp_path / "tone.wav"
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(2), wav.setsampwidth(2), wav.setframerate(24000)
        wav.writeframes(stereo.tobytes())
    assert pcm16(path) == (from_float, 24000)  # stereo averaged to mono
    messages = [json.loads(m) for m in audio_messages(path)]
    assert len(messages) == 2 and {m["sample_rate"] for m in messages} == {24000}
    assert b"".join(base64.b64decode(m["audio"]) for m in messages) == from_float
    with pytest.raises(ValueError):
        pcm16(b"\x00\x00")  # raw bytes need their rate


def test_webhook_verifier():
    secret = "whsec_" + base64.b64encode(b"k" * 24).decode()
    payload = json.dumps({"type": "session.ended", "timestamp": "2026-01-01T00:00:00Z", "data": {"x": 1}})
    now = int(time.time())
    from datetime import datetime, timezone

    signature = Webhook(secret).sign("msg_1", datetime.fromtimestamp(now, timezone.utc), payload)
    headers = {"Webhook-Id": "msg_1", "Webhook-Timestamp": str(now), "Webhook-Signature": signature}
    assert verify_webhook(payload, headers, secret)["type"] == "session.ended"
    with pytest.raises(WebhookVerificationError):
        verify_webhook(payload.replace("1}", "2}"), headers, secret)
    with pytest.raises(WebhookVerificationError):
        verify_webhook(payload, {**headers, "Webhook-Timestamp": str(now - 3600)}, secret)

"""Secrets never reach a log line, even when an SDK's error message quotes them."""
from __future__ import annotations

import json
import logging
import sys

from core.logs import JsonFormatter, RedactSecrets, configure, redact
from core.security import new_api_key, new_session_token

JWT = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhdmF0YXIifQ.c2lnbmF0dXJl"


def test_redact_masks_every_secret_shape_and_keeps_ids():
    key, token = new_api_key(), new_session_token()
    text = (f"signal failure: 401 invalid token: {JWT}; key {key}; ws {token}; "
            f"wss://lk.example/rtc?access_token=abc.def&auto_subscribe=1 "
            "session sess_01M8XH8YFZZ4FN4491HAPWWGVV account acct_01M8XH898BEV4ZXYF7JTEVHJC9 first_frame_pushed")
    out = redact(text)
    for secret in (JWT, key, token, "abc.def"):
        assert secret not in out
    assert out.count("[redacted]") == 4
    assert "sess_01M8XH8YFZZ4FN4491HAPWWGVV" in out and "acct_01M8XH898BEV4ZXYF7JTEVHJC9" in out
    assert "auto_subscribe=1" in out and "first_frame_pushed" in out


def test_formatter_redacts_messages_extras_and_tracebacks():
    try:
        raise ConnectionError(f"engine: signal failure: client error: 401 Unauthorized - invalid token: {JWT}")
    except ConnectionError:
        record = logging.getLogger("avatars.test").makeRecord(
            "avatars.test", logging.WARNING, __file__, 1, "join failed: %s", (JWT,), exc_info=sys.exc_info(),
            extra={"session_id": "sess_1", "url": f"wss://x/rtc?token={JWT}"})
    line = JsonFormatter().format(record)
    assert JWT not in line
    out = json.loads(line)
    assert out["message"] == "join failed: [redacted]" and out["session_id"] == "sess_1"
    assert "[redacted]" in out["exception"] and "ConnectionError" in out["exception"]


def test_sdk_log_records_are_redacted_once_configured(caplog):
    """LiveKit's native core logs through the ``livekit`` logger (in a Ray worker no handler of its own:
    Python's last resort prints it to stderr, which Ray keeps in the worker's log file)."""
    configure()
    with caplog.at_level(logging.ERROR, logger="livekit"):
        logging.getLogger("livekit").log(logging.ERROR, "%s:%s:%s - %s", "livekit::rtc_engine", 557,
                                         "livekit::rtc_engine", f"401 Unauthorized - invalid token: {JWT}")
    [line] = [r.getMessage() for r in caplog.records if r.name == "livekit"]
    assert line.startswith("livekit::rtc_engine:557") and line.endswith("invalid token: [redacted]")
    assert logging.lastResort is None or any(isinstance(f, RedactSecrets) for f in logging.lastResort.filters)

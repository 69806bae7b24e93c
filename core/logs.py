"""Structured logs: one JSON object a line, with the ids the call passed in ``extra`` (session_id,
account_id, reason, ...). Secrets never reach a log call: room tokens live only in WorkerSpec (kept out
of its repr), API keys and session tokens only as hashes. Text that comes from elsewhere (an SDK's error
message quoting the token it refused) goes through :func:`redact`, and so does every formatted line."""
from __future__ import annotations

import json
import logging
import re
import sys
import time

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}

#: What a secret looks like in free text: a JWT (LiveKit and Daily room tokens), one of our API keys or
#: session tokens, a token in a URL's query.
_SECRETS = re.compile(r"eyJ[\w-]+\.[\w-]+\.[\w-]*|\b(?:ah_live_|ah_test_|st_)[A-Za-z0-9_-]{16,}"
                      r"|(?<=[?&]access_token=)[^&\s'\"]+|(?<=[?&]token=)[^&\s'\"]+")


def redact(text: str) -> str:
    """``text`` with every secret-shaped substring replaced by ``[redacted]``."""
    return _SECRETS.sub("[redacted]", text)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": round(record.created, 3),
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        out.update({k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")})
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return redact(json.dumps(out, default=str))


class RedactSecrets(logging.Filter):
    """Redacts the message of records that the SDKs log in our processes: LiveKit's native core logs the
    token it refused ("401 Unauthorized - invalid token: eyJ..."), through the ``livekit`` logger."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        return True


#: Third-party loggers whose records may quote a room token (a logger's filter sees only its own records).
_SDK_LOGGERS = ("livekit", "livekit.agents", "livekit.api", "daily")


def configure(level: int = logging.INFO) -> None:
    """Send the platform's loggers (``avatars.*``) to stderr as JSON lines (once per process), and redact
    what the SDKs' loggers and Python's last-resort handler print."""
    for target in [*map(logging.getLogger, _SDK_LOGGERS), *logging.getLogger().handlers, logging.lastResort]:
        if target is not None and not any(isinstance(f, RedactSecrets) for f in target.filters):
            target.addFilter(RedactSecrets())
    root = logging.getLogger("avatars")
    if any(isinstance(h.formatter, JsonFormatter) for h in root.handlers):
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root.addHandler(handler)
    root.setLevel(level)
    root.propagate = False

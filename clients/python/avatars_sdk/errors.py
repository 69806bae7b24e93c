"""Typed errors: every API error carries the envelope's ``code``, ``message``, ``details``, ``suggestion``,
the HTTP ``status`` and ``retry_after`` (seconds, from the ``Retry-After`` header)."""
from __future__ import annotations

from typing import Any


class AvatarsError(Exception):
    """Base of everything this SDK raises."""


class APIConnectionError(AvatarsError):
    """The request never got an answer (connection refused, reset, timed out)."""


class APIError(AvatarsError):
    status: int = 0

    def __init__(self, status: int, code: str, message: str, *, details: dict[str, Any] | None = None,
                 suggestion: str | None = None, retry_after: float | None = None,
                 body: Any = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message = status, code, message
        self.details = details or {}
        self.suggestion = suggestion
        self.retry_after = retry_after
        self.body = body


class BadRequestError(APIError):
    """400: the request was refused and nothing changed."""


class AuthenticationError(APIError):
    """401: API key missing, invalid or deactivated (``code`` is ``UNAUTHORIZED``)."""


class PermissionDeniedError(APIError):
    """403: plan or ownership refuses it (``PLAN_REQUIRES_AVATAR_ID``, ``INSUFFICIENT_MINUTES``, ...)."""


class NotFoundError(APIError):
    """404: ``SESSION_NOT_FOUND``, ``AVATAR_NOT_FOUND``, ..."""


class ConflictError(APIError):
    """409: e.g. ``IDEMPOTENCY_KEY_REUSED``, ``IDEMPOTENCY_IN_PROGRESS``."""


class PayloadError(APIError):
    """413/415: the image is too large or not an image."""


class RateLimitError(APIError):
    """429: ``RATE_LIMITED`` or ``CONCURRENCY_LIMIT_REACHED``."""


class ServiceUnavailableError(APIError):
    """503: e.g. ``CAPACITY_UNAVAILABLE``; ``retry_after`` says when to try again."""


class InternalServerError(APIError):
    """500/502 and other 5xx."""


class WebhookVerificationError(AvatarsError):
    """A webhook's signature, timestamp or headers do not verify."""


_BY_STATUS = {400: BadRequestError, 401: AuthenticationError, 403: PermissionDeniedError, 404: NotFoundError,
              409: ConflictError, 413: PayloadError, 415: PayloadError, 429: RateLimitError,
              503: ServiceUnavailableError}


def parse_retry_after(value: str | None) -> float | None:
    """``Retry-After`` as seconds: delta-seconds or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    from email.utils import parsedate_to_datetime
    from datetime import datetime, timezone

    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())


def error_from_response(status: int, headers: Any, body: Any) -> APIError:
    """The typed error for a non-2xx answer, from the SPEC envelope (or the 401 short form, or anything)."""
    retry_after = parse_retry_after(headers.get("retry-after"))
    code, message, details, suggestion = f"HTTP_{status}", f"HTTP {status}", {}, None
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict):
            code = str(err.get("code") or code)
            message = str(err.get("message") or message)
            details = err.get("details") if isinstance(err.get("details"), dict) else {}
            suggestion = err.get("suggestion")
        elif isinstance(err, str):  # 401: {"error": "API key required"}
            code, message = ("UNAUTHORIZED" if status == 401 else code), err
    elif isinstance(body, str) and body:
        message = body[:500]
    cls = _BY_STATUS.get(status, InternalServerError if status >= 500 else APIError)
    return cls(status, code, message, details=details, suggestion=suggestion, retry_after=retry_after, body=body)

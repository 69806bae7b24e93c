"""Typed errors that map one-to-one onto the SPEC's error codes.

Every error the platform reports to a client is an ``ApiError`` subclass: it carries the HTTP status,
the machine code, a human message, an optional suggestion and details. The HTTP layer turns them into
the SPEC's envelope; everything below it (policy, scheduler, pipelines) raises them without knowing
about HTTP. ``retryable`` tells callers (and clients, through ``Retry-After``) whether trying again
later can succeed.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar


class ApiError(Exception):
    """Base of every client-visible error. Subclasses fix ``status`` and ``code``."""

    status: int = 500  # per class (HttpError: per instance, the framework's status)
    code: ClassVar[str] = "INTERNAL_ERROR"
    default_message: ClassVar[str] = "Internal server error"
    retryable: ClassVar[bool] = False

    def __init__(
        self,
        message: str | None = None,
        *,
        suggestion: str | None = None,
        details: dict[str, Any] | None = None,
        retry_after_s: int | None = None,
    ) -> None:
        self.message = message or self.default_message
        self.suggestion = suggestion
        self.details = details or {}
        self.retry_after_s = retry_after_s
        super().__init__(self.message)

    def envelope(self) -> dict[str, Any]:
        """The SPEC's error envelope."""
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.suggestion:
            error["suggestion"] = self.suggestion
        if self.details:
            error["details"] = self.details
        return {"success": False, "error": error}

    # Ray pickles exceptions raised inside actors; keep the keyword arguments across the trip.
    def __reduce__(self) -> tuple[Callable[..., ApiError], tuple[Any, ...]]:
        return (_rebuild, (type(self), self.message, self.suggestion, self.details, self.retry_after_s))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.code}: {self.message})"


def _rebuild(cls: type[ApiError], message: str, suggestion: str | None, details: dict[str, Any] | None,
             retry_after_s: int | None) -> ApiError:
    return cls(message, suggestion=suggestion, details=details, retry_after_s=retry_after_s)


# ---------------------------------------------------------------- authentication (plain 401 bodies)
class AuthError(ApiError):
    """401s use the SPEC's short body ``{"error": "..."}``, not the envelope."""

    status = 401
    code = "UNAUTHORIZED"

    def envelope(self) -> dict[str, Any]:
        return {"error": self.message}


class ApiKeyRequired(AuthError):
    default_message = "API key required"


class InvalidApiKey(AuthError):
    default_message = "Invalid API key"


class ApiKeyDeactivated(AuthError):
    default_message = "API key deactivated"


# ---------------------------------------------------------------- 400 validation
class ValidationFailed(ApiError):
    status = 400
    code = "INVALID_REQUEST"
    default_message = "The request is not valid"


class InvalidJson(ValidationFailed):
    code = "INVALID_JSON"
    default_message = "The request body is not valid JSON"


class InvalidAspectRatio(ValidationFailed):
    code = "INVALID_ASPECT_RATIO"
    default_message = "aspect_ratio must be one of 4:3, 3:4, 1:1"


class InvalidRoomPlatform(ValidationFailed):
    code = "INVALID_ROOM_PLATFORM"
    default_message = "room.platform must be 'daily', 'livekit' or 'proxy'"


class InvalidRoom(ValidationFailed):
    code = "INVALID_ROOM"
    default_message = "room must be an object with non-empty string platform, url and token"


class InvalidRoomUrl(ValidationFailed):
    code = "INVALID_ROOM_URL"
    default_message = "room.url has the wrong scheme for its platform"


class InvalidMetadata(ValidationFailed):
    code = "INVALID_METADATA"
    default_message = "metadata must be a JSON object of at most 16 KiB"


class InvalidAvatar(ValidationFailed):
    code = "INVALID_AVATAR"
    default_message = "avatar must be a non-empty string: an avatar id, an image URL or a base64 image"


class InvalidQuery(ValidationFailed):
    code = "INVALID_QUERY"
    default_message = "A query parameter is not valid"


class InvalidWebhook(ValidationFailed):
    code = "INVALID_WEBHOOK"
    default_message = "The webhook is not valid"


class WebhookUrlNotAllowed(ValidationFailed):
    code = "WEBHOOK_URL_NOT_ALLOWED"
    default_message = "The webhook URL is not allowed"


class InvalidCursor(ValidationFailed):
    code = "INVALID_CURSOR"
    default_message = "cursor is not a cursor this API issued"


# ---------------------------------------------------------------- faces (upload-face and avatar in create)
class NoFaceDetected(ValidationFailed):
    code = "NO_FACE_DETECTED"
    default_message = "No face was found in the image"
    suggestion_text = "Upload a well-lit, front-facing portrait"


class MultipleFaces(ValidationFailed):
    code = "MULTIPLE_FACES"
    default_message = "More than one face was found in the image"


class FaceNotProminent(ValidationFailed):
    code = "FACE_NOT_PROMINENT"
    default_message = "The face is too small or cut off by the image border"


class InvalidImage(ValidationFailed):
    code = "INVALID_IMAGE"
    default_message = "Exactly one of file, image_url or image_base64 is required"


class InvalidBase64(ValidationFailed):
    code = "INVALID_BASE64"
    default_message = "image_base64 is not valid base64"


class ImageUrlNotAllowed(ValidationFailed):
    code = "IMAGE_URL_NOT_ALLOWED"
    default_message = "The image URL is not allowed"


class ImageFetchFailed(ValidationFailed):
    code = "IMAGE_FETCH_FAILED"
    default_message = "The image URL could not be fetched"


class ImageTooLarge(ApiError):
    status = 413
    code = "IMAGE_TOO_LARGE"
    default_message = "The image is larger than 10 MB or 40 megapixels"


class UnsupportedImage(ApiError):
    status = 415
    code = "UNSUPPORTED_IMAGE"
    default_message = "The image is not a JPEG, PNG, GIF or WebP"


class MethodNotAllowed(ApiError):
    status = 405
    code = "METHOD_NOT_ALLOWED"
    default_message = "This method is not allowed on this path (see the Allow header)"


class HttpError(ApiError):
    """An HTTP error raised by the web framework itself; the handler sets its ``status``."""

    code = "HTTP_ERROR"


class PayloadTooLarge(ApiError):
    status = 413
    code = "PAYLOAD_TOO_LARGE"
    default_message = "The request body is too large"


# ---------------------------------------------------------------- 403 plan and access
class PlanRequiresAvatarId(ApiError):
    status = 403
    code = "PLAN_REQUIRES_AVATAR_ID"
    default_message = "Your plan only accepts avatar ids; upload the face first or upgrade"


class AvatarAccessDenied(ApiError):
    status = 403
    code = "AVATAR_ACCESS_DENIED"
    default_message = "This avatar belongs to another account"


class InsufficientMinutes(ApiError):
    status = 403
    code = "INSUFFICIENT_MINUTES"
    default_message = "No minutes remain on this account"
    suggestion_text = "Buy a minute pack or wait for the next period"


class AvatarLimitReached(ApiError):
    status = 403
    code = "AVATAR_LIMIT_REACHED"
    default_message = "The plan's avatar uploads for this period are used up"


class WebhookLimitReached(ApiError):
    status = 403
    code = "WEBHOOK_LIMIT_REACHED"
    default_message = "The account already has the most webhook endpoints it may have"


class Forbidden(ApiError):
    status = 403
    code = "FORBIDDEN"
    default_message = "Not allowed"


# ---------------------------------------------------------------- 404 / 409
class SessionNotFound(ApiError):
    status = 404
    code = "SESSION_NOT_FOUND"
    default_message = "Session not found"


class AvatarNotFound(ApiError):
    status = 404
    code = "AVATAR_NOT_FOUND"
    default_message = "Avatar not found"


class WebhookNotFound(ApiError):
    status = 404
    code = "WEBHOOK_NOT_FOUND"
    default_message = "Webhook not found"


class NotFound(ApiError):
    status = 404
    code = "NOT_FOUND"
    default_message = "Not found"


class Conflict(ApiError):
    status = 409
    code = "CONFLICT"
    default_message = "The resource is in a state that does not allow this"


class SessionNotActive(Conflict):
    code = "SESSION_NOT_ACTIVE"
    default_message = "The session is not running"


# ---------------------------------------------------------------- 429 / 503
class RateLimited(ApiError):
    status = 429
    code = "RATE_LIMITED"
    default_message = "Too many requests"
    retryable = True


class ConcurrencyLimitReached(ApiError):
    status = 429
    code = "CONCURRENCY_LIMIT_REACHED"
    default_message = "The account already runs its maximum number of sessions"
    retryable = True


class CapacityUnavailable(ApiError):
    status = 503
    code = "CAPACITY_UNAVAILABLE"
    default_message = "No avatar capacity is free in the cluster right now"
    retryable = True


class ServiceUnavailable(ApiError):
    status = 503
    code = "SERVICE_UNAVAILABLE"
    default_message = "The service is starting or unavailable"
    retryable = True


class ClientGone(ServiceUnavailable):
    """The create's caller went away before the response: the session was ended (client_gone). Nobody
    reads this answer; a replay of the same request finds the session ended."""

    code = "CLIENT_GONE"
    default_message = "The caller went away before the session was created; it was ended"


class InvalidIdempotencyKey(ValidationFailed):
    code = "INVALID_IDEMPOTENCY_KEY"
    default_message = "Idempotency-Key must be 1 to 255 printable ASCII characters"


class IdempotencyKeyReused(Conflict):
    code = "IDEMPOTENCY_KEY_REUSED"
    default_message = "This Idempotency-Key was used with a different request"


class IdempotencyInProgress(Conflict):
    code = "IDEMPOTENCY_IN_PROGRESS"
    default_message = "A request with this Idempotency-Key is still running"
    retryable = True


class RoomConnectFailed(ApiError):
    """The worker could not join the client's room (the session ends as ``room_connect_failed``)."""

    status = 400
    code = "ROOM_CONNECT_FAILED"
    default_message = "The avatar worker could not join the room"


class InternalError(ApiError):
    pass


# ---------------------------------------------------------------- operator errors (not HTTP)
class ModelFilesMissing(RuntimeError):
    """The face model files are not in the cache; the message names the set-up command."""


class DataDirMissing(RuntimeError):
    """An operator command points at a data folder (or SQLite folder) that does not exist; the message
    names the folder, where it came from (AVATAR_DATA_DIR / AVATAR_DATABASE_URL) and how to fix it."""


# ---------------------------------------------------------------- signed avatar URLs (image / preview)
class InvalidSignature(ApiError):
    status = 403
    code = "INVALID_SIGNATURE"
    default_message = "The URL's signature is missing or does not match"


class UrlExpired(ApiError):
    status = 403
    code = "URL_EXPIRED"
    default_message = "The signed URL has expired"

"""Python SDK for the avatar session API: ``AvatarsClient`` / ``AsyncAvatarsClient``."""
from . import models
from ._retry import RetryPolicy
from .client import AsyncAvatarsClient, AvatarsClient, encode_image_base64
from .errors import (APIConnectionError, APIError, AuthenticationError, AvatarsError, BadRequestError,
                     ConflictError, InternalServerError, NotFoundError, PayloadError, PermissionDeniedError,
                     RateLimitError, ServiceUnavailableError, WebhookVerificationError)
from .webhooks import verify_webhook
from .ws import AsyncSessionSocket, SessionSocket, SessionSocketError

__version__ = "0.1.0"
__all__ = [
    "APIConnectionError", "APIError", "AsyncAvatarsClient", "AsyncSessionSocket", "AuthenticationError",
    "AvatarsClient", "AvatarsError", "BadRequestError", "ConflictError", "InternalServerError", "NotFoundError",
    "PayloadError", "PermissionDeniedError", "RateLimitError", "RetryPolicy", "ServiceUnavailableError",
    "SessionSocket", "SessionSocketError", "WebhookVerificationError", "encode_image_base64", "models",
    "verify_webhook",
]

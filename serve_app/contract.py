"""The OpenAPI document as the contract: response models, error envelopes per status, security schemes.

Route handlers keep returning plain dicts (so nothing the API sends changes); the models here only
describe those dicts, and the schemathesis run in the suite (tests/test_openapi_contract.py) checks
every response against them. ``errors_for`` declares the SPEC's error envelope for each status a route
can return; ``finalize`` removes FastAPI's 422 (never returned: validation is 400) and adds the
``x-api-key`` security scheme to every route that needs a key.
"""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from core.status import EndReason, SessionStatus

API_KEY_SCHEME = "ApiKeyAuth"
PREVIEW_TOKEN_SCHEME = "PreviewToken"


# ====================================================================== errors
class ErrorDetail(BaseModel):
    code: str = Field(description="Machine code, e.g. INVALID_ASPECT_RATIO")
    message: str
    suggestion: str | None = Field(default=None, description="What to do about it (optional)")
    details: dict[str, Any] | None = Field(default=None, description="Structured context (optional)")


class ErrorEnvelope(BaseModel):
    """The SPEC's error envelope (every error except 401)."""

    model_config = ConfigDict(json_schema_extra={"example": {
        "success": False, "error": {"code": "CONCURRENCY_LIMIT_REACHED",
                                    "message": "The account already runs its maximum number of sessions",
                                    "details": {"current": 5, "max": 5}}}})
    success: Literal[False]
    error: ErrorDetail


class AuthErrorBody(BaseModel):
    """401 bodies are the SPEC's short form."""

    model_config = ConfigDict(json_schema_extra={"example": {"error": "API key required"}})
    error: Literal["API key required", "Invalid API key", "API key deactivated"]


_RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait before retrying", "schema": {"type": "integer"}}}
_STATUS_TEXT = {
    400: "Invalid request (INVALID_JSON, INVALID_REQUEST, or the route's own codes)",
    401: "Missing, invalid or deactivated API key",
    403: "Not allowed (plan, ownership or signature)",
    404: "Not found",
    409: "Conflict with the resource's state",
    413: "Too large",
    415: "Unsupported media type",
    429: "Rate limited (RATE_LIMITED) or over the account's concurrency",
    500: "Internal error",
    502: "An upstream the request depends on failed",
    503: "The service, a singleton actor or cluster capacity is unavailable; retry after Retry-After",
}
#: Statuses every route behind the API key can return (auth, rate limit, replica/actor restarts).
KEYED = (401, 429, 500, 503)


def errors_for(*statuses: int, codes: dict[int, str] | None = None) -> dict[int | str, dict[str, Any]]:
    """``responses=`` entries with the error envelope for each status (401: the short body)."""
    out: dict[int | str, dict[str, Any]] = {}
    for status in sorted(set(statuses)):
        text = (codes or {}).get(status) or _STATUS_TEXT[status]
        entry: dict[str, Any] = {"model": AuthErrorBody if status == 401 else ErrorEnvelope, "description": text}
        if status in (429, 503):
            entry["headers"] = _RETRY_AFTER
        out[status] = entry
    return out


def ok(model: type[BaseModel], description: str, status: int = 200, **extra: Any) -> dict[int | str, dict[str, Any]]:
    return {status: {"model": model, "description": description, **extra}}


# ====================================================================== sessions
class Billing(BaseModel):
    minutes: int
    from_included: int
    from_purchased: int


class RoomView(BaseModel):
    platform: str = Field(description="daily | livekit | preview (url and token are never returned)")


class SessionObject(BaseModel):
    model_config = ConfigDict(json_schema_extra={"example": {
        "session_id": "sess_01J0000000000000000000000A", "status": "started", "aspect_ratio": "4:3",
        "avatar_id": "avat_01J0000000000000000000000A", "created_at": "2026-01-01T00:00:00Z",
        "started_at": "2026-01-01T00:00:01Z", "ended_at": None, "expiration": "2026-01-01T01:00:01Z",
        "duration": 12.5, "metadata": {"user": "42"}, "room": {"platform": "livekit"}, "end_reason": None}})
    session_id: str
    status: Literal[tuple(s.value for s in SessionStatus)]  # type: ignore[valid-type]
    aspect_ratio: str
    avatar_id: str
    created_at: str | None
    started_at: str | None
    ended_at: str | None
    expiration: str | None
    duration: float = Field(description="Seconds; live while the session runs")
    metadata: dict[str, Any]
    room: RoomView
    end_reason: Literal[tuple(r.value for r in EndReason)] | None  # type: ignore[valid-type]
    billing: Billing | None = Field(default=None, description="On ended and failed sessions")
    metrics: dict[str, Any] | None = Field(default=None, description="What the worker measured (first frame, fps)")


class CreatedSession(SessionObject):
    session_token: str = Field(description="For the session WebSocket; only in the create response")


class Concurrency(BaseModel):
    current: int
    max: int
    available: int


class CreateUsage(BaseModel):
    concurrency: Concurrency
    minutes: dict[Literal["total_remaining"], int]


class CreateSessionResponse(BaseModel):
    success: Literal[True]
    session: CreatedSession
    usage: CreateUsage
    message: str


#: OpenAPI links from a created session to the operations on it (schemathesis' stateful phase uses them).
SESSION_LINKS = {
    "GetSession": {"operationId": "get_session", "parameters": {"session_id": "$response.body#/session/session_id"}},
    "EndSession": {"operationId": "end_session", "parameters": {"session_id": "$response.body#/session/session_id"}},
}


class SessionResponse(BaseModel):
    success: Literal[True]
    session: SessionObject
    message: str | None = None


class SessionList(BaseModel):
    success: Literal[True]
    sessions: list[SessionObject]
    next_cursor: str | None
    has_more: bool


# ====================================================================== usage
class Period(BaseModel):
    start: str
    end: str


class IncludedMinutes(BaseModel):
    total: int
    used: int
    remaining: int


class PurchasedMinutes(BaseModel):
    total: int
    remaining: int


class AvatarQuota(BaseModel):
    used: int
    limit: int | None = Field(description="null = unlimited, 0 = not included")


class PlanView(BaseModel):
    key: str
    name: str
    max_session_duration: int = Field(description="Minutes")
    will_renew: bool


class Usage(BaseModel):
    period: Period
    included_minutes: IncludedMinutes
    purchased_minutes: PurchasedMinutes
    total_remaining: int
    active_sessions: list[SessionObject]
    active_minutes: int
    concurrency: Concurrency
    avatars: AvatarQuota
    plan: PlanView


class UsageResponse(BaseModel):
    success: Literal[True]
    usage: Usage


# ====================================================================== avatars
class AvatarObject(BaseModel):
    avatar_id: str
    tags: list[str] = Field(description='["public"] or ["user_exclusive", "acct_..."]')
    preview_url: str | None = Field(description="Signed, expiring URL served by this API")
    image_url: str | None = Field(description="Signed, expiring URL served by this API")
    orientation: str
    created_at: str | None


class UploadFaceResponse(AvatarObject):
    success: Literal[True]
    created: bool = Field(description="False when this account already uploaded the same image")
    message: str


class AvatarList(BaseModel):
    success: Literal[True]
    public_avatars: list[AvatarObject]
    my_avatars: list[AvatarObject]


AVATAR_LINKS = {
    "DeleteAvatar": {"operationId": "delete_avatar", "parameters": {"avatar_id": "$response.body#/avatar_id"}},
}


class AvatarDeleted(BaseModel):
    success: Literal[True]
    avatar_id: str
    deleted: Literal[True]
    message: str


#: upload-face's body: exactly one of a multipart file, image_url, image_base64 (read by hand, so that
#: a 10 MB image may arrive as 13.4 MB of base64 and sizes are checked on decoded bytes).
UPLOAD_FACE_BODY: dict[str, Any] = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "properties": {
                    "file": {"type": "string", "format": "binary", "description": "JPEG, PNG, GIF or WebP; ≤ 10 MB"},
                },
                "required": ["file"],
            },
        },
        "application/json": {
            "schema": {
                "oneOf": [
                    {"type": "object", "title": "ImageUrl", "required": ["image_url"],
                     "properties": {"image_url": {"type": "string", "pattern": "^https?://[A-Za-z0-9.-]+(/\\S*)?$",
                                                  "maxLength": 2000,
                                                  "description": "Public http(s) URL, fetched SSRF-safely"}}},
                    {"type": "object", "title": "ImageBase64",
                     "required": ["image_base64"],
                     "properties": {"image_base64": {"type": "string", "pattern": "^(data:image/[a-z]+;base64,)?[A-Za-z0-9+/]+=*$",
                                                     "description": "Base64 image (data-URI prefix optional); ≤ 10 MB decoded"}}},
                ],
            },
            "examples": {
                "url": {"value": {"image_url": "https://example.com/portrait.jpg"}},
                "base64": {"value": {"image_base64": "data:image/jpeg;base64,/9j/4AAQSkZJRgABAQ..."}},
            },
        },
    },
}


class PreviewTokenResponse(BaseModel):
    success: Literal[True]
    token: str
    expires_at: int = Field(description="Unix seconds")
    preview_url: str


# ====================================================================== the document
PUBLIC: dict[str, Any] = {"security": []}  # openapi_extra of the signed, key-less routes
KEY_OR_PREVIEW_TOKEN: dict[str, Any] = {"security": [{API_KEY_SCHEME: []}, {PREVIEW_TOKEN_SCHEME: []}]}


def finalize(schema: dict[str, Any]) -> dict[str, Any]:
    """FastAPI's generated document, made the contract: no 422 anywhere, the security schemes, and
    the API key on every operation that does not say otherwise (``PUBLIC``, ``KEY_OR_PREVIEW_TOKEN``)."""
    for ops in schema.get("paths", {}).values():
        for op in ops.values():
            op.get("responses", {}).pop("422", None)
            op.setdefault("security", [{API_KEY_SCHEME: []}])
    comps = schema.setdefault("components", {})
    for name in ("HTTPValidationError", "ValidationError"):
        comps.get("schemas", {}).pop(name, None)
    comps["securitySchemes"] = {
        API_KEY_SCHEME: {"type": "apiKey", "in": "header", "name": "x-api-key",
                         "description": "An account API key (ah_live_... / ah_test_...)"},
        PREVIEW_TOKEN_SCHEME: {"type": "apiKey", "in": "query", "name": "token",
                               "description": "A session-scoped preview token from POST /preview-token"},
    }
    return schema

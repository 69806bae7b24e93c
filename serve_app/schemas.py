"""Request bodies and how their validation failures map onto the SPEC's error codes.

Fields are validated by our own validators raising ``PydanticCustomError`` with a type named after the
SPEC code, so the handler in ``serve_app.app`` can turn any failure into the right envelope instead of
FastAPI's default 422.
"""
from __future__ import annotations

import json
from typing import Annotated, Any, cast

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema, field_validator
from pydantic_core import PydanticCustomError

from core import errors
from core.look import validate_background, validate_video
from core.status import ASPECT_RATIOS, AUTO_ASPECT_RATIO, PREVIEW_PLATFORM, PROXY_PLATFORM, ROOM_PLATFORMS

METADATA_MAX_BYTES = 16 * 1024

_URL_SCHEMES = {
    "daily": ("https://",),
    "livekit": ("wss://", "ws://", "https://"),
}


class Room(BaseModel):
    platform: str = Field(description="daily | livekit | proxy (the platform provides a LiveKit room) "
                          "(| preview where the deployment enables it)")
    url: str | None = Field(default=None, description="https:// (daily) or wss:// / ws:// / https:// (livekit)")
    token: str | None = Field(default=None, description="Room token for the avatar; write-only, never returned")
    audio_participant: str | None = Field(
        default=None, description="Daily: the participant whose audio drives the avatar (else the session WebSocket)"
    )


_NON_BLANK = {"type": "string", "minLength": 1, "pattern": "\\S"}
_SPEAKER = {"anyOf": [_NON_BLANK, {"type": "null"}]}
AVATAR_SCHEMA: dict[str, Any] = {**_NON_BLANK, "maxLength": 14_000_000}
ROOM_SCHEMA: dict[str, Any] = {"oneOf": [
    {"type": "object", "title": "LiveKitRoom", "required": ["platform", "url", "token"],
     "properties": {"platform": {"const": "livekit"},
                    "url": {"type": "string", "pattern": "^([Ww][Ss][Ss]?|[Hh][Tt][Tt][Pp][Ss])://"},
                    "token": _NON_BLANK, "audio_participant": _SPEAKER}},
    {"type": "object", "title": "ProxyRoom (the platform provides a LiveKit room)", "required": ["platform"],
     "properties": {"platform": {"const": "proxy"}}},
    {"type": "object", "title": "DailyRoom", "required": ["platform", "url", "token"],
     "properties": {"platform": {"const": "daily"}, "url": {"type": "string", "pattern": "^[Hh][Tt][Tt][Pp][Ss]://"},
                    "token": _NON_BLANK, "audio_participant": _SPEAKER}},
]}


BACKGROUND_SCHEMA: dict[str, Any] = {"type": "string", "pattern": "^(original|blur|#[0-9A-Fa-f]{6})$"}
_SIDE = {"type": "integer", "minimum": 64, "maximum": 1280, "multipleOf": 2}
VIDEO_SCHEMA: dict[str, Any] = {"oneOf": [{"type": "null"}, {
    "type": "object", "additionalProperties": False, "minProperties": 1,
    "properties": {"width": _SIDE, "height": _SIDE, "fps": {"type": "integer", "minimum": 1, "maximum": 30}},
    "dependentRequired": {"width": ["height"], "height": ["width"]}}]}


class CreateSessionBody(BaseModel):
    model_config = ConfigDict(json_schema_extra={
        "example": {"avatar": "avat_01J...", "aspect_ratio": "4:3",
                    "room": {"platform": "livekit", "url": "wss://example.livekit.cloud", "token": "..."},
                    "metadata": {"user": "42"}}
    })

    # Fields are typed Any so that our validators (below) decide the SPEC's error code; the documented
    # schema (WithJsonSchema) is the exact shape those validators accept.
    avatar: Annotated[Any, WithJsonSchema(AVATAR_SCHEMA)] = Field(
        description="Avatar id, or (paid plans) an http(s) image URL or a base64 image")
    aspect_ratio: Annotated[Any, WithJsonSchema({"type": "string", "enum": [*ASPECT_RATIOS, AUTO_ASPECT_RATIO]})] = Field(
        default="4:3", description="4:3 | 3:4 | 1:1 | auto (the avatar's own orientation)")
    room: Annotated[Any, WithJsonSchema(ROOM_SCHEMA)] = Field(description="{platform, url, token}, or {platform: proxy}")
    metadata: Annotated[Any, WithJsonSchema({"type": "object"})] = Field(
        default_factory=dict, description="A JSON object of at most 16 KiB")
    background: Annotated[Any, WithJsonSchema(BACKGROUND_SCHEMA)] = Field(
        default="original", description='"original" | "blur" | "#RRGGBB" (e.g. "#00FF00")')
    video: Annotated[Any, WithJsonSchema(VIDEO_SCHEMA)] = Field(
        default=None, description="{width, height, fps}: output size and frame rate (bounded by settings)")

    @field_validator("avatar")
    @classmethod
    def _avatar(cls, v: Any) -> str:
        if not isinstance(v, str) or not v.strip():
            raise PydanticCustomError("INVALID_AVATAR", errors.InvalidAvatar.default_message)
        return v.strip()

    @field_validator("aspect_ratio")
    @classmethod
    def _aspect(cls, v: Any) -> str:
        if v not in ASPECT_RATIOS and v != AUTO_ASPECT_RATIO:
            raise PydanticCustomError("INVALID_ASPECT_RATIO", errors.InvalidAspectRatio.default_message)
        return v

    @field_validator("background")
    @classmethod
    def _background(cls, v: Any) -> str:
        try:
            return validate_background(v)
        except ValueError as exc:
            raise PydanticCustomError("INVALID_REQUEST", str(exc)) from None

    @field_validator("video")
    @classmethod
    def _video(cls, v: Any) -> dict[str, int] | None:
        try:  # the shape here; the deployment's bounds where the settings are (create_session)
            return validate_video(v)
        except ValueError as exc:
            raise PydanticCustomError("INVALID_REQUEST", str(exc)) from None

    @field_validator("metadata")
    @classmethod
    def _metadata(cls, v: Any) -> dict[str, Any]:
        if not isinstance(v, dict):
            raise PydanticCustomError("INVALID_METADATA", "metadata must be a JSON object")
        size = len(json.dumps(v, separators=(",", ":")).encode())
        if size > METADATA_MAX_BYTES:
            raise PydanticCustomError(
                "INVALID_METADATA", "metadata is {size} bytes; the limit is {limit}",
                {"size": size, "limit": METADATA_MAX_BYTES},
            )
        return v

    @field_validator("room")
    @classmethod
    def _room(cls, v: Any) -> Room:
        if not isinstance(v, dict):
            raise PydanticCustomError("INVALID_ROOM", errors.InvalidRoom.default_message)
        platform = v.get("platform")
        if not isinstance(platform, str) or platform not in (*ROOM_PLATFORMS, PROXY_PLATFORM, PREVIEW_PLATFORM):
            raise PydanticCustomError("INVALID_ROOM_PLATFORM", errors.InvalidRoomPlatform.default_message)
        url, token = v.get("url"), v.get("token")
        if platform in (PREVIEW_PLATFORM, PROXY_PLATFORM):  # no url/token: the platform provides the room
            return Room(platform=platform)
        for name, value in (("url", url), ("token", token)):
            if not isinstance(value, str) or not value.strip():
                raise PydanticCustomError("INVALID_ROOM", f"room.{name} must be a non-empty string")
        url = cast(str, url)  # (checked above)
        if not url.lower().startswith(_URL_SCHEMES[platform]):
            raise PydanticCustomError(
                "INVALID_ROOM_URL", "room.url for {platform} must start with {schemes}",
                {"platform": platform, "schemes": " or ".join(_URL_SCHEMES[platform])},
            )
        speaker = v.get("audio_participant")
        if speaker is not None and (not isinstance(speaker, str) or not speaker.strip()):
            raise PydanticCustomError("INVALID_ROOM", "room.audio_participant must be a non-empty string")
        return Room(platform=platform, url=url, token=token, audio_participant=speaker)


_CODES = {cls.code: cls for cls in (
    errors.InvalidAvatar, errors.InvalidAspectRatio, errors.InvalidMetadata, errors.InvalidRoom,
    errors.InvalidRoomPlatform, errors.InvalidRoomUrl, errors.InvalidWebhook,
)}


def error_from_validation(problems: list[dict[str, Any]]) -> errors.ApiError:
    """The SPEC error for FastAPI/pydantic validation problems (the first one decides the code)."""
    first = problems[0] if problems else {}
    kind = first.get("type", "")
    loc = [str(p) for p in first.get("loc", ())]
    details = {"field": ".".join(loc[1:]) or None}
    if kind in _CODES:
        return _CODES[kind](first.get("msg"), details=details)
    if kind == "json_invalid" or kind == "model_attributes_type" and loc[:1] == ["body"]:
        return errors.InvalidJson(details=details)
    if loc[:1] == ["body"] and kind == "missing":
        field = loc[1] if len(loc) > 1 else "body"
        cls = {"avatar": errors.InvalidAvatar, "room": errors.InvalidRoom}.get(field, errors.ValidationFailed)
        return cls(f"{field} is required", details=details)
    if loc[:1] in (["query"], ["path"]):
        return errors.InvalidQuery(f"{'.'.join(loc[1:])}: {first.get('msg')}", details=details)
    return errors.ValidationFailed(first.get("msg"), details=details)

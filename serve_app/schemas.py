"""Request bodies and how their validation failures map onto the SPEC's error codes.

Fields are validated by our own validators raising ``PydanticCustomError`` with a type named after the
SPEC code, so the handler in ``serve_app.app`` can turn any failure into the right envelope instead of
FastAPI's default 422.
"""
from __future__ import annotations

import json
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema, field_validator
from pydantic_core import PydanticCustomError

from core import errors
from core.status import ASPECT_RATIOS, PREVIEW_PLATFORM, ROOM_PLATFORMS

METADATA_MAX_BYTES = 16 * 1024

_URL_SCHEMES = {
    "daily": ("https://",),
    "livekit": ("wss://", "ws://", "https://"),
}


class Room(BaseModel):
    platform: str = Field(description="daily | livekit (| preview where the deployment enables it)")
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
    {"type": "object", "title": "DailyRoom", "required": ["platform", "url", "token"],
     "properties": {"platform": {"const": "daily"}, "url": {"type": "string", "pattern": "^[Hh][Tt][Tt][Pp][Ss]://"},
                    "token": _NON_BLANK, "audio_participant": _SPEAKER}},
]}


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
    aspect_ratio: Annotated[Any, WithJsonSchema({"type": "string", "enum": list(ASPECT_RATIOS)})] = Field(
        default="4:3", description="4:3 | 3:4 | 1:1")
    room: Annotated[Any, WithJsonSchema(ROOM_SCHEMA)] = Field(description="{platform, url, token}")
    metadata: Annotated[Any, WithJsonSchema({"type": "object"})] = Field(
        default_factory=dict, description="A JSON object of at most 16 KiB")

    @field_validator("avatar")
    @classmethod
    def _avatar(cls, v: Any) -> str:
        if not isinstance(v, str) or not v.strip():
            raise PydanticCustomError("INVALID_AVATAR", errors.InvalidAvatar.default_message)
        return v.strip()

    @field_validator("aspect_ratio")
    @classmethod
    def _aspect(cls, v: Any) -> str:
        if v not in ASPECT_RATIOS:
            raise PydanticCustomError("INVALID_ASPECT_RATIO", errors.InvalidAspectRatio.default_message)
        return v

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
        if not isinstance(platform, str) or platform not in (*ROOM_PLATFORMS, PREVIEW_PLATFORM):
            raise PydanticCustomError("INVALID_ROOM_PLATFORM", errors.InvalidRoomPlatform.default_message)
        url, token = v.get("url"), v.get("token")
        if platform == PREVIEW_PLATFORM:
            return Room(platform=platform)
        for name, value in (("url", url), ("token", token)):
            if not isinstance(value, str) or not value.strip():
                raise PydanticCustomError("INVALID_ROOM", f"room.{name} must be a non-empty string")
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

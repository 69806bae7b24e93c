"""The avatar's look options of a session (validated at the API, applied by the worker)."""
from __future__ import annotations

import re

ORIGINAL = "original"
BLUR = "blur"
_HEX = re.compile(r"^#[0-9a-fA-F]{6}$")


def validate_background(value: object) -> str:
    """``original`` | ``blur`` | ``#RRGGBB`` (returned normalised: lower case keywords, upper case hex);
    ``ValueError`` otherwise."""
    if isinstance(value, str):
        v = value.strip()
        if v.lower() in (ORIGINAL, BLUR):
            return v.lower()
        if _HEX.match(v):
            return v.upper()
    raise ValueError('background must be "original", "blur" or a colour "#RRGGBB"')


VIDEO_KEYS = ("width", "height", "fps")
VIDEO_MIN_SIDE = 64


def validate_video(value: object, *, max_side: int | None = None, max_fps: int | None = None) -> dict[str, int] | None:
    """The create body's ``video``: ``None`` or an object of ``width`` and ``height`` (together; even,
    64..``max_side``) and/or ``fps`` (1..``max_fps``); no upper bound where one is None. Returns it
    normalised; ``ValueError`` naming the field otherwise."""
    if value is None:
        return None
    if not isinstance(value, dict) or not value or set(value) - set(VIDEO_KEYS):
        raise ValueError("video must be an object with width and height and/or fps")
    if ("width" in value) != ("height" in value):
        raise ValueError("video: width and height go together")
    out: dict[str, int] = {}
    for key in VIDEO_KEYS:
        if key not in value:
            continue
        v = value[key]
        if not isinstance(v, int) or isinstance(v, bool):
            raise ValueError(f"video.{key} must be an integer")
        lo, hi = (1, max_fps) if key == "fps" else (VIDEO_MIN_SIDE, max_side)
        if v < lo or (hi is not None and v > hi):
            raise ValueError(f"video.{key} must be at least {lo}" + ("" if hi is None else f" and at most {hi}"))
        if key != "fps" and v % 2:
            raise ValueError(f"video.{key} must be even")
        out[key] = v
    return out


def hex_rgb(value: str) -> tuple[int, int, int]:
    """``#RRGGBB`` → (r, g, b)."""
    return int(value[1:3], 16), int(value[3:5], 16), int(value[5:7], 16)

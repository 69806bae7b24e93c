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


def hex_rgb(value: str) -> tuple[int, int, int]:
    """``#RRGGBB`` → (r, g, b)."""
    return int(value[1:3], 16), int(value[3:5], 16), int(value[5:7], 16)

"""Image helpers shared by the face tests."""
from __future__ import annotations

import io

import cv2
import numpy as np
from PIL import Image


def encode(rgb: np.ndarray, fmt: str = "JPEG", **kwargs) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def on_canvas(rgb: np.ndarray, scale: float, size: tuple[int, int], at: tuple[int, int]) -> np.ndarray:
    """``rgb`` scaled by ``scale`` and pasted at ``at`` (x, y) on a plain canvas of ``size`` (w, h)."""
    small = cv2.resize(rgb, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    w, h = size
    canvas = np.full((h, w, 3), (118, 128, 138), np.uint8)
    x, y = at
    canvas[y : y + small.shape[0], x : x + small.shape[1]] = small
    return canvas

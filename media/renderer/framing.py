"""Fit the avatar's aligned image to a session's output size (aspect ratio may differ)."""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from core.rig import FACE_OVAL, FaceRig

DEFAULT_SIZES = {"4:3": (640, 480), "3:4": (480, 640), "1:1": (512, 512)}


def size_for_aspect(aspect: str) -> tuple[int, int]:
    """(width, height) of the default output size for ``"4:3" | "3:4" | "1:1"``."""
    try:
        return DEFAULT_SIZES[aspect]
    except KeyError:
        raise ValueError(f"unknown aspect {aspect!r}; expected one of {sorted(DEFAULT_SIZES)}") from None


@dataclass
class Framing:
    image: np.ndarray  # (H, W, 3) uint8, output size
    landmarks: np.ndarray  # (468, 2) float32 in output pixels
    crop: tuple[float, float, float, float]  # x0, y0, width, height in the aligned image
    scale: float  # output pixels per aligned-image pixel


def fit_face(image: np.ndarray, rig: FaceRig, width: int, height: int, *, face_fraction: float = 0.52) -> Framing:
    """Crop the aligned image around the face with the output's aspect ratio and resize it.

    The crop is the largest one with the output aspect that fits in the image, tightened (never
    below the output resolution, so nothing is upscaled when avoidable) until the face oval's height is
    about ``face_fraction`` of the frame; the face is centred horizontally and put a little above the
    middle, then the crop is pushed back inside the image.
    """
    img = np.ascontiguousarray(image[..., :3])
    if img.dtype != np.uint8:
        img = np.clip(img, 0, 255).astype(np.uint8)
    ih, iw = img.shape[:2]
    lm = np.asarray(rig.landmarks, dtype=np.float64)
    if (rig.width, rig.height) != (iw, ih):  # rig of another size: scale the landmarks to this image
        lm = lm * np.array([iw / rig.width, ih / rig.height])
    oval = lm[list(FACE_OVAL)]
    fx0, fy0 = oval.min(axis=0)
    fx1, fy1 = oval.max(axis=0)
    fh = fy1 - fy0
    cx, cy = (fx0 + fx1) / 2, (fy0 + fy1) / 2
    aspect = width / height
    cw = min(iw, ih * aspect)
    ch = cw / aspect
    want_h = fh / face_fraction
    if want_h < ch:
        ch = max(want_h, min(height, ch))
        cw = ch * aspect
    x0 = cx - cw / 2
    y0 = cy - 0.47 * ch
    x0 = float(np.clip(x0, 0, iw - cw))
    y0 = float(np.clip(y0, 0, ih - ch))
    # integer crop, exact scale per axis
    xi0, yi0 = int(round(x0)), int(round(y0))
    wi = max(1, min(int(round(cw)), iw - xi0))
    hi = max(1, min(int(round(ch)), ih - yi0))
    crop = img[yi0 : yi0 + hi, xi0 : xi0 + wi]
    interp = cv2.INTER_AREA if wi > width else cv2.INTER_CUBIC
    out = cv2.resize(crop, (width, height), interpolation=interp)
    sx, sy = width / wi, height / hi
    lm_out = (lm - np.array([xi0, yi0])) * np.array([sx, sy])
    return Framing(out, lm_out.astype(np.float32), (xi0, yi0, wi, hi), float((sx + sy) / 2))

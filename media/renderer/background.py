"""The session ``background``: the photo's own (``original``), a solid colour (``#RRGGBB``, e.g. green
for chroma keying) or ``blur``.

It is composited once, into the avatar's image before the session is prepared, with the person mask
the face pipeline stored at upload: the renderer then animates that image as any other, so the
background costs nothing per frame, and the mask edge moves only with the head (no per-frame
segmentation, no flicker at the hair line). Outside the head the displacement fields are exactly zero,
so a solid background stays exactly its colour there.
"""
from __future__ import annotations

import cv2
import numpy as np

from core.look import BLUR, ORIGINAL, hex_rgb, validate_background

__all__ = ["BLUR", "ORIGINAL", "apply_background", "validate_background"]


def apply_background(image: np.ndarray, mask: np.ndarray, background: str) -> np.ndarray:
    """image (H, W, 3) uint8 RGB, mask (H, W) uint8 (255 = person) → the image on ``background``."""
    background = validate_background(background)
    if background == ORIGINAL:
        return image
    img = image[..., :3].astype(np.float32)
    a = (mask.astype(np.float32) / 255.0)[..., None]
    if background == BLUR:
        # the background alone, blurred (normalised convolution: the person does not bleed into it)
        sigma = 0.02 * max(img.shape[:2])
        w = cv2.GaussianBlur(1.0 - a[..., 0], (0, 0), sigma)[..., None]
        bg = cv2.GaussianBlur(img * (1.0 - a), (0, 0), sigma) / np.maximum(w, 1e-3)
        bg = np.where(w > 1e-3, bg, cv2.GaussianBlur(img, (0, 0), sigma))
    else:
        bg = np.empty_like(img)
        bg[...] = hex_rgb(background)
    out = img * a + bg * (1.0 - a)
    return np.clip(np.round(out), 0, 255).astype(np.uint8)

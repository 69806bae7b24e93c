"""The person mask of an avatar's aligned image (MediaPipe selfie segmentation through ``cv2.dnn``).

Computed once per avatar at upload and stored next to its image (``mask.png``), so every session of
the avatar composites its ``background`` with the same mask: nothing is segmented per frame, and the
edge cannot flicker.
"""
from __future__ import annotations

import threading

import cv2
import numpy as np

INPUT = 256  # the model's square input (RGB, 0..1)

_net = None
_lock = threading.Lock()


def _model():
    global _net
    with _lock:
        if _net is None:
            from .models import segmenter_path

            _net = cv2.dnn.readNetFromTFLite(str(segmenter_path()))
        return _net


def person_mask(rgb: np.ndarray) -> np.ndarray:
    """(H, W) uint8, 255 = person, for an RGB uint8 image; soft at the hair line (the model's
    confidence, upsampled and lightly smoothed)."""
    h, w = rgb.shape[:2]
    small = cv2.resize(np.ascontiguousarray(rgb[..., :3]), (INPUT, INPUT), interpolation=cv2.INTER_AREA)
    blob = (small.astype(np.float32) / 255.0).transpose(2, 0, 1)[None]
    net = _model()
    with _lock:  # a cv2.dnn.Net is not safe to run from two threads at once
        net.setInput(blob)
        conf: np.ndarray = np.asarray(net.forward(), np.float32).reshape(INPUT, INPUT)
    conf = cv2.resize(conf, (w, h), interpolation=cv2.INTER_LINEAR)
    conf = cv2.GaussianBlur(conf, (0, 0), max(1.0, 0.004 * max(h, w)))
    return np.clip(np.round(conf * 255.0), 0, 255).astype(np.uint8)


def encode_mask(mask: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", mask)
    if not ok:
        raise RuntimeError("PNG encoding failed")
    return buf.tobytes()


def decode_mask(data: bytes) -> np.ndarray:
    m = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE)
    if m is None:
        raise ValueError("avatar mask is not decodable")
    return m

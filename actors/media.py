"""What a worker process needs to render: the avatar's assets and one renderer per process."""
from __future__ import annotations

import threading
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from core.rig import FaceRig
from core.settings import Settings


@dataclass(frozen=True)
class AvatarAssets:
    image: np.ndarray  # aligned RGB uint8
    rig: FaceRig


def load_avatar(settings: Settings, image_key: str, rig_key: str) -> AvatarAssets:
    """Read the aligned image and the rig the face pipeline stored for an avatar."""
    import cv2

    from core.storage import BlobStore

    blobs = BlobStore.from_settings(settings)
    raw = np.frombuffer(blobs.get(image_key), dtype=np.uint8)
    bgr = cv2.imdecode(raw, cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError(f"avatar image {image_key} is not decodable")
    return AvatarAssets(image=cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), rig=FaceRig.from_json(blobs.get(rig_key)))


_lock = threading.Lock()


@lru_cache(maxsize=4)
def _renderer(device: str):
    from actors.renderer import DisplacementRenderer

    return DisplacementRenderer(device=device)


def process_renderer(settings: Settings):
    """The process's renderer (sessions in one process share its batch and its render loop)."""
    device = settings.render_device
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    with _lock:
        return _renderer(device)

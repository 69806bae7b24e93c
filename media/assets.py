"""What a worker process needs to render: the avatar's assets and one renderer per process."""
from __future__ import annotations

import threading
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np

from core.rig import FaceRig
from core.settings import Settings

if TYPE_CHECKING:
    from media.renderer import OutputOptions
    from media.rooms.base import WorkerSpec


@dataclass(frozen=True)
class AvatarAssets:
    image: np.ndarray  # aligned RGB uint8
    rig: FaceRig
    mask: np.ndarray | None = None  # person mask stored at upload (uint8, 255 = person); None for older avatars

    def with_background(self, background: str) -> AvatarAssets:
        """The avatar on the session's ``background`` (the mask of an older avatar is computed now)."""
        from media.renderer.background import ORIGINAL, apply_background

        if background == ORIGINAL:
            return self
        mask = self.mask
        if mask is None:
            from pipelines.faces.segment import person_mask

            mask = person_mask(self.image)
        return AvatarAssets(image=apply_background(self.image, mask, background), rig=self.rig, mask=mask)


def load_avatar(settings: Settings, image_key: str, rig_key: str) -> AvatarAssets:
    """Read the aligned image, the rig and (when stored) the person mask the face pipeline made."""
    import cv2

    from core.storage import BlobNotFound, BlobStore
    from pipelines.faces.persist import MASK
    from pipelines.faces.segment import decode_mask

    blobs = BlobStore.from_settings(settings)
    raw = np.frombuffer(blobs.get(image_key), dtype=np.uint8)
    bgr = cv2.imdecode(raw, cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError(f"avatar image {image_key} is not decodable")
    try:
        mask = decode_mask(blobs.get(image_key.rsplit("/", 1)[0] + "/" + MASK))
    except BlobNotFound:
        mask = None
    return AvatarAssets(image=cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), rig=FaceRig.from_json(blobs.get(rig_key)),
                        mask=mask)


_lock = threading.Lock()


@lru_cache(maxsize=8)
def _renderer(device: str, fps: int):  # noqa: ARG001 - part of the cache key: one render loop per rate
    from media.renderer import DisplacementRenderer

    return DisplacementRenderer(device=device)


def process_renderer(settings: Settings, fps: int | None = None):
    """The process's renderer for a frame rate (sessions in one process at one frame rate share its batch
    and its render loop; a session asking another ``video.fps`` gets its own)."""
    device = settings.render_device
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    with _lock:
        return _renderer(device, int(fps or settings.render_fps))


def warm_up(settings: Settings) -> None:
    """Pay, before a session exists, what a process's first session would pay on the create path
    (measured in a fresh process: room open 600–770 ms of which 377 ms import the face modules the
    avatar's mask needs; prepare 1004 → 328 ms, add 130 → 26 ms, first step 100 → 46 ms once warmed):
    import what ``load_avatar`` and the room adapters use, then open, speak, render and close a throwaway
    session on a plain image with a stored rig (the landmarks of a public-domain portrait)."""
    import importlib
    from importlib import resources

    from media.renderer import OutputOptions

    for module in ("cv2", "fsspec", "core.storage", "pipelines.faces.persist", "pipelines.faces.segment",
                   "media.session", "media.rooms.preview_room", "media.rooms.livekit_room",
                   "media.rooms.daily_room"):
        importlib.import_module(module)
    rig = FaceRig.from_json(resources.files("media.renderer").joinpath("warmup_rig.json").read_bytes())
    image = np.full((rig.height, rig.width, 3), 128, np.uint8)
    renderer = process_renderer(settings)
    for fmt in ("i420", "rgba"):  # what LiveKit/Daily and the preview render
        session = renderer.open_session(image, rig, OutputOptions.for_aspect("1:1", fps=settings.render_fps,
                                                                             format=fmt))
        try:
            rng = np.random.default_rng(0)
            session.push_audio((rng.standard_normal(4000) * 3000).astype(np.int16).tobytes(), 16000)
            session.end_utterance()
            for _ in range(3):
                renderer.step()
        finally:
            renderer.close_session(session)


def output_options(spec: WorkerSpec, *, fps: int, sample_rate: int, format: str) -> OutputOptions:
    """A session's output: the aspect ratio's default size at ``fps``, unless its ``video`` says otherwise."""
    from media.renderer import OutputOptions

    video = spec.video or {}
    size = {k: video[k] for k in ("width", "height") if k in video}
    return OutputOptions.for_aspect(spec.aspect_ratio or "4:3", fps=video.get("fps", fps), sample_rate=sample_rate,
                                    format=format, **size)

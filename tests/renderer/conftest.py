"""Renderer tests: real photos through the real face pipeline, speech-like audio made in the test."""
from __future__ import annotations

import numpy as np
import pytest
import torch


torch.set_num_threads(1)  # the machine is shared: one core per test process


@pytest.fixture(scope="session")
def avatars(face_models) -> dict:
    """name → (aligned image, FaceRig) for grace_hopper (mouth closed) and astronaut (teeth showing)."""
    from media.renderer.cli import load_avatar

    return {name: load_avatar(name) for name in ("grace_hopper", "astronaut")}


@pytest.fixture(scope="session")
def grace_avatar(avatars):
    return avatars["grace_hopper"]


def landmarks(rgb: np.ndarray):
    """Detector + mesh on a rendered frame: (468, 2) or None when no face is detected."""
    from pipelines.faces.analyze import detect_faces, face_landmarks

    dets = detect_faces(np.ascontiguousarray(rgb[..., :3]))
    if not dets:
        return None
    return face_landmarks(np.ascontiguousarray(rgb[..., :3]), dets[0])

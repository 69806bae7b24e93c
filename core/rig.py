"""The animation rig: what the face pipeline produces and the renderer consumes.

A rig is the 468-point MediaPipe face mesh of the *aligned* avatar image (pixel coordinates in that
image) plus the image size and orientation. Regions (lips, eyes, brows, face oval) are fixed index sets
of the mesh topology, so they are constants here rather than stored per avatar.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

RIG_VERSION = 1

# MediaPipe face mesh topology (468 points). "Left"/"right" are the subject's.
LIPS_OUTER = (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 409, 270, 269, 267, 0, 37, 39, 40, 185)
LIPS_INNER = (78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308, 415, 310, 311, 312, 13, 82, 81, 80, 191)
UPPER_INNER_LIP_CENTER = 13
LOWER_INNER_LIP_CENTER = 14
MOUTH_CORNERS = (61, 291)
RIGHT_EYE = (33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246)
LEFT_EYE = (263, 249, 390, 373, 374, 380, 381, 382, 362, 398, 384, 385, 386, 387, 388, 466)
RIGHT_EYE_LIDS = (159, 145)  # upper, lower lid centre
LEFT_EYE_LIDS = (386, 374)
RIGHT_BROW = (46, 53, 52, 65, 55, 70, 63, 105, 66, 107)
LEFT_BROW = (276, 283, 282, 295, 285, 300, 293, 334, 296, 336)
NOSE_TIP = 1
CHIN = 152
FACE_OVAL = (
    10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377,
    152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109,
)


def eye_centers(landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(right eye centre, left eye centre) as the mean of each eye contour; (468, 2) input."""
    pts = np.asarray(landmarks, dtype=np.float64)
    return pts[list(RIGHT_EYE)].mean(axis=0), pts[list(LEFT_EYE)].mean(axis=0)


def inter_ocular_distance(landmarks: np.ndarray) -> float:
    right, left = eye_centers(landmarks)
    return float(np.linalg.norm(left - right))


def inner_lip_gap(landmarks: np.ndarray) -> float:
    """Distance between the inner lip centres, in pixels (divide by the IOD for a scale-free value)."""
    pts = np.asarray(landmarks, dtype=np.float64)
    return float(np.linalg.norm(pts[LOWER_INNER_LIP_CENTER] - pts[UPPER_INNER_LIP_CENTER]))


@dataclass
class FaceRig:
    """Landmarks of the aligned avatar image and what the renderer needs to animate it."""

    width: int
    height: int
    orientation: str  # "4:3" | "3:4" | "1:1": the aligned image's profile
    landmarks: np.ndarray  # (468, 2) float32, pixel coordinates in the aligned image
    version: int = RIG_VERSION
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.landmarks = np.asarray(self.landmarks, dtype=np.float32).reshape(468, 2)

    @property
    def iod(self) -> float:
        return inter_ocular_distance(self.landmarks)

    def to_json(self) -> str:
        return json.dumps(
            {
                "version": self.version,
                "width": self.width,
                "height": self.height,
                "orientation": self.orientation,
                "landmarks": np.round(self.landmarks, 3).tolist(),
                "extra": self.extra,
            }
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> "FaceRig":
        data = json.loads(text)
        return cls(
            width=int(data["width"]),
            height=int(data["height"]),
            orientation=data["orientation"],
            landmarks=np.asarray(data["landmarks"], dtype=np.float32),
            version=int(data.get("version", RIG_VERSION)),
            extra=data.get("extra", {}),
        )

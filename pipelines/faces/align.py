"""Alignment of a face to the canonical profile of its image's orientation.

The aligned avatar image has a fixed size per orientation (SPEC: landscape -> 4:3, portrait -> 3:4,
square -> 1:1; at most 1200 px wide). A similarity transform (rotation, uniform scale, translation) puts
the two eye centres (means of the mesh's eye contours, ``core.rig.eye_centers``) on a horizontal line,
``iod`` pixels apart, their midpoint at ``eye_center``. Pixels the source does not cover are filled by
edge replication, so no black wedges appear when the face is rotated or near a border.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from core import rig


@dataclass(frozen=True)
class Profile:
    """A canonical framing: output size, inter-ocular distance and eye-midpoint position, in pixels."""

    name: str  # "4:3" | "3:4" | "1:1"
    width: int
    height: int
    iod: float  # distance between the eye centres in the aligned image
    eye_center: tuple[float, float]  # midpoint of the eye centres in the aligned image (x, y)


#: The canonical profiles. The face (forehead to chin, about 2.6 IODs) takes about half the height, the
#: eyes sit a little above the middle, so the head has room to move and the shoulders show below.
PROFILES: dict[str, Profile] = {
    "4:3": Profile("4:3", 1024, 768, iod=150.0, eye_center=(512.0, 330.0)),
    "3:4": Profile("3:4", 768, 1024, iod=160.0, eye_center=(384.0, 420.0)),
    "1:1": Profile("1:1", 1024, 1024, iod=180.0, eye_center=(512.0, 430.0)),
}

#: Width / height above which an image is landscape (4:3) and below whose inverse it is portrait (3:4);
#: in between it is square-ish (1:1).
SQUARE_TOLERANCE = 1.12


def orientation_for(width: int, height: int) -> str:
    """The profile name of an image of this size: "4:3", "3:4" or "1:1"."""
    aspect = width / height
    if aspect > SQUARE_TOLERANCE:
        return "4:3"
    if aspect < 1.0 / SQUARE_TOLERANCE:
        return "3:4"
    return "1:1"


@dataclass
class AlignedFace:
    image: np.ndarray  # RGB uint8, the profile's size
    profile: Profile
    matrix: np.ndarray  # 2x3 similarity, source -> aligned, continuous pixel coordinates

    def transform(self, points: np.ndarray) -> np.ndarray:
        """Map source-image points (N, 2) into the aligned image."""
        return transform_points(self.matrix, points)


def transform_points(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    pts = np.asarray(points, np.float64).reshape(-1, 2)
    return (pts @ matrix[:, :2].T + matrix[:, 2]).astype(np.float32)


def alignment_matrix(landmarks: np.ndarray, profile: Profile) -> np.ndarray:
    """The 2x3 similarity (continuous coordinates) that takes the face to ``profile``'s canonical pose."""
    right, left = rig.eye_centers(landmarks)
    d = left - right
    iod = float(np.hypot(*d))
    if iod <= 1e-6:
        raise ValueError("degenerate landmarks: the eyes coincide")
    angle = math.atan2(d[1], d[0])
    s = profile.iod / iod
    c, si = math.cos(-angle) * s, math.sin(-angle) * s
    a = np.array([[c, -si], [si, c]])
    mid = (left + right) / 2
    t = np.asarray(profile.eye_center) - a @ mid
    return np.hstack([a, t[:, None]])


def _index_convention(matrix: np.ndarray) -> np.ndarray:
    """Continuous-coordinate affine -> OpenCV's pixel-index convention (pixel centres on integers)."""
    a = matrix[:, :2]
    t = matrix[:, 2] + a @ np.array([0.5, 0.5]) - 0.5
    return np.hstack([a, t[:, None]])


def warp(rgb: np.ndarray, matrix: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Warp ``rgb`` by a continuous-coordinate affine to ``size`` (w, h), edge-replicated borders.

    Scaling is done apart from the rest: the part of ``rgb`` the output shows is resized (area
    resampling for large reductions, against aliasing; bicubic for enlargements), then the remaining
    rotation and shift are applied bilinearly at about 1:1. Only the shown part is resampled (a large
    photo is not reduced whole for a face), and OpenCV's bicubic ``warpAffine``, which has no SIMD path
    (~25 ms for a 1024x768 output on one core), is avoided: ``resize`` takes ~2 ms, within ~0.5 grey
    levels of it (less than the JPEG encoding changes).
    """
    scale = math.sqrt(abs(np.linalg.det(matrix[:, :2])))
    src = rgb
    m = np.asarray(matrix, np.float64)
    if scale < 0.75 or scale > 1.0:
        x0, y0, crop = _shown_part(rgb, m, size, margin=math.ceil(_CROP_MARGIN / min(scale, 1.0)))
        ch, cw = crop.shape[:2]
        nw, nh = max(1, round(cw * scale)), max(1, round(ch * scale))
        src = cv2.resize(crop, (nw, nh), interpolation=cv2.INTER_AREA if scale < 1.0 else cv2.INTER_CUBIC)
        pre = np.diag([cw / nw, ch / nh])  # resized crop -> crop, continuous coordinates
        m = np.hstack([m[:, :2] @ pre, (m[:, :2] @ np.array([x0, y0], np.float64) + m[:, 2])[:, None]])
    return cv2.warpAffine(src, _index_convention(m), size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


#: Output pixels' worth of source kept around the part a warp shows (interpolation support, rounding).
_CROP_MARGIN = 4


def _shown_part(rgb: np.ndarray, m: np.ndarray, size: tuple[int, int], margin: int) -> tuple[int, int, np.ndarray]:
    """(x0, y0, view): the part of ``rgb`` that ``m`` maps into a ``size`` output, plus ``margin``
    pixels, clipped to the image (the output's edge replication then replicates the image's edges)."""
    h, w = rgb.shape[:2]
    ow, oh = size
    inverse = cv2.invertAffineTransform(m)
    corners = np.array([[0, 0], [ow, 0], [0, oh], [ow, oh]], np.float64) @ inverse[:, :2].T + inverse[:, 2]
    lo, hi = np.floor(corners.min(axis=0)) - margin, np.ceil(corners.max(axis=0)) + margin
    x0, y0 = int(np.clip(lo[0], 0, w - 1)), int(np.clip(lo[1], 0, h - 1))
    x1, y1 = int(np.clip(hi[0], x0 + 1, w)), int(np.clip(hi[1], y0 + 1, h))
    return x0, y0, rgb[y0:y1, x0:x1]


def align_face(rgb: np.ndarray, landmarks: np.ndarray, orientation: str | None = None) -> AlignedFace:
    """Align the face with these (468, 2) landmarks; ``orientation`` defaults to the image's own."""
    h, w = rgb.shape[:2]
    profile = PROFILES[orientation or orientation_for(w, h)]
    matrix = alignment_matrix(landmarks, profile)
    image = warp(rgb, matrix, (profile.width, profile.height))
    return AlignedFace(image=image, profile=profile, matrix=matrix)

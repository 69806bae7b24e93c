"""Face detection, the 468-point face mesh, and the "one prominent face" rules.

Models are loaded once per process (:func:`get_models`, a thread-safe lazy cache), never per image:

- detection: BlazeFace short range (``face_detection_short_range.tflite``) through MediaPipe's Tasks
  ``FaceDetector``. Its input is 128x128, so one pass over the whole image sees faces between roughly a
  tenth and the whole of the frame. :func:`detect_faces` therefore runs several passes and merges them:
  the whole image letterboxed to a square, the image padded on every side (large close-up faces and faces
  cut by the border are found more reliably when they do not fill the frame), and, on large frames,
  overlapping tiles (so a small face in a big image is still *found* and can be reported as not
  prominent instead of "no face").
- landmarks: the face mesh (``face_landmark.tflite``, 192x192 input, 468 points) through
  ``cv2.dnn.readNetFromTFLite``, on a crop around the face rotated so the eyes are level, exactly as
  MediaPipe's face-landmark graph does; a second pass re-crops from the first pass's landmarks (MediaPipe's
  tracking ROI) for a tighter, better-centred crop.

Coordinates are continuous pixel coordinates: (0, 0) is the top-left corner of the top-left pixel and a
point ``(x, y)`` lies in pixel ``(floor(x), floor(y))`` (MediaPipe's ``normalized * size`` convention).
"""
from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from core import rig
from core.errors import FaceNotProminent, MultipleFaces, NoFaceDetected

from .models import ModelPaths, model_paths

# ------------------------------------------------------------------ tunables (documented thresholds)
#: The detector's own score threshold (FaceDetectorOptions.min_detection_confidence).
MIN_DETECTION_SCORE = 0.5
#: A detection at or above this score is a face candidate; it counts as a face only when the mesh model
#: confirms it (``MIN_LANDMARK_PRESENCE``). Real faces, even small or cut ones, score >= 0.98 there
#: while the detector's false positives (coffee cup, noise, textures) stay below ~0.6.
CANDIDATE_SCORE = 0.5
#: Faces whose inter-ocular distance is below this fraction of the largest face's are background faces:
#: they do not make the image a "multiple faces" image (a passer-by far behind the subject).
BACKGROUND_FACE_RATIO = 0.4
#: The subject's inter-ocular distance must be at least this fraction of min(image width, height) ...
MIN_IOD_FRACTION = 0.06
#: ... and at least this many pixels (the aligned image upsamples the face to a canonical IOD).
MIN_IOD_PX = 24.0
#: A face is cut off when a facial feature (eyes, brows, nose, lips, chin) lies outside the image, or the
#: face oval sticks out of the image by more than this fraction of the oval's height.
MAX_OVAL_OUTSIDE_FRACTION = 0.08
#: The mesh model's face-presence probability (minimum over its two crops) a face must reach.
MIN_LANDMARK_PRESENCE = 0.9

LANDMARK_INPUT = 192
_ROI_SCALE = 1.5  # MediaPipe: the landmark crop is 1.5x the face box (detection and tracking ROIs)

# BlazeFace keypoints (subject's right/left).
KP_RIGHT_EYE, KP_LEFT_EYE, KP_NOSE, KP_MOUTH, KP_RIGHT_EAR, KP_LEFT_EAR = range(6)


@dataclass
class FaceDetection:
    """One detected face in the analysed image."""

    box: tuple[float, float, float, float]  # x0, y0, x1, y1 in pixels
    keypoints: np.ndarray  # (6, 2) pixels: right eye, left eye, nose tip, mouth, right ear, left ear
    score: float

    @property
    def size(self) -> float:
        """Side of the (square-ish) face box in pixels."""
        x0, y0, x1, y1 = self.box
        return float(max(x1 - x0, y1 - y0))

    @property
    def iod(self) -> float:
        """Distance between the eye keypoints in pixels."""
        k = np.asarray(self.keypoints, dtype=np.float64)
        return float(np.linalg.norm(k[KP_LEFT_EYE] - k[KP_RIGHT_EYE]))


# ------------------------------------------------------------------ model cache
@dataclass
class FaceModels:
    """The per-process model instances (each guarded by its own lock: neither is thread-safe)."""

    paths: ModelPaths
    detector: Any  # mediapipe.tasks.python.vision.FaceDetector
    landmark_net: cv2.dnn.Net
    detector_lock: threading.Lock = field(default_factory=threading.Lock)
    landmark_lock: threading.Lock = field(default_factory=threading.Lock)
    landmark_outputs: tuple[str, str] = ("", "")  # (landmarks layer, face-presence layer)


_models: FaceModels | None = None
_models_lock = threading.Lock()
_load_count = 0


def _load(paths: ModelPaths) -> FaceModels:
    from mediapipe.tasks.python import BaseOptions, vision

    options = vision.FaceDetectorOptions(
        base_options=BaseOptions(model_asset_buffer=Path(paths.detector).read_bytes()),
        min_detection_confidence=MIN_DETECTION_SCORE,
        min_suppression_threshold=0.3,
    )
    detector = vision.FaceDetector.create_from_options(options)
    net = cv2.dnn.readNetFromTFLite(str(paths.landmarker))
    names = tuple(net.getUnconnectedOutLayersNames())
    net.setInput(np.zeros((1, 3, LANDMARK_INPUT, LANDMARK_INPUT), np.float32))
    outs = net.forward(names)
    landmarks_name = next(n for n, o in zip(names, outs) if o.size == 468 * 3)
    presence_name = next(n for n, o in zip(names, outs) if o.size == 1)
    models = FaceModels(
        paths=paths, detector=detector, landmark_net=net, landmark_outputs=(landmarks_name, presence_name)
    )
    return models


def get_models() -> FaceModels:
    """The process-wide models, loaded on first use (``ModelFilesMissing`` if set-up was not run)."""
    global _models, _load_count
    models = _models
    if models is not None:
        return models
    with _models_lock:
        if _models is None:
            _models = _load(model_paths())
            _load_count += 1
        return _models


def models_load_count() -> int:
    """How many times this process loaded the models (1 after first use; for tests and metrics)."""
    return _load_count


# ------------------------------------------------------------------ detection
def _run_detector(models: FaceModels, rgb: np.ndarray) -> list[FaceDetection]:
    """One detector pass; coordinates in ``rgb``'s pixels."""
    import mediapipe as mp

    h, w = rgb.shape[:2]
    image = mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(rgb))
    with models.detector_lock:
        result = models.detector.detect(image)
    out = []
    for det in result.detections:
        bb = det.bounding_box
        score = float(det.categories[0].score) if det.categories else 0.0
        kps = np.array([[kp.x * w, kp.y * h] for kp in det.keypoints], dtype=np.float32).reshape(-1, 2)
        if kps.shape[0] != 6:
            continue
        box = (float(bb.origin_x), float(bb.origin_y), float(bb.origin_x + bb.width), float(bb.origin_y + bb.height))
        out.append(FaceDetection(box=box, keypoints=kps, score=score))
    return out


def _pad_square(rgb: np.ndarray, pad_fraction: float) -> tuple[np.ndarray, float, float]:
    """Pad to a square with ``pad_fraction`` of the long side added on every side (black, like a letterbox)."""
    h, w = rgb.shape[:2]
    side = max(h, w)
    margin = int(round(side * pad_fraction))
    out_side = side + 2 * margin
    top = (out_side - h) // 2
    left = (out_side - w) // 2
    padded = cv2.copyMakeBorder(
        rgb, top, out_side - h - top, left, out_side - w - left, cv2.BORDER_CONSTANT, value=(0, 0, 0)
    )
    return padded, float(left), float(top)


def _shift_scale(det: FaceDetection, dx: float, dy: float, scale: float = 1.0) -> FaceDetection:
    """Map a detection from a derived image back: p = (p' - (dx, dy)) / scale."""
    x0, y0, x1, y1 = det.box
    return FaceDetection(
        box=((x0 - dx) / scale, (y0 - dy) / scale, (x1 - dx) / scale, (y1 - dy) / scale),
        keypoints=((det.keypoints - np.array([dx, dy], np.float32)) / scale).astype(np.float32),
        score=det.score,
    )


def _overlap(a: FaceDetection, b: FaceDetection) -> float:
    """Intersection over the smaller box: 1 when one box lies inside the other."""
    ax0, ay0, ax1, ay1 = a.box
    bx0, by0, bx1, by1 = b.box
    iw = max(0.0, min(ax1, bx1) - max(ax0, bx0))
    ih = max(0.0, min(ay1, by1) - max(ay0, by0))
    inter = iw * ih
    smaller = min((ax1 - ax0) * (ay1 - ay0), (bx1 - bx0) * (by1 - by0))
    return inter / smaller if smaller > 0 else 0.0


def _merge(cands: list[FaceDetection], overlap: float = 0.4) -> list[FaceDetection]:
    """Greedy suppression across passes: the best-scoring detection of each face survives."""
    kept: list[FaceDetection] = []
    for det in sorted(cands, key=lambda d: d.score, reverse=True):
        if all(_overlap(det, k) < overlap for k in kept):
            kept.append(det)
    return kept


#: A face box must be at least ~11 % of the frame the detector sees (measured); tiles a quarter of the
#: long side therefore find faces down to ~3 % of it, and faces below that are far too small anyway
#: (documents the tile sizes chosen in find_faces; not used in code).
_DETECTOR_MIN_FRACTION = 0.11
#: When the largest face found on the whole frame is at least this fraction of the long side, any face
#: big enough to matter next to it (``BACKGROUND_FACE_RATIO``) is within the whole-frame pass's range.
_NO_TILES_FACE_FRACTION = 0.3
_TILE_MIN_PX = 96  # tiles smaller than this only hold faces far below the prominence threshold
_TILE_DETECT_SIDE = 160  # tiles are downscaled to this before the detector (its input is 128)


@dataclass
class Face:
    """A detection confirmed by the mesh model, with its landmarks."""

    detection: FaceDetection
    landmarks: np.ndarray  # (468, 2) float32, image pixels
    presence: float  # mesh model's face probability (min over its two crops)

    @property
    def iod(self) -> float:
        return rig.inter_ocular_distance(self.landmarks)


def find_faces(rgb: np.ndarray) -> list[Face]:
    """Every face in an RGB uint8 image, best detector score first.

    A face is a detector candidate (score >= ``CANDIDATE_SCORE``) that the mesh model confirms
    (presence >= ``MIN_LANDMARK_PRESENCE``): two independent models must agree.

    Detector passes: (1) the whole frame letterboxed to a square; (2) the frame padded by a quarter on
    every side (close-ups that fill the frame, faces cut by the border); then, only when needed,
    overlapping tiles (50 % overlap, so every face at most half a tile wide lies whole in one tile):
    (3) tiles half the long side wide when the largest face so far is smaller than
    ``_NO_TILES_FACE_FRACTION`` of the long side (a second face big enough to matter could be below the
    whole-frame pass's reach), (4) tiles a quarter of the long side wide when there is still no face, so
    a small face in a big image is found and reported as too small instead of missing.
    """
    rgb = _check_rgb(rgb)
    return complete_faces(rgb, first_faces(rgb))


@dataclass
class FirstFaces:
    """The faces of :func:`find_faces`' whole-frame passes (1) and (2); ``tiles``: whether its tile passes
    (3) and (4) are still to run (:func:`complete_faces`)."""

    faces: list[Face]
    tiles: bool


def first_faces(rgb: np.ndarray) -> FirstFaces:
    rgb = _check_rgb(rgb)
    models = get_models()
    h, w = rgb.shape[:2]
    cands: list[FaceDetection] = []
    sq, dx, dy = _pad_square(rgb, 0.0)
    cands += [_shift_scale(d, dx, dy) for d in _run_detector(models, sq)]
    small = _downscale_to(rgb, 512)  # the detector sees 128 px: nothing is lost
    s = small.shape[1] / w
    pad, dx, dy = _pad_square(small, 0.25)
    cands += [_shift_scale(d, dx, dy, s) for d in _run_detector(models, pad)]
    faces = _confirm(rgb, _merge(cands), [])
    return FirstFaces(faces, max((f.detection.size for f in faces), default=0.0) < _NO_TILES_FACE_FRACTION * max(h, w))


def complete_faces(rgb: np.ndarray, first: FirstFaces) -> list[Face]:
    """:func:`find_faces`' answer from its first passes: the tile passes where needed, sorted."""
    faces = list(first.faces)
    if first.tiles:
        models = get_models()
        h, w = rgb.shape[:2]
        long_side, short_side = max(h, w), min(h, w)
        faces += _confirm(rgb, _merge(_tile_pass(models, rgb, min(short_side, long_side // 2))), faces)
        if not faces:
            faces += _confirm(rgb, _merge(_tile_pass(models, rgb, min(short_side, long_side // 4))), faces)
    return sorted(_dedupe(faces), key=lambda f: f.detection.score, reverse=True)


def detect_faces(rgb: np.ndarray) -> list[FaceDetection]:
    """The detections of :func:`find_faces` (mesh-confirmed faces), best score first."""
    return [f.detection for f in find_faces(rgb)]


def _confirm(rgb: np.ndarray, cands: list[FaceDetection], known: list[Face]) -> list[Face]:
    out: list[Face] = []
    for det in cands:
        if det.score < CANDIDATE_SCORE:
            continue
        if any(_overlap(det, f.detection) >= 0.4 for f in known + out):
            continue
        landmarks, presence = face_landmarks_with_presence(rgb, det, give_up_below=MIN_LANDMARK_PRESENCE)
        if presence >= MIN_LANDMARK_PRESENCE:
            out.append(Face(det, landmarks, presence))
    return out


def _dedupe(faces: list[Face]) -> list[Face]:
    """Two detections whose meshes put the eyes in the same place are one face (keep the best)."""
    kept: list[Face] = []
    for f in sorted(faces, key=lambda f: f.detection.score, reverse=True):
        r, l = rig.eye_centers(f.landmarks)
        mid = (r + l) / 2
        if all(np.linalg.norm(mid - sum(rig.eye_centers(k.landmarks)) / 2) > 0.5 * max(k.iod, 1.0) for k in kept):
            kept.append(f)
    return kept


def _tile_pass(models: FaceModels, rgb: np.ndarray, tile: int) -> list[FaceDetection]:
    h, w = rgb.shape[:2]
    if tile < _TILE_MIN_PX or tile >= max(h, w):
        return []
    out = []
    for y in _tile_starts(h, tile):
        for x in _tile_starts(w, tile):
            crop = _downscale_to(rgb[y : y + tile, x : x + tile], _TILE_DETECT_SIDE)
            cs = crop.shape[1] / min(tile, w - x)
            for d in _run_detector(models, crop):
                d = _shift_scale(_shift_scale(d, 0.0, 0.0, cs), -x, -y)
                # A face cut by a tile edge is found whole by a neighbouring tile.
                if not _box_touches(d.box, (x, y, x + tile, y + tile), (w, h)):
                    out.append(d)
    return out


def _tile_starts(length: int, tile: int) -> list[int]:
    """As few starts as keep neighbours at most half a tile apart (to a pixel), evenly spaced, the last
    tile ending at the edge: every face up to half a tile wide lies whole in one tile. (Steps of
    ``tile // 2`` from 0 plus a last tile at the edge gave a 4th row of tiles one pixel from the 3rd on
    most frames.)"""
    if tile >= length:
        return [0]
    n = max(2, math.ceil((length - tile - 1) / (tile / 2)) + 1)
    return [round(i * (length - tile) / (n - 1)) for i in range(n)]


def _box_touches(box, tile_box, image_size, margin: float = 2.0) -> bool:
    """Whether ``box`` reaches a tile edge that is not also an image edge."""
    x0, y0, x1, y1 = box
    tx0, ty0, tx1, ty1 = tile_box
    w, h = image_size
    return (
        (tx0 > 0 and x0 <= tx0 + margin)
        or (ty0 > 0 and y0 <= ty0 + margin)
        or (tx1 < w and x1 >= tx1 - margin)
        or (ty1 < h and y1 >= ty1 - margin)
    )


def _downscale_to(rgb: np.ndarray, max_side: int) -> np.ndarray:
    h, w = rgb.shape[:2]
    if max(h, w) <= max_side:
        return rgb
    s = max_side / max(h, w)
    return cv2.resize(rgb, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)


def _check_rgb(rgb: np.ndarray) -> np.ndarray:
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"expected an RGB uint8 array (H, W, 3), got {rgb.dtype} {rgb.shape}")
    return np.ascontiguousarray(rgb)


# ------------------------------------------------------------------ landmarks
@dataclass(frozen=True)
class Roi:
    """A rotated square region: centre (pixels), side (pixels), angle (radians, of the eye line)."""

    cx: float
    cy: float
    size: float
    angle: float

    def crop_matrix(self, out: int = LANDMARK_INPUT) -> np.ndarray:
        """2x3 affine from crop index coordinates to image index coordinates (for WARP_INVERSE_MAP)."""
        c, s = math.cos(self.angle), math.sin(self.angle)
        k = self.size / out
        ex = np.array([c, s]) * k
        ey = np.array([-s, c]) * k
        # continuous crop (u + .5) -> continuous image -> image index (-.5)
        t = np.array([self.cx, self.cy]) + (0.5 - out / 2) * (ex + ey) - 0.5
        return np.array([[ex[0], ey[0], t[0]], [ex[1], ey[1], t[1]]], dtype=np.float64)

    def to_image(self, pts: np.ndarray, out: int = LANDMARK_INPUT) -> np.ndarray:
        """Continuous crop coordinates -> continuous image coordinates."""
        c, s = math.cos(self.angle), math.sin(self.angle)
        k = self.size / out
        local = (np.asarray(pts, np.float64) - out / 2) * k
        x = self.cx + local[:, 0] * c - local[:, 1] * s
        y = self.cy + local[:, 0] * s + local[:, 1] * c
        return np.stack([x, y], axis=1)


def roi_from_detection(det: FaceDetection) -> Roi:
    """MediaPipe's detection-to-ROI: box centre, long side x 1.5, rotated so the eye keypoints are level."""
    x0, y0, x1, y1 = det.box
    k = np.asarray(det.keypoints, np.float64)
    d = k[KP_LEFT_EYE] - k[KP_RIGHT_EYE]
    angle = math.atan2(d[1], d[0])
    return Roi((x0 + x1) / 2, (y0 + y1) / 2, max(x1 - x0, y1 - y0) * _ROI_SCALE, angle)


def roi_from_landmarks(landmarks: np.ndarray) -> Roi:
    """MediaPipe's tracking ROI: the mesh's box in the face's own (eye-level) frame, x 1.5, square."""
    pts = np.asarray(landmarks, np.float64)
    d = pts[263] - pts[33]  # outer eye corners: subject's left minus right
    angle = math.atan2(d[1], d[0])
    c, s = math.cos(angle), math.sin(angle)
    centre = pts.mean(axis=0)
    rel = pts - centre
    u = rel[:, 0] * c + rel[:, 1] * s
    v = -rel[:, 0] * s + rel[:, 1] * c
    mu, mv = (u.min() + u.max()) / 2, (v.min() + v.max()) / 2
    cx = centre[0] + mu * c - mv * s
    cy = centre[1] + mu * s + mv * c
    size = max(u.max() - u.min(), v.max() - v.min()) * _ROI_SCALE
    return Roi(float(cx), float(cy), float(size), angle)


def landmarks_in_roi(rgb: np.ndarray, roi: Roi) -> tuple[np.ndarray, float]:
    """Run the face mesh on ``roi``: ((468, 2) float32 image coordinates, face-presence probability)."""
    models = get_models()
    crop = cv2.warpAffine(
        rgb,
        roi.crop_matrix(),
        (LANDMARK_INPUT, LANDMARK_INPUT),
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_REPLICATE,
    )
    blob = (crop.astype(np.float32) / 255.0).transpose(2, 0, 1)[None]
    with models.landmark_lock:
        models.landmark_net.setInput(blob)
        raw, flag = models.landmark_net.forward(list(models.landmark_outputs))
    pts = np.asarray(raw, np.float32).reshape(468, 3)[:, :2]
    presence = 1.0 / (1.0 + math.exp(-float(np.asarray(flag).reshape(-1)[0])))
    return roi.to_image(pts).astype(np.float32), presence


def face_landmarks(rgb: np.ndarray, detection: FaceDetection) -> np.ndarray:
    """The 468-point mesh of ``detection``'s face: (468, 2) float32 pixel coordinates in ``rgb``."""
    landmarks, _ = face_landmarks_with_presence(rgb, detection)
    return landmarks


def face_landmarks_with_presence(
    rgb: np.ndarray, detection: FaceDetection, give_up_below: float = 0.0
) -> tuple[np.ndarray, float]:
    """:func:`face_landmarks` plus the mesh model's face-presence probability (the lower of its two
    crops'). With ``give_up_below``, a first crop whose presence is already lower is not refined (the
    answer's presence can only be lower still): the detector's false positives cost one mesh run."""
    rgb = _check_rgb(rgb)
    pts, presence = landmarks_in_roi(rgb, roi_from_detection(detection))
    if presence < give_up_below:
        return pts, presence
    # Second pass from the first pass's mesh (MediaPipe's tracking ROI): tighter, eye-level crop.
    refined, refined_presence = landmarks_in_roi(rgb, roi_from_landmarks(pts))
    # Both crops must look like a face to the mesh model: on non-faces its presence score wanders.
    return refined, min(presence, refined_presence)


def refine_landmarks(rgb: np.ndarray, landmarks: np.ndarray) -> tuple[np.ndarray, float]:
    """Re-run the mesh on ``rgb`` around known landmarks (e.g. landmarks mapped into an aligned image)."""
    rgb = _check_rgb(rgb)
    return landmarks_in_roi(rgb, roi_from_landmarks(landmarks))


# ------------------------------------------------------------------ the prominence rules
_FEATURES = tuple(
    sorted(
        set(rig.RIGHT_EYE + rig.LEFT_EYE + rig.RIGHT_BROW + rig.LEFT_BROW + rig.LIPS_OUTER)
        | {rig.NOSE_TIP, rig.CHIN}
    )
)


def analyze_single_face(rgb: np.ndarray) -> tuple[FaceDetection, np.ndarray]:
    """The one prominent face of ``rgb`` and its landmarks, or the typed error the SPEC names.

    A detection counts as a face when the detector's score is at least ``CANDIDATE_SCORE`` *and* the mesh
    model, run on it, agrees there is a face (presence >= ``MIN_LANDMARK_PRESENCE``): two independent
    models must agree, which removes the detector's occasional false positives on textures.

    - ``NoFaceDetected``: no face;
    - ``MultipleFaces``: two or more faces, not counting background faces much smaller than the largest
      (inter-ocular distance below ``BACKGROUND_FACE_RATIO`` of the largest one's);
    - ``FaceNotProminent``: the face is small (inter-ocular distance below ``MIN_IOD_FRACTION`` of the
      image's short side or below ``MIN_IOD_PX``) or cut off by the image border (``_cut_off``).
    """
    rgb = _check_rgb(rgb)
    return prominent_face(rgb, find_faces(rgb))


def prominent_face(rgb: np.ndarray, faces: list[Face]) -> tuple[FaceDetection, np.ndarray]:
    """:func:`analyze_single_face`'s rules applied to ``faces`` (:func:`find_faces`' answer) of ``rgb``."""
    h, w = rgb.shape[:2]
    if not faces:
        raise NoFaceDetected(suggestion="Upload a well-lit, front-facing portrait")
    largest = max(f.iod for f in faces)
    significant = [f for f in faces if f.iod >= BACKGROUND_FACE_RATIO * largest]
    if len(significant) > 1:
        raise MultipleFaces(
            f"{len(significant)} faces were found in the image; exactly one is required",
            suggestion="Crop the image to the one face the avatar should have",
            details={"faces": len(significant)},
        )
    face = significant[0]
    det, landmarks, iod = face.detection, face.landmarks, face.iod
    short = float(min(h, w))
    if iod < MIN_IOD_FRACTION * short or iod < MIN_IOD_PX:
        raise FaceNotProminent(
            "The face is too small in the image",
            suggestion="Use a photo where the face fills a larger part of the frame",
            details={"inter_ocular_px": round(iod, 1), "image_short_side_px": int(short)},
        )
    if _cut_off(landmarks, w, h):
        raise FaceNotProminent(
            "The face is cut off by the image border",
            suggestion="Use a photo that shows the whole face",
        )
    return det, landmarks


def _cut_off(landmarks: np.ndarray, w: int, h: int) -> bool:
    pts = np.asarray(landmarks, np.float64)
    feats = pts[list(_FEATURES)]
    if (feats[:, 0] < 0).any() or (feats[:, 1] < 0).any() or (feats[:, 0] > w).any() or (feats[:, 1] > h).any():
        return True
    oval = pts[list(rig.FACE_OVAL)]
    extent = float(max(np.ptp(oval[:, 0]), np.ptp(oval[:, 1])))
    outside = max(
        -oval[:, 0].min(), -oval[:, 1].min(), oval[:, 0].max() - w, oval[:, 1].max() - h, 0.0
    )
    return outside > MAX_OVAL_OUTSIDE_FRACTION * extent

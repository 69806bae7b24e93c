"""The face pipeline: bytes (or pixels) -> aligned avatar image, 500x500 preview and animation rig.

decode -> the one prominent face and its landmarks -> alignment to the orientation's canonical profile ->
the mesh re-run on the aligned image (the rig describes the image the renderer animates, so its
landmarks are measured there, not just mapped) -> preview crop. Pure functions over numpy arrays; Ray is
only in ``tasks.py`` and storage is the caller's job (``encode_outputs`` gives the bytes to store).
"""
from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import cv2
import numpy as np

from core import rig as rig_mod
from core.rig import FaceRig

from .align import align_face, orientation_for, warp
from .analyze import MIN_LANDMARK_PRESENCE, analyze_single_face, refine_landmarks
from .decode import decode_image

PREVIEW_SIZE = 500
#: The preview square is this many times the face oval's larger side (the whole head and some margin).
PREVIEW_FACE_SCALE = 1.6
JPEG_QUALITY = 90


@dataclass
class ProcessedFace:
    aligned: np.ndarray  # RGB uint8, the profile's size (1024x768, 768x1024 or 1024x1024)
    preview: np.ndarray  # RGB uint8, 500x500, centred on the face
    rig: FaceRig  # landmarks measured on ``aligned``
    orientation: str  # "4:3" | "3:4" | "1:1"
    content_sha256: str  # of the uploaded bytes (process_face) or of the pixel bytes (process_face_array)
    mask: np.ndarray | None = None  # person mask of ``aligned`` (uint8, 255 = person); None without the model
    #: ``encode_outputs``' files at ``JPEG_QUALITY``, when ``process_face(encode=True)`` made them on the way
    files: dict[str, bytes] | None = field(default=None, repr=False)


def process_face(data: bytes, *, encode: bool = False) -> ProcessedFace:
    """Run the whole pipeline on untrusted image bytes (raises the SPEC's typed errors). With ``encode``
    the files to store are made too, each beside other work (see ``_process``)."""
    rgb = decode_image(data)
    return _process(rgb, hashlib.sha256(bytes(data)).hexdigest(), encode=encode)


def process_face_array(rgb: np.ndarray) -> ProcessedFace:
    """Run the pipeline on an (H, W, 3) RGB uint8 array; the content hash is over its pixel bytes."""
    rgb = np.ascontiguousarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"expected an RGB uint8 array (H, W, 3), got {rgb.dtype} {rgb.shape}")
    return _process(rgb, hashlib.sha256(rgb.tobytes()).hexdigest())


#: Runs the person mask beside the mesh and preview of the same image (OpenCV releases the GIL): one
#: image's latency is then the longer of the two, not their sum (upload-face). One thread per process.
_SEGMENTER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="face-segment")


def _process(rgb: np.ndarray, content_sha256: str, *, encode: bool = False) -> ProcessedFace:
    h, w = rgb.shape[:2]
    detection, landmarks = analyze_single_face(rgb)
    orientation = orientation_for(w, h)
    aligned = align_face(rgb, landmarks, orientation)
    mask = _SEGMENTER.submit(_person_mask, aligned.image, encode)
    # The files are encoded on the way: the JPEGs on this side while the other thread makes the mask and
    # its PNG (the two sides take about as long), instead of all of them after both sides.
    image_jpg = encode_jpeg(aligned.image) if encode else b""
    mapped = aligned.transform(landmarks)
    measured, presence = refine_landmarks(aligned.image, mapped)
    # The aligned image is the same face, larger and upright: the mesh should see it at least as well.
    # Should it not, the mapped landmarks are still exact up to the first measurement's error.
    rig_landmarks = measured if presence >= MIN_LANDMARK_PRESENCE else mapped
    profile = aligned.profile
    face_rig = FaceRig(
        width=profile.width,
        height=profile.height,
        orientation=orientation,
        landmarks=rig_landmarks,
        extra={
            "source_size": [int(w), int(h)],
            "detection_score": round(float(detection.score), 4),
            "align_matrix": np.round(aligned.matrix, 6).tolist(),
            "landmarks_measured": bool(presence >= MIN_LANDMARK_PRESENCE),
        },
    )
    preview = make_preview(aligned.image, rig_landmarks)
    preview_jpg = encode_jpeg(preview) if encode else b""
    person, mask_png = mask.result()
    files = stored_files(image_jpg, preview_jpg, face_rig, mask_png) if encode else None
    return ProcessedFace(
        aligned=aligned.image,
        preview=preview,
        rig=face_rig,
        orientation=orientation,
        content_sha256=content_sha256,
        mask=person,
        files=files,
    )


def _person_mask(image: np.ndarray, encode: bool = False) -> tuple[np.ndarray | None, bytes | None]:
    """The person mask for the session ``background`` option, once per avatar, and its PNG when
    ``encode``; (None, None) (and the avatar still usable with its original background) where set-up
    predates the segmentation model."""
    from core.errors import ModelFilesMissing

    from . import segment

    try:
        person = segment.person_mask(image)
    except ModelFilesMissing:
        return None, None
    return person, segment.encode_mask(person) if encode else None


def make_preview(image: np.ndarray, landmarks: np.ndarray, size: int = PREVIEW_SIZE) -> np.ndarray:
    """A size x size crop centred on the face oval, ``PREVIEW_FACE_SCALE`` times its larger side."""
    h, w = image.shape[:2]
    oval = np.asarray(landmarks, np.float64)[list(rig_mod.FACE_OVAL)]
    lo, hi = oval.min(axis=0), oval.max(axis=0)
    centre = (lo + hi) / 2
    side = min(float((hi - lo).max()) * PREVIEW_FACE_SCALE, float(min(h, w)))
    # Keep the square inside the image where it fits (edge replication only where it cannot).
    x0 = float(np.clip(centre[0] - side / 2, 0, max(0.0, w - side)))
    y0 = float(np.clip(centre[1] - side / 2, 0, max(0.0, h - side)))
    k = size / side
    matrix = np.array([[k, 0.0, -x0 * k], [0.0, k, -y0 * k]])
    return warp(image, matrix, (size, size))


def encode_outputs(pf: ProcessedFace, *, quality: int = JPEG_QUALITY) -> dict[str, bytes]:
    """The files to store: ``image.jpg`` (aligned), ``preview.jpg``, ``rig.json`` and ``mask.png`` (the
    person mask, when the segmentation model is set up)."""
    if pf.files is not None and quality == JPEG_QUALITY:
        return dict(pf.files)  # already made by ``process_face(encode=True)``
    from . import segment

    mask_png = segment.encode_mask(pf.mask) if pf.mask is not None else None
    return stored_files(encode_jpeg(pf.aligned, quality=quality), encode_jpeg(pf.preview, quality=quality),
                        pf.rig, mask_png)


def stored_files(image_jpg: bytes, preview_jpg: bytes, rig: FaceRig, mask_png: bytes | None) -> dict[str, bytes]:
    """The files of an avatar by name (``mask.png`` only with a mask): one place for both ways of making them."""
    files = {"image.jpg": image_jpg, "preview.jpg": preview_jpg, "rig.json": rig.to_json().encode("utf-8")}
    if mask_png is not None:
        files["mask.png"] = mask_png
    return files


def encode_jpeg(rgb: np.ndarray, *, quality: int = JPEG_QUALITY) -> bytes:
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return buf.tobytes()

"""Detection, landmarks and the one-prominent-face rules on real photos."""
from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from core import rig
from core.errors import FaceNotProminent, MultipleFaces, NoFaceDetected
from pipelines.faces.analyze import analyze_single_face, detect_faces, face_landmarks

from .helpers import on_canvas


def _eye_angle_deg(landmarks: np.ndarray) -> float:
    right, left = rig.eye_centers(landmarks)
    return math.degrees(math.atan2(left[1] - right[1], left[0] - right[0]))


def test_one_face_is_found_with_its_mesh(astronaut):
    dets = detect_faces(astronaut)
    assert len(dets) == 1
    det = dets[0]
    assert det.keypoints.shape == (6, 2) and 0.5 < det.score <= 1.0
    x0, y0, x1, y1 = det.box
    assert 150 < x0 < x1 < 300 and 50 < y0 < y1 < 200  # her face, not the suit or the flag
    lm = face_landmarks(astronaut, det)
    assert lm.shape == (468, 2) and lm.dtype == np.float32
    # The mesh and the detector agree where the eyes are (two different models).
    right, left = rig.eye_centers(lm)
    iod = float(np.linalg.norm(left - right))
    assert np.linalg.norm(right - det.keypoints[0]) < 0.2 * iod
    assert np.linalg.norm(left - det.keypoints[1]) < 0.2 * iod
    assert 35 < iod < 55
    # Mesh points sit in the right places: lips below the nose below the eyes, chin lowest.
    assert right[1] < lm[rig.NOSE_TIP][1] < lm[rig.UPPER_INNER_LIP_CENTER][1] < lm[rig.CHIN][1]


def test_single_face_accepted(astronaut, grace):
    for img in (astronaut, grace):
        det, lm = analyze_single_face(img)
        assert lm.shape == (468, 2)
        assert abs(_eye_angle_deg(lm)) < 10


def test_rotated_face_is_measured_rotated(grace):
    h, w = grace.shape[:2]
    # Counter-clockwise on screen by 20 degrees: the eye line then rises to the right (-20 in image axes).
    rotated = cv2.warpAffine(grace, cv2.getRotationMatrix2D((w / 2, h / 2), 20, 1.0), (w, h), borderMode=cv2.BORDER_REPLICATE)
    _, lm0 = analyze_single_face(grace)
    _, lm = analyze_single_face(rotated)
    assert _eye_angle_deg(lm) == pytest.approx(_eye_angle_deg(lm0) - 20, abs=3)


@pytest.mark.parametrize("name", ["cat", "coffee", "noise", "flat"])
def test_no_face(name, request):
    img = {
        "noise": lambda: np.random.default_rng(7).integers(0, 256, (480, 640, 3), dtype=np.uint8),
        "flat": lambda: np.full((400, 400, 3), 128, np.uint8),
    }.get(name, lambda: request.getfixturevalue(name))()
    assert detect_faces(img) == []
    with pytest.raises(NoFaceDetected) as err:
        analyze_single_face(img)
    assert err.value.code == "NO_FACE_DETECTED" and err.value.status == 400


def test_two_real_faces_side_by_side(astronaut, grace):
    g = cv2.resize(grace, (round(512 * 512 / 600), 512), interpolation=cv2.INTER_AREA)
    both = np.concatenate([astronaut, g], axis=1)
    assert len(detect_faces(both)) == 2
    with pytest.raises(MultipleFaces) as err:
        analyze_single_face(both)
    assert err.value.code == "MULTIPLE_FACES" and err.value.details == {"faces": 2}


def test_two_faces_stacked_in_a_portrait(astronaut, grace):
    a = cv2.resize(astronaut, (512, 512))
    g = cv2.resize(grace, (512, 600))
    with pytest.raises(MultipleFaces):
        analyze_single_face(np.concatenate([a, g], axis=0))


def test_tiny_face_in_a_large_image_is_found_but_not_prominent(grace):
    # Grace Hopper at 30 % in a 1600x1200 frame: inter-ocular distance ~27 px of 1200.
    img = on_canvas(grace, 0.3, (1600, 1200), (900, 500))
    dets = detect_faces(img)
    assert len(dets) == 1  # found (not "no face") ...
    x0, y0, _, _ = dets[0].box
    assert 900 < x0 < 1060 and 500 < y0 < 680  # ... where it was pasted
    with pytest.raises(FaceNotProminent) as err:  # ... and refused as too small
        analyze_single_face(img)
    assert err.value.code == "FACE_NOT_PROMINENT"
    assert "too small" in err.value.message
    assert err.value.details["image_short_side_px"] == 1200


def test_same_face_larger_in_the_same_frame_is_accepted(grace):
    # Control for the test above: the size, not the canvas, decides.
    img = on_canvas(grace, 1.6, (1600, 1200), (400, 100))
    analyze_single_face(img)


@pytest.mark.parametrize(
    "crop",
    [
        ("astronaut", np.s_[:140, :]),  # through the nose: mouth and chin gone
        ("grace", np.s_[:250, :]),  # through the mouth
        ("grace", np.s_[:, 260:]),  # through the face from the side
    ],
    ids=["astronaut-nose", "grace-mouth", "grace-side"],
)
def test_face_cut_by_the_border(crop, request):
    name, sl = crop
    img = np.ascontiguousarray(request.getfixturevalue(name)[sl])
    with pytest.raises(FaceNotProminent) as err:
        analyze_single_face(img)
    assert "cut off" in err.value.message


def test_tight_but_whole_face_is_accepted(astronaut, grace):
    # Close-ups that fill most of the frame are not "cut off".
    analyze_single_face(np.ascontiguousarray(astronaut[50:210, 150:300]))
    analyze_single_face(np.ascontiguousarray(grace[120:380, 160:390]))
    big = cv2.resize(np.ascontiguousarray(astronaut[50:210, 150:300]), (900, 960))
    _, lm = analyze_single_face(big)
    assert rig.inter_ocular_distance(lm) > 200


def test_rejects_non_rgb_input():
    with pytest.raises(ValueError):
        detect_faces(np.zeros((10, 10), np.uint8))

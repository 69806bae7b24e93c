"""The whole pipeline: alignment measured by re-running the models on its output."""
from __future__ import annotations

import hashlib
import math

import cv2
import numpy as np
import pytest

from core import rig
from core.errors import FaceNotProminent, ImageTooLarge, MultipleFaces, NoFaceDetected, UnsupportedImage
from core.rig import FaceRig
from pipelines.faces.align import PROFILES, orientation_for
from pipelines.faces.analyze import analyze_single_face
from pipelines.faces.decode import decode_image
from pipelines.faces.pipeline import encode_outputs, process_face, process_face_array

from .helpers import encode
from .test_decode import exif_rotated_jpeg, png_bomb


def _assert_canonical(pf) -> None:
    """Re-detect and re-measure the face on the aligned output, independently of the pipeline."""
    profile = PROFILES[pf.orientation]
    assert pf.aligned.shape == (profile.height, profile.width, 3) and pf.aligned.dtype == np.uint8
    assert profile.width <= 1200
    _, lm = analyze_single_face(pf.aligned)
    right, left = rig.eye_centers(lm)
    angle = math.degrees(math.atan2(left[1] - right[1], left[0] - right[0]))
    assert abs(angle) < 2.0, f"eyes not level: {angle:.2f} deg"
    iod = float(np.linalg.norm(left - right))
    assert iod == pytest.approx(profile.iod, rel=0.05)
    mid = (left + right) / 2
    assert np.linalg.norm(mid - np.asarray(profile.eye_center)) < 0.1 * profile.iod
    # The rig's landmarks are those of the aligned image.
    assert (pf.rig.width, pf.rig.height, pf.rig.orientation) == (profile.width, profile.height, pf.orientation)
    assert np.abs(pf.rig.landmarks - lm).mean() < 0.03 * profile.iod


def test_astronaut_bytes_square_profile(astronaut):
    data = encode(astronaut, "JPEG", quality=95)
    pf = process_face(data)
    assert pf.orientation == "1:1"
    assert pf.content_sha256 == hashlib.sha256(data).hexdigest()
    assert pf.preview.shape == (500, 500, 3) and pf.preview.dtype == np.uint8
    _assert_canonical(pf)
    # The preview is centred on the face: the mesh finds it there, roughly in the middle.
    _, lm = analyze_single_face(pf.preview)
    face_centre = lm[list(rig.FACE_OVAL)].mean(axis=0)
    assert np.linalg.norm(face_centre - 250) < 60


def test_portrait_gets_3_4(grace):
    pf = process_face(encode(grace, "PNG"))
    assert pf.orientation == "3:4"
    _assert_canonical(pf)


def test_landscape_gets_4_3(astronaut):
    wide = cv2.copyMakeBorder(astronaut, 0, 0, 200, 200, cv2.BORDER_REPLICATE)  # 912x512
    pf = process_face_array(wide)
    assert pf.orientation == "4:3"
    assert pf.content_sha256 == hashlib.sha256(wide.tobytes()).hexdigest()
    _assert_canonical(pf)


def test_rotated_and_off_centre_face_is_levelled_without_black_wedges(grace):
    src = np.maximum(grace, 8)  # the photo has no black pixels ...
    h, w = src.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), 15, 1.0)
    m[:, 2] += (60, 40)  # ... rotated and shifted towards a corner
    rotated = cv2.warpAffine(src, m, (w, h), borderMode=cv2.BORDER_REPLICATE)
    pf = process_face_array(rotated)
    _assert_canonical(pf)
    black = np.all(pf.aligned < 4, axis=2).mean()
    assert black < 0.001  # ... and the aligned one has none either (edges replicated, not zero-filled)


def test_exif_rotated_photo_is_processed_upright(grace):
    pf = process_face(exif_rotated_jpeg(grace))
    # Stored sideways as 600x512 (landscape); upright it is a 512x600 portrait.
    assert pf.orientation == "3:4"
    _assert_canonical(pf)


def test_encode_outputs(astronaut):
    pf = process_face_array(astronaut)
    files = encode_outputs(pf)
    assert set(files) == {"image.jpg", "preview.jpg", "rig.json", "mask.png"}
    assert files["image.jpg"][:3] == b"\xff\xd8\xff" and files["preview.jpg"][:3] == b"\xff\xd8\xff"
    image = decode_image(files["image.jpg"])
    assert image.shape == pf.aligned.shape
    assert np.abs(image.astype(int) - pf.aligned.astype(int)).mean() < 3  # quality ~90
    assert decode_image(files["preview.jpg"]).shape == (500, 500, 3)
    back = FaceRig.from_json(files["rig.json"])
    assert (back.width, back.height, back.orientation) == (1024, 1024, "1:1")
    assert np.allclose(back.landmarks, pf.rig.landmarks, atol=0.001)
    assert back.iod == pytest.approx(PROFILES["1:1"].iod, rel=0.05)
    # the person mask (for the session background), computed once here: the face in, the corners out
    from pipelines.faces.segment import decode_mask

    mask = decode_mask(files["mask.png"])
    assert mask.shape == pf.aligned.shape[:2] and np.array_equal(mask, pf.mask)
    nose = np.round(back.landmarks[1]).astype(int)
    assert mask[nose[1], nose[0]] == 255 and mask[0, 0] == 0 and mask[0, -1] == 0


def test_files_encoded_on_the_way_are_those_encode_outputs_makes(astronaut):
    """process_face(encode=True) encodes beside the mask (upload-face's path): same files, byte for byte."""
    from dataclasses import replace

    pf = process_face(encode(astronaut, "JPEG", quality=95), encode=True)
    assert pf.files is not None and set(pf.files) == {"image.jpg", "preview.jpg", "rig.json", "mask.png"}
    assert encode_outputs(replace(pf, files=None)) == pf.files
    assert encode_outputs(pf, quality=70)["image.jpg"] != pf.files["image.jpg"]  # another quality: encoded anew


def test_mask_smoothed_on_the_model_grid_is_the_full_size_blur(astronaut, grace):
    """The mask's smoothing runs on the model's 256x256 grid (cheap); it must stay what blurring the
    upsampled confidence at full size gives (the mask sessions composite their background with)."""
    from pipelines.faces import segment

    for photo in (astronaut, grace):
        image = process_face_array(photo).aligned
        h, w = image.shape[:2]
        conf = segment.confidence(image)
        full = cv2.GaussianBlur(cv2.resize(conf, (w, h), interpolation=cv2.INTER_LINEAR), (0, 0),
                                max(1.0, 0.004 * max(h, w)))
        expected = cv2.convertScaleAbs(full, alpha=255.0)
        diff = np.abs(segment.soft_mask(conf, w, h).astype(int) - expected.astype(int))
        assert diff.mean() < 0.2 and diff.max() <= 8, (diff.mean(), diff.max())
        assert ((expected == 255) == (segment.person_mask(image) == 255)).mean() > 0.995


@pytest.mark.parametrize(
    "make,error",
    [
        (lambda f: encode(f("cat")), NoFaceDetected),
        (lambda f: encode(np.ascontiguousarray(f("astronaut")[:140])), FaceNotProminent),
        (lambda f: b"%PDF-1.4 not an image", UnsupportedImage),
        (lambda f: png_bomb(20000, 20000), ImageTooLarge),
    ],
    ids=["cat", "cut", "pdf", "bomb"],
)
def test_errors_through_process_face(make, error, request):
    with pytest.raises(error):
        process_face(make(request.getfixturevalue))


def test_multiple_faces_through_process_face(astronaut, grace):
    g = cv2.resize(grace, (437, 512))
    with pytest.raises(MultipleFaces):
        process_face(encode(np.concatenate([astronaut, g], axis=1)))


def test_orientation_thresholds():
    assert orientation_for(1024, 768) == "4:3"
    assert orientation_for(768, 1024) == "3:4"
    assert orientation_for(512, 512) == "1:1"
    assert orientation_for(1100, 1000) == "1:1"  # square-ish
    assert orientation_for(1920, 1080) == "4:3"
    assert orientation_for(512, 600) == "3:4"


def test_ray_task_returns_results_and_typed_errors(ray_cluster, astronaut, cat):
    """Through the suite's shared Ray instance (tests/conftest.py): results and typed errors cross."""
    from pipelines.faces.tasks import process_face_task

    ray = ray_cluster
    pf = ray.get(process_face_task.remote(encode(astronaut)), timeout=120)
    assert pf.aligned.shape == (1024, 1024, 3) and pf.rig.orientation == "1:1"
    with pytest.raises(NoFaceDetected) as err:
        ray.get(process_face_task.remote(encode(cat)), timeout=120)
    assert err.value.code == "NO_FACE_DETECTED"

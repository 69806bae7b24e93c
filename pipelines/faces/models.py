"""The MediaPipe model files the face pipeline runs on: fetched once at set-up, loaded from a cache.

``mediapipe`` 1.x (Tasks API) bundles no models and there is no model hub here, so set-up downloads the
``mediapipe==0.10.21`` wheel from PyPI (Apache-2.0) with ``pip download --no-deps`` (the wheel only, it
is never installed), extracts

- ``face_detection_short_range.tflite``: BlazeFace short range, 6 keypoints, run by the Tasks
  ``FaceDetector``;
- ``face_landmark.tflite``: the 468-point face mesh, 192x192 input, run by ``cv2.dnn``;
- ``selfie_segmentation.tflite``: the person mask (256x256 input, MediaPipe's ImageSegmenter), computed once per avatar
  at upload for the session ``background`` option (:mod:`pipelines.faces.segment`); optional at run
  time (:func:`segmenter_path`), so a cache fetched before it existed keeps the face pipeline working;

checks their SHA-256 and keeps them in a cache folder (default ``Settings.model_dir``).

Set-up (idempotent: files already present with the right hash are not fetched again)::

    python -m pipelines.faces.models [--dir DIR]

At run time :func:`model_paths` returns the verified paths or raises ``ModelFilesMissing`` naming that
command.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import threading
import zipfile
from dataclasses import dataclass
from pathlib import Path

from core.errors import ModelFilesMissing

SETUP_COMMAND = "python -m pipelines.faces.models"

WHEEL_REQUIREMENT = "mediapipe==0.10.21"
WHEEL_NAME = "mediapipe-0.10.21-cp311-cp311-manylinux_2_28_x86_64.whl"


@dataclass(frozen=True)
class ModelFile:
    name: str  # file name in the cache folder
    member: str  # path inside the wheel
    sha256: str


DETECTOR = ModelFile(
    name="face_detection_short_range.tflite",
    member="mediapipe/modules/face_detection/face_detection_short_range.tflite",
    sha256="bbff11cebd1eb27a1e004cae0b0e63ec8c551cbf34a4451148b4908b8db3eca8",
)
LANDMARKER = ModelFile(
    name="face_landmark.tflite",
    member="mediapipe/modules/face_landmark/face_landmark.tflite",
    sha256="1055cb9d4a9ca8b8c688902a3a5194311138ba256bcc94e336d8373a5f30c814",
)
MODEL_FILES: tuple[ModelFile, ...] = (DETECTOR, LANDMARKER)
SEGMENTER = ModelFile(
    name="selfie_segmentation.tflite",
    member="mediapipe/modules/selfie_segmentation/selfie_segmentation.tflite",
    sha256="9ee168ec7c8f2a16c56fe8e1cfbc514974cbbb7e434051b455635f1bd1462f5c",
)
FETCHED_FILES: tuple[ModelFile, ...] = (*MODEL_FILES, SEGMENTER)  # what set-up fetches


@dataclass(frozen=True)
class ModelPaths:
    detector: Path  # face_detection_short_range.tflite
    landmarker: Path  # face_landmark.tflite


def default_model_dir() -> Path:
    from core.settings import get_settings

    model_dir = get_settings().model_dir
    assert model_dir is not None  # derived by Settings
    return Path(model_dir)


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# Hash checks are cached per (path, size, mtime) so a process verifies each file once.
_verified: dict[tuple[str, int, int], str] = {}
_verified_lock = threading.Lock()


def _file_ok(path: Path, expected_sha256: str) -> bool:
    try:
        st = path.stat()
    except OSError:
        return False
    key = (str(path), st.st_size, st.st_mtime_ns)
    with _verified_lock:
        digest = _verified.get(key)
    if digest is None:
        digest = _sha256_file(path)
        with _verified_lock:
            _verified[key] = digest
    return digest == expected_sha256


def model_paths(model_dir: str | os.PathLike | None = None) -> ModelPaths:
    """The verified model files in ``model_dir`` (default: settings). Raises ``ModelFilesMissing``."""
    folder = Path(model_dir) if model_dir is not None else default_model_dir()
    problems = []
    for mf in MODEL_FILES:
        path = folder / mf.name
        if not path.is_file():
            problems.append(f"{mf.name} is missing")
        elif not _file_ok(path, mf.sha256):
            problems.append(f"{mf.name} has the wrong SHA-256")
    if problems:
        raise ModelFilesMissing(
            f"Face model files in {folder} are not usable ({'; '.join(problems)}). "
            f"Run the set-up command: `{SETUP_COMMAND}"
            + ("" if model_dir is None else f" --dir {folder}")
            + "`"
        )
    return ModelPaths(detector=folder / DETECTOR.name, landmarker=folder / LANDMARKER.name)


def segmenter_path(model_dir: str | os.PathLike | None = None) -> Path:
    """The verified person-segmentation model file. Raises ``ModelFilesMissing`` naming set-up."""
    folder = Path(model_dir) if model_dir is not None else default_model_dir()
    path = folder / SEGMENTER.name
    if not _file_ok(path, SEGMENTER.sha256):
        raise ModelFilesMissing(
            f"{SEGMENTER.name} in {folder} is missing or has the wrong SHA-256. Run the set-up command: "
            f"`{SETUP_COMMAND}" + ("" if model_dir is None else f" --dir {folder}") + "`"
        )
    return path


def _download_wheel(dest: Path) -> Path:
    """``pip download`` the wheel for CPython 3.11 manylinux x86_64 whatever the host is."""
    cmd = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
        "--platform", "manylinux_2_28_x86_64", "--python-version", "3.11",
        "--implementation", "cp", "--abi", "cp311",
        "--dest", str(dest), WHEEL_REQUIREMENT,
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wheel = dest / WHEEL_NAME
    if proc.returncode != 0 or not wheel.is_file():
        raise ModelFilesMissing(
            f"Could not download {WHEEL_NAME} with pip (exit {proc.returncode}):\n{proc.stderr[-2000:]}"
        )
    return wheel


def fetch_models(model_dir: str | os.PathLike | None = None, *, wheel: str | os.PathLike | None = None) -> ModelPaths:
    """Fetch (if needed) and verify the model files; returns the face pipeline's paths. Idempotent.

    ``wheel`` may point at an already downloaded copy of the wheel (offline set-up).
    """
    folder = Path(model_dir) if model_dir is not None else default_model_dir()
    folder.mkdir(parents=True, exist_ok=True)
    needed = [mf for mf in FETCHED_FILES if not _file_ok(folder / mf.name, mf.sha256)]
    if not needed:
        return model_paths(folder)
    with tempfile.TemporaryDirectory(prefix="mp-wheel-") as tmp:
        wheel_path = Path(wheel) if wheel is not None else _download_wheel(Path(tmp))
        try:
            zf = zipfile.ZipFile(wheel_path)
        except (OSError, zipfile.BadZipFile) as exc:
            raise ModelFilesMissing(f"{wheel_path} is not a readable wheel: {exc}") from None
        with zf:
            for mf in needed:
                try:
                    data = zf.read(mf.member)
                except KeyError:
                    raise ModelFilesMissing(f"{wheel_path.name} has no {mf.member}") from None
                digest = hashlib.sha256(data).hexdigest()
                if digest != mf.sha256:
                    raise ModelFilesMissing(
                        f"{mf.member} in {wheel_path.name} has SHA-256 {digest}, expected {mf.sha256}"
                    )
                # Write atomically so a concurrent reader never sees a half-written file.
                fd, tmp_name = tempfile.mkstemp(dir=folder, prefix=f".{mf.name}.")
                with os.fdopen(fd, "wb") as fh:
                    fh.write(data)
                os.chmod(tmp_name, 0o644)
                os.replace(tmp_name, folder / mf.name)
    return model_paths(folder)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipelines.faces.models",
        description="Fetch and verify the MediaPipe face model files (from the mediapipe 0.10.21 wheel).",
    )
    parser.add_argument("--dir", type=Path, default=None, help="Cache folder (default: settings model_dir).")
    parser.add_argument("--wheel", type=Path, default=None, help="Use this already downloaded wheel file.")
    args = parser.parse_args(argv)
    try:
        paths = fetch_models(args.dir, wheel=args.wheel)
    except ModelFilesMissing as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"detector:   {paths.detector}")
    print(f"landmarker: {paths.landmarker}")
    print(f"segmenter:  {segmenter_path(args.dir)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

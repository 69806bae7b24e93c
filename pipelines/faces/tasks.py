"""The face pipeline as a Ray task (the only module of ``pipelines.faces`` that imports Ray).

``process_face_task.remote(data)`` returns an ``ObjectRef`` to a ``ProcessedFace``; the SPEC's typed
errors (``core.errors.ApiError`` subclasses, which pickle with their arguments) come back from
``ray.get`` as ``ray.exceptions.RayTaskError`` instances that are also instances of the original class,
so ``except NoFaceDetected`` works on the caller's side. ``max_retries=0``: a bad image fails the same way
every time. Models are loaded once per worker process (``analyze.get_models``) and reused by later tasks.
"""
from __future__ import annotations

import ray

from .pipeline import ProcessedFace, process_face


def _process_face(data: bytes) -> ProcessedFace:
    return process_face(data)


process_face_task = ray.remote(num_cpus=0.5, max_retries=0)(_process_face)

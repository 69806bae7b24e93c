"""Face upload benchmark: per-image latency through ``POST /v1/avatars/upload-face`` (real Serve, real Ray
task, real models, SQLite, local blob folder) and images per second through the batch job (Ray Data).

    python -m bench.faces [--uploads 60] [--batch-images 240]

Images are real faces (scikit-image's astronaut, matplotlib's Grace Hopper) in distinct variants (flips,
crops, scale, brightness, JPEG quality), so every upload is new work (no dedupe hits). The last line of
the output is a JSON object: ``upload_p50_ms``, ``upload_p95_ms``, ``batch_images``,
``batch_images_per_s``, ``breakdown_ms`` (where one image's time goes, see :func:`breakdown`) and the details.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import socket
import statistics
import tempfile
import time
from pathlib import Path
from typing import IO, cast

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

from bench.harness import local_platform, percentile


def _photos() -> list[np.ndarray]:
    import matplotlib.cbook as cbook
    from skimage import data

    with cast(IO[bytes], cbook.get_sample_data("grace_hopper.jpg")) as fh:  # (a file object by default)
        grace = np.asarray(Image.open(fh).convert("RGB"))
    return [data.astronaut(), grace]


def variants(n: int, seed: int = 0) -> list[bytes]:
    """``n`` distinct JPEGs of real faces: flips, crops, scale, brightness, quality."""
    rng = np.random.default_rng(seed)
    photos = _photos()
    out: list[bytes] = []
    seen: set[bytes] = set()
    i = 0
    while len(out) < n:
        im = Image.fromarray(photos[i % len(photos)])
        if rng.random() < 0.5:
            im = ImageOps.mirror(im)
        w, h = im.size
        dx, dy = int(rng.integers(0, 24)), int(rng.integers(0, 24))
        im = im.crop((dx, dy, w - int(rng.integers(0, 24)), h - int(rng.integers(0, 24))))
        scale = float(rng.uniform(0.85, 1.35))
        im = im.resize((int(im.width * scale), int(im.height * scale)), Image.Resampling.BILINEAR)
        im = ImageEnhance.Brightness(im).enhance(float(rng.uniform(0.8, 1.2)))
        buf = io.BytesIO()
        im.save(buf, format="JPEG", quality=int(rng.integers(80, 96)))
        data = buf.getvalue()
        if data not in seen:
            seen.add(data)
            out.append(data)
        i += 1
    return out


STAGES = ("decode", "detection", "mesh", "alignment", "segmentation", "encode", "storage", "database")


def breakdown(images: list[bytes], settings, store, account_id: str) -> dict[str, float]:
    """Mean milliseconds per image of each stage, in this process, one image at a time (what a pipeline
    worker does for one image): ``decode``; ``detection`` (every detector pass); ``mesh`` (every face-mesh
    run: confirming candidates, refining, the aligned image); ``alignment`` (warps: aligned image,
    preview); ``segmentation`` (person mask); ``encode`` (JPEG/PNG/JSON: the JPEGs beside the mask, the PNG
    in the mask's thread); ``storage`` (blob writes);
    ``database`` (the rows, one transaction for all ``images``, divided by their number); images the
    pipeline refuses are left out of the figures; ``other`` is
    the rest of the pipeline (hashing, checks); ``total`` the wall time. The functions are wrapped here,
    not in the pipeline."""
    from core.errors import ApiError
    from core.rig import FaceRig
    from core.storage import BlobStore
    from pipelines.faces import align, analyze, decode, persist, pipeline, segment

    spent = dict.fromkeys(STAGES, 0.0)

    def timed(stage, fn):
        def wrapper(*a, **kw):
            t0 = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                spent[stage] += time.perf_counter() - t0
        return wrapper

    # (the JPEGs are encoded beside the mask, its PNG after it in the mask's thread: see pipeline._process)
    patches = [(pipeline, "decode_image", "decode"), (analyze, "_run_detector", "detection"),
               (analyze, "landmarks_in_roi", "mesh"), (pipeline, "align_face", "alignment"),
               (pipeline, "make_preview", "alignment"), (segment, "person_mask", "segmentation"),
               (pipeline, "encode_jpeg", "encode"), (segment, "encode_mask", "encode"),
               (FaceRig, "to_json", "encode")]
    originals = [(mod, name, getattr(mod, name)) for mod, name, _ in patches]
    for mod, name, stage in patches:
        setattr(mod, name, timed(stage, getattr(mod, name)))
    assert decode and align  # imported so that their models/caches are warm like a worker's
    blobs = BlobStore(settings.storage_url)
    try:
        persist.process_and_encode(images[0])  # load the models (once per process) outside the figures
        spent.update(dict.fromkeys(STAGES, 0.0))
        rows, total = [], 0.0
        for data in images:
            before = dict(spent)
            t0 = time.perf_counter()
            try:
                encoded = persist.process_and_encode(data)
            except ApiError:  # a refused variant (e.g. MULTIPLE_FACES): not an avatar's time
                spent.update(before)
                continue
            row = persist.new_avatar_row(encoded, account_id)
            t1 = time.perf_counter()
            persist.write_blobs(blobs, row.id, encoded.files)
            spent["storage"] += time.perf_counter() - t1
            total += time.perf_counter() - t0
            rows.append(row)
        t0 = time.perf_counter()
        persist.commit_avatars(store, blobs, rows, enforce_quota=False)
        spent["database"] += time.perf_counter() - t0
        total += time.perf_counter() - t0
    finally:
        for mod, name, fn in originals:
            setattr(mod, name, fn)
    n = max(1, len(rows))
    out = {k: round(v * 1000 / n, 2) for k, v in spent.items()}
    # The person mask runs in a thread beside the mesh and preview (pipeline._SEGMENTER): the stages can
    # add up to more than the image's wall time; ``overlapped`` is by how much.
    rest = total * 1000 / n - sum(out.values())
    out["other"], out["overlapped"] = round(max(0.0, rest), 2), round(max(0.0, -rest), 2)
    out["total"] = round(total * 1000 / n, 2)
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m bench.faces")
    p.add_argument("--uploads", type=int, default=60, help="timed uploads through the HTTP endpoint")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--batch-images", type=int, default=240)
    p.add_argument("--breakdown-images", type=int, default=20, help="images profiled stage by stage")
    args = p.parse_args(argv)
    # The harness starts its own Ray instance: never attach to another one running on this machine.
    os.environ.setdefault("RAY_ADDRESS", "local")

    n_up = args.warmup + args.uploads
    images = variants(n_up + args.batch_images + args.breakdown_images + 1)
    upload_imgs, batch_imgs = images[:n_up], images[n_up:n_up + args.batch_images]
    profile_imgs = images[n_up + args.batch_images:]
    result: dict = {"cpus": os.cpu_count()}
    with local_platform(port=_free_port()) as platform:
        headers = platform.account("enterprise")
        latencies, failures = [], 0
        for k, data in enumerate(upload_imgs):
            t0 = time.perf_counter()
            r = platform.http.post("/v1/avatars/upload-face", files={"file": ("face.jpg", data, "image/jpeg")},
                                   headers=headers)
            ms = (time.perf_counter() - t0) * 1000
            if r.status_code != 201:
                failures += 1
                print(f"upload {k}: {r.status_code} {r.text[:200]}", flush=True)
                continue
            if k >= args.warmup:
                latencies.append(ms)
        result.update(
            upload_n=len(latencies), upload_failures=failures,
            upload_p50_ms=percentile(latencies, 50), upload_p95_ms=percentile(latencies, 95),
            upload_mean_ms=round(statistics.fmean(latencies), 2) if latencies else None,
        )
        print(f"upload-face: p50 {result['upload_p50_ms']} ms, p95 {result['upload_p95_ms']} ms "
              f"over {len(latencies)} uploads", flush=True)

        from pipelines.faces import batch

        account = platform.store.accounts.create_account("bench-batch", "enterprise")
        with tempfile.TemporaryDirectory(prefix="faces-batch-") as tmp:
            for k, data in enumerate(batch_imgs):
                Path(tmp, f"face_{k:05d}.jpg").write_bytes(data)
            summary = batch.run_batch(tmp, account.id, settings=platform.settings, progress=False).to_json()
            t0 = time.perf_counter()
            rerun = batch.run_batch(tmp, account.id, settings=platform.settings, progress=False).to_json()
            rerun_s = time.perf_counter() - t0
        result.update(
            batch_images=summary["images"], batch_created=summary["avatars_created"],
            batch_failed=summary["failed"], batch_elapsed_s=summary["elapsed_s"],
            batch_images_per_s=summary["images_per_s"],
            batch_failure_codes=sorted({f["code"] for f in summary["failures"]}),
            batch_rerun_created=rerun["avatars_created"], batch_rerun_s=round(rerun_s, 3),
        )
        profiled = platform.store.accounts.create_account("bench-profile", "enterprise")
        result["breakdown_ms"] = breakdown(profile_imgs, platform.settings, platform.store, profiled.id)
        print(f"breakdown (ms per image): {result['breakdown_ms']}", flush=True)
        print(f"batch: {summary['images']} images in {summary['elapsed_s']} s = {summary['images_per_s']} images/s "
              f"({summary['avatars_created']} created, {summary['failed']} failed); re-run created "
              f"{rerun['avatars_created']} in {rerun_s:.2f} s", flush=True)
    print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main()

"""Batch pre-upload of faces for one account: a Ray job over a folder (or glob) of images.

    ray job submit --working-dir . -- python -m pipelines.faces.batch gs://bucket/faces/ --account acct_...
    python -m pipelines.faces.batch ./faces/ --account acct_...          # same thing, in this process
    avatarctl faces batch ./faces/ --account acct_... [--address http://head:8265]

``SOURCE`` is any fsspec URL: a folder (every non-hidden file below it), a glob (``gs://b/faces/*.jpg``)
or one file. The images never go through the HTTP API: Ray Data reads them on the cluster and runs the
same face pipeline as upload-face (``persist.process_and_encode``) as Ray Data tasks, in Ray's pooled
worker processes, which load the models once and keep them for the next batch or run; the workers write
the avatar files to the blob store and send back only ids and hashes, and this driver inserts the rows,
one database transaction per batch.

Idempotent by content hash (SHA-256 of the image bytes, the same key upload-face dedupes on): an image
whose bytes the account already has is skipped before the pipeline runs (``existing``); the same bytes
twice in one run give one avatar (the other is ``duplicate``); a re-run creates nothing new.

Quota: this is an operator's bulk import, so by default it does NOT enforce the plan's avatar uploads
(``--respect-quota`` enforces it, batch by batch). The avatars it creates are the account's avatars all
the same and count in the period's ``avatars.used`` shown by ``GET /v1/usage``.

Output: a progress bar on stderr and, as the last line on stdout, a JSON summary: counts, the avatars
created (path -> avatar id), the skipped images and each failure with its path and reason code
(``NO_FACE_DETECTED``, ``MULTIPLE_FACES``, ``UNSUPPORTED_IMAGE``, ``IMAGE_TOO_LARGE``, ``READ_FAILED``, ...).
Exit status: 0 when the run completed (even with per-image failures), 2 when it could not run.

Ray: the driver connects like any Ray program (``--address``, else ``RAY_ADDRESS`` as set by ``ray job
submit``, else a running local cluster or a new one). On Ray >= 2.59 clusters with token auth, a driver
outside the job system needs the token or ``RAY_AUTH_MODE=disabled`` (see DESIGN.md).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any, cast

from core import errors, ids

DEFAULT_BATCH_SIZE = 8
HIDDEN_PREFIXES = (".", "_")


# ====================================================================== listing the source
def list_images(source: str) -> list[str]:
    """Full fsspec URLs of the files ``source`` names (folder, glob or file), sorted."""
    import fsspec

    fs, root = fsspec.core.url_to_fs(source)
    if any(c in source for c in "*?["):
        paths = fs.glob(root)
    elif fs.isdir(root):
        paths = fs.find(root)
    elif fs.isfile(root):
        paths = [root]
    else:
        raise FileNotFoundError(f"{source} is neither a folder, a glob nor a file")
    out = []
    for p in paths:
        name = p.rstrip("/").rsplit("/", 1)[-1]
        if name.startswith(HIDDEN_PREFIXES) or fs.isdir(p):
            continue
        out.append(fs.unstrip_protocol(p) if "://" in source else p)
    return sorted(out)


# ====================================================================== the Ray Data stage
class FaceBatchProcessor:
    """One worker process's state: the blob store (models are the pipeline's process-wide cache). Ray Data
    runs :func:`process_batch` as tasks, so the worker processes (and their loaded models) are Ray's
    pooled workers, reused by the next batch, the next run and upload-face's tasks (see ``run_batch``).
    """

    def __init__(self, storage_url: str, threads_per_worker: int = 0) -> None:
        from core.storage import BlobStore

        if threads_per_worker:
            import cv2

            cv2.setNumThreads(threads_per_worker)  # one image per worker at a time: no oversubscription
        self.blobs = BlobStore(storage_url)

    def __call__(self, batch: dict[str, Any], known: Any) -> dict[str, list]:
        """Reads the batch's images, skips hashes in ``known``, runs the pipeline, writes the blobs."""
        import fsspec

        from pipelines.faces import persist

        out: dict[str, list] = {k: [] for k in ("path", "status", "avatar_id", "sha256", "orientation",
                                                "code", "message")}

        def emit(path, status, avatar_id="", sha="", orientation="", code="", message=""):
            for k, v in zip(out, (path, status, avatar_id, sha, orientation, code, message)):
                out[k].append(v)

        for path in list(batch["path"]):
            path = str(path)
            try:
                with fsspec.open(path, "rb") as fh:
                    data = fh.read(persist_max_bytes() + 1)
            except Exception as exc:  # noqa: BLE001 - reported per image
                emit(path, "failed", code="READ_FAILED", message=f"{type(exc).__name__}: {exc}"[:300])
                continue
            sha = persist.content_hash(data)
            if sha in known:
                emit(path, "existing", sha=sha)
                continue
            try:
                encoded = persist.process_and_encode(data)
                avatar_id = ids.new_id(ids.AVATAR)
                persist.write_blobs(self.blobs, avatar_id, encoded.files)
            except errors.ApiError as exc:
                emit(path, "failed", sha=sha, code=exc.code, message=exc.message[:300])
                continue
            except errors.ModelFilesMissing:
                raise  # the whole job cannot work on this worker: fail loudly
            except Exception as exc:  # noqa: BLE001
                emit(path, "failed", sha=sha, code="INTERNAL_ERROR", message=f"{type(exc).__name__}: {exc}"[:300])
                continue
            emit(path, "processed", avatar_id=avatar_id, sha=sha, orientation=encoded.orientation)
        return out


_processors: dict[tuple[str, int], FaceBatchProcessor] = {}


def process_batch(batch: dict[str, Any], *, storage_url: str, known_hashes: Any,
                  threads_per_worker: int = 0) -> dict[str, list]:
    """The Ray Data stage (a task): this process's :class:`FaceBatchProcessor` on one batch."""
    key = (storage_url, threads_per_worker)
    processor = _processors.get(key)
    if processor is None:
        processor = _processors[key] = FaceBatchProcessor(storage_url, threads_per_worker)
    return processor(batch, known_hashes)


def warm_worker(threads_per_worker: int) -> int:
    """Load the pipeline's models and Ray Data's modules in this process (a task started with the job, so
    that a cold worker does this while the driver reads the hashes and Ray Data plans)."""
    import ray.data  # noqa: F401 - what running a Ray Data task imports first (~1 s)

    from pipelines.faces import analyze, segment

    if threads_per_worker:
        import cv2

        cv2.setNumThreads(threads_per_worker)
    analyze.get_models()
    try:
        segment._model()
    except errors.ModelFilesMissing:  # optional model (see pipeline._person_mask)
        pass
    return os.getpid()


def persist_max_bytes() -> int:
    from pipelines.faces.decode import MAX_BYTES

    return MAX_BYTES


# ====================================================================== the driver
@dataclass
class Summary:
    source: str
    account_id: str | None
    images: int = 0
    created: list[dict[str, str]] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    failures: list[dict[str, str]] = field(default_factory=list)
    elapsed_s: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source, "account_id": self.account_id, "images": self.images,
            "avatars_created": len(self.created), "skipped_existing": len(self.skipped),
            "failed": len(self.failures), "elapsed_s": round(self.elapsed_s, 3),
            "images_per_s": round(self.images / self.elapsed_s, 2) if self.elapsed_s > 0 else None,
            "created": self.created, "skipped": self.skipped, "failures": self.failures,
        }


def run_batch(
    source: str | list[str], account_id: str | None, *, settings=None, respect_quota: bool = False,
    batch_size: int = DEFAULT_BATCH_SIZE, concurrency: int | None = None, cpus_per_worker: float = 1.0,
    progress: bool = True,
) -> Summary:
    """Import every image of ``source`` (fsspec folder/glob/file, or a list of paths) for ``account_id``
    (None: public avatars). Needs Ray to be initialised (``main`` does that). See the module docstring."""
    import ray

    from core.db.engine import Database
    from core.db.store import Store
    from core.settings import Settings
    from core.storage import BlobStore
    from pipelines.faces import persist
    from pipelines.faces.models import model_paths

    settings = settings or Settings()
    model_paths()  # fail fast (ModelFilesMissing names the set-up command) before starting any work
    started = time.monotonic()
    threads = max(1, int(cpus_per_worker))
    if concurrency is None:
        cpus = float(ray.cluster_resources().get("CPU", 1))
        concurrency = max(1, int(cpus // max(cpus_per_worker, 0.01)))
    # Measured on 2 CPUs (notes/s4-faces.md): a pool of actors costs ~2 s of process start and model
    # loading on every run; tasks run in Ray's pooled worker processes, which keep the models loaded from
    # one batch (or run, or upload-face task) to the next. On a cold cluster the models load here, in
    # tasks that start now, while the driver reads the hashes and Ray Data plans.
    warm_fn = ray.remote(num_cpus=cpus_per_worker, max_retries=0)(warm_worker)
    warming = [warm_fn.remote(threads) for _ in range(concurrency)]
    store = Store(Database(settings.database_url))
    if account_id is not None:
        store.accounts.get_account(account_id)  # NotFound for a typo, before any work
    blobs = BlobStore(settings.storage_url)
    paths = list(source) if isinstance(source, list) else list_images(source)
    summary = Summary(source=source if isinstance(source, str) else f"{len(paths)} paths", account_id=account_id,
                      images=len(paths))
    if not paths:
        return summary
    known = store.avatars.avatar_hashes(account_id)
    concurrency = max(1, min(concurrency, (len(paths) + batch_size - 1) // batch_size))

    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False  # ours below counts images, not blocks
    ctx.print_on_execution_start = False
    ds: ray.data.Dataset = ray.data.from_items([{"path": p} for p in paths], override_num_blocks=max(1, min(len(paths), concurrency * 4)))
    ds = ds.map_batches(
        cast(Any, process_batch),  # its keyword arguments come from fn_kwargs
        fn_kwargs={"storage_url": settings.storage_url, "known_hashes": set(known),
                   "threads_per_worker": threads},
        batch_size=batch_size, concurrency=concurrency, num_cpus=cpus_per_worker, batch_format="numpy",
    )
    bar = _progress(len(paths), progress)
    try:
        for batch in ds.iter_batches(batch_size=batch_size, batch_format="numpy", prefetch_batches=1):
            rows = [dict(zip(batch, values)) for values in zip(*batch.values())]
            _commit(store, blobs, account_id, rows, summary, known, respect_quota, persist)
            bar.update(len(rows))
    finally:
        bar.close()
        ray.wait(warming, num_returns=len(warming), timeout=30)  # done long ago: Ray Data ran after them
    summary.elapsed_s = time.monotonic() - started
    return summary


def _commit(store, blobs, account_id, rows, summary: Summary, known: dict[str, str], respect_quota: bool, persist) -> None:
    processed = []
    for row in rows:
        path, status = str(row["path"]), str(row["status"])
        if status == "existing":
            summary.skipped.append({"path": path, "avatar_id": known.get(str(row["sha256"]), ""), "reason": "existing"})
        elif status == "failed":
            summary.failures.append({"path": path, "code": str(row["code"]), "message": str(row["message"])})
        else:
            processed.append((path, persist.avatar_row(str(row["avatar_id"]), account_id, str(row["sha256"]),
                                                       str(row["orientation"]), name=os.path.basename(path))))
    if not processed:
        return
    try:
        results = persist.commit_avatars(store, blobs, [r for _, r in processed], enforce_quota=respect_quota)
    except errors.AvatarLimitReached as exc:
        for path, _ in processed:  # commit_avatars removed their blobs
            summary.failures.append({"path": path, "code": exc.code, "message": exc.message})
        return
    for (path, row), (kept, created) in zip(processed, results):
        if created:
            summary.created.append({"path": path, "avatar_id": row.id})
            known[row.content_sha256] = row.id
        else:
            summary.skipped.append({"path": path, "avatar_id": kept.id, "reason": "duplicate"})


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(total: int, enabled: bool):
    if not enabled:
        return _NoBar()
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm ships with ray[data]'s usual environments
        return _NoBar()
    return tqdm(total=total, unit="img", desc="faces", file=sys.stderr, dynamic_ncols=True)


# ====================================================================== command line
def add_import_arguments(p: argparse.ArgumentParser) -> None:
    """The import's own options (shared with ``avatarctl faces batch``, which adds job submission)."""
    p.add_argument("source", help="fsspec folder, glob or file of images (local path, gs://..., ...)")
    owner = p.add_mutually_exclusive_group(required=True)
    owner.add_argument("--account", help="account id (acct_...) that will own the avatars")
    owner.add_argument("--public", action="store_true", help="import as public avatars (operators)")
    p.add_argument("--respect-quota", action="store_true",
                   help="enforce the plan's avatar uploads per period (default: operator import, not enforced)")
    p.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE, help="images per Ray Data batch")
    p.add_argument("--concurrency", type=int, default=None, help="pipeline workers (default: cluster CPUs)")
    p.add_argument("--cpus-per-worker", type=float, default=1.0, help="CPUs each pipeline worker reserves")
    p.add_argument("--summary-out", default=None, help="also write the JSON summary to this fsspec path")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def import_argv(args: argparse.Namespace) -> list[str]:
    """The command line that repeats ``args``' import options (to run the import elsewhere)."""
    argv = [args.source] + (["--public"] if args.public else ["--account", args.account])
    if args.respect_quota:
        argv.append("--respect-quota")
    for flag in ("batch_size", "concurrency", "cpus_per_worker", "summary_out"):
        value = getattr(args, flag)
        if value is not None:
            argv += ["--" + flag.replace("_", "-"), str(value)]
    if args.no_progress:
        argv.append("--no-progress")
    return argv


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pipelines.faces.batch", description=__doc__.split("\n\n")[0])
    add_import_arguments(p)
    p.add_argument("--address", default=None, help="Ray address (default: RAY_ADDRESS, a running cluster, or local)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    account_id = None if args.public else args.account
    if account_id is not None and not ids.has_prefix(account_id, ids.ACCOUNT):
        print(f"error: {account_id!r} is not an account id (acct_...)", file=sys.stderr)
        return 2
    import ray

    started_ray = False
    if not ray.is_initialized():
        ray.init(address=args.address, log_to_driver=False)
        started_ray = True
    try:
        summary = run_batch(args.source, account_id, respect_quota=args.respect_quota, batch_size=args.batch_size,
                            concurrency=args.concurrency, cpus_per_worker=args.cpus_per_worker,
                            progress=not args.no_progress)
    except (errors.ApiError, errors.ModelFilesMissing, FileNotFoundError) as exc:
        print(f"error: {getattr(exc, 'message', exc)}", file=sys.stderr)
        return 2
    finally:
        if started_ray:
            ray.shutdown()
    out = json.dumps(summary.to_json())
    if args.summary_out:
        import fsspec

        with fsspec.open(args.summary_out, "w") as fh:
            fh.write(out)
    print(out, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

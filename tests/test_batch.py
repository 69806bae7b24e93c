"""The batch pre-upload job (Ray Data over a folder, same face pipeline) on SQLite and PostgreSQL:
exactly the good images become avatars, once; a second run creates nothing; failures carry their codes."""
from __future__ import annotations

import json
from collections import Counter

import pytest

from core.settings import Settings
from core.storage import BlobStore
from tests.conftest import BACKENDS
from tests.support import faces
from tests.support.databases import temporary_database

N_GOOD = 22


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    """40 files: 22 distinct good faces, 3 byte-identical copies of good ones, 15 bad ones."""
    folder = tmp_path_factory.mktemp("faces")
    a, g, c, two = faces.astronaut(), faces.grace(), faces.cat(), faces.two_faces()
    good = {}
    for i in range(11):
        good[f"astronaut_{i:02d}.jpg"] = faces.variant(a, i)
        good[f"grace_{i:02d}.jpg"] = faces.variant(g, i)
    assert len(set(good.values())) == N_GOOD
    files = dict(good)
    files.update({"copy_a.jpg": good["astronaut_03.jpg"], "sub/copy_b.jpg": good["grace_07.jpg"],
                  "sub/copy_c.jpeg": good["grace_00.jpg"]})
    expected_failures = {}
    for i in range(5):
        files[f"cat_{i}.jpg"] = faces.variant(c, i)
        expected_failures[f"cat_{i}.jpg"] = "NO_FACE_DETECTED"
    for i in range(3):
        files[f"two_{i}.jpg"] = faces.variant(two, i)
        expected_failures[f"two_{i}.jpg"] = "MULTIPLE_FACES"
    for i in range(3):
        files[f"corrupt_{i}.jpg"] = good[f"astronaut_{i:02d}.jpg"][:150] + bytes(3000 + i)
        expected_failures[f"corrupt_{i}.jpg"] = "UNSUPPORTED_IMAGE"
    files["notes.txt"] = b"not an image"
    files["sub/readme.md"] = b"# faces\n"
    files["empty.png"] = b""
    files["bomb.png"] = faces.png_bomb(20000, 20000)
    expected_failures.update({"notes.txt": "UNSUPPORTED_IMAGE", "sub/readme.md": "UNSUPPORTED_IMAGE",
                              "empty.png": "UNSUPPORTED_IMAGE", "bomb.png": "IMAGE_TOO_LARGE"})
    assert len(files) == 40
    for name, data in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    (folder / ".hidden.jpg").write_bytes(good["astronaut_00.jpg"])  # hidden files are not images to import
    return folder, good, expected_failures


@pytest.fixture(params=BACKENDS)
def batch_env(request, ray_cluster, tmp_path):
    with temporary_database(request.param, tmp_path) as url:
        settings = Settings(data_dir=tmp_path, database_url=url)
        from core.db.engine import Database
        from core.db.store import Store

        store = Store(Database(url))
        account = store.accounts.create_account("batch", "explorer")
        yield settings, store, account.id
        store.db.dispose()


def rel(folder, path: str) -> str:
    return path.split(str(folder) + "/", 1)[1]


def test_batch_creates_each_good_image_once_and_a_rerun_creates_nothing(batch_env, image_folder, monkeypatch, capsys):
    from pipelines.faces import batch

    settings, store, account_id = batch_env
    folder, good, expected_failures = image_folder

    first = batch.run_batch(str(folder), account_id, settings=settings, batch_size=4, progress=False).to_json()
    assert first["images"] == 40
    assert first["avatars_created"] == N_GOOD, first["failures"]
    created = {rel(folder, c["path"]): c["avatar_id"] for c in first["created"]}
    # One avatar per distinct good image: each copy resolved to the avatar of its original's bytes.
    skipped = {rel(folder, s["path"]): s for s in first["skipped"]}
    assert len(skipped) == 3 and all(s["reason"] == "duplicate" for s in skipped.values())
    by_bytes = {}
    for name, aid in list(created.items()) + [(n, s["avatar_id"]) for n, s in skipped.items()]:
        by_bytes.setdefault((folder / name).read_bytes(), set()).add(aid)
    assert len(by_bytes) == N_GOOD and all(len(v) == 1 for v in by_bytes.values())
    failures = {rel(folder, f["path"]): f["code"] for f in first["failures"]}
    assert failures == expected_failures

    rows = store.avatars.list_avatars(account_id)[1]
    assert sorted(r.id for r in rows) == sorted(set(created.values()))
    assert {r.content_sha256 for r in rows} == {__import__("hashlib").sha256(b).hexdigest() for b in good.values()}
    blob_keys = BlobStore(settings.storage_url).list()
    assert len(blob_keys) == 4 * N_GOOD  # image, preview, rig, mask: no orphan files from duplicates or failures
    assert {k.split("/")[1] for k in blob_keys} == set(created.values())

    # Second run through the operator's command line (avatarctl faces batch, in-process): nothing new,
    # every good image skipped as existing.
    from ctl.main import main as avatarctl

    monkeypatch.setenv("AVATAR_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("AVATAR_STORAGE_URL", settings.storage_url)
    capsys.readouterr()
    assert avatarctl(["faces", "batch", str(folder), "--account", account_id, "--batch-size", "8",
                      "--no-progress"]) == 0
    second = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert second["avatars_created"] == 0 and second["skipped_existing"] == N_GOOD + 3
    assert Counter(s["reason"] for s in second["skipped"]) == {"existing": N_GOOD + 3}
    assert {rel(folder, f["path"]): f["code"] for f in second["failures"]} == expected_failures
    assert len(store.avatars.list_avatars(account_id)[1]) == N_GOOD
    assert len(BlobStore(settings.storage_url).list()) == 4 * N_GOOD


def test_batch_respects_the_quota_only_when_asked(batch_env, image_folder):
    from pipelines.faces import batch

    settings, store, account_id = batch_env
    folder, good, _ = image_folder
    store.accounts.set_plan(account_id, "explorer", avatar_uploads=2)
    paths = [str(folder / f"astronaut_{i:02d}.jpg") for i in range(4)]
    limited = batch.run_batch(paths, account_id, settings=settings, respect_quota=True, batch_size=4,
                              progress=False).to_json()
    assert limited["avatars_created"] == 0  # the batch of 4 does not fit in 2 uploads: none inserted
    assert {f["code"] for f in limited["failures"]} == {"AVATAR_LIMIT_REACHED"}
    assert BlobStore(settings.storage_url).list() == []
    bulk = batch.run_batch(paths, account_id, settings=settings, batch_size=4, progress=False).to_json()
    assert bulk["avatars_created"] == 4  # operator import: quota not enforced


def test_batch_refuses_an_unknown_account(batch_env, image_folder):
    from core import errors
    from pipelines.faces import batch

    settings, _, _ = batch_env
    with pytest.raises(errors.NotFound):
        batch.run_batch(str(image_folder[0]), "acct_01JAAAAAAAAAAAAAAAAAAAAAAA", settings=settings, progress=False)


def test_seed_public_avatars_is_idempotent_and_needs_the_models(tmp_path, monkeypatch):
    from core import errors
    from pipelines.faces import models, seed

    settings = Settings(data_dir=tmp_path)
    first = seed.seed_public_avatars(settings)
    assert len(first) == 2 and all(a.startswith("avat_") for a in first)
    assert seed.seed_public_avatars(settings) == first  # same photos, same avatars, nothing new
    from core.db.engine import Database
    from core.db.store import Store

    store = Store(Database(settings.database_url))
    rows = [store.avatars.get_avatar(a) for a in first]
    assert all(r.is_public and r.account_id is None for r in rows)
    assert {r.orientation for r in rows} == {"1:1", "3:4"}  # astronaut (square), Grace Hopper (portrait)
    assert [r.name for r in rows] == ["grace_hopper", "astronaut"]
    store.avatars.rename_avatar(first[0], "Grace Hopper")  # seeded by an older version: the name is brought up to date
    assert seed.seed_public_avatars(settings) == first and store.avatars.get_avatar(first[0]).name == "grace_hopper"
    assert len(BlobStore(settings.storage_url).list()) == 8  # 2 avatars x image, preview, rig, mask
    store.db.dispose()

    def missing(*_a, **_k):
        raise errors.ModelFilesMissing("models missing: run python -m pipelines.faces.models")

    monkeypatch.setattr(models, "model_paths", missing)
    with pytest.raises(errors.ModelFilesMissing):
        seed.seed_public_avatars(Settings(data_dir=tmp_path / "other"))
    assert not (tmp_path / "other" / "blobs").exists() or BlobStore(str(tmp_path / "other" / "blobs")).list() == []


def test_the_batch_stage_reuses_its_process_state_and_skips_known_bytes(tmp_path, image_folder):
    """Ray Data runs ``process_batch`` as tasks in pooled worker processes: one processor (blob store,
    thread setting) per process, reused batch after batch; known hashes skip the pipeline. No Ray here."""
    import hashlib

    import numpy as np

    from pipelines.faces import analyze, batch

    folder, good, _ = image_folder
    known = {hashlib.sha256(good["astronaut_00.jpg"]).hexdigest()}
    kwargs = dict(storage_url=(tmp_path / "blobs").as_uri(), known_hashes=known, threads_per_worker=1)
    paths = np.array([str(folder / "astronaut_00.jpg"), str(folder / "missing.jpg")])
    out = batch.process_batch({"path": paths}, **kwargs)
    assert out["status"] == ["existing", "failed"] and out["code"] == ["", "READ_FAILED"]
    processor = batch._processors[(kwargs["storage_url"], 1)]
    assert batch.process_batch({"path": paths[:1]}, **kwargs)["status"] == ["existing"]
    assert batch._processors[(kwargs["storage_url"], 1)] is processor  # the same one, not a new one
    assert batch.warm_worker(1) > 0 and analyze.models_load_count() == 1  # loaded once, then kept

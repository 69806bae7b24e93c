"""BlobStore on a local folder and on GCS (the gcp-storage-emulator package, in-process, loopback port)."""
from __future__ import annotations

import os
import pickle
import socket
import threading

import pytest

from core.storage import BlobNotFound, BlobStore, avatar_key, avatar_prefix


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def gcs_emulator():
    """A GCS emulator on a free loopback port with bucket ``avatars-test``; STORAGE_EMULATOR_HOST set."""
    os.environ["GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT"] = "false"
    from gcp_storage_emulator.server import create_server

    port = _free_port()
    server = create_server("127.0.0.1", port, in_memory=True, default_bucket="avatars-test")
    server.start()
    old = os.environ.get("STORAGE_EMULATOR_HOST")
    os.environ["STORAGE_EMULATOR_HOST"] = f"http://127.0.0.1:{port}"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()
        if old is None:
            os.environ.pop("STORAGE_EMULATOR_HOST", None)
        else:
            os.environ["STORAGE_EMULATOR_HOST"] = old


@pytest.fixture(params=["local", "gcs"])
def blobs(request, tmp_path):
    if request.param == "local":
        return BlobStore(tmp_path.as_uri() + "/blobs")
    request.getfixturevalue("gcs_emulator")
    return BlobStore(f"gs://avatars-test/run-{tmp_path.name}")


def test_put_get_exists_list_delete(blobs):
    image, rig = avatar_key("avat_1", "image.jpg"), avatar_key("avat_1", "rig.json")
    assert not blobs.exists(image) and blobs.list() == []
    with pytest.raises(BlobNotFound):
        blobs.get(image)
    blobs.put(image, b"\xff\xd8\xffjpeg", "image/jpeg")
    blobs.put(rig, b'{"v": 1}', "application/json")
    blobs.put(avatar_key("avat_2", "image.jpg"), b"other", "image/jpeg")
    assert blobs.get(image) == b"\xff\xd8\xffjpeg" and blobs.exists(rig)
    assert blobs.list(avatar_prefix("avat_1")) == [image, rig]
    assert len(blobs.list()) == 3

    blobs.put(image, b"replaced")  # overwrite
    assert blobs.get(image) == b"replaced"

    assert blobs.delete(avatar_prefix("avat_1")) == 2  # a prefix
    assert not blobs.exists(image) and not blobs.exists(rig)
    assert blobs.list() == [avatar_key("avat_2", "image.jpg")]
    assert blobs.delete([avatar_key("avat_2", "image.jpg"), avatar_key("avat_9", "nope")]) == 1  # keys
    assert blobs.list() == [] and blobs.delete(avatar_prefix("avat_1")) == 0


def test_pickles_as_its_url(blobs):
    blobs.put("a/b.bin", b"x")
    again = pickle.loads(pickle.dumps(blobs))
    assert again.url == blobs.url and again.get("a/b.bin") == b"x"


@pytest.mark.parametrize("key", ["", "/abs", "../up", "a/../b", "a//b", "a\\b", "a/./b"])
def test_keys_cannot_escape_the_root(tmp_path, key):
    store = BlobStore(str(tmp_path))
    with pytest.raises(ValueError):
        store.put(key, b"x")


def test_local_writes_are_atomic_and_leave_no_temp_files(tmp_path):
    store = BlobStore(str(tmp_path / "root"))
    key = avatar_key("avat_x", "image.jpg")
    store.put(key, b"a" * 1000)
    big, small = b"b" * 3_000_000, b"c" * 10
    seen: set[bytes] = set()
    stop = threading.Event()

    def reader():
        while not stop.is_set():
            data = store.get(key)
            seen.add(data[:1] + str(len(data)).encode())

    t = threading.Thread(target=reader)
    t.start()
    for _ in range(20):
        store.put(key, big)
        store.put(key, small)
    stop.set()
    t.join()
    # Every read saw one complete version, never a truncated one.
    assert seen <= {b"a1000", b"b3000000", b"c10"}
    assert sorted(p.name for p in (tmp_path / "root" / "avatars" / "avat_x").iterdir()) == ["image.jpg"]


def test_default_storage_url_is_a_folder_under_data_dir(tmp_path):
    from core.settings import Settings

    settings = Settings(data_dir=tmp_path)
    store = BlobStore.from_settings(settings)
    store.put("k/v", b"1")
    assert (tmp_path / "blobs" / "k" / "v").read_bytes() == b"1"

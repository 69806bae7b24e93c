"""Public avatars from the real sample photos that ship with the test dependencies (no network):
matplotlib's ``grace_hopper.jpg`` and scikit-image's astronaut.

``seed_public_avatars(settings)`` runs them through the face pipeline in this process (no Ray needed;
the models come from the process's settings, like every pipeline run),
stores the files and the rows, and returns the public avatar ids. Idempotent: a photo whose bytes already
gave a public avatar (content hash) is not processed again. ``avatarctl run`` calls it at start-up.
Raises ``ModelFilesMissing`` (naming the set-up command) when the face models are not installed.
"""
from __future__ import annotations

import io
import logging
from collections.abc import Callable
from typing import IO, cast

from core.settings import Settings

log = logging.getLogger("avatars.seed")


def _grace_hopper() -> bytes:
    import matplotlib.cbook as cbook

    with cast(IO[bytes], cbook.get_sample_data("grace_hopper.jpg")) as fh:  # (a file object by default)
        return fh.read()


def _astronaut() -> bytes:
    from PIL import Image
    from skimage import data

    buf = io.BytesIO()
    Image.fromarray(data.astronaut()).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


#: name -> loader of the photo's bytes (the astronaut is encoded deterministically, so its hash is stable).
#: The names are the avatars' ``name`` in ``GET /v1/avatars`` and the render CLI's sample names.
SAMPLE_PHOTOS: dict[str, Callable[[], bytes]] = {
    "grace_hopper": _grace_hopper,
    "astronaut": _astronaut,
}


def seed_public_avatars(settings: Settings) -> list[str]:
    from core.db.engine import Database
    from core.db.migrate import upgrade
    from core.db.store import Store
    from core.storage import BlobStore
    from pipelines.faces import persist
    from pipelines.faces.models import model_paths

    # The pipeline loads the models from the process's settings (AVATAR_MODEL_DIR / AVATAR_DATA_DIR):
    # check those before touching anything.
    model_paths()
    upgrade(settings.database_url)
    db = Database(settings.database_url)
    try:
        store, blobs = Store(db), BlobStore(settings.storage_url)
        known = store.avatars.avatar_hashes(None)
        out: list[str] = []
        for name, load in SAMPLE_PHOTOS.items():
            try:
                data = load()
            except (ImportError, OSError) as exc:  # the sample package is not installed here
                log.warning("public avatar %s skipped: %s", name, exc)
                continue
            sha = persist.content_hash(data)
            if sha in known:  # seeded before (possibly under an older name)
                store.avatars.rename_avatar(known[sha], name)
                out.append(known[sha])
                continue
            encoded = persist.process_and_encode(data)
            avatar, _ = persist.store_encoded(store, blobs, encoded, None, enforce_quota=False, name=name)
            known[sha] = avatar.id
            out.append(avatar.id)
        return out
    finally:
        db.dispose()


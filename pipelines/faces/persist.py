"""From image bytes to a stored avatar: the one code path shared by upload-face, avatars in session
create, the public-avatar seed and the batch import.

1. :func:`process_and_encode` (pure, CPU; run it in a Ray task or a Ray Data worker): the face pipeline
   (``pipeline.process_face``) and the encoded files (``image.jpg``, ``preview.jpg``, ``rig.json``);
   only these few hundred KB travel back, never the pixel arrays.
2. :func:`write_blobs`: the files under ``avatars/<avatar_id>/`` in the blob store.
3. :func:`commit_avatars`: the rows, deduplicated by content hash per owner and (optionally) under the
   plan's upload quota, in one database write transaction. Rows whose insert did not happen (an existing
   avatar with the same bytes won, or the quota refused) have their blobs removed again, so a failure
   leaves nothing stored and a row never points at missing blobs.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from core import ids
from core.clock import utcnow
from core.db.models import Avatar
from core.db.store import Store
from core.storage import BlobStore, avatar_key, avatar_prefix

IMAGE, PREVIEW, RIG, MASK = "image.jpg", "preview.jpg", "rig.json", "mask.png"
CONTENT_TYPES = {IMAGE: "image/jpeg", PREVIEW: "image/jpeg", RIG: "application/json", MASK: "image/png"}


@dataclass
class EncodedFace:
    content_sha256: str
    orientation: str
    files: dict[str, bytes] = field(repr=False)  # image.jpg, preview.jpg, rig.json
    width: int = 0
    height: int = 0


def content_hash(data: bytes) -> str:
    """The dedupe key: SHA-256 of the uploaded bytes (what ``process_face`` records)."""
    return hashlib.sha256(bytes(data)).hexdigest()


def process_and_encode(data: bytes) -> EncodedFace:
    """Run the face pipeline on untrusted bytes and encode its outputs (raises the SPEC's typed errors)."""
    from .pipeline import encode_outputs, process_face

    pf = process_face(data, encode=True)
    return EncodedFace(content_sha256=pf.content_sha256, orientation=pf.orientation, files=encode_outputs(pf),
                       width=int(pf.aligned.shape[1]), height=int(pf.aligned.shape[0]))


def new_avatar_row(encoded: EncodedFace, account_id: str | None, *, name: str = "",
                   avatar_id: str | None = None) -> Avatar:
    return avatar_row(avatar_id or ids.new_id(ids.AVATAR), account_id, encoded.content_sha256,
                      encoded.orientation, name=name)


def avatar_row(avatar_id: str, account_id: str | None, content_sha256: str, orientation: str, *,
               name: str = "") -> Avatar:
    """The row of an avatar whose files are (or will be) under ``avatars/<avatar_id>/``;
    ``account_id`` None makes a public avatar."""
    return Avatar(
        id=avatar_id, account_id=account_id, is_public=account_id is None, orientation=orientation,
        content_sha256=content_sha256, image_path=avatar_key(avatar_id, IMAGE),
        preview_path=avatar_key(avatar_id, PREVIEW), rig_path=avatar_key(avatar_id, RIG), name=name[:200],
        created_at=utcnow(),
    )


def write_blobs(blobs: BlobStore, avatar_id: str, files: dict[str, bytes]) -> None:
    """Store the files; on any failure remove what was written and re-raise."""
    try:
        for name, data in files.items():
            blobs.put(avatar_key(avatar_id, name), data, CONTENT_TYPES.get(name))
    except BaseException:
        remove_blobs(blobs, avatar_id)
        raise


def remove_blobs(blobs: BlobStore, avatar_id: str) -> None:
    try:
        blobs.delete([avatar_key(avatar_id, n) for n in (IMAGE, PREVIEW, RIG, MASK)])
        blobs.delete(avatar_prefix(avatar_id))  # anything else under the folder
    except Exception:  # noqa: BLE001 - best effort: the caller's outcome matters more
        pass


def commit_avatars(store: Store, blobs: BlobStore, rows: list[Avatar], *, enforce_quota: bool) -> list[tuple[Avatar, bool]]:
    """Insert rows whose blobs are already written; see module docstring. Returns (row, created)."""
    try:
        results = store.avatars.add_avatars_deduplicated(rows, enforce_quota=enforce_quota)
    except BaseException:
        for row in rows:
            remove_blobs(blobs, row.id)
        raise
    for row, (kept, created) in zip(rows, results):
        if not created and kept.id != row.id:
            remove_blobs(blobs, row.id)  # an avatar with these bytes already existed
    return results


def store_encoded(store: Store, blobs: BlobStore, encoded: EncodedFace, account_id: str | None, *,
                  enforce_quota: bool, name: str = "") -> tuple[Avatar, bool]:
    """Blobs then row for one processed face; returns (avatar, created)."""
    row = new_avatar_row(encoded, account_id, name=name)
    write_blobs(blobs, row.id, encoded.files)
    return commit_avatars(store, blobs, [row], enforce_quota=enforce_quota)[0]

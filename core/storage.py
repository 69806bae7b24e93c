"""Blob storage over fsspec URLs: a local folder by default, ``gs://bucket/prefix`` through gcsfs, or any
other fsspec URL (``memory://``, ``s3://`` where its driver is installed, ...).

Keys are relative, ``/``-separated paths below the store's root (``avatars/<avatar_id>/image.jpg``).
Writes to a local folder are atomic: the bytes go to a temporary file in the same folder which is then
renamed over the key, so a reader never sees half a file. Object stores (GCS) are atomic per object.

GCS: ``GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT=false`` is set before gcsfs is imported (otherwise bucket
probes can hang for a minute). With ``STORAGE_EMULATOR_HOST`` set (tests, local emulators) gcsfs talks to
that endpoint and, unless a ``token`` is given, anonymously (``token="anon"``).

A ``BlobStore`` pickles as its URL and options, so Ray tasks can be handed one and reopen it.
"""
from __future__ import annotations

import os
import posixpath
import tempfile
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from core.settings import Settings

AVATARS_PREFIX = "avatars"


class BlobNotFound(KeyError):
    """No blob under this key."""


def avatar_key(avatar_id: str, name: str) -> str:
    """``avatars/<avatar_id>/<name>`` (name: image.jpg, preview.jpg, rig.json)."""
    return f"{AVATARS_PREFIX}/{avatar_id}/{name}"


def avatar_prefix(avatar_id: str) -> str:
    return f"{AVATARS_PREFIX}/{avatar_id}/"


def _check_key(key: str) -> str:
    if not isinstance(key, str) or not key or key.startswith("/") or "\\" in key:
        raise ValueError(f"invalid blob key {key!r}")
    parts = key.split("/")
    if any(p in ("", ".", "..") for p in parts[:-1]) or parts[-1] in (".", ".."):
        raise ValueError(f"invalid blob key {key!r}")
    return key


def _open_fs(url: str, options: dict[str, Any]) -> tuple[Any, str]:
    import fsspec

    protocol = url.split("://", 1)[0] if "://" in url else "file"
    if protocol in ("gs", "gcs"):
        os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")
        if os.environ.get("STORAGE_EMULATOR_HOST") and "token" not in options:
            options = dict(options, token="anon")
    fs, root = fsspec.core.url_to_fs(url, **options)
    return fs, root.rstrip("/")


class BlobStore:
    """put / get / exists / delete / list of byte blobs under one fsspec root URL."""

    def __init__(self, url: str, **storage_options: Any) -> None:
        self.url = url
        self.options = dict(storage_options)
        self.fs, self.root = _open_fs(url, self.options)
        from fsspec.implementations.local import LocalFileSystem

        self.is_local = isinstance(self.fs, LocalFileSystem)
        if self.is_local:
            os.makedirs(self.root, exist_ok=True)

    @classmethod
    def from_settings(cls, settings: Settings) -> "BlobStore":
        return cls(settings.storage_url)

    def __reduce__(self) -> tuple[Callable[[str, dict[str, Any]], BlobStore], tuple[str, dict[str, Any]]]:
        return (_reopen, (self.url, self.options))

    def __repr__(self) -> str:
        return f"BlobStore({self.url!r})"

    # ------------------------------------------------------------------ paths
    def path(self, key: str) -> str:
        """The filesystem path of ``key`` (what fsspec calls it)."""
        return posixpath.join(self.root, _check_key(key)) if self.root else _check_key(key)

    # ------------------------------------------------------------------ operations
    def put(self, key: str, data: bytes, content_type: str | None = None) -> str:
        """Store ``data`` under ``key`` (replacing what was there); returns the key."""
        path = self.path(key)
        data = bytes(data)
        if self.is_local:
            folder = os.path.dirname(path)
            os.makedirs(folder, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
            try:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(data)
                os.replace(tmp, path)
            except BaseException:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass
                raise
            return key
        kwargs = {"content_type": content_type} if content_type and self.fs.protocol[0] in ("gs", "gcs") else {}
        self.fs.pipe_file(path, data, **kwargs)
        return key

    def get(self, key: str) -> bytes:
        path = self.path(key)
        try:
            return bytes(self.fs.cat_file(path))
        except FileNotFoundError:
            raise BlobNotFound(key) from None

    def exists(self, key: str) -> bool:
        path = self.path(key)
        try:
            return bool(self.fs.isfile(path))
        except FileNotFoundError:
            return False

    def list(self, prefix: str = "") -> list[str]:
        """Keys under ``prefix`` (a folder-like prefix ending in ``/``, or empty for everything)."""
        base = self.path(prefix.rstrip("/")) if prefix.strip("/") else self.root
        try:
            found = self.fs.find(base)
        except FileNotFoundError:
            return []
        root = self.fs._strip_protocol(self.root).rstrip("/") if self.root else ""
        out = []
        for p in found:
            p = self.fs._strip_protocol(p)
            rel = p[len(root) + 1:] if root and p.startswith(root + "/") else p
            if os.path.basename(rel).startswith(".") and rel.endswith(".tmp"):
                continue  # an in-flight local write
            out.append(rel)
        return sorted(out)

    def delete(self, keys: str | Iterable[str]) -> int:
        """Delete one prefix (a string ending in ``/``), one key (a string) or several keys; returns how
        many blobs were removed. Missing blobs are not an error."""
        if isinstance(keys, str):
            if keys.endswith("/"):
                targets = [k for k in self.list(keys)]
            else:
                targets = [keys]
        else:
            targets = list(keys)
        removed = 0
        for key in targets:
            path = self.path(key)
            try:
                self.fs.rm_file(path)
                removed += 1
            except FileNotFoundError:
                continue
        if isinstance(keys, str) and keys.endswith("/") and self.is_local:
            try:
                os.rmdir(self.path(keys.rstrip("/")))
            except OSError:
                pass
        return removed


def _reopen(url: str, options: dict[str, Any]) -> BlobStore:
    return BlobStore(url, **options)

"""Avatars: upload-face, listing, deletion, and the signed image/preview URLs this API serves itself.

The face pipeline never runs in the replica's event loop: it is a Ray task (``_face_task``: the pipeline
and the JPEG/rig encoding, 0.5 CPU, no retries) awaited with a timeout; URL fetching (SSRF-safe,
blocking) and storage/database calls run in threads. ``create_avatar_from_source`` is the one function
upload-face and ``POST /v1/sessions`` (URL/base64 ``avatar`` on paid plans) share.

Order of work for one upload (cheapest refusal first, nothing stored on any failure):
input shape -> plan includes uploads? -> bytes (decode base64 / fetch URL) -> size and format sniff ->
same bytes already uploaded by this account? (then that avatar is returned, nothing is counted) ->
quota -> pipeline task -> blobs -> row (dedupe + quota again, atomically, in one write transaction;
blobs removed if the row is not inserted).

Signed URLs: ``/v1/avatars/{id}/image|preview?expires=<unix>&sig=<hex>`` with
``sig = HMAC-SHA256(secret_key, "<path>\\n<expires>")``. They need no API key (a browser ``<img>`` cannot
send one); a tampered URL is 403 ``INVALID_SIGNATURE``, an expired one 403 ``URL_EXPIRED``. The absolute
base is ``settings.public_base_url`` when set, else the base URL the request came in on (so an app mounted
under a route prefix signs URLs that reach it).
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import json
import re
import time
from typing import Any

import ray
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from ray.exceptions import GetTimeoutError, RayTaskError

from core import errors, ids
from core.clock import iso
from core.db.avatars import NO_UPLOADS
from core.db.models import Avatar
from core.security import secrets_equal, sign
from core.storage import BlobNotFound, BlobStore
from pipelines.faces import persist
from pipelines.faces.decode import MAX_BYTES, sniff_format
from serve_app import contract
from serve_app.contract import KEYED, errors_for, ok
from serve_app.deps import Services, account_of, services
from serve_app.idempotency import fingerprint, run_idempotent

router = APIRouter(tags=["avatars"])

MAX_IMAGE_BYTES = MAX_BYTES  # 10 MB decoded
#: The request body cap: base64 of a 10 MB image (4/3) plus JSON or multipart framing.
MAX_BODY_BYTES = MAX_IMAGE_BYTES * 4 // 3 + 256 * 1024
#: Bound on one pipeline run (a cold worker loads the models first: ~1-2 s).
PIPELINE_TIMEOUT_S = 60.0
IMAGE_KINDS = {"image": persist.IMAGE, "preview": persist.PREVIEW}
#: Paths of the signed routes: public (no API key), see serve_app.app's auth middleware.
SIGNED_PATH = re.compile(r"^/v1/avatars/[A-Za-z0-9_]{1,40}/(image|preview)$")
_DATA_URI = re.compile(r"^data:[\w.+/-]*(;[\w.+-]+=[\w.+-]+)*;base64,", re.IGNORECASE)

# The pipeline plus encoding as one Ray task: only the encoded files (a few hundred KB) come back.
_face_task = ray.remote(num_cpus=0.5, max_retries=0)(persist.process_and_encode)

_blob_stores: dict[str, BlobStore] = {}


def blob_store(svc: Services) -> BlobStore:
    """The replica's blob store (one per storage URL, opened on first use)."""
    url = svc.settings.storage_url
    store = _blob_stores.get(url)
    if store is None:
        store = _blob_stores[url] = BlobStore(url)
    return store


# ====================================================================== signed URLs
def signed_path(secret: str, avatar_id: str, kind: str, expires: int) -> str:
    path = f"/v1/avatars/{avatar_id}/{kind}"
    sig = sign(secret, _signed_message(path, expires))
    return f"{path}?expires={expires}&sig={sig}"


def _signed_message(path: str, expires: int | str) -> str:
    return f"{path}\n{expires}"


def _base_url(svc: Services, request: Request | None) -> str:
    if svc.settings.public_base_url or request is None:
        return svc.settings.base_url.rstrip("/")
    return str(request.base_url).rstrip("/")


def avatar_view(svc: Services, row: Avatar, request: Request | None, now: float | None = None) -> dict[str, Any]:
    """The SPEC's Avatar object: avatar_id, tags, preview_url, image_url (signed, expiring); ours: name
    (public avatars: e.g. grace_hopper; bulk imports: the file name; null when none), orientation."""
    expires = int(now if now is not None else time.time()) + svc.settings.signed_url_ttl_s
    secret, base = svc.settings.resolved_secret_key(), _base_url(svc, request)
    return {
        "avatar_id": row.id,
        "name": row.name or None,
        "tags": ["public"] if row.is_public else ["user_exclusive", row.account_id],
        "preview_url": f"{base}{signed_path(secret, row.id, 'preview', expires)}" if row.preview_path else None,
        "image_url": f"{base}{signed_path(secret, row.id, 'image', expires)}" if row.image_path else None,
        "orientation": row.orientation,
        "created_at": iso(row.created_at),
    }


def verify_signature(secret: str, path: str, expires: str | None, sig: str | None, now: float | None = None) -> int:
    """The URL's expiry (unix seconds) once its signature is checked and it has not expired."""
    if not expires or not sig or not expires.isdigit() or len(expires) > 12:
        raise errors.InvalidSignature()
    if not secrets_equal(sign(secret, _signed_message(path, expires)), sig.lower()):
        raise errors.InvalidSignature()
    if int(expires) < (now if now is not None else time.time()):
        raise errors.UrlExpired(suggestion="List the avatars again for fresh URLs")
    return int(expires)


async def _serve_blob(request: Request, avatar_id: str, kind: str, expires: str | None, sig: str | None) -> Response:
    svc = services(request)
    expires_at = verify_signature(svc.settings.resolved_secret_key(), f"/v1/avatars/{avatar_id}/{kind}", expires, sig)
    row = await asyncio.to_thread(svc.store.avatars.get_avatar, avatar_id)
    key = None if row is None else (row.image_path if kind == "image" else row.preview_path)
    if key is None:
        raise errors.AvatarNotFound(details={"avatar_id": avatar_id})
    try:
        data = await asyncio.to_thread(blob_store(svc).get, key)
    except BlobNotFound:
        raise errors.AvatarNotFound(details={"avatar_id": avatar_id}) from None
    left = max(0, expires_at - int(time.time()))
    return Response(data, media_type="image/jpeg",
                    headers={"Cache-Control": f"private, max-age={min(left, 3600)}"})


_SIGNED: dict[str, Any] = dict(response_model=None, openapi_extra=contract.PUBLIC, responses={
    200: {"content": {"image/jpeg": {"schema": {"type": "string", "format": "binary"}}}, "description": "JPEG"},
    **errors_for(403, 404, 429, 500, 503, codes={403: "INVALID_SIGNATURE, URL_EXPIRED", 404: "AVATAR_NOT_FOUND"}),
})


@router.get("/v1/avatars/{avatar_id}/image", summary="The aligned avatar image (signed URL, no API key)", **_SIGNED)
async def avatar_image(avatar_id: str, request: Request, expires: str | None = None, sig: str | None = None):
    return await _serve_blob(request, avatar_id, "image", expires, sig)


@router.get("/v1/avatars/{avatar_id}/preview", summary="The 500x500 preview (signed URL, no API key)", **_SIGNED)
async def avatar_preview(avatar_id: str, request: Request, expires: str | None = None, sig: str | None = None):
    return await _serve_blob(request, avatar_id, "preview", expires, sig)


# ====================================================================== the shared pipeline entry
def decode_base64_image(text: str) -> bytes:
    """Bare base64 or a data URI; whitespace ignored; standard or URL-safe alphabet."""
    if not isinstance(text, str):
        raise errors.InvalidBase64("image_base64 must be a string")
    body = _DATA_URI.sub("", text.strip(), count=1)
    body = "".join(body.split())
    if not body:
        raise errors.InvalidBase64("image_base64 is empty")
    if len(body) * 3 // 4 > MAX_IMAGE_BYTES + 3:
        raise errors.ImageTooLarge(details={"max_bytes": MAX_IMAGE_BYTES})
    if "-" in body or "_" in body:
        body = body.replace("-", "+").replace("_", "/")
    body += "=" * (-len(body) % 4)
    try:
        return base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError):
        raise errors.InvalidBase64(suggestion="Send the image bytes as standard base64, optionally as a data URI") from None


def _check_bytes(data: bytes) -> None:
    if not data:
        raise errors.InvalidImage("The image is empty")
    if len(data) > MAX_IMAGE_BYTES:
        raise errors.ImageTooLarge(f"The image is {len(data)} bytes; the limit is {MAX_IMAGE_BYTES} bytes",
                                   details={"bytes": len(data), "max_bytes": MAX_IMAGE_BYTES})
    if sniff_format(data) is None:
        raise errors.UnsupportedImage(suggestion="Upload a JPEG, PNG, GIF or WebP image")


async def run_face_pipeline(data: bytes, timeout_s: float = PIPELINE_TIMEOUT_S) -> persist.EncodedFace:
    """The face pipeline as a Ray task, awaited with a timeout; its typed errors come back as themselves."""
    ref = _face_task.remote(data)
    try:
        return await asyncio.wait_for(asyncio.wrap_future(ref.future()), timeout=timeout_s)
    except (asyncio.TimeoutError, GetTimeoutError):
        ray.cancel(ref, force=True)
        raise errors.ServiceUnavailable("The face pipeline did not finish in time", retry_after_s=5) from None
    except RayTaskError as exc:
        cause = exc.cause
        if isinstance(cause, errors.ApiError):
            raise cause from None
        if isinstance(cause, errors.ModelFilesMissing):
            raise errors.ServiceUnavailable("The face models are not installed on the cluster") from None
        raise


async def create_avatar_from_source(
    svc: Services, account_id: str, *, data: bytes | None = None, url: str | None = None, b64: str | None = None,
    enforce_quota: bool = True, name: str = "",
) -> tuple[Avatar, bool]:
    """Run one image (exactly one of bytes, URL, base64) through the pipeline and store the avatar.

    Returns ``(avatar, created)``: the same bytes uploaded again by the same account give the existing
    avatar (``created`` False) and count nothing. Raises the SPEC's typed errors; stores nothing on failure.
    """
    if sum(x is not None for x in (data, url, b64)) != 1:
        raise errors.InvalidImage()
    store = svc.store
    if enforce_quota and data is None:
        limits = await asyncio.to_thread(store.plans.limits, account_id)
        if limits.avatar_uploads == 0:  # not included: refuse before fetching anything
            raise errors.AvatarLimitReached(details={"used": 0, "limit": 0}, suggestion=NO_UPLOADS)
    if url is not None:
        from pipelines.faces.url_fetch import fetch_image

        data = await asyncio.to_thread(fetch_image, url, max_bytes=MAX_IMAGE_BYTES,
                                       allow_loopback=svc.settings.allow_loopback_image_urls)
    elif b64 is not None:
        data = await asyncio.to_thread(decode_base64_image, b64)
    assert data is not None
    body: bytes = data

    def content_hash() -> str:
        _check_bytes(body)
        return persist.content_hash(body)

    # The plan, the bytes' checks, the same bytes already uploaded, the quota: in this order (cheapest
    # refusal first), in one thread hop and one database read.
    existing = await asyncio.to_thread(store.avatars.upload_precheck, account_id, content_hash,
                                       enforce_quota=enforce_quota)
    if existing is not None:
        return existing, False
    encoded = await run_face_pipeline(data)
    return await asyncio.to_thread(persist.store_encoded, store, blob_store(svc), encoded, account_id,
                                   enforce_quota=enforce_quota, name=name)


async def avatar_from_create_value(svc: Services, account_id: str, value: str) -> Avatar:
    """``avatar`` in session create that is not an avatar id: an http(s) URL or a base64 image."""
    text = value.strip()
    lowered = text[:16].lower()
    if lowered.startswith(("http://", "https://")):
        avatar, _ = await create_avatar_from_source(svc, account_id, url=text)
    elif "://" in text[:32]:
        raise errors.ImageUrlNotAllowed("Only http and https image URLs are fetched",
                                        details={"reason": "scheme not allowed"})
    else:
        avatar, _ = await create_avatar_from_source(svc, account_id, b64=text)
    return avatar


# ====================================================================== upload-face
async def _read_body(request: Request) -> bytes:
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > MAX_BODY_BYTES:
        raise errors.ImageTooLarge(f"The request body is {length} bytes; images are limited to {MAX_IMAGE_BYTES} bytes",
                                   details={"max_bytes": MAX_IMAGE_BYTES})
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise errors.ImageTooLarge(details={"max_bytes": MAX_IMAGE_BYTES})
        chunks.append(chunk)
    body = b"".join(chunks)
    request._body = body  # Starlette re-reads the cached body for form parsing
    return body


def _field(value: Any, name: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        cls = errors.InvalidBase64 if name == "image_base64" else errors.InvalidImage
        raise cls(f"{name} must be a string", details={"field": name})
    return value if value.strip() else None


async def read_upload_source(request: Request) -> dict[str, Any]:
    """Exactly one of multipart ``file``, ``image_url``, ``image_base64`` (JSON body or form fields)."""
    body = await _read_body(request)
    ctype = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    data: bytes | None = None
    if ctype in ("multipart/form-data", "application/x-www-form-urlencoded"):
        try:
            form = await request.form(max_files=1, max_fields=8, max_part_size=MAX_BODY_BYTES)
        except Exception as exc:  # noqa: BLE001 - malformed multipart from the client
            raise errors.InvalidImage(f"The form could not be parsed: {getattr(exc, 'detail', exc)}") from None
        upload = form.get("file")
        if upload is not None and not isinstance(upload, str):
            data = await upload.read()
            if not data:
                raise errors.InvalidImage("The uploaded file is empty", details={"field": "file"})
        elif isinstance(upload, str) and upload:
            raise errors.InvalidImage("file must be a file part", details={"field": "file"})
        image_url, image_b64 = _field(form.get("image_url"), "image_url"), _field(form.get("image_base64"), "image_base64")
    elif ctype in ("application/json", "") or ctype.endswith("+json"):
        try:
            payload = json.loads(body) if body.strip() else {}
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise errors.InvalidJson() from None
        if not isinstance(payload, dict):
            raise errors.InvalidJson("The body must be a JSON object")
        image_url, image_b64 = _field(payload.get("image_url"), "image_url"), _field(payload.get("image_base64"), "image_base64")
    else:
        raise errors.InvalidImage(
            f"Unsupported request content type {ctype!r}",
            suggestion="Send multipart/form-data with a file, or JSON with image_url or image_base64",
        )
    given = [k for k, v in (("file", data), ("image_url", image_url), ("image_base64", image_b64)) if v is not None]
    if len(given) != 1:
        raise errors.InvalidImage(details={"given": given})
    return {"data": data, "url": image_url, "b64": image_b64}


@router.post(
    "/v1/avatars/upload-face", status_code=201, summary="Upload a face: file, image_url or image_base64",
    response_model=None, openapi_extra={"requestBody": contract.UPLOAD_FACE_BODY},
    responses={**ok(contract.UploadFaceResponse, "The avatar (created, or the one this image already made)", 201,
                    links=contract.AVATAR_LINKS),
               **errors_for(*KEYED, 400, 403, 413, 415, codes={
                   400: "INVALID_IMAGE, INVALID_BASE64, INVALID_JSON, IMAGE_URL_NOT_ALLOWED, IMAGE_FETCH_FAILED, "
                        "NO_FACE_DETECTED, MULTIPLE_FACES, FACE_NOT_PROMINENT",
                   403: "AVATAR_LIMIT_REACHED", 413: "IMAGE_TOO_LARGE (10 MB decoded, 40 MP)",
                   415: "UNSUPPORTED_IMAGE"})},
)
async def upload_face(request: Request) -> Response:
    svc, auth = services(request), account_of(request)
    source = await read_upload_source(request)

    async def run() -> JSONResponse:
        avatar, created = await create_avatar_from_source(svc, auth.account_id, **source)
        view = avatar_view(svc, avatar, request)
        return JSONResponse({"success": True, **view, "created": created,
                             "message": "Avatar created" if created else "This image was already uploaded"},
                            status_code=201)

    return await run_idempotent(svc, request, auth.account_id, "avatars.upload_face", fingerprint(source), run,
                                lease_s=PIPELINE_TIMEOUT_S + 60)


# ====================================================================== list / delete
@router.get("/v1/avatars", summary="Public avatars and this account's own", response_model=None,
            responses={**ok(contract.AvatarList, "Public avatars and this account's own"), **errors_for(*KEYED)})
async def list_avatars(request: Request) -> dict[str, Any]:
    svc, auth = services(request), account_of(request)
    public, mine = await asyncio.to_thread(svc.store.avatars.list_avatars, auth.account_id)
    now = time.time()
    return {"success": True,
            "public_avatars": [avatar_view(svc, r, request, now) for r in public],
            "my_avatars": [avatar_view(svc, r, request, now) for r in mine]}


@router.delete("/v1/avatars/{avatar_id}", summary="Delete one of this account's avatars", response_model=None,
               responses={**ok(contract.AvatarDeleted, "Deleted (running sessions keep working)"),
                          **errors_for(*KEYED, 403, 404, codes={403: "AVATAR_ACCESS_DENIED", 404: "AVATAR_NOT_FOUND"})})
async def delete_avatar(avatar_id: str, request: Request) -> dict[str, Any]:
    svc, auth = services(request), account_of(request)
    if not ids.has_prefix(avatar_id, ids.AVATAR):
        raise errors.AvatarNotFound(details={"avatar_id": avatar_id})
    row = await asyncio.to_thread(svc.store.avatars.delete_avatar, avatar_id, auth.account_id)
    # Sessions already running hold their avatar in memory; new sessions can no longer pick it.
    await asyncio.to_thread(persist.remove_blobs, blob_store(svc), row.id)
    return {"success": True, "avatar_id": row.id, "deleted": True, "message": "Avatar deleted"}

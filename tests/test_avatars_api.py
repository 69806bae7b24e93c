"""Avatars over real HTTP (real Serve, real Ray tasks, real face models) on SQLite and PostgreSQL:
upload-face (file, URL, base64), signed image/preview URLs, refusals that store nothing, plan quota,
URL/base64 avatars in session create, listing and deletion."""
from __future__ import annotations

import base64
import io
import time

import httpx
import pytest
from PIL import Image

from core.db.models import Avatar
from serve_app.avatars import signed_path
from tests.conftest import deploy, make_settings, teardown
from tests.support import faces
from tests.support.databases import temporary_database


@pytest.fixture(scope="module")
def photos():
    return {
        "astronaut": faces.encode(faces.astronaut()),
        "grace": faces.encode(faces.grace()),
        "grace_png": faces.encode(faces.grace(), "PNG"),
        "cat": faces.encode(faces.cat()),
        "two": faces.encode(faces.two_faces()),
    }


@pytest.fixture(scope="session", autouse=True)
def _models_present(face_models):
    return face_models


@pytest.fixture(scope="module")
def loopback_api(ray_cluster, tmp_path_factory):
    """An extra deployment (SQLite) that may fetch image URLs from loopback (the local image server)."""
    folder = tmp_path_factory.mktemp("api-loopback")
    with temporary_database("sqlite", folder) as url:
        settings = make_settings(folder, "loopback", url, allow_loopback_image_urls=True)
        app = deploy(ray_cluster, settings, "api-loopback")
        yield app
        teardown(settings, "api-loopback")
        app.store.db.dispose()


def upload_file(api, tenant, data: bytes, filename="face.jpg", ctype="image/jpeg"):
    return api.http.post("/v1/avatars/upload-face", files={"file": (filename, data, ctype)}, headers=tenant.headers)


def upload_json(api, tenant, **body):
    return api.http.post("/v1/avatars/upload-face", json=body, headers=tenant.headers)


def error_code(r) -> str:
    body = r.json()
    assert body["success"] is False, body
    return body["error"]["code"]


def fetch(url: str) -> httpx.Response:
    return httpx.get(url, timeout=30)


def check_signed_images(body: dict) -> None:
    image = fetch(body["image_url"])
    assert image.status_code == 200, image.text
    assert image.headers["content-type"] == "image/jpeg" and image.content[:3] == b"\xff\xd8\xff"
    with Image.open(io.BytesIO(image.content)) as im:
        assert im.format == "JPEG" and im.width <= 1200
    preview = fetch(body["preview_url"])
    assert preview.status_code == 200
    with Image.open(io.BytesIO(preview.content)) as im:
        assert im.format == "JPEG" and im.size == (500, 500)


# ====================================================================== upload-face: the happy paths
def test_upload_file_gives_signed_urls_and_a_stored_avatar(api, photos):
    tenant = api.tenant("explorer")
    r = upload_file(api, tenant, photos["astronaut"])
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["success"] is True and body["created"] is True
    aid = body["avatar_id"]
    assert aid.startswith("avat_") and body["tags"] == ["user_exclusive", tenant.account_id]
    assert "expires=" in body["image_url"] and "sig=" in body["preview_url"]
    check_signed_images(body)

    row = api.store.avatars.get_avatar(aid)
    assert row.account_id == tenant.account_id and not row.is_public and row.orientation == "1:1"
    _, blobs = faces.stored_state(api)
    assert {f"avatars/{aid}/image.jpg", f"avatars/{aid}/preview.jpg", f"avatars/{aid}/rig.json",
            f"avatars/{aid}/mask.png"} <= set(blobs)
    usage = api.http.get("/v1/usage", headers=tenant.headers).json()["usage"]
    assert usage["avatars"] == {"used": 1, "limit": 20}

    # The same bytes again: the same avatar, not counted twice, nothing new stored.
    before = faces.stored_state(api)
    again = upload_file(api, tenant, photos["astronaut"])
    assert again.status_code == 201 and again.json()["avatar_id"] == aid and again.json()["created"] is False
    assert faces.stored_state(api) == before
    assert api.http.get("/v1/usage", headers=tenant.headers).json()["usage"]["avatars"]["used"] == 1
    # ... while another account uploading the same bytes gets its own avatar.
    other = api.tenant("explorer")
    theirs = upload_file(api, other, photos["astronaut"])
    assert theirs.status_code == 201 and theirs.json()["avatar_id"] != aid


def test_upload_base64_json_data_uri_and_multipart_field(api, photos):
    tenant = api.tenant("growth")
    uri = "data:image/jpeg;base64," + base64.b64encode(photos["grace"]).decode()
    r = upload_json(api, tenant, image_base64=uri)
    assert r.status_code == 201, r.text
    assert api.store.avatars.get_avatar(r.json()["avatar_id"]).orientation == "3:4"  # portrait photo
    check_signed_images(r.json())

    bare = base64.b64encode(photos["grace_png"]).decode()
    r2 = api.http.post("/v1/avatars/upload-face", data={"image_base64": bare}, headers=tenant.headers)
    assert r2.status_code == 201, r2.text
    assert r2.json()["avatar_id"] != r.json()["avatar_id"]  # other bytes (PNG): another avatar
    check_signed_images(r2.json())


def test_upload_from_url_on_a_deployment_that_allows_loopback(loopback_api, photos):
    api = loopback_api
    tenant = api.tenant("explorer")
    with faces.image_server({"/face.jpg": photos["astronaut"], "/cat.jpg": photos["cat"]}) as base:
        r = upload_json(api, tenant, image_url=f"{base}/face.jpg")
        assert r.status_code == 201, r.text
        check_signed_images(r.json())
        before = faces.stored_state(api)
        missing = upload_json(api, tenant, image_url=f"{base}/nope.jpg")
        assert missing.status_code == 400 and error_code(missing) == "IMAGE_FETCH_FAILED"
        cat = upload_json(api, tenant, image_url=f"{base}/cat.jpg")
        assert cat.status_code == 400 and error_code(cat) == "NO_FACE_DETECTED"
        assert faces.stored_state(api) == before
        # A URL avatar in create runs the same pipeline (paid plan): a cat is refused with its code ...
        s = api.http.post("/v1/sessions", json=api.create_body(f"{base}/cat.jpg"), headers=tenant.headers)
        assert s.status_code == 400 and error_code(s) == "NO_FACE_DETECTED"
        assert faces.stored_state(api) == before
        # ... and a face becomes a stored avatar of this account, used by the new session.
        face2 = faces.variant(faces.grace(), 7)
    with faces.image_server({"/grace.jpg": face2}) as base:
        s = api.http.post("/v1/sessions", json=api.create_body(f"{base}/grace.jpg"), headers=tenant.headers)
        assert s.status_code == 201, s.text
        session = s.json()["session"]
        row = api.store.avatars.get_avatar(session["avatar_id"])
        assert row.account_id == tenant.account_id and row.image_path and row.rig_path
        assert api.http.post(f"/v1/sessions/{session['session_id']}/end", headers=tenant.headers).status_code == 200
    # Loopback is still refused where the setting is off: see test_ssrf_refusals.


# ====================================================================== signed URLs
def test_tampered_or_expired_signed_urls_are_403(api, photos):
    tenant = api.tenant("explorer")
    body = upload_file(api, tenant, faces.variant(faces.astronaut(), 3)).json()
    url, aid = body["image_url"], body["avatar_id"]
    assert fetch(url).status_code == 200
    base = url.split("/v1/avatars/")[0]

    sig = url.rsplit("sig=", 1)[1]
    tampered_sig = url[: -len(sig)] + ("0" if sig[0] != "0" else "1") + sig[1:]
    r = fetch(tampered_sig)
    assert r.status_code == 403 and error_code(r) == "INVALID_SIGNATURE"
    later = url.replace("expires=", "expires=9")  # a later expiry with the old signature
    r = fetch(later)
    assert r.status_code == 403 and error_code(r) == "INVALID_SIGNATURE"
    other_kind = url.replace("/image?", "/preview?")  # the image's signature does not open the preview
    assert error_code(fetch(other_kind)) == "INVALID_SIGNATURE"
    no_sig = fetch(f"{base}/v1/avatars/{aid}/image")
    assert no_sig.status_code == 403 and error_code(no_sig) == "INVALID_SIGNATURE"

    secret = api.settings.resolved_secret_key()
    expired = fetch(base + signed_path(secret, aid, "image", int(time.time()) - 5))
    assert expired.status_code == 403 and error_code(expired) == "URL_EXPIRED"
    fresh = fetch(base + signed_path(secret, aid, "preview", int(time.time()) + 60))
    assert fresh.status_code == 200


# ====================================================================== refusals store nothing
BAD_INPUTS = {
    "no_face": ("file", "cat", 400, "NO_FACE_DETECTED"),
    "two_faces": ("file", "two", 400, "MULTIPLE_FACES"),
    "corrupt": ("file", "corrupt", 415, "UNSUPPORTED_IMAGE"),
    "wrong_type": ("file", "pdf", 415, "UNSUPPORTED_IMAGE"),
    "png_bomb": ("file", "bomb", 413, "IMAGE_TOO_LARGE"),
    "over_10mb": ("file", "huge", 413, "IMAGE_TOO_LARGE"),
    "over_10mb_base64": ("b64", "huge", 413, "IMAGE_TOO_LARGE"),
    "bad_base64": ("b64raw", "%%%not*base64!!", 400, "INVALID_BASE64"),
    "base64_of_text": ("b64", "pdf", 415, "UNSUPPORTED_IMAGE"),
    "nothing": ("json", {}, 400, "INVALID_IMAGE"),
    "two_sources": ("json", {"image_url": "https://example.com/a.jpg", "image_base64": "aGVsbG8="}, 400,
                    "INVALID_IMAGE"),
    "bad_json": ("raw", b"{not json", 400, "INVALID_JSON"),
}


@pytest.fixture(scope="module")
def bad_payloads(photos):
    corrupt = bytearray(photos["astronaut"])
    corrupt[200:] = bytes(len(corrupt) - 200)  # valid JPEG header, garbage after
    return dict(photos, corrupt=bytes(corrupt), pdf=b"%PDF-1.4\n1 0 obj\n<<>>\nendobj\n" * 10,
                bomb=faces.png_bomb(), huge=b"\xff\xd8\xff\xe0" + b"\0" * (10 * 1024 * 1024 + 10))


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_gets_its_code_and_stores_nothing(api, bad_payloads, case):
    how, what, status, code = BAD_INPUTS[case]
    tenant = api.tenant("pro")
    before = faces.stored_state(api)
    if how == "file":
        r = upload_file(api, tenant, bad_payloads[what])
    elif how == "b64":
        r = upload_json(api, tenant, image_base64=base64.b64encode(bad_payloads[what]).decode())
    elif how == "b64raw":
        r = upload_json(api, tenant, image_base64=what)
    elif how == "json":
        r = upload_json(api, tenant, **what)
    else:
        r = api.http.post("/v1/avatars/upload-face", content=what,
                          headers={**tenant.headers, "content-type": "application/json"})
    assert r.status_code == status, r.text
    assert error_code(r) == code
    assert faces.stored_state(api) == before
    assert api.http.get("/v1/usage", headers=tenant.headers).json()["usage"]["avatars"]["used"] == 0


@pytest.mark.parametrize("url", [
    "http://127.0.0.1/face.jpg",
    "http://10.0.0.1/face.jpg",
    "http://169.254.169.254/latest/meta-data/",
    "http://[::1]/face.jpg",
    "file:///etc/passwd",
])
def test_ssrf_refusals(api, url):
    tenant = api.tenant("explorer")
    before = faces.stored_state(api)
    r = upload_json(api, tenant, image_url=url)
    assert r.status_code == 400, r.text
    assert error_code(r) == "IMAGE_URL_NOT_ALLOWED"
    # The same URL as an avatar in create is refused the same way.
    s = api.http.post("/v1/sessions", json=api.create_body(url), headers=tenant.headers)
    assert s.status_code == 400 and error_code(s) == "IMAGE_URL_NOT_ALLOWED"
    assert faces.stored_state(api) == before


# ====================================================================== plans and quota
def test_free_plan_cannot_upload_nor_use_url_or_base64_avatars(api, photos):
    free = api.tenant("free")
    before = faces.stored_state(api)
    r = upload_file(api, free, photos["astronaut"])
    assert r.status_code == 403 and error_code(r) == "AVATAR_LIMIT_REACHED"
    assert r.json()["error"]["details"]["limit"] == 0
    b64 = base64.b64encode(photos["astronaut"]).decode()
    for avatar in ("https://example.com/face.jpg", b64, "data:image/jpeg;base64," + b64):
        s = api.http.post("/v1/sessions", json=api.create_body(avatar), headers=free.headers)
        assert s.status_code == 403 and error_code(s) == "PLAN_REQUIRES_AVATAR_ID"
    assert faces.stored_state(api) == before


def test_quota_exhaustion_on_a_small_override(api):
    tenant = api.tenant("explorer", avatar_uploads=2)
    a, g = faces.astronaut(), faces.grace()
    first = upload_file(api, tenant, faces.variant(a, 11))
    second = upload_file(api, tenant, faces.variant(g, 12))
    assert first.status_code == 201 and second.status_code == 201, (first.text, second.text)
    before = faces.stored_state(api)
    third = upload_file(api, tenant, faces.variant(a, 13))
    assert third.status_code == 403 and error_code(third) == "AVATAR_LIMIT_REACHED"
    assert third.json()["error"]["details"] == {"used": 2, "limit": 2}
    assert faces.stored_state(api) == before
    # Already uploaded bytes still resolve to their avatar (dedupe is not an upload).
    again = upload_file(api, tenant, faces.variant(a, 11))
    assert again.status_code == 201 and again.json()["avatar_id"] == first.json()["avatar_id"]
    usage = api.http.get("/v1/usage", headers=tenant.headers).json()["usage"]
    assert usage["avatars"] == {"used": 2, "limit": 2}
    # A base64 avatar in create is an upload too: refused over the quota, nothing stored.
    b64 = base64.b64encode(faces.variant(g, 14)).decode()
    s = api.http.post("/v1/sessions", json=api.create_body(b64), headers=tenant.headers)
    assert s.status_code == 403 and error_code(s) == "AVATAR_LIMIT_REACHED"
    assert faces.stored_state(api) == before


# ====================================================================== avatars in session create
def test_paid_plan_base64_avatar_in_create_makes_a_new_avatar(api):
    tenant = api.tenant("growth")
    data = faces.variant(faces.grace(), 21)
    s = api.http.post("/v1/sessions", json=api.create_body(base64.b64encode(data).decode()), headers=tenant.headers)
    assert s.status_code == 201, s.text
    session = s.json()["session"]
    aid = session["avatar_id"]
    assert aid.startswith("avat_")
    row = api.store.avatars.get_avatar(aid)
    assert row.account_id == tenant.account_id and row.image_path
    mine = api.http.get("/v1/avatars", headers=tenant.headers).json()["my_avatars"]
    assert [m["avatar_id"] for m in mine] == [aid]
    assert api.http.post(f"/v1/sessions/{session['session_id']}/end", headers=tenant.headers).status_code == 200
    bad = api.http.post("/v1/sessions", json=api.create_body("!!not-base64!!"), headers=tenant.headers)
    assert bad.status_code == 400 and error_code(bad) == "INVALID_BASE64"


# ====================================================================== listing, access, deletion
def test_list_shows_public_and_mine_only(api):
    a, b = api.tenant("explorer"), api.tenant("explorer")
    public = api.public_avatar()
    mine = upload_file(api, a, faces.variant(faces.astronaut(), 31)).json()["avatar_id"]
    theirs = upload_file(api, b, faces.variant(faces.astronaut(), 32)).json()["avatar_id"]
    r = api.http.get("/v1/avatars", headers=a.headers)
    assert r.status_code == 200
    body = r.json()
    public_ids = {x["avatar_id"] for x in body["public_avatars"]}
    my_ids = [x["avatar_id"] for x in body["my_avatars"]]
    assert public in public_ids and my_ids == [mine] and theirs not in public_ids
    entry = body["my_avatars"][0]
    assert entry["tags"] == ["user_exclusive", a.account_id]
    assert set(entry) >= {"avatar_id", "tags", "preview_url", "image_url"}
    assert fetch(entry["preview_url"]).status_code == 200
    listed_public = next(x for x in body["public_avatars"] if x["avatar_id"] == public)
    assert listed_public["tags"] == ["public"] and listed_public["name"] == "test"  # public avatars are named
    assert entry["name"] is None and entry["orientation"] in ("4:3", "3:4", "1:1")  # an upload has no name
    assert api.http.get("/v1/avatars").status_code == 401  # listing needs a key


def test_exclusive_avatars_are_owner_only_and_deletion(api):
    owner, other = api.tenant("explorer"), api.tenant("explorer")
    aid = upload_file(api, owner, faces.variant(faces.grace(), 41)).json()["avatar_id"]
    s = api.http.post("/v1/sessions", json=api.create_body(aid), headers=other.headers)
    assert s.status_code == 403 and error_code(s) == "AVATAR_ACCESS_DENIED"
    d = api.http.delete(f"/v1/avatars/{aid}", headers=other.headers)
    assert d.status_code == 403 and error_code(d) == "AVATAR_ACCESS_DENIED"
    assert api.store.avatars.get_avatar(aid) is not None

    public = api.public_avatar()
    d = api.http.delete(f"/v1/avatars/{public}", headers=owner.headers)
    assert d.status_code == 403 and error_code(d) == "AVATAR_ACCESS_DENIED"
    assert api.store.avatars.get_avatar(public) is not None

    # A running session keeps working when its avatar is deleted.
    s = api.http.post("/v1/sessions", json=api.create_body(aid), headers=owner.headers)
    assert s.status_code == 201, s.text
    sid = s.json()["session"]["session_id"]
    image_url = api.http.get("/v1/avatars", headers=owner.headers).json()["my_avatars"][0]["image_url"]

    d = api.http.delete(f"/v1/avatars/{aid}", headers=owner.headers)
    assert d.status_code == 200 and d.json()["deleted"] is True
    with api.store.db.read() as sess:
        assert sess.get(Avatar, aid).deleted_at is not None  # soft delete
    assert not [k for k in faces.stored_state(api)[1] if k.startswith(f"avatars/{aid}/")]  # blobs removed
    assert fetch(image_url).status_code == 404
    assert api.http.get("/v1/avatars", headers=owner.headers).json()["my_avatars"] == []
    assert api.http.get(f"/v1/sessions/{sid}", headers=owner.headers).json()["session"]["status"] == "started"
    assert api.http.post(f"/v1/sessions/{sid}/end", headers=owner.headers).status_code == 200

    again = api.http.delete(f"/v1/avatars/{aid}", headers=owner.headers)
    assert again.status_code == 404 and error_code(again) == "AVATAR_NOT_FOUND"
    s = api.http.post("/v1/sessions", json=api.create_body(aid), headers=owner.headers)
    assert s.status_code == 404 and error_code(s) == "AVATAR_NOT_FOUND"

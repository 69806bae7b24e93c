"""Idempotency-Key on upload-face (real face pipeline, SQLite and PostgreSQL): a retried multipart upload
(a new boundary, the same file) replays the first answer; another image under the same key is a 409."""
from __future__ import annotations

from tests.support import faces


def test_upload_face_with_an_idempotency_key(api, face_models):
    tenant = api.tenant("explorer")
    grace, astronaut = faces.encode(faces.grace()), faces.encode(faces.astronaut())
    key = {"Idempotency-Key": "upload-grace-1"}

    def upload(data: bytes):
        return api.http.post("/v1/avatars/upload-face", files={"file": ("face.jpg", data, "image/jpeg")},
                             headers={**tenant.headers, **key})

    first = upload(grace)
    assert first.status_code == 201, first.text
    again = upload(grace)
    assert again.status_code == 201 and again.json() == first.json()
    assert again.headers["Idempotent-Replayed"] == "true"
    other = upload(astronaut)
    assert other.status_code == 409 and other.json()["error"]["code"] == "IDEMPOTENCY_KEY_REUSED"
    mine = api.http.get("/v1/avatars", headers=tenant.headers).json()["my_avatars"]
    assert [a["avatar_id"] for a in mine] == [first.json()["avatar_id"]]
    assert api.http.get("/v1/usage", headers=tenant.headers).json()["usage"]["avatars"]["used"] == 1

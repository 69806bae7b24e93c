"""The media tests' common set-up over HTTP: a real face uploaded, a preview session started on it, and
a bounded wait until a session is over."""
from __future__ import annotations

from matplotlib import cbook

from tests.support.waiting import wait_for


def upload_grace(api, tenant) -> str:
    """Upload the grace_hopper photo as ``tenant``'s avatar (through the real face pipeline); its id."""
    photo = cbook.get_sample_data("grace_hopper.jpg").read()
    up = api.http.post("/v1/avatars/upload-face", files={"file": ("grace.jpg", photo, "image/jpeg")},
                       headers=tenant.headers)
    assert up.status_code == 201, up.text
    return up.json()["avatar_id"]


def start_preview_session(api, tenant, avatar_id: str | None = None, **body) -> dict:
    """Create a ``preview`` session (on a freshly uploaded face unless ``avatar_id``); ``body`` adds create
    fields (``aspect_ratio``, ``background``, ``video``). Returns the response's ``session``."""
    r = api.http.post("/v1/sessions", json={"avatar": avatar_id or upload_grace(api, tenant), **body,
                                            "room": {"platform": "preview"}}, headers=tenant.headers)
    assert r.status_code == 201, r.text
    return r.json()["session"]


def wait_session_over(api, tenant, session_id: str, timeout: float, what: str) -> dict:
    """The session once it is no longer ``started`` (bounded)."""
    def over():
        s = api.http.get(f"/v1/sessions/{session_id}", headers=tenant.headers).json()["session"]
        return s if s["status"] != "started" else None

    return wait_for(over, timeout=timeout, what=what)

"""The sessions and usage endpoints over real HTTP, real Serve, real Ray, on SQLite and PostgreSQL."""
from __future__ import annotations

import pytest

TOKEN = "room-token-secret"


def create(api, tenant, avatar, **extra):
    return api.http.post("/v1/sessions", json=api.create_body(avatar, **extra), headers=tenant.headers)


def test_create_get_list_end_usage_happy_path(api):
    tenant = api.tenant("explorer")
    avatar = api.public_avatar()

    r = create(api, tenant, avatar, aspect_ratio="1:1", metadata={"user": "42"})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["success"] is True and body["message"] == "Session created successfully"
    s = body["session"]
    assert s["session_id"].startswith("sess_") and s["status"] == "started"
    assert s["aspect_ratio"] == "1:1" and s["metadata"] == {"user": "42"} and s["avatar_id"] == avatar
    assert s["room"] == {"platform": "livekit"}
    assert s["session_token"].startswith("st_")
    assert s["started_at"] and s["expiration"] and s["end_reason"] is None
    assert body["usage"]["concurrency"] == {"current": 1, "max": 5, "available": 4}
    assert body["usage"]["minutes"]["total_remaining"] == 299  # 300 included, 1 held by the running session
    assert TOKEN not in r.text

    sid = s["session_id"]
    g = api.http.get(f"/v1/sessions/{sid}", headers=tenant.headers)
    assert g.status_code == 200
    got = g.json()["session"]
    assert got["status"] == "started" and "session_token" not in got and TOKEN not in g.text
    assert got["duration"] >= 0

    lst = api.http.get("/v1/sessions", params={"status": "active"}, headers=tenant.headers).json()
    assert [x["session_id"] for x in lst["sessions"]] == [sid] and lst["has_more"] is False

    u = api.http.get("/v1/usage", headers=tenant.headers).json()["usage"]
    assert [x["session_id"] for x in u["active_sessions"]] == [sid]
    assert u["concurrency"]["current"] == 1 and u["plan"]["key"] == "explorer"
    assert u["included_minutes"] == {"total": 300, "used": 0, "remaining": 300}
    assert u["avatars"] == {"used": 0, "limit": 20}

    e = api.http.post(f"/v1/sessions/{sid}/end", headers=tenant.headers)
    assert e.status_code == 200, e.text
    ended = e.json()["session"]
    assert ended["status"] == "ended" and ended["end_reason"] == "user_requested"
    assert ended["billing"] == {"minutes": 1, "from_included": 1, "from_purchased": 0}

    again = api.http.post(f"/v1/sessions/{sid}/end", headers=tenant.headers)
    assert again.status_code == 200 and again.json()["session"] == ended  # idempotent, unchanged

    u = api.http.get("/v1/usage", headers=tenant.headers).json()["usage"]
    assert u["included_minutes"]["used"] == 1 and u["concurrency"]["current"] == 0
    assert u["total_remaining"] == 299


def test_auth_errors(api):
    assert api.http.get("/v1/usage").json() == {"error": "API key required"}
    r = api.http.get("/v1/usage", headers={"x-api-key": "ah_live_" + "x" * 32})
    assert r.status_code == 401 and r.json() == {"error": "Invalid API key"}
    tenant = api.tenant()
    key_id = api.store.accounts.authenticate(tenant.api_key).key_id
    api.store.accounts.revoke_api_key(key_id)
    r = api.http.get("/v1/usage", headers=tenant.headers)
    assert r.status_code == 401 and r.json() == {"error": "API key deactivated"}


@pytest.mark.parametrize("patch, code", [
    ({"aspect_ratio": "16:9"}, "INVALID_ASPECT_RATIO"),
    ({"aspect_ratio": 4}, "INVALID_ASPECT_RATIO"),
    ({"room": {"platform": "zoom", "url": "https://x", "token": "t"}}, "INVALID_ROOM_PLATFORM"),
    ({"room": {"platform": "preview"}}, "INVALID_ROOM_PLATFORM"),  # not enabled in this deployment
    ({"room": {"platform": "daily", "url": "wss://x.daily.co/r", "token": "t"}}, "INVALID_ROOM_URL"),
    ({"room": {"platform": "livekit", "url": "ftp://x", "token": "t"}}, "INVALID_ROOM_URL"),
    ({"room": {"platform": "livekit", "url": "wss://x", "token": ""}}, "INVALID_ROOM"),
    ({"room": {"platform": "livekit", "url": "wss://x"}}, "INVALID_ROOM"),
    ({"room": "wss://x"}, "INVALID_ROOM"),
    ({"metadata": [1, 2]}, "INVALID_METADATA"),
    ({"metadata": "x"}, "INVALID_METADATA"),
    ({"metadata": None}, "INVALID_METADATA"),
    ({"metadata": 3}, "INVALID_METADATA"),
    ({"metadata": {"blob": "x" * 17000}}, "INVALID_METADATA"),
    ({"avatar": ""}, "INVALID_AVATAR"),
    ({"avatar": 12}, "INVALID_AVATAR"),
    ({"background": "green"}, "INVALID_REQUEST"),
    ({"background": "#00FF0"}, "INVALID_REQUEST"),
    ({"video": {"width": 641, "height": 480}}, "INVALID_REQUEST"),  # odd
    ({"video": {"width": 640}}, "INVALID_REQUEST"),  # width without height
    ({"video": {"fps": 0}}, "INVALID_REQUEST"),
    ({"video": {"fps": 25, "bitrate": 1}}, "INVALID_REQUEST"),
    ({"video": [640, 480]}, "INVALID_REQUEST"),
    ({"video": {"width": 4000, "height": 3000}}, "INVALID_REQUEST"),  # over the deployment's video_max_side
    ({"video": {"fps": 120}}, "INVALID_REQUEST"),  # over video_max_fps
])
def test_create_validation_errors_use_the_envelope_and_change_nothing(api, patch, code):
    tenant = api.tenant()
    body = api.create_body(api.public_avatar())
    body.update(patch)
    r = api.http.post("/v1/sessions", json=body, headers=tenant.headers)
    assert r.status_code == 400, r.text
    out = r.json()
    assert out["success"] is False and out["error"]["code"] == code and out["error"]["message"]
    assert api.http.get("/v1/sessions", headers=tenant.headers).json()["sessions"] == []


def test_missing_fields_and_bad_json(api):
    tenant = api.tenant()
    r = api.http.post("/v1/sessions", json={"room": {"platform": "livekit", "url": "wss://x", "token": "t"}},
                      headers=tenant.headers)
    assert r.status_code == 400 and r.json()["error"]["code"] == "INVALID_AVATAR"
    r = api.http.post("/v1/sessions", json={"avatar": api.public_avatar()}, headers=tenant.headers)
    assert r.status_code == 400 and r.json()["error"]["code"] == "INVALID_ROOM"
    r = api.http.post("/v1/sessions", content=b"{not json", headers={**tenant.headers,
                                                                     "content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "INVALID_JSON"


def test_avatar_errors(api):
    tenant, other = api.tenant(), api.tenant()
    r = create(api, tenant, "avat_01JAAAAAAAAAAAAAAAAAAAAAAA")
    assert r.status_code == 404 and r.json()["error"]["code"] == "AVATAR_NOT_FOUND"
    theirs = api.private_avatar(other.account_id)
    r = create(api, tenant, theirs)
    assert r.status_code == 403 and r.json()["error"]["code"] == "AVATAR_ACCESS_DENIED"
    free = api.tenant("free")
    for avatar in ("https://example.com/face.jpg", "data:image/png;base64,iVBORw0KGgo="):
        r = create(api, free, avatar)
        assert r.status_code == 403 and r.json()["error"]["code"] == "PLAN_REQUIRES_AVATAR_ID"


def test_sessions_of_other_accounts_are_not_found(api):
    owner, stranger = api.tenant(), api.tenant()
    sid = create(api, owner, api.public_avatar()).json()["session"]["session_id"]
    for call in (lambda: api.http.get(f"/v1/sessions/{sid}", headers=stranger.headers),
                 lambda: api.http.post(f"/v1/sessions/{sid}/end", headers=stranger.headers)):
        r = call()
        assert r.status_code == 404 and r.json()["error"]["code"] == "SESSION_NOT_FOUND"
    assert api.http.get("/v1/sessions", headers=stranger.headers).json()["sessions"] == []
    assert api.http.get(f"/v1/sessions/{sid}", headers=owner.headers).json()["session"]["status"] == "started"
    api.http.post(f"/v1/sessions/{sid}/end", headers=owner.headers)
    r = api.http.get("/v1/sessions/sess_nope", headers=owner.headers)
    assert r.status_code == 404 and r.json()["error"]["code"] == "SESSION_NOT_FOUND"


def test_concurrency_limit_429_with_details(api):
    tenant = api.tenant("explorer", max_concurrent_sessions=2)
    avatar = api.public_avatar()
    sids = [create(api, tenant, avatar).json()["session"]["session_id"] for _ in range(2)]
    r = create(api, tenant, avatar)
    assert r.status_code == 429
    err = r.json()["error"]
    assert err["code"] == "CONCURRENCY_LIMIT_REACHED" and err["details"] == {"current": 2, "max": 2}
    assert "Retry-After" in r.headers
    for sid in sids:
        api.http.post(f"/v1/sessions/{sid}/end", headers=tenant.headers)
    assert create(api, tenant, avatar).status_code == 201


def test_insufficient_minutes_then_purchased_minutes(api):
    tenant = api.tenant("explorer", included_minutes=1)
    avatar = api.public_avatar()
    sid = create(api, tenant, avatar).json()["session"]["session_id"]
    # The running session holds the only minute.
    r = create(api, tenant, avatar)
    assert r.status_code == 403 and r.json()["error"]["code"] == "INSUFFICIENT_MINUTES"
    api.http.post(f"/v1/sessions/{sid}/end", headers=tenant.headers)
    r = create(api, tenant, avatar)
    assert r.status_code == 403 and r.json()["error"]["code"] == "INSUFFICIENT_MINUTES"
    api.store.sessions.add_minutes(tenant.account_id, 5, "test pack")
    r = create(api, tenant, avatar)
    assert r.status_code == 201
    ended = api.http.post(f"/v1/sessions/{r.json()['session']['session_id']}/end", headers=tenant.headers).json()
    assert ended["session"]["billing"] == {"minutes": 1, "from_included": 0, "from_purchased": 1}
    u = api.http.get("/v1/usage", headers=tenant.headers).json()["usage"]
    assert u["purchased_minutes"] == {"total": 5, "remaining": 4} and u["total_remaining"] == 4


def test_list_pagination_and_filters(api):
    tenant = api.tenant("explorer", max_concurrent_sessions=10)
    avatar = api.public_avatar()
    sids = []
    for _ in range(5):
        sid = create(api, tenant, avatar).json()["session"]["session_id"]
        sids.append(sid)
    for sid in sids[:3]:
        api.http.post(f"/v1/sessions/{sid}/end", headers=tenant.headers)
    seen, cursor = [], None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = api.http.get("/v1/sessions", params=params, headers=tenant.headers).json()
        seen += [s["session_id"] for s in page["sessions"]]
        assert page["has_more"] == (page["next_cursor"] is not None)
        if not page["has_more"]:
            break
        cursor = page["next_cursor"]
    assert seen == list(reversed(sids))  # newest first, each once
    active = api.http.get("/v1/sessions", params={"status": "active"}, headers=tenant.headers).json()
    completed = api.http.get("/v1/sessions", params={"status": "completed"}, headers=tenant.headers).json()
    assert {s["session_id"] for s in active["sessions"]} == set(sids[3:])
    assert {s["session_id"] for s in completed["sessions"]} == set(sids[:3])
    # The session statuses themselves filter too (ours), and the OpenAPI document lists every value.
    for status, expected in (("ended", sids[:3]), ("started", sids[3:]), ("failed", []), ("created", [])):
        page = api.http.get("/v1/sessions", params={"status": status}, headers=tenant.headers).json()
        assert {s["session_id"] for s in page["sessions"]} == set(expected), status
        assert all(s["status"] == status for s in page["sessions"])
    param = next(p for p in api.http.get("/openapi.json").json()["paths"]["/v1/sessions"]["get"]["parameters"]
                 if p["name"] == "status")
    assert param["schema"]["enum"] == ["all", "active", "completed", "created", "started", "ended", "failed"]
    for params, code in (({"status": "weird"}, "INVALID_QUERY"), ({"limit": 0}, "INVALID_QUERY"),
                         ({"limit": 101}, "INVALID_QUERY"), ({"limit": "x"}, "INVALID_QUERY"),
                         ({"cursor": "garbage!"}, "INVALID_CURSOR")):
        r = api.http.get("/v1/sessions", params=params, headers=tenant.headers)
        assert r.status_code == 400 and r.json()["error"]["code"] == code, (params, r.text)
    weird = api.http.get("/v1/sessions", params={"status": "weird"}, headers=tenant.headers).json()["error"]
    assert "ended" in weird["message"] and weird["details"]["allowed"][-1] == "failed"
    for sid in sids[3:]:
        api.http.post(f"/v1/sessions/{sid}/end", headers=tenant.headers)


def test_rate_limit_headers_on_every_response(api):
    tenant = api.tenant()
    ok = api.http.get("/v1/usage", headers=tenant.headers)
    bad = api.http.get("/v1/sessions/sess_x", headers=tenant.headers)
    for r in (ok, bad):
        assert int(r.headers["X-RateLimit-Limit"]) == api.settings.rate_limit_per_minute
        assert int(r.headers["X-RateLimit-Remaining"]) < api.settings.rate_limit_per_minute
        assert int(r.headers["X-RateLimit-Reset"]) > 0
    assert int(bad.headers["X-RateLimit-Remaining"]) == int(ok.headers["X-RateLimit-Remaining"]) - 1


def test_openapi_docs(api):
    assert api.http.get("/docs").status_code == 200
    spec = api.http.get("/openapi.json").json()
    assert "/v1/sessions" in spec["paths"] and "/v1/usage" in spec["paths"]
